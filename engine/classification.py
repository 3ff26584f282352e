"""Image classifiers as plug-ins: config, preprocessing and ONNX inference (no ORM, no Django).

Interface (stable):

    ClassifierConfig.from_dict(data) / .to_dict()        # config.json; ConfigError when invalid
    preprocess(image, config) -> float32 (1, C, H, W)      # the same steps training uses
    Classifier.from_bytes(config, onnx_bytes)             # ConfigError if the ONNX does not fit
    Classifier.classify(image) -> Classification

Config format (JSON):

    {
      "input": {"size": [128, 128], "channels": 1},
      "preprocessing": {"clip": [0.5, 99.5], "normalise": "zscore"},
      "classes": ["no_lesion", "lesion"],
      "positive_class": "lesion",        # binary models only; default: the second class
      "threshold": 0.5,                  # binary: positive when P(positive) >= threshold
      "output": "logits",                # or "probabilities" (already softmaxed)
      "intended_use": "..."
    }

Preprocessing, in order: the image is made grey (mean of RGB) or 3-channel (grey repeated) to
match `channels`; intensities are clipped to the `clip` percentiles and scaled to 0..1;
resized (bilinear) to `size` (rows, columns); then normalised: "zscore" (per image: minus its
mean, over its standard deviation), "meanstd" (minus `mean`, over `std`, per channel, on the
0..1 values) or "none".

Prediction: with two classes, the positive class when its probability is at or above the
threshold, else the other; with more, the argmax. Confidence is the probability of the class
predicted.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NORMALISE = ("zscore", "meanstd", "none")
OUTPUTS = ("logits", "probabilities")
MAX_SIDE = 1024


class ConfigError(ValueError):
    """A classifier config or ONNX file that cannot be used; the message says why."""


@dataclass(frozen=True)
class ClassifierConfig:
    size: tuple[int, int]
    channels: int
    classes: tuple[str, ...]
    threshold: float = 0.5
    positive_class: str | None = None
    clip: tuple[float, float] = (0.5, 99.5)
    normalise: str = "zscore"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    output: str = "logits"
    intended_use: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def positive_index(self) -> int | None:
        if len(self.classes) != 2:
            return None
        if self.positive_class is None:
            return 1
        return self.classes.index(self.positive_class)

    @classmethod
    def from_dict(cls, data: Any) -> ClassifierConfig:
        if not isinstance(data, dict):
            raise ConfigError("The config must be a JSON object.")
        inp = data.get("input")
        if not isinstance(inp, dict):
            raise ConfigError('The config needs "input": {"size": [rows, columns], "channels": 1}.')
        size = inp.get("size")
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not all(isinstance(s, int) and 1 <= s <= MAX_SIDE for s in size)
        ):
            raise ConfigError(
                f'"input.size" must be two whole numbers from 1 to {MAX_SIDE} (rows, columns).'
            )
        channels = inp.get("channels")
        if channels not in (1, 3):
            raise ConfigError('"input.channels" must be 1 (grey) or 3 (colour).')
        classes = data.get("classes")
        if (
            not isinstance(classes, list)
            or len(classes) < 2
            or not all(isinstance(c, str) and c.strip() for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise ConfigError('"classes" must list at least two different class names.')
        threshold = data.get("threshold", 0.5)
        if not isinstance(threshold, int | float) or not 0.0 < float(threshold) < 1.0:
            raise ConfigError('"threshold" must be a number between 0 and 1.')
        positive = data.get("positive_class")
        if positive is not None:
            if len(classes) != 2:
                raise ConfigError('"positive_class" is for two-class models only.')
            if positive not in classes:
                raise ConfigError(f'"positive_class" {positive!r} is not one of "classes".')
        pre = data.get("preprocessing", {})
        if not isinstance(pre, dict):
            raise ConfigError('"preprocessing" must be a JSON object.')
        clip = pre.get("clip", [0.5, 99.5])
        if (
            not isinstance(clip, list)
            or len(clip) != 2
            or not all(isinstance(c, int | float) for c in clip)
            or not 0 <= clip[0] < clip[1] <= 100
        ):
            raise ConfigError('"preprocessing.clip" must be two percentiles, low < high, 0-100.')
        normalise = pre.get("normalise", "zscore")
        if normalise not in NORMALISE:
            raise ConfigError(f'"preprocessing.normalise" must be one of {", ".join(NORMALISE)}.')
        mean: tuple[float, ...] = ()
        std: tuple[float, ...] = ()
        if normalise == "meanstd":
            raw_mean, raw_std = pre.get("mean"), pre.get("std")
            if not (
                isinstance(raw_mean, list)
                and isinstance(raw_std, list)
                and len(raw_mean) == channels
                and len(raw_std) == channels
                and all(isinstance(v, int | float) for v in raw_mean + raw_std)
                and all(float(v) > 0 for v in raw_std)
            ):
                raise ConfigError(
                    f'"meanstd" needs "mean" and "std" lists of {channels} number(s), std > 0.'
                )
            mean = tuple(float(v) for v in raw_mean)
            std = tuple(float(v) for v in raw_std)
        output = data.get("output", "logits")
        if output not in OUTPUTS:
            raise ConfigError(f'"output" must be one of {", ".join(OUTPUTS)}.')
        known = {"input", "classes", "threshold", "positive_class", "preprocessing", "output"}
        return cls(
            size=(int(size[0]), int(size[1])),
            channels=int(channels),
            classes=tuple(classes),
            threshold=float(threshold),
            positive_class=positive,
            clip=(float(clip[0]), float(clip[1])),
            normalise=str(normalise),
            mean=mean,
            std=std,
            output=str(output),
            intended_use=str(data.get("intended_use", "")),
            extra={k: v for k, v in data.items() if k not in known and k != "intended_use"},
        )

    def to_dict(self) -> dict[str, Any]:
        pre: dict[str, Any] = {"clip": list(self.clip), "normalise": self.normalise}
        if self.normalise == "meanstd":
            pre["mean"], pre["std"] = list(self.mean), list(self.std)
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "input": {"size": list(self.size), "channels": self.channels},
                "preprocessing": pre,
                "classes": list(self.classes),
                "threshold": self.threshold,
                "output": self.output,
                "intended_use": self.intended_use,
            }
        )
        if self.positive_class is not None:
            out["positive_class"] = self.positive_class
        return out


def _resize(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if plane.shape == size:
        return plane
    from PIL import Image

    resized = Image.fromarray(plane.astype(np.float32), mode="F").resize(
        (size[1], size[0]), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def preprocess(image: np.ndarray, config: ClassifierConfig) -> np.ndarray:
    """One image (H, W) or (H, W, 3|4) -> float32 (1, C, rows, columns) for the network."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3]
        planes = [array[..., c] for c in range(3)] if config.channels == 3 else [array.mean(-1)]
    elif array.ndim == 2:
        planes = [array] * config.channels
    else:
        raise ConfigError(f"Cannot classify an image of shape {array.shape}: one 2D frame needed.")
    low, high = np.percentile(np.stack(planes), list(config.clip))
    span = float(high - low) if high > low else 1.0
    out = []
    for c, plane in enumerate(planes):
        scaled = np.clip((plane - low) / span, 0.0, 1.0)
        scaled = _resize(scaled, config.size)
        if config.normalise == "zscore":
            scaled = (scaled - scaled.mean()) / max(float(scaled.std()), 1e-6)
        elif config.normalise == "meanstd":
            scaled = (scaled - config.mean[c]) / config.std[c]
        out.append(scaled)
    return np.stack(out)[None].astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return result


@dataclass(frozen=True)
class Classification:
    probabilities: dict[str, float]
    prediction: str
    confidence: float
    ms: float


def predict(probabilities: np.ndarray, config: ClassifierConfig) -> tuple[int, float]:
    """(index of the class predicted, its probability) for one probability vector."""
    positive = config.positive_index
    if positive is not None:
        index = positive if probabilities[positive] >= config.threshold else 1 - positive
    else:
        index = int(np.argmax(probabilities))
    return index, float(probabilities[index])


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Classifier:
    def __init__(self, config: ClassifierConfig, session: Any):
        self.config = config
        self.session = session
        self.input_name: str = session.get_inputs()[0].name

    @classmethod
    def from_bytes(
        cls, config: ClassifierConfig, data: bytes, threads: int | None = 1
    ) -> Classifier:
        """Load an ONNX model and check it against the config (input shape, class count)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise ConfigError(f"The file is not a model onnxruntime can load ({first}).") from exc
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ConfigError(f"The model has {len(inputs)} inputs; one image input is needed.")
        shape = list(inputs[0].shape)
        if len(shape) != 4:
            raise ConfigError(
                f"The model's input has shape {shape}; a 4D (batch, channels, rows, columns) "
                "input is needed."
            )
        wanted = [config.channels, config.size[0], config.size[1]]
        for axis, (have, want) in enumerate(zip(shape[1:], wanted, strict=True), start=1):
            if isinstance(have, int) and have != want:
                raise ConfigError(
                    f"The model's input shape {shape} does not match the config "
                    f"(channels {config.channels}, size {list(config.size)}): axis {axis} is "
                    f"{have}, the config says {want}."
                )
        classifier = cls(config, session)
        probe = np.zeros((1, config.channels, *config.size), dtype=np.float32)
        try:
            output = classifier._raw(probe)
        except Exception as exc:
            raise ConfigError(
                f"The model fails on an input of the configured shape: {exc}"
            ) from exc
        if output.shape != (1, len(config.classes)):
            raise ConfigError(
                f"The model outputs shape {list(output.shape)}; the config lists "
                f"{len(config.classes)} classes, so (batch, {len(config.classes)}) is needed."
            )
        return classifier

    def _raw(self, batch: np.ndarray) -> np.ndarray:
        result = self.session.run(None, {self.input_name: batch})[0]
        return np.asarray(result, dtype=np.float64)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        raw = self._raw(batch)
        if self.config.output == "logits":
            return softmax(raw)
        clipped = np.clip(raw, 0.0, None)
        total: np.ndarray = clipped / np.maximum(clipped.sum(axis=-1, keepdims=True), 1e-12)
        return total

    def classify(self, image: np.ndarray) -> Classification:
        started = time.perf_counter()
        probs = self.probabilities(preprocess(image, self.config))[0]
        index, confidence = predict(probs, self.config)
        return Classification(
            probabilities={
                name: float(p) for name, p in zip(self.config.classes, probs, strict=True)
            },
            prediction=self.config.classes[index],
            confidence=confidence,
            ms=(time.perf_counter() - started) * 1000,
        )
