"""One way to run any acfd model artifact: ``load(path).infer(crops)``.

``load`` looks the artifact's kind up in :mod:`acfd.engine.registry` (by its file suffix, or a folder)
and builds that kind's backend:

* ``tensorrt``: ``.plan`` / ``.engine`` -> TensorRT (CUDA GPU; the plan must have been built on this
  GPU model with this TensorRT version),
* ``onnx``: ``.onnx`` -> ONNX Runtime (CPU, or its CUDA provider when installed),
* ``torch-run``: a training run directory or its ``.safetensors`` -> PyTorch (the training stack
  provides this kind; the registry imports it by name when a run is loaded),
* any kind registered with :func:`acfd.engine.registry.register`.

Every backend takes uint8 RGB crops [N,S,S,3] (S from ``backend.meta.input_size``) and returns a
:class:`Prediction` (score [N], attention [N,h,w] or None). A missing, garbage, truncated or wrong-kind
file raises :class:`~acfd.schemas.artifact.ArtifactError` with a one-line reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acfd.schemas.artifact import ArtifactError

from . import registry
from .backends import Backend, InputError, Prediction, check_device

__all__ = ["Backend", "InputError", "Prediction", "kind_of", "load"]


def kind_of(path: str | Path) -> str:
    """The registered kind that would load ``path`` ("onnx", "tensorrt", "torch-run", ...).

    Decided by the path alone (the file is read on load); imports no backend.
    """
    return registry.match(Path(path)).name


def load(path: str | Path, device: str = "auto", max_batch: int | None = None, **options: Any) -> Backend:
    """Load a model artifact for inference on ``device`` ("auto", "cpu" or "cuda").

    ``max_batch`` caps the crops per model call (``infer`` splits larger batches); TensorRT plans
    are also capped by their optimisation profile. ``options`` go to the kind's backend (e.g.
    ``threads=`` for ONNX Runtime).
    """
    check_device(device)
    path = Path(path)
    kind = registry.match(path)
    backend = registry.factory(kind.name, path)(path, device=device, max_batch=max_batch, **options)
    if not isinstance(backend, Backend):
        raise ArtifactError(f"the {kind.name!r} model kind built {type(backend).__name__}, not an acfd Backend")
    return backend.load()
