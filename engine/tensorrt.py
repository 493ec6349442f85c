"""TensorRT: build a serialised engine from an exported ONNX, and run it.

Follows the TensorRT 11 Python API and still runs on 10.x (docs/engines.md cites the pages):

* Precision lives in the ONNX. TensorRT 11 removed ``BuilderFlag.FP16`` and weak typing; networks are
  strongly typed, so an FP16 engine comes from the FP16 graph ``acfd-train export --fp16`` writes. On
  10.x the network is created with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (accepted and
  ignored by 11.x). A plan asked to be FP16 whose network has no FP16 tensor is an error, never a
  silent FP32 engine.
* One optimisation profile over the batch dimension, an optional timing cache (read, then updated),
  ``build_serialized_network``.
* Runtime: named I/O tensors, ``set_input_shape`` / ``set_tensor_address`` on device buffers that are
  torch CUDA tensors, ``execute_async_v3`` on a torch CUDA stream. No pycuda.

The ``.plan`` file is a small container, so the engine carries its metadata::

    b"ACFDPLAN" | u32 container version | u32 header length | header JSON (UTF-8) | engine bytes

The header holds the ONNX's :class:`ArtifactMeta`, the TensorRT version and GPU it was built for, the
batch profile and the engine's length and sha256. A plan only runs with the TensorRT version and GPU
model that built it; elsewhere loading fails with a message that says to rebuild.

``tensorrt`` is imported inside the functions that need it: without it, building says which extra to
install (``pip install 'acfd[tensorrt]'``). This module registers the ``tensorrt`` kind
(:mod:`acfd.engine.registry`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from acfd.schemas.artifact import ArtifactError, ArtifactMeta
from acfd.schemas.errors import AcfdError

from . import registry
from .backends import Backend, InputError, Prediction, model_id_of, read_onnx_meta
from .signature import ATTENTION_NAME, EMBEDDING_NAME, INPUT_NAME, SCORE_NAME

MAGIC = b"ACFDPLAN"
CONTAINER_VERSION = 1
_PREFIX = struct.Struct("<8sII")  # magic, container version, header length
INSTALL_HINT = "pip install 'acfd[tensorrt]'"


class TensorRTUnavailable(AcfdError):
    """TensorRT (or the CUDA GPU it needs) is not available on this machine."""


@dataclass(frozen=True)
class PlanHeader:
    """What a .plan carries besides the engine."""

    meta: dict[str, Any]
    tensorrt: str
    gpu: str
    compute_capability: str
    min_batch: int
    opt_batch: int
    max_batch: int
    engine_bytes: int
    engine_sha256: str
    onnx_sha256: str = ""
    created: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def artifact_meta(self) -> ArtifactMeta:
        return ArtifactMeta.from_dict(self.meta)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, source: Path) -> PlanHeader:
        try:
            d = json.loads(data.decode())
            known = {f.name for f in fields(cls)}
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            return cls(**{k: v for k, v in d.items() if k in known})
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{source}: the plan header is corrupt ({e}); rebuild the engine") from e


def write_plan(path: Path, header: PlanHeader, engine: bytes) -> Path:
    """Write the container (atomically: a crash never leaves a half plan under the final name)."""
    path = Path(path)
    head = header.to_json()
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(_PREFIX.pack(MAGIC, CONTAINER_VERSION, len(head)))
            f.write(head)
            f.write(engine)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when writing failed (disk full): never a stray .partial
    return path


def read_plan(path: Path) -> tuple[PlanHeader, bytes]:
    """(header, engine bytes) of a .plan written by :func:`write_plan`, or a clear ArtifactError."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"engine file {path} does not exist")
    data = path.read_bytes()
    if len(data) < _PREFIX.size or data[:8] != MAGIC:
        raise ArtifactError(
            f"{path} is not an acfd TensorRT plan (no acfd header); build engines with "
            "`acfd-train engine --onnx model.onnx --out model.plan`"
        )
    _, version, n = _PREFIX.unpack_from(data)
    if version > CONTAINER_VERSION:
        raise ArtifactError(f"{path} was written by a newer acfd (plan container v{version}); upgrade acfd")
    if _PREFIX.size + n > len(data):
        raise ArtifactError(f"{path} is truncated (header cut short); rebuild the engine")
    header = PlanHeader.from_json(data[_PREFIX.size : _PREFIX.size + n], path)
    engine = data[_PREFIX.size + n :]
    if len(engine) != header.engine_bytes:
        raise ArtifactError(
            f"{path} is truncated or padded: {len(engine)} engine bytes, the header says "
            f"{header.engine_bytes}; rebuild the engine"
        )
    if hashlib.sha256(engine).hexdigest() != header.engine_sha256:
        raise ArtifactError(f"{path} is corrupt (engine checksum mismatch); rebuild the engine")
    header.artifact_meta  # noqa: B018 - validates the metadata now, not at first use
    return header, engine


def check_compatible(header: PlanHeader, tensorrt_version: str, gpu: str, source: Path) -> None:
    """A plan runs only with the TensorRT version and GPU model it was built for."""
    problems = []
    if header.tensorrt != tensorrt_version:
        problems.append(f"TensorRT {header.tensorrt} (this machine has {tensorrt_version})")
    if header.gpu != gpu:
        problems.append(f"GPU {header.gpu!r} (this machine has {gpu!r})")
    if problems:
        raise ArtifactError(
            f"{source} was built for {' and '.join(problems)}; rebuild it here with "
            "`acfd-train engine --onnx model.onnx --out model.plan` (or use the .onnx)"
        )


# -- TensorRT plumbing -----------------------------------------------------------------------------
def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailable` naming the extra to install."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # OSError: the package is there, its CUDA libraries are not
        raise TensorRTUnavailable(f"TensorRT is not installed ({INSTALL_HINT}; needs an NVIDIA GPU): {e}") from e
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is too old: acfd needs 10.x or 11.x ({INSTALL_HINT})")
    return trt


def _cuda(torch: Any) -> int:
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT needs a CUDA GPU and torch sees none; use the .onnx on CPU")
    return int(torch.cuda.current_device())


def network_flags(trt: Any) -> int:
    """Creation flags of a strongly typed network: the flag on 10.x, nothing needed on 11.x."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is not None:
        return 1 << int(flag)
    if int(str(trt.__version__).split(".")[0]) >= 11:
        return 0  # every network is strongly typed
    raise TensorRTUnavailable(f"TensorRT {trt.__version__} has no strongly typed networks; install >= 10.1")


def network_dtypes(network: Any) -> set[Any]:
    """The data types of every layer output of a parsed network."""
    kinds = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            kinds.add(layer.get_output(j).dtype)
    return kinds


def check_build_options(min_batch: int, opt_batch: int, max_batch: int, workspace_gb: float | None) -> None:
    """The batch profile and workspace limit of a build, checked before any slow work."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise AcfdError(
            f"batch sizes must satisfy 1 <= min <= opt <= max, got {min_batch}, {opt_batch}, {max_batch}"
        )
    if workspace_gb is not None and workspace_gb <= 0:
        raise AcfdError(f"workspace_gb must be positive, not {workspace_gb}")


def build_engine(
    onnx_path: Path,
    out: Path,
    min_batch: int = 1,
    opt_batch: int = 32,
    max_batch: int = 128,
    workspace_gb: float | None = None,
    timing_cache: Path | None = None,
    precision: str | None = None,
) -> Path:
    """Build a TensorRT engine for this GPU from an exported ONNX and write it as a .plan container.

    ``precision`` ("fp16"/"fp32"): what the caller asks for; it must be the ONNX's own precision
    (TensorRT 11 takes precision from the graph). ``timing_cache``: a file read if present and written
    back, so rebuilds on the same GPU skip kernel timing.
    """
    check_build_options(min_batch, opt_batch, max_batch, workspace_gb)
    onnx_path = Path(onnx_path)
    meta = read_onnx_meta(onnx_path)
    if precision is not None and precision != meta.precision:
        hint = "export it with `acfd-train export --fp16`" if precision == "fp16" else "export it without --fp16"
        raise AcfdError(
            f"{onnx_path} is an {meta.precision} graph and {precision} was asked for; TensorRT takes the "
            f"precision from the ONNX: {hint}"
        )
    trt = import_tensorrt()
    import torch

    device = _cuda(torch)
    data = onnx_path.read_bytes()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT cannot parse {onnx_path}: {errors or 'unknown error'}")
    s = meta.input_size
    if network.num_inputs != 1 or network.get_input(0).name != INPUT_NAME:
        raise ArtifactError(f"{onnx_path}: expected one input named {INPUT_NAME!r}")
    if network.get_input(0).dtype != trt.DataType.UINT8:
        raise ArtifactError(f"{onnx_path}: input {INPUT_NAME!r} is {network.get_input(0).dtype}, not UINT8")
    has_half = trt.DataType.HALF in network_dtypes(network)
    if meta.precision == "fp16" and not has_half:
        raise ArtifactError(f"{onnx_path} claims fp16 but its network has no FP16 tensor; re-export it")
    if meta.precision == "fp32" and has_half:
        raise ArtifactError(f"{onnx_path} claims fp32 but its network has FP16 tensors; re-export it")

    config = builder.create_builder_config()
    if workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (min_batch, s, s, 3), (opt_batch, s, s, 3), (max_batch, s, s, 3))
    config.add_optimization_profile(profile)
    if timing_cache is not None:
        timing_cache = Path(timing_cache)
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        if not config.set_timing_cache(cache, False):  # a cache from another GPU/version: start afresh
            config.set_timing_cache(config.create_timing_cache(b""), False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtifactError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    engine = bytes(memoryview(serialized))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))

    major, minor = torch.cuda.get_device_capability(device)
    header = PlanHeader(
        meta=meta.to_dict(),
        tensorrt=str(trt.__version__),
        gpu=torch.cuda.get_device_name(device),
        compute_capability=f"{major}.{minor}",
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        engine_bytes=len(engine),
        engine_sha256=hashlib.sha256(engine).hexdigest(),
        onnx_sha256=hashlib.sha256(data).hexdigest(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return write_plan(Path(out), header, engine)


# -- runtime ---------------------------------------------------------------------------------------
class TensorRTBackend(Backend):
    """A .plan on its GPU: uint8 crops are copied through pinned memory into a torch CUDA buffer;
    the engine writes its outputs into preallocated torch CUDA tensors; one CUDA stream."""

    name = "tensorrt"

    def __init__(self, path: Path, device: str = "auto", max_batch: int | None = None) -> None:
        super().__init__(path, device, max_batch)
        self.header: PlanHeader | None = None
        self._ctx: Any = None
        self._engine: Any = None

    def load(self) -> TensorRTBackend:
        header, engine_bytes = read_plan(self.path)  # a bad file is reported before TensorRT is needed
        if self.device == "cpu":
            raise ArtifactError(f"{self.path} is a TensorRT engine: it runs on a CUDA GPU only (use the .onnx on CPU)")
        trt = import_tensorrt()
        import torch

        dev = _cuda(torch)
        check_compatible(header, str(trt.__version__), torch.cuda.get_device_name(dev), self.path)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise ArtifactError(f"TensorRT could not deserialize {self.path}; rebuild the engine")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [INPUT_NAME] or SCORE_NAME not in outputs:
            raise ArtifactError(f"{self.path}: unexpected engine I/O {names}")
        meta = header.artifact_meta
        s = meta.input_size
        profile_max = int(engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][0])
        self.max_batch = min(self.max_batch or profile_max, profile_max)
        dtypes = {
            trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
            trt.DataType.UINT8: torch.uint8, trt.DataType.INT32: torch.int32,
        }
        ctx = engine.create_execution_context()
        cuda = torch.device("cuda", dev)
        b = self.max_batch
        self._host = torch.empty((b, s, s, 3), dtype=torch.uint8).pin_memory()
        self._input = torch.empty((b, s, s, 3), dtype=torch.uint8, device=cuda)
        self._outputs: dict[str, Any] = {}
        for name in outputs:
            shape = [b if d < 0 else int(d) for d in engine.get_tensor_shape(name)]
            self._outputs[name] = torch.empty(shape, dtype=dtypes[engine.get_tensor_dtype(name)], device=cuda)
        # Addresses never change: a batch of n uses the first n rows of each buffer.
        ctx.set_tensor_address(INPUT_NAME, self._input.data_ptr())
        for name, buf in self._outputs.items():
            ctx.set_tensor_address(name, buf.data_ptr())
        self._stream = torch.cuda.Stream(device=cuda)
        self._torch, self._engine, self._ctx = torch, engine, ctx
        self.header = header
        self.has_embedding = EMBEDDING_NAME in outputs
        self.device = "cuda"
        self._set_meta(meta, model_id_of(self.path.read_bytes()))
        self._loaded = True
        return self

    def _run(self, crops: np.ndarray) -> Prediction:
        n = crops.shape[0]
        host = self._host[:n]
        host.numpy()[...] = crops
        with self._torch.cuda.stream(self._stream):
            self._input[:n].copy_(host, non_blocking=True)
        return self._execute(n)

    def infer_cuda(self, crops: Any) -> Prediction:
        """Like :meth:`infer` for a torch uint8 tensor [N,S,S,3] already on this GPU (GPU decoding):
        a device-to-device copy into the engine's input buffer, no trip through host memory."""
        if not self._loaded:
            raise ArtifactError(f"{self.name} backend for {self.path} is not loaded (call load())")
        torch, s = self._torch, self.meta.input_size
        if not isinstance(crops, torch.Tensor) or crops.dtype != torch.uint8 or crops.device != self._input.device:
            raise InputError(f"infer_cuda takes a uint8 torch tensor on {self._input.device}")
        if crops.ndim != 4 or tuple(crops.shape[1:]) != (s, s, 3):
            raise InputError(f"crops must be a batch [N,{s},{s},3] (NHWC RGB), got shape {tuple(crops.shape)}")
        parts = []
        for i in range(0, crops.shape[0], self.max_batch or 1):
            chunk = crops[i : i + (self.max_batch or 1)]
            self._stream.wait_stream(torch.cuda.current_stream(self._input.device))  # the producer's work
            with torch.cuda.stream(self._stream):
                self._input[: chunk.shape[0]].copy_(chunk, non_blocking=True)
            parts.append(self._execute(chunk.shape[0]))
        return Prediction.concat(parts) if parts else self._empty()

    def _execute(self, n: int) -> Prediction:
        """Run the engine on the first n rows of the input buffer; outputs back to host float32."""
        torch, s = self._torch, self.meta.input_size
        with torch.cuda.stream(self._stream):
            if not self._ctx.set_input_shape(INPUT_NAME, (n, s, s, 3)):
                raise ArtifactError(f"{self.path}: batch {n} is outside the engine's profile")
            if not self._ctx.execute_async_v3(self._stream.cuda_stream):
                raise ArtifactError(f"TensorRT execution of {self.path} failed")
            out = {k: v[:n].float().to("cpu", non_blocking=False) for k, v in self._outputs.items()}
        self._stream.synchronize()
        att = out.get(ATTENTION_NAME)
        emb = out.get(EMBEDDING_NAME)
        return Prediction(
            score=out[SCORE_NAME].numpy(),
            attention=None if att is None else att.numpy(),
            embedding=None if emb is None else emb.numpy(),
        )

    def close(self) -> None:
        # drop every reference to the engine and its buffers (pinned host and device memory)
        self._ctx = self._engine = self._runtime = self._host = self._input = None
        self._outputs = {}
        super().close()


# TensorRT itself is imported in TensorRTBackend.load(): registering the kind costs nothing.
registry.register(registry.TENSORRT, registry.matches_plan, TensorRTBackend)
