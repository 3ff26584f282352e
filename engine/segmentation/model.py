"""Semantic segmentation with MONAI U-Nets: build, load and run a model (no ORM, no Django).

Interface (stable):

    NetworkConfig(kind="unet"|"attention"|"residual", spatial_dims=2, in_channels=1,
                  out_channels, channels=(16, 32, 64, 128), strides=(2, 2, 2) by default,
                  num_res_units=2,
                  dropout=0.0)
    build_network(config: NetworkConfig) -> torch.nn.Module
    ModelConfig.load(model_dir) / .save(model_dir)      # model_dir/config.json
    Segmenter.from_bytes(config, weights)               # uploaded ONNX or TorchScript
    prepare_input(image, config) -> float32             # the preprocessing training also uses
    Segmenter.load(model_dir, backend="torch"|"onnx")
    Segmenter.segment(image) -> Segmentation(labels, probabilities, ms, stages_ms)

A model directory holds `config.json` (network, classes, preprocessing), `weights.pt` (a
state_dict) and `model.onnx` (the same network, exported). Images are 2D (H, W) or a volume
(Z, H, W); a 2D network segments a volume slice by slice, in batches. Inputs are padded to a
multiple of the network's total stride and the output cropped back, so any size works.
`probabilities` are softmax outputs (C, ...) in float32; `labels` are uint8 class indices,
after the model's post-processing (`config.json` "postprocessing",
`engine.segmentation.postprocessing`; none unless configured). With `"test_time_flip": true`
in `config.json` the softmax is the mean of the network's output for the image and for its
left-right mirror (mirrored back), at twice the network time; false when absent.

Networks come from MONAI, not hand-written: `unet` is `monai.networks.nets.UNet` with plain
convolution blocks (num_res_units=0), `residual` is the same class with residual units
(`num_res_units`, Kerfoot et al., 2018), `attention` is `monai.networks.nets.AttentionUnet`
(Oktay et al., 2018).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from engine.segmentation.postprocessing import PostprocessConfig, postprocess
from engine.segmentation.preprocessing import PreprocessConfig, preprocess

NetworkKind = Literal["unet", "attention", "residual"]
NETWORK_KINDS: tuple[str, ...] = ("unet", "attention", "residual")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class NetworkConfig:
    kind: str
    out_channels: int
    spatial_dims: int = 2
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = ()  # empty: 2 per level, one fewer than channels
    num_res_units: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in NETWORK_KINDS:
            raise ValueError(f"unknown network {self.kind!r}; one of {', '.join(NETWORK_KINDS)}")
        if not self.strides:
            object.__setattr__(self, "strides", (2,) * (len(self.channels) - 1))
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError("strides needs one entry fewer than channels")
        if self.spatial_dims not in (2, 3):
            raise ValueError("spatial_dims is 2 or 3")

    @property
    def divisor(self) -> int:
        return int(np.prod(self.strides))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        values = dict(data)
        values["channels"] = tuple(values.get("channels", cls.channels))
        values["strides"] = tuple(values.get("strides", ()))
        return cls(**values)


def build_network(config: NetworkConfig) -> Any:
    from monai.networks.nets import AttentionUnet, UNet

    common: dict[str, Any] = {
        "spatial_dims": config.spatial_dims,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "channels": config.channels,
        "strides": config.strides,
        "dropout": config.dropout,
    }
    if config.kind == "attention":
        return AttentionUnet(**common)
    res_units = config.num_res_units if config.kind == "residual" else 0
    if config.kind == "residual" and res_units < 1:
        raise ValueError("a residual U-Net needs num_res_units >= 1")
    return UNet(**common, num_res_units=res_units, norm="instance")


@dataclass
class ModelConfig:
    name: str
    network: NetworkConfig
    classes: dict[int, str]
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    training: dict[str, Any] = field(default_factory=dict)
    postprocessing: PostprocessConfig = field(default_factory=PostprocessConfig)
    test_time_flip: bool = False  # average with the left-right mirrored input's softmax

    def to_dict(self) -> dict[str, Any]:
        network = asdict(self.network)
        network["channels"] = list(self.network.channels)
        network["strides"] = list(self.network.strides)
        return {
            "name": self.name,
            "network": network,
            "classes": {str(k): v for k, v in sorted(self.classes.items())},
            "preprocessing": self.preprocessing.to_dict(),
            "postprocessing": self.postprocessing.to_dict(),
            "test_time_flip": self.test_time_flip,
            "training": self.training,
            "files": {"weights": WEIGHTS_FILE, "onnx": ONNX_FILE},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(
            name=data["name"],
            network=NetworkConfig.from_dict(data["network"]),
            classes={int(k): v for k, v in data["classes"].items()},
            preprocessing=PreprocessConfig.from_dict(data.get("preprocessing", {})),
            training=data.get("training", {}),
            postprocessing=PostprocessConfig.from_dict(data.get("postprocessing")),
            test_time_flip=bool(data.get("test_time_flip", False)),
        )

    def save(self, model_dir: Path) -> Path:
        path = Path(model_dir) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, model_dir: Path) -> ModelConfig:
        return cls.from_dict(json.loads((Path(model_dir) / CONFIG_FILE).read_text()))


def prepare_input_timed(
    image: np.ndarray, config: ModelConfig
) -> tuple[np.ndarray, dict[str, float]]:
    """Preprocess as the model was trained (per slice for 2D networks, per volume for 3D);
    also returns each step's milliseconds, summed over slices."""
    data = np.asarray(image, dtype=np.float32)
    if data.ndim == 2 or config.network.spatial_dims == 3:
        done = preprocess(data, config.preprocessing)
        return done.image, done.timings_ms
    slices: list[np.ndarray] = []
    timings: dict[str, float] = {}
    for plane in data:
        done = preprocess(plane, config.preprocessing)
        slices.append(done.image)
        for step, ms in done.timings_ms.items():
            timings[step] = timings.get(step, 0.0) + ms
    return np.stack(slices), timings


def prepare_input(image: np.ndarray, config: ModelConfig) -> np.ndarray:
    return prepare_input_timed(image, config)[0]


def pad_to_multiple(array: np.ndarray, divisor: int) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad the spatial axes (all but the first two: batch, channel) at the end, edge mode."""
    pads = [(0, 0), (0, 0)] + [(0, (-n) % divisor) for n in array.shape[2:]]
    crop = (slice(None), slice(None)) + tuple(slice(0, n) for n in array.shape[2:])
    return np.pad(array, pads, mode="edge"), crop


@dataclass
class Segmentation:
    labels: np.ndarray  # uint8, image shape, after the model's post-processing
    probabilities: np.ndarray  # float32, (C, *image shape)
    ms: float  # total wall time
    stages_ms: dict[str, float] = field(default_factory=dict)  # preprocessing steps, network
    raw_labels: np.ndarray | None = None  # argmax before post-processing (None: none configured)


class Segmenter:
    """A loaded model; `segment` is safe to call repeatedly, not from several threads."""

    def __init__(self, config: ModelConfig, runner: Any, backend: str, batch_size: int = 8):
        self.config = config
        self._run = runner
        self.backend = backend
        self.batch_size = batch_size

    @classmethod
    def from_network(cls, config: ModelConfig, network: Any) -> Segmenter:
        import torch

        network.eval()
        device = next(network.parameters()).device

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                logits = network(torch.from_numpy(batch).to(device))
                return torch.softmax(logits, dim=1).cpu().numpy()

        return cls(config, run, "torch")

    @classmethod
    def load(
        cls,
        model_dir: Path,
        backend: str = "torch",
        threads: int | None = None,
        config: ModelConfig | None = None,
    ) -> Segmenter:
        """`threads` sets onnxruntime's intra-op threads; torch uses torch.set_num_threads.
        `config` replaces the directory's config.json (the app keeps its own copy)."""
        model_dir = Path(model_dir)
        config = config or ModelConfig.load(model_dir)
        if backend == "torch":
            import torch

            network = build_network(config.network)
            state = torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
            network.load_state_dict(state)
            return cls.from_network(config, network)
        if backend == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads is not None:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            session = ort.InferenceSession(
                str(model_dir / ONNX_FILE), options, providers=["CPUExecutionProvider"]
            )
            return cls._from_onnx_session(config, session)
        raise ValueError(f"unknown backend {backend!r}; torch or onnx")

    @classmethod
    def _from_onnx_session(cls, config: ModelConfig, session: Any) -> Segmenter:
        input_name = session.get_inputs()[0].name

        def run(batch: np.ndarray) -> np.ndarray:
            logits = session.run(None, {input_name: batch})[0]
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            return cast(
                "np.ndarray", (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
            )

        return cls(config, run, "onnx")

    @classmethod
    def from_bytes(cls, config: ModelConfig, data: bytes, threads: int | None = None) -> Segmenter:
        """Weights uploaded on their own: ONNX, or a TorchScript archive (a zip file). The
        network must output logits (N, classes, *spatial) for an input (N, 1, *spatial)."""
        if data[:4] == b"PK\x03\x04":
            import io

            import torch

            if threads is not None:
                torch.set_num_threads(threads)
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
            module.eval()

            def run(batch: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    return torch.softmax(module(torch.from_numpy(batch)), dim=1).numpy()

            return cls(config, run, "torchscript")
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return cls._from_onnx_session(config, session)

    def _run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Softmax of a padded (N, 1, ...) batch; with test_time_flip, the mean of the batch's
        and its mirror's (last axis, the left-right one of an axial slice), run as one batch."""
        if not self.config.test_time_flip:
            return cast("np.ndarray", self._run(np.ascontiguousarray(batch)))
        both = np.ascontiguousarray(np.concatenate([batch, batch[..., ::-1]]))
        out = self._run(both)
        n = len(batch)
        return cast("np.ndarray", (out[:n] + out[n:][..., ::-1]) * np.float32(0.5))

    def probabilities(self, prepared: np.ndarray) -> np.ndarray:
        """Softmax (C, ...) for an already prepared 2D image or (Z, H, W) volume."""
        divisor = self.config.network.divisor
        if prepared.ndim == 2 or self.config.network.spatial_dims == 3:
            batch, crop = pad_to_multiple(prepared[None, None], divisor)
            return cast("np.ndarray", self._run_batch(batch)[crop][0])
        outputs = []
        for start in range(0, prepared.shape[0], self.batch_size):
            chunk = prepared[start : start + self.batch_size, None]
            batch, crop = pad_to_multiple(chunk, divisor)
            outputs.append(self._run_batch(batch)[crop])
        # (Z, C, H, W) -> (C, Z, H, W)
        return np.concatenate(outputs).transpose(1, 0, 2, 3)

    def segment(self, image: np.ndarray) -> Segmentation:
        start = time.perf_counter()
        prepared, stages = prepare_input_timed(image, self.config)
        network_start = time.perf_counter()
        probabilities = self.probabilities(prepared)
        labels = np.argmax(probabilities, axis=0).astype(np.uint8)
        post_start = time.perf_counter()
        stages["network"] = (post_start - network_start) * 1000.0
        raw = None
        if not self.config.postprocessing.is_identity:
            raw, labels = labels, postprocess(labels, self.config.postprocessing)
            stages["postprocess"] = (time.perf_counter() - post_start) * 1000.0
        end = time.perf_counter()
        return Segmentation(labels, probabilities, (end - start) * 1000.0, stages, raw)
