"""The catalogue of real trained models that ship inside pinned PyPI wheels.

Each :class:`Wheel` is pinned by version, file name and SHA-256 (PyPI files are immutable, so a
mismatch means a damaged or substituted download). Each :class:`RealModel` names the ``.onnx``
member inside its wheel and how to make realistic inputs for it (shapes for dynamic dims, value
ranges, fixed values such as a sample rate, zero initial states).

Sources:

* ``rapidocr-onnxruntime`` — PaddleOCR PP-OCR text detection (v4), recognition (v4) and
  direction classification (mobile v2) models.
* ``magika`` — Google's file-type classifier (the wheel is platform-tagged only because it also
  ships a native binary; the model is the same, and the manylinux x86_64 wheel is always used).
* ``openwakeword`` 0.5.1 — the last release whose wheel contains its models (0.6.0 downloads
  them at run time): the melspectrogram front end, the shared embedding model, wake-word heads
  and an older Silero VAD.
* ``silero-vad`` — Silero voice activity detection v6 in several exports (If-based, op15,
  sequence, fp16, If-less op18, OpenVINO-friendly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxforge.models.glyphs import random_text, render_text


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel: what ``pip download`` fetches and the hash it must have."""

    package: str
    version: str
    filename: str
    sha256: str
    #: ``--platform`` for wheels that are platform-tagged (None for pure-Python wheels).
    platform: str | None = None

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class RealModel:
    """One ``.onnx`` file inside a wheel, and how to feed it."""

    name: str
    wheel: Wheel
    member: str
    description: str
    #: Full shapes for inputs whose declared shape has dynamic dims.
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: What the main (non-state) float inputs hold: "image" (normalized pixels), "document" (a
    #: page with lines of printed characters, for text detectors), "text_line" (a crop of one
    #: line of characters, for text recognizers and direction classifiers), "audio" (samples
    #: in [-1, 1]), "audio_int16" (samples at int16 scale), "features" (standard normal),
    #: "bytes" (byte values 0..255 with the padding token 256).
    kind: str = "features"
    #: Inputs with fixed scalar values (e.g. the sample rate).
    values: dict[str, float | int] = field(default_factory=dict)
    #: Inputs that are recurrent states: fed zeros (a stream's initial state).
    zeros: tuple[str, ...] = ()


RAPIDOCR = Wheel(
    "rapidocr-onnxruntime",
    "1.4.4",
    "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
    "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
)
MAGIKA = Wheel(
    "magika",
    "1.0.3",
    "magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl",
    "3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529",
    platform="manylinux_2_28_x86_64",
)
OPENWAKEWORD = Wheel(
    "openwakeword",
    "0.5.1",
    "openwakeword-0.5.1-py3-none-any.whl",
    "015467e49f08b0ef8efa433690ce70566abb72f7c36501a6fa893762b4ddc559",
)
SILERO_VAD = Wheel(
    "silero-vad",
    "6.2.3",
    "silero_vad-6.2.3-py3-none-any.whl",
    "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
)

_OWW = "openwakeword/resources/models/"
_SILERO = "silero_vad/data/"
#: One 32 ms window at 16 kHz (512 samples) plus the 64-sample context the v5/v6 wrappers prepend.
_SILERO_CHUNK = 576


def _oww_head(name: str, member: str, frames: int) -> RealModel:
    return RealModel(
        name,
        OPENWAKEWORD,
        _OWW + member,
        f"openWakeWord '{name[4:]}' head on {frames} embedding frames",
        kind="features",
    )


MODELS: dict[str, RealModel] = {
    m.name: m
    for m in [
        RealModel(
            "ppocr_det_v4",
            RAPIDOCR,
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "PP-OCRv4 text detection (DBNet), NCHW image with sides a multiple of 32",
            shapes={"x": (1, 3, 96, 96)},
            kind="document",
        ),
        RealModel(
            "ppocr_rec_v4",
            RAPIDOCR,
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "PP-OCRv4 text recognition (SVTR-LCNet, 6625 classes), text-line crops 48 high",
            shapes={"x": (1, 3, 48, 160)},
            kind="text_line",
        ),
        RealModel(
            "ppocr_cls_mobile_v2",
            RAPIDOCR,
            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "PP-OCR mobile v2.0 text-direction classifier (0/180 degrees), crops 48x192",
            shapes={"x": (1, 3, 48, 192)},
            kind="text_line",
        ),
        RealModel(
            "magika_v3_3",
            MAGIKA,
            "magika/models/standard_v3_3/model.onnx",
            "Magika standard_v3_3 file-type classifier over 2048 byte features (ai.onnx.ml domain)",
            shapes={"bytes": (1, 2048)},
            kind="bytes",
        ),
        RealModel(
            "oww_melspectrogram",
            OPENWAKEWORD,
            _OWW + "melspectrogram.onnx",
            "openWakeWord melspectrogram front end: 80 ms of 16 kHz audio plus 30 ms context",
            shapes={"input": (1, 1760)},
            kind="audio_int16",
        ),
        RealModel(
            "oww_embedding",
            OPENWAKEWORD,
            _OWW + "embedding_model.onnx",
            "openWakeWord shared speech embedding over 76 mel frames (NHWC convolutions)",
            shapes={"input_1": (1, 76, 32, 1)},
            kind="features",
        ),
        _oww_head("oww_alexa", "alexa_v0.1.onnx", 16),
        _oww_head("oww_hey_jarvis", "hey_jarvis_v0.1.onnx", 16),
        _oww_head("oww_hey_mycroft", "hey_mycroft_v0.1.onnx", 16),
        _oww_head("oww_hey_rhasspy", "hey_rhasspy_v0.1.onnx", 16),
        _oww_head("oww_timer", "timer_v0.1.onnx", 34),
        _oww_head("oww_weather", "weather_v0.1.onnx", 22),
        RealModel(
            "oww_silero_vad",
            OPENWAKEWORD,
            _OWW + "silero_vad.onnx",
            "Silero VAD v4 as bundled by openWakeWord: If on the sample rate, LSTM state h/c",
            shapes={"input": (1, 512), "h": (2, 1, 64), "c": (2, 1, 64)},
            kind="audio",
            values={"sr": 16000},
            zeros=("h", "c"),
        ),
        RealModel(
            "silero_vad",
            SILERO_VAD,
            _SILERO + "silero_vad.onnx",
            "Silero VAD v6: If on the sample rate (8k/16k subgraphs), recurrent state",
            shapes={"input": (1, _SILERO_CHUNK), "state": (2, 1, 128)},
            kind="audio",
            values={"sr": 16000},
            zeros=("state",),
        ),
        RealModel(
            "silero_vad_16k_op15",
            SILERO_VAD,
            _SILERO + "silero_vad_16k_op15.onnx",
            "Silero VAD v6, 16 kHz only, opset 15",
            shapes={"input": (1, _SILERO_CHUNK), "state": (2, 1, 128)},
            kind="audio",
            values={"sr": 16000},
            zeros=("state",),
        ),
        RealModel(
            "silero_vad_16k_sequence",
            SILERO_VAD,
            _SILERO + "silero_vad_16k_sequence.onnx",
            "Silero VAD v6 over a sequence of windows (4 windows here), LSTM state h/c",
            shapes={"input": (4, _SILERO_CHUNK)},
            kind="audio",
            zeros=("h", "c"),
        ),
        RealModel(
            "silero_vad_half",
            SILERO_VAD,
            _SILERO + "silero_vad_half.onnx",
            "Silero VAD v6 with float16 weights and float32 interface (Casts inside)",
            shapes={"input": (1, _SILERO_CHUNK), "state": (2, 1, 128)},
            kind="audio",
            zeros=("state",),
        ),
        RealModel(
            "silero_vad_op18_ifless",
            SILERO_VAD,
            _SILERO + "silero_vad_op18_ifless.onnx",
            "Silero VAD v6, opset 18, IR 10, sample-rate selection without a data-dependent If",
            shapes={"input": (1, _SILERO_CHUNK), "state": (2, 1, 128)},
            kind="audio",
            values={"sr": 16000},
            zeros=("state",),
        ),
        RealModel(
            "silero_vad_openvino_16k",
            SILERO_VAD,
            _SILERO + "silero_vad_openvino_16k.onnx",
            "Silero VAD v6 exported for OpenVINO: static shapes, 16 kHz",
            kind="audio",
            zeros=("state",),
        ),
    ]
}

WHEELS: dict[str, Wheel] = {m.wheel.package: m.wheel for m in MODELS.values()}


def _document(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A page-like picture: light paper with lines of dark printed characters
    (:mod:`onnxforge.models.glyphs`), in [-1, 1] (PP-OCR's normalization), so a text detector
    sees text rather than noise."""
    h, w = shape[-2], shape[-1]
    page = rng.uniform(0.85, 1.0) + 0.03 * rng.standard_normal((h, w))
    y = float(rng.integers(2, 8))
    while y < h - 10:
        gh = float(rng.uniform(7, 14))
        x = float(rng.uniform(2, max(3, w // 4)))
        n = max(1, int((rng.uniform(0.4, 0.95) * w - x) / (0.75 * gh)))
        render_text(random_text(rng, n), h, w, glyph_height=gh, x=x, top=y, ink_level=float(rng.uniform(0.0, 0.3)), canvas=page)
        y += gh + float(rng.uniform(4, 14))
    img = np.broadcast_to(np.clip(page, 0, 1), shape)
    return (img - 0.5) / 0.5


def _text_line(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A cropped line of printed characters as a text recognizer gets it: dark text filling
    most of the crop's height on light paper, in [-1, 1]."""
    h, w = shape[-2], shape[-1]
    n = int(rng.integers(3, 9))
    gh = min(float(rng.uniform(0.5, 0.72)) * h, (w - 8) / (0.75 * n))
    x = float(rng.uniform(2, max(3.0, w - 0.75 * gh * n - 4)))
    page = rng.uniform(0.8, 1.0) + 0.02 * rng.standard_normal((h, w))
    render_text(
        random_text(rng, n), h, w, glyph_height=gh, x=x, slant=float(rng.uniform(-0.1, 0.15)),
        ink_level=float(rng.uniform(0.0, 0.3)), canvas=page,
    )
    img = np.broadcast_to(np.clip(page, 0, 1), shape)
    return (img - 0.5) / 0.5


def main_input_values(
    kind: str, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator
) -> np.ndarray:
    """Realistic values for a model's main input of the given kind."""
    if kind == "image":
        # Smooth random picture in [0, 1], normalized to [-1, 1] as the PP-OCR pipelines do.
        coarse = rng.random((*shape[:-2], max(1, shape[-2] // 8), max(1, shape[-1] // 8)))
        img = np.repeat(np.repeat(coarse, 8, axis=-2), 8, axis=-1)[..., : shape[-2], : shape[-1]]
        pad = [(0, 0)] * (len(shape) - 2) + [(0, shape[-2] - img.shape[-2]), (0, shape[-1] - img.shape[-1])]
        img = np.pad(img, pad, mode="edge")
        img = 0.8 * img + 0.2 * rng.random(shape)
        return ((img - 0.5) / 0.5).astype(dtype)
    if kind == "document":
        return _document(shape, rng).astype(dtype)
    if kind == "text_line":
        return _text_line(shape, rng).astype(dtype)
    if kind in ("audio", "audio_int16"):
        n = shape[-1]
        t = np.arange(n) / 16000.0
        freq = rng.uniform(100, 400, size=(*shape[:-1], 1))
        wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(shape)
        wave = np.clip(wave, -1.0, 1.0)
        return (wave * (32767.0 if kind == "audio_int16" else 1.0)).astype(dtype)
    if kind == "bytes":
        arr = rng.integers(0, 256, size=shape)
        arr[..., -64:] = 256  # magika's padding token
        return arr.astype(dtype)
    if kind == "features":
        return rng.standard_normal(shape).astype(dtype)
    raise ValueError(f"unknown input kind {kind!r}")
