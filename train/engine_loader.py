"""The training stack's plugin for the engine: the ``torch-run`` model kind.

``acfd.engine`` runs training runs with its :class:`~acfd.engine.backends.TorchBackend` but never
imports ``acfd.train``; what it lacks is how to build the network from a run. Importing this module
registers the ``torch-run`` kind (:mod:`acfd.engine.registry`) with a loader that does it. It is
imported by ``acfd.train`` itself, and by the engine's registry by name the first time a run is
loaded in a process that has not imported ``acfd.train`` (e.g. ``acfd-scan --model RUN``).

The model code (torch, timm) is imported when a run is loaded, not when the kind is registered, so
``import acfd.train`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acfd.engine import registry
from acfd.engine.backends import TorchRunFactory
from acfd.schemas.artifact import ArtifactMeta


def load_branch(source: Path) -> tuple[Any, ArtifactMeta]:
    """(the LQ branch on the CPU in eval mode, its artifact metadata) of RUN/ or its model.safetensors."""
    from acfd.train.model import artifact_meta, load_run

    model, _cfg = load_run(Path(source), map_location="cpu")
    return model.lq_branch(), artifact_meta(Path(source))


registry.register(registry.TORCH_RUN, registry.matches_run, TorchRunFactory(load_branch))
