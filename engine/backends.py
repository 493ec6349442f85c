"""Inference backends behind one small interface: a batch of uint8 face crops in, scores out.

Each backend is one class; :meth:`Backend.load` does the heavy imports (onnxruntime, torch), so
importing this module costs nothing and a machine only needs what it runs.
:func:`acfd.engine.runtime.load` picks the backend from the artifact through
:mod:`acfd.engine.registry`.

* :class:`OrtBackend` - an exported ``.onnx`` on ONNX Runtime (CPU; the CUDA provider when present).
  This module registers it as the ``onnx`` kind.
* :class:`TorchBackend` - a training run directory or its ``model.safetensors`` (CPU fp32, or CUDA
  fp16 channels_last). How to build the network from a run is the training stack's business: it
  provides a :data:`RunLoader` by registering the ``torch-run`` kind with a :class:`TorchRunFactory`
  (``acfd.train.engine_loader``, imported by name through the registry's plugin hook), so the engine
  never imports ``acfd.train``.
* ``TensorRTBackend`` (in :mod:`acfd.engine.tensorrt`) - a serialised FP16/FP32 engine (``.plan``).
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np
from acfd.schemas.artifact import META_KEY, ArtifactError, ArtifactMeta
from acfd.schemas.errors import AcfdError

from . import registry
from .cpu import CpuFeatures
from .cpu import detect as detect_cpu
from .precision import check_precision, choose_onnx, choose_torch
from .signature import ATTENTION_NAME, EMBEDDING_NAME, INPUT_NAME, SCORE_NAME

# (The graph's I/O names, defined in .signature, stay importable from here as before.)
DEVICES = ("auto", "cpu", "cuda")


class InputError(ArtifactError):
    """A batch of crops that does not match what the model takes (size, dtype, layout)."""


@dataclass(frozen=True)
class Prediction:
    """Outputs for a batch of N crops."""

    # ||embedding|| (score kind "distance") or P(fake) ("probability"), float32 [N].
    score: np.ndarray
    # Attention map per crop, float32 [N,h,w] in [0,1]; None when the model has no attention layer.
    attention: np.ndarray | None
    # The embedding (or logits) itself, float32 [N,D]; only when the artifact exports it.
    embedding: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @classmethod
    def concat(cls, parts: list[Prediction]) -> Prediction:
        """One prediction from the predictions of consecutive slices of a batch (non-empty list)."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            score=np.concatenate([p.score for p in parts]),
            attention=None if parts[0].attention is None else np.concatenate([p.attention for p in parts]),
            embedding=None if parts[0].embedding is None else np.concatenate([p.embedding for p in parts]),
        )


def model_id_of(data: bytes | memoryview) -> str:
    """The id of an artifact: the first 16 hex digits of the sha256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ArtifactError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    return device


class Backend(ABC):
    """One loaded model. Construct, then :meth:`load` (``runtime.load`` does both).

    Attributes after ``load()``: ``meta`` (the artifact's :class:`ArtifactMeta`, ``model_id`` filled
    in), ``model_id`` (content hash of the artifact), ``max_batch`` (largest batch one call to the
    model takes; ``infer`` splits bigger batches; None: no limit), ``device`` (where it runs).
    """

    name: ClassVar[str] = "backend"
    # Whether the constructor takes ``precision=`` (acfd.engine.precision); runtime.load passes it only then.
    takes_precision: ClassVar[bool] = False

    def __init__(self, path: Path, device: str = "auto", max_batch: int | None = None) -> None:
        self.path = Path(path)
        self.device = check_device(device)
        if max_batch is not None and max_batch < 1:
            raise ArtifactError(f"max_batch must be >= 1, not {max_batch}")
        self.max_batch: int | None = max_batch
        self.meta: ArtifactMeta = ArtifactMeta()
        self.model_id = ""
        self.has_embedding = False
        # What runs and why (acfd.engine.precision.Choice), for backends that choose a precision.
        self.choice: Any = None
        self._loaded = False

    # -- to implement ---------------------------------------------------------------------------
    @abstractmethod
    def load(self) -> Backend:
        """Read the artifact, import the runtime, build the session; return self."""

    @abstractmethod
    def _run(self, crops: np.ndarray) -> Prediction:
        """Run one batch (already validated, C-contiguous, at most ``max_batch`` crops)."""

    def close(self) -> None:
        """Release the session and device memory (the backend cannot be used afterwards)."""
        self._loaded = False

    def device_name(self) -> str:
        """What runs the model, in words (e.g. "onnxruntime CPUExecutionProvider on AMD EPYC 7B13")."""
        return f"{self.name} on {gpu_name() if self.device == 'cuda' else cpu_name()}"

    # -- shared ---------------------------------------------------------------------------------
    def _set_meta(self, meta: ArtifactMeta, model_id: str) -> None:
        self.model_id = model_id
        self.meta = replace(meta, model_id=model_id)

    def check_crops(self, crops: Any) -> np.ndarray:
        """The batch as a C-contiguous uint8 [N,S,S,3] array, or a clear :class:`InputError`."""
        if not isinstance(crops, np.ndarray):
            raise InputError(f"crops must be a numpy array, not {type(crops).__name__}")
        s = self.meta.input_size
        if crops.dtype != np.uint8:
            raise InputError(f"crops must be uint8 RGB (0..255), not {crops.dtype}")
        if crops.ndim != 4 or crops.shape[1:] != (s, s, 3):
            raise InputError(
                f"crops must be a batch [N,{s},{s},3] (NHWC RGB) for this model, got shape {tuple(crops.shape)}"
            )
        return np.ascontiguousarray(crops)

    def _empty(self) -> Prediction:
        a = self.meta.attention_size
        return Prediction(
            score=np.zeros((0,), np.float32),
            attention=np.zeros((0, a, a), np.float32) if a else None,
        )

    def infer(self, crops: np.ndarray) -> Prediction:
        """Scores (and attention maps) for a batch of uint8 crops [N,S,S,3] RGB."""
        if not self._loaded:
            raise ArtifactError(f"{self.name} backend for {self.path} is not loaded (call load())")
        crops = self.check_crops(crops)
        n = crops.shape[0]
        if n == 0:
            return self._empty()
        step = self.max_batch or n
        return Prediction.concat([self._run(crops[i : i + step]) for i in range(0, n, step)])

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} device={self.device} model_id={self.model_id or '?'}>"


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else what the platform module says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip() or "CPU"
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "CPU"


def gpu_name() -> str:
    """The first CUDA device's name (through torch, which the GPU backends already import)."""
    try:
        import torch

        return str(torch.cuda.get_device_name(0))
    except Exception:  # no torch or no CUDA: say so rather than fail
        return "a CUDA GPU"


# -- ONNX ------------------------------------------------------------------------------------------
def meta_from_props(props: dict[str, str], source: Path) -> ArtifactMeta:
    """The :class:`ArtifactMeta` stored in an artifact's key/value metadata, or a clear error."""
    if META_KEY not in props:
        raise ArtifactError(
            f"{source} carries no acfd metadata ({META_KEY}): it was not exported by `acfd-train export`"
        )
    try:
        return ArtifactMeta.from_json(props[META_KEY])
    except ArtifactError as e:
        raise ArtifactError(f"{source}: {e}") from e


def read_onnx_meta(path: Path) -> ArtifactMeta:
    """The metadata of an exported ONNX file (reads the protobuf with the ``onnx`` package)."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file {path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as e:
        raise ArtifactError(f"{path} is not a valid ONNX model ({_first_line(e)})") from e
    return meta_from_props({p.key: p.value for p in model.metadata_props}, path)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _parse_onnx(data: bytes, source: Path) -> Any:
    """The ``ModelProto`` in ``data`` (the file ``source``), or a one-line ArtifactError."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load_model_from_string(data)
    except (DecodeError, ValueError, OSError, RuntimeError) as e:
        raise ArtifactError(f"{source} is not a valid ONNX model ({_first_line(e)})") from e


def _file_meta(path: Path) -> tuple[str, ArtifactMeta]:
    """(model id, metadata) of another .onnx file: a sibling the precision choice looks at."""
    data = Path(path).read_bytes()
    meta = _peek_meta(data)
    if meta is None:
        raise ArtifactError(f"{path} is not an .onnx file with acfd metadata")
    return model_id_of(data), meta


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def onnx_props(data: bytes | memoryview) -> dict[str, str]:
    """``metadata_props`` of a serialised ONNX ``ModelProto``, read from the protobuf wire format's top
    level (field 14, entries of key = 1 and value = 2); every other field is skipped by its length, so
    this costs microseconds and no import. ValueError when the bytes are not such a message."""
    buf, i, props = memoryview(data), 0, {}
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("field runs past the end")
            if field == 14:
                entry, j, kv = buf[i : i + n], 0, {}
                while j < len(entry):
                    k, j = _varint(entry, j)
                    if k & 7 != 2:
                        raise ValueError("odd metadata entry")
                    m, j = _varint(entry, j)
                    kv[k >> 3] = bytes(entry[j : j + m]).decode("utf-8")
                    j += m
                props[kv.get(1, "")] = kv.get(2, "")
            i += n
        else:
            raise ValueError(f"wire type {wire}")
        if i > len(buf):
            raise ValueError("field runs past the end")
    return props


def _peek_meta(data: bytes) -> ArtifactMeta | None:
    """The acfd metadata of serialised ONNX bytes, or None when they do not read as such (the caller
    then lets ONNX Runtime say what is wrong)."""
    try:
        props = onnx_props(data)
        return ArtifactMeta.from_json(props[META_KEY]) if META_KEY in props else None
    except (ValueError, UnicodeDecodeError, ArtifactError):
        return None


def default_threads() -> int:
    """CPU cores this process may use (respects affinity masks and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class OrtBackend(Backend):
    """An exported ``.onnx`` on ONNX Runtime: graph optimisation level ALL, CPU or the CUDA provider.

    ``threads``: intra-op threads (default: the cores this process may use; bench/engine.py measured
    the alternatives). ``optimization``: "all" (default), "extended", "basic" or "disable".
    ``spinning``: let idle ORT threads spin-wait. Off by default: the scanner decodes and detects faces
    on the same cores, and on a shared 2-core machine bench/engine.py measured 1.1x more crops/s
    without spinning. ``precision``: "auto", "fp32", "int8" or "bf16" (refused here), decided by
    :func:`acfd.engine.precision.choose_onnx` against ``cpu`` (default: this machine's,
    :func:`acfd.engine.cpu.detect`); the file that runs may be the int8 sibling or the float source of
    ``path``, and ``model_id``/``meta`` are then that file's.
    """

    name = "onnxruntime"
    takes_precision = True

    def __init__(
        self,
        path: Path,
        device: str = "auto",
        max_batch: int | None = None,
        threads: int | None = None,
        optimization: str = "all",
        spinning: bool = False,
        precision: str = "auto",
        cpu: CpuFeatures | None = None,
    ) -> None:
        super().__init__(path, device, max_batch)
        self.threads = threads
        self.optimization = optimization
        self.spinning = spinning
        self.precision = check_precision(precision)
        self.cpu = cpu
        self._session: Any = None
        self._outputs: list[str] = []

    def load(self) -> OrtBackend:
        import onnxruntime as ort

        if not self.path.is_file():
            raise ArtifactError(f"model file {self.path} does not exist")
        data = self.path.read_bytes()
        model_id = model_id_of(data)
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        if self.optimization not in levels:
            raise ArtifactError(f"unknown ONNX Runtime optimisation level {self.optimization!r}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = levels[self.optimization]
        opts.intra_op_num_threads = self.threads if self.threads is not None else default_threads()
        opts.log_severity_level = 3  # errors only: ORT's warnings are not for the user of a scanner
        if not self.spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        if self.device == "cuda" and "CUDAExecutionProvider" not in available:
            raise ArtifactError(
                "device 'cuda' asked for, but this onnxruntime has no CUDA provider "
                "(install onnxruntime-gpu, or use device 'cpu')"
            )
        use_cuda = self.device in ("auto", "cuda") and "CUDAExecutionProvider" in available
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]

        def session_of(model: bytes, source: Path) -> Any:
            try:
                return ort.InferenceSession(model, sess_options=opts, providers=providers)
            except Exception as e:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, ...)
                raise ArtifactError(f"{source} is not a valid ONNX model ({_first_line(e)})") from e

        # Which file runs, at which precision, decided before any session is built: the metadata is read
        # from the protobuf's top level without the onnx package (importing it costs over a second).
        # A file that does not read that way gets its session first, so its error is ONNX Runtime's.
        session, own = None, _peek_meta(data)
        if own is None:
            session = session_of(data, self.path)
            own = meta_from_props(session.get_modelmeta().custom_metadata_map, self.path)
        choice = choose_onnx(self.path, model_id, own, self.precision, use_cuda, self.cpu or detect_cpu(), _file_meta)
        source = choice.path
        if source != self.path:  # the int8 sibling, or the float source of an int8 artifact
            data = source.read_bytes()
            model_id = model_id_of(data)
            session = None
        if choice.upcast:  # an FP16 graph run as FP32 (asked for): converted with the onnx package
            from .convert import float32_model

            data = float32_model(_parse_onnx(data, source)).SerializeToString()
            session = None
        if session is None:
            session = session_of(data, source)
        meta = meta_from_props(session.get_modelmeta().custom_metadata_map, source)
        self._check_graph(session, meta)
        self._session = session
        self._outputs = [o.name for o in session.get_outputs()]
        self.has_embedding = EMBEDDING_NAME in self._outputs
        self.device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._provider = session.get_providers()[0]
        self._set_meta(meta, model_id)
        self.choice = choice
        self._loaded = True
        return self

    def device_name(self) -> str:
        where = gpu_name() if self.device == "cuda" else cpu_name()
        ran = f"; {self.choice.words()}" if self.choice is not None else ""
        return f"onnxruntime {getattr(self, '_provider', 'CPUExecutionProvider')} on {where}{ran}"

    def _check_graph(self, session: Any, meta: ArtifactMeta) -> None:
        inputs = session.get_inputs()
        s = meta.input_size
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(uint8)":
            got = [(i.name, i.type) for i in inputs]
            raise ArtifactError(f"{self.path}: expected one uint8 input {INPUT_NAME!r}, found {got}")
        if list(inputs[0].shape[1:]) != [s, s, 3]:
            raise ArtifactError(
                f"{self.path}: input shape {inputs[0].shape} does not match the metadata ([N,{s},{s},3])"
            )
        outputs = {o.name: o for o in session.get_outputs()}
        if SCORE_NAME not in outputs:
            raise ArtifactError(f"{self.path}: the graph has no {SCORE_NAME!r} output")
        if (ATTENTION_NAME in outputs) != (meta.attention_size > 0):
            raise ArtifactError(
                f"{self.path}: attention output and metadata disagree "
                f"(attention_size={meta.attention_size}, outputs {sorted(outputs)})"
            )

    def _run(self, crops: np.ndarray) -> Prediction:
        out = dict(zip(self._outputs, self._session.run(self._outputs, {INPUT_NAME: crops}), strict=True))
        return Prediction(
            score=out[SCORE_NAME], attention=out.get(ATTENTION_NAME), embedding=out.get(EMBEDDING_NAME)
        )

    def close(self) -> None:
        self._session = None
        super().close()


registry.register(registry.ONNX, registry.matches_onnx, OrtBackend)


# -- torch -----------------------------------------------------------------------------------------
# What the training stack provides: (the LQ branch, float32 on the CPU, eval mode; its metadata as
# ``acfd.train.model.artifact_meta`` gives it) for a run directory or its model.safetensors. The
# branch behaves as ``acfd.train.model.LQBranch``: normalised crops [N,3,S,S] in, (embedding or
# logits, attention map or None) out. Typed loosely so that this module imports no torch.
RunLoader = Callable[[Path], tuple[Any, ArtifactMeta]]


@dataclass(frozen=True)
class TorchRunFactory:
    """The ``torch-run`` kind's factory: a :class:`TorchBackend` that builds its network with ``load_run``.

    The training stack registers one (``registry.register(TORCH_RUN, matches_run, TorchRunFactory(...))``).
    """

    load_run: RunLoader
    takes_precision: ClassVar[bool] = True

    def __call__(
        self, path: Path, device: str = "auto", max_batch: int | None = None, precision: str = "auto",
        cpu: CpuFeatures | None = None,
    ) -> TorchBackend:
        return TorchBackend(path, device=device, max_batch=max_batch, loader=self.load_run, precision=precision, cpu=cpu)


def run_loader() -> RunLoader:
    """The registered ``torch-run`` kind's :data:`RunLoader` (importing its provider when needed)."""
    factory = registry.factory(registry.TORCH_RUN)
    if not isinstance(factory, TorchRunFactory):
        raise ArtifactError(
            f"the {registry.TORCH_RUN!r} model kind is registered with {factory!r}, not a TorchRunFactory: "
            "no loader for training runs"
        )
    return factory.load_run


def load_branch(source: Path, loader: RunLoader | None = None) -> tuple[Any, ArtifactMeta]:
    """(LQ branch, metadata) of a run through ``loader`` (default: the registered one).

    A run the training stack refuses (its ModelError/ConfigError) is an :class:`ArtifactError`; so is
    a training stack whose own imports fail (e.g. timm missing).
    """
    loader = loader or run_loader()
    try:
        return loader(Path(source))
    except ArtifactError:
        raise
    except AcfdError as e:  # the training stack's ModelError/ConfigError: the same kind of failure as ours
        raise ArtifactError(str(e)) from e
    except ImportError as e:
        raise ArtifactError(
            f"running a training checkpoint needs the training stack (acfd.train): {_first_line(e)}; "
            "or export it with `acfd-train export` and load the .onnx"
        ) from e


def resolve_run(path: Path) -> tuple[Path, list[Path]]:
    """(what the run loader takes, the files whose bytes identify the model)."""
    path = Path(path)
    if path.is_dir():
        weights, config = path / "model.safetensors", path / "config.json"
        if not weights.is_file() or not config.is_file():
            raise ArtifactError(
                f"{path} is not a training run (needs config.json and model.safetensors) nor a model file"
            )
        # The card is part of what a model is (its validation state is stored per model id), as it is
        # inside an ONNX file: a run whose card.json changed is a new model for the store.
        card = path / "card.json"
        return path, [config, weights] + ([card] if card.is_file() else [])
    if path.suffix.lower() == ".safetensors":
        if not path.is_file():
            raise ArtifactError(f"model file {path} does not exist")
        return path, [path]  # the training config travels in the safetensors header
    raise ArtifactError(f"{path}: not a model artifact (.onnx, .plan/.engine, .safetensors or a run directory)")


class TorchBackend(Backend):
    """A training checkpoint run by PyTorch: CPU fp32, or CUDA fp16 with channels_last.

    ``loader`` builds the network from the run (default: the one the training stack registered for
    the ``torch-run`` kind, see :func:`run_loader`). The crops go through the same
    :class:`acfd.engine.scorer.CropScorer` wrapper the ONNX export traces, so the preprocessing is
    identical on every backend. ``precision``: "auto" (CPU fp32, CUDA fp16), "fp32", or "bf16" (the
    branch cast to bfloat16, channels_last, run by oneDNN; only on a CPU with AVX-512 BF16 or AMX-BF16,
    :func:`acfd.engine.precision.choose_torch`); "int8" is refused.
    """

    name = "torch"
    takes_precision = True

    def __init__(
        self, path: Path, device: str = "auto", max_batch: int | None = None, loader: RunLoader | None = None,
        precision: str = "auto", cpu: CpuFeatures | None = None,
    ) -> None:
        super().__init__(path, device, max_batch)
        self.precision = check_precision(precision)
        self.cpu = cpu
        self._loader = loader
        self._scorer: Any = None
        self._torch: Any = None

    def load(self) -> TorchBackend:
        import torch

        from .scorer import CropScorer

        source, files = resolve_run(self.path)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ArtifactError("device 'cuda' asked for, but torch sees no CUDA GPU")
        use_cuda = self.device in ("auto", "cuda") and torch.cuda.is_available()
        choice = choose_torch(self.precision, use_cuda, self.cpu or detect_cpu(), self.path)
        branch, meta = load_branch(source, self._loader)
        h = hashlib.sha256()
        for f in files:
            h.update(f.read_bytes())
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(choice.precision, torch.float32)
        scorer = CropScorer(branch, meta, compute_dtype=dtype).eval()
        if use_cuda:
            # NHWC memory layout: the uint8 crops arrive NHWC, and cuDNN's fp16 tensor-core kernels want it.
            scorer = scorer.to("cuda").to(memory_format=torch.channels_last)
        elif choice.precision == "bf16":
            scorer = scorer.to(memory_format=torch.channels_last)  # oneDNN's bf16 convolutions want NHWC too
        self._torch = torch
        self._scorer = scorer
        self.device = "cuda" if use_cuda else "cpu"
        extra = dict(meta.extra)
        if meta.model_id:  # artifact_meta's id is the weights' sha256; ours hashes config + weights
            extra["weights_sha256"] = meta.model_id
        meta = replace(meta, precision=choice.precision, extra=extra)
        self._set_meta(meta, h.hexdigest()[:16])
        self.choice = choice
        self._loaded = True
        return self

    def device_name(self) -> str:
        ran = f"; {self.choice.words()}" if self.choice is not None else ""
        return f"{super().device_name()}{ran}"

    def _run(self, crops: np.ndarray) -> Prediction:
        torch = self._torch
        x = torch.from_numpy(crops)
        if self.device == "cuda":
            x = x.pin_memory().to("cuda", non_blocking=True)
        with torch.inference_mode():
            out = dict(zip(self._scorer.output_names, self._scorer(x), strict=True))
        attention = out.get(ATTENTION_NAME)
        return Prediction(
            score=out[SCORE_NAME].float().cpu().numpy(),
            attention=None if attention is None else attention.float().cpu().numpy(),
        )

    def close(self) -> None:
        self._scorer = None
        super().close()
