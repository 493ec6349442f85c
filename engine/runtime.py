"""One way to run any acfd model artifact: ``load(path).infer(crops)``.

``load`` picks the backend from the artifact (its file suffix, or a folder):

* ``.plan`` / ``.engine`` -> TensorRT (CUDA GPU; the plan must have been built on this GPU model
  with this TensorRT version),
* ``.onnx`` -> ONNX Runtime (CPU, or its CUDA provider when installed),
* a training run directory or its ``.safetensors`` -> PyTorch (needs the training stack).

Every backend takes uint8 RGB crops [N,S,S,3] (S from ``backend.meta.input_size``) and returns a
:class:`Prediction` (score [N], attention [N,h,w] or None). A missing, garbage, truncated or wrong-kind
file raises :class:`~acfd.schemas.artifact.ArtifactError` with a one-line reason.
"""

from __future__ import annotations

from pathlib import Path

from acfd.schemas.artifact import ArtifactError

from .backends import Backend, InputError, OrtBackend, Prediction, TorchBackend, check_device

__all__ = ["Backend", "InputError", "Prediction", "backend_class", "load"]

PLAN_SUFFIXES = (".plan", ".engine")


def backend_class(path: Path) -> type[Backend]:
    """The backend class for an artifact path (by its kind; the file itself is checked on load)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PLAN_SUFFIXES:
        from .tensorrt import TensorRTBackend

        return TensorRTBackend
    if suffix == ".onnx":
        return OrtBackend
    if suffix == ".safetensors" or path.is_dir():
        return TorchBackend
    if not path.exists():
        raise ArtifactError(f"model {path} does not exist")
    raise ArtifactError(
        f"{path}: unknown model kind {suffix or '(no suffix)'!r}; expected .plan/.engine (TensorRT), "
        ".onnx (ONNX Runtime), .safetensors or a training run directory (PyTorch)"
    )


def load(path: Path, device: str = "auto", max_batch: int | None = None) -> Backend:
    """Load a model artifact for inference on ``device`` ("auto", "cpu" or "cuda").

    ``max_batch`` caps the crops per model call (``infer`` splits larger batches); TensorRT plans
    are also capped by their optimisation profile.
    """
    check_device(device)
    return backend_class(Path(path))(Path(path), device=device, max_batch=max_batch).load()
