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

``precision`` ("auto", "fp32", "int8", "bf16"; :mod:`acfd.engine.precision`) is handed to the backends
that choose one (ONNX Runtime, torch); a TensorRT plan runs at the precision it was built with and
refuses any other; other kinds take only "auto".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acfd.schemas.artifact import ArtifactError

from . import registry
from .backends import Backend, InputError, Prediction, check_device
from .precision import ARTIFACT, PrecisionError, check_plan, check_precision

__all__ = ["Backend", "InputError", "Prediction", "kind_of", "load"]


def kind_of(path: str | Path) -> str:
    """The registered kind that would load ``path`` ("onnx", "tensorrt", "torch-run", ...).

    Decided by the path alone (the file is read on load); imports no backend.
    """
    return registry.match(Path(path)).name


def load(
    path: str | Path, device: str = "auto", max_batch: int | None = None, precision: str = "auto", **options: Any
) -> Backend:
    """Load a model artifact for inference on ``device`` ("auto", "cpu" or "cuda").

    ``max_batch`` caps the crops per model call (``infer`` splits larger batches); TensorRT plans
    are also capped by their optimisation profile. ``precision``: see the module docstring; what ran
    and why is ``backend.choice`` and the end of ``backend.device_name()``. ``options`` go to the
    kind's backend (e.g. ``threads=`` for ONNX Runtime).
    """
    check_device(device)
    check_precision(precision)
    path = Path(path)
    kind = registry.match(path)
    factory = registry.factory(kind.name, path)
    if getattr(factory, "takes_precision", False):
        options["precision"] = precision
    elif precision not in ("auto", ARTIFACT):
        if kind.name != registry.TENSORRT:
            raise PrecisionError(
                f"{path} is {kind.describes}: it runs at its own precision; --precision {precision} applies to "
                ".onnx files and training runs"
            )
        from .tensorrt import read_plan

        check_plan(path, read_plan(path)[0].artifact_meta.precision, precision)
    backend = factory(path, device=device, max_batch=max_batch, **options)
    if not isinstance(backend, Backend):
        raise ArtifactError(f"the {kind.name!r} model kind built {type(backend).__name__}, not an acfd Backend")
    return backend.load()
