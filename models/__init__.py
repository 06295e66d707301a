"""Seeded model builders (code, not binaries) used by tests, demos and benchmarks."""

from onnxforge.models.cnn import small_cnn, transformer_block
from onnxforge.models.corpus import feeds_for, fetch_corpus, list_corpus
from onnxforge.models.digits import load_digits_split, train_digits_cnn
from onnxforge.models.lenet import train_lenet5, train_lenet_300_100
from onnxforge.models.synthetic import big_external_model, residual_mlp_chain

__all__ = [
    "big_external_model",
    "feeds_for",
    "fetch_corpus",
    "list_corpus",
    "load_digits_split",
    "residual_mlp_chain",
    "small_cnn",
    "train_digits_cnn",
    "train_lenet5",
    "train_lenet_300_100",
    "transformer_block",
]
