"""Which backend runs which artifact: a registry of model kinds, and the plugin hook that fills it.

A *kind* is a name, a matcher (a cheap test on the path: its suffix, or whether it is a folder; never
the file's contents) and a factory, ``factory(path, device=..., max_batch=..., **options)``, that
returns an unloaded backend (:class:`acfd.engine.backends.Backend`). :func:`acfd.engine.runtime.load`
takes the first kind, in registration order, whose matcher accepts the path.

A kind may be *declared* before its factory exists: :func:`declare` names the module that provides it
(the plugin). The first time the kind is needed, that module is imported by name
(``importlib.import_module``), and importing it calls :func:`register` with the factory. This works like
a Python entry point, without installed metadata, and is how a package outside the engine adds a
kind without the engine importing it. The kinds declared here:

* ``onnx`` (``.onnx``) - provided by :mod:`acfd.engine.backends` (ONNX Runtime);
* ``tensorrt`` (``.plan``, ``.engine``) - provided by :mod:`acfd.engine.tensorrt`;
* ``torch-run`` (a training run directory or its ``.safetensors``) - provided by the training stack,
  ``acfd.train.engine_loader``, which knows how to build the network from a run. ``acfd.engine`` never
  imports ``acfd.train`` (tests/test_boundaries.py checks it), and a scanning machine without the
  training stack gets one line saying that loading a run needs it.

Importing this module imports nothing of ours.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from acfd.schemas.artifact import ArtifactError

ONNX = "onnx"
TENSORRT = "tensorrt"
TORCH_RUN = "torch-run"
PLAN_SUFFIXES = (".plan", ".engine")


class Loadable(Protocol):
    """What a factory returns: a backend whose ``load()`` reads the artifact and returns the backend."""

    def load(self) -> Any: ...


Matcher = Callable[[Path], bool]
Factory = Callable[..., Loadable]


@dataclass(frozen=True)
class Kind:
    """One kind of artifact: how to recognise it, and how to build its backend."""

    name: str
    matches: Matcher
    describes: str  # for messages: "an .onnx file for ONNX Runtime"
    factory: Factory | None = None  # None: declared, not yet provided
    provider: str = ""  # module that registers the factory when imported (the plugin hook)
    needs: str = ""  # what importing the provider needs, for the message when it cannot be imported
    hint: str = ""  # what to do instead, appended to that message


# Insertion order is match order; register() of a kind already present keeps its place.
_KINDS: dict[str, Kind] = {}


def _check_name(name: str) -> None:
    if not name or not isinstance(name, str):
        raise ValueError(f"a model kind needs a non-empty name, not {name!r}")


def declare(
    name: str, matcher: Matcher, describes: str, provider: str, needs: str = "", hint: str = ""
) -> Kind:
    """Announce kind ``name``, provided by the module ``provider`` (imported by name on first use).

    A kind that is already registered with a factory is left as it is.
    """
    _check_name(name)
    current = _KINDS.get(name)
    if current is not None and current.factory is not None:
        return current
    kind = Kind(name=name, matches=matcher, describes=describes, provider=provider, needs=needs, hint=hint)
    _KINDS[name] = kind
    return kind


def register(name: str, matcher: Matcher, factory: Factory, describes: str = "") -> Kind:
    """Register (or replace) kind ``name``: paths that ``matcher`` accepts are loaded by ``factory``.

    ``factory(path, device=..., max_batch=..., **options)`` returns an unloaded backend. A provider
    module calls this when imported; replacing a declared kind keeps its place in the match order,
    its description (unless ``describes`` is given) and its provider.
    """
    _check_name(name)
    if not callable(matcher) or not callable(factory):
        raise TypeError(f"model kind {name!r}: matcher and factory must be callables")
    current = _KINDS.get(name)
    if current is None:
        kind = Kind(name=name, matches=matcher, describes=describes or name, factory=factory)
    else:
        kind = replace(current, matches=matcher, factory=factory, describes=describes or current.describes)
    _KINDS[name] = kind
    return kind


def unregister(name: str) -> None:
    """Forget kind ``name`` (declared or registered); unknown names are ignored."""
    _KINDS.pop(name, None)


def kinds() -> tuple[str, ...]:
    """The names of every declared or registered kind, in match order."""
    return tuple(_KINDS)


def known_kinds() -> str:
    """The kinds for a message: ``onnx (an .onnx file for ONNX Runtime), tensorrt (...), ...``."""
    return ", ".join(f"{k.name} ({k.describes})" for k in _KINDS.values()) or "none"


def match(path: str | Path) -> Kind:
    """The kind of the artifact at ``path`` (by matcher only: the provider is not imported).

    A path no kind accepts is an :class:`ArtifactError`: "does not exist" when there is nothing there,
    else "unknown model kind" with the list of kinds.
    """
    path = Path(path)
    for kind in list(_KINDS.values()):
        if kind.matches(path):
            return kind
    if not path.exists():
        raise ArtifactError(f"model {path} does not exist")
    suffix = path.suffix.lower() or "(no suffix)"
    raise ArtifactError(f"{path}: unknown model kind {suffix!r}; registered kinds: {known_kinds()}")


def factory(name: str, path: str | Path | None = None) -> Factory:
    """The factory of kind ``name``, importing its provider (the plugin hook) when it has none yet.

    ``path`` only names the artifact in the message when the provider cannot be imported.
    """
    kind = _KINDS.get(name)
    if kind is None:
        raise ArtifactError(f"unknown model kind {name!r}; registered kinds: {known_kinds()}")
    if kind.factory is not None:
        return kind.factory
    what = f"{path} is {kind.describes}" if path is not None else f"model kind {name!r} ({kind.describes})"
    try:
        importlib.import_module(kind.provider)  # the plugin import: by name, so no static dependency
    except ImportError as e:
        needs = kind.needs or kind.provider
        hint = f"; {kind.hint}" if kind.hint else ""
        raise ArtifactError(
            f"{what}: loading it needs {needs}, which cannot be imported here ({_first_line(e)}){hint}"
        ) from e
    provided = _KINDS.get(name)
    if provided is None or provided.factory is None:
        raise ArtifactError(f"{what}: {kind.provider} was imported but did not register the {name!r} kind")
    return provided.factory


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


# -- the kinds acfd knows --------------------------------------------------------------------------
def matches_onnx(path: Path) -> bool:
    return path.suffix.lower() == ".onnx"


def matches_plan(path: Path) -> bool:
    return path.suffix.lower() in PLAN_SUFFIXES


def matches_run(path: Path) -> bool:
    # Any folder: a folder that is not a run gets the torch backend's "not a training run" message.
    return path.suffix.lower() == ".safetensors" or path.is_dir()


declare(ONNX, matches_onnx, "an .onnx file for ONNX Runtime", provider="acfd.engine.backends")
declare(TENSORRT, matches_plan, "a .plan/.engine file for TensorRT", provider="acfd.engine.tensorrt")
declare(
    TORCH_RUN,
    matches_run,
    "a training run directory or its .safetensors, for PyTorch",
    provider="acfd.train.engine_loader",
    needs="the training stack (acfd.train)",
    hint="or export the run with `acfd-train export` and load the .onnx",
)
