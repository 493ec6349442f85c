"""New metadata for an existing model artifact, written as a new file (never edited in place).

``acfd-scan validate`` records an evaluation in a model's card (and may set its threshold). The
model file it measured may be in use by a running scan, so the result goes to a *new* artifact next
to it; only the metadata differs, the graph or engine bytes are copied unchanged:

* ``.onnx``: the ``acfd.meta`` entry of ``metadata_props`` is replaced (and the threshold quoted in
  the ``doc_string``); every other property, the graph and its weights are kept as they were;
* ``.plan`` / ``.engine`` (the acfd TensorRT container, :mod:`acfd.engine.tensorrt`): the header's
  metadata is replaced, the engine bytes are copied (no TensorRT needed);
* a training run directory (``config.json`` + ``model.safetensors``): its card is the file
  ``RUN/card.json``, which is replaced atomically; the weights and config are not touched (the
  threshold of a run lives in its training config, so it cannot be changed here).

Every file is written under a temporary name in the target folder, read back and checked, and only
then moved to its final name; a new artifact never replaces an existing file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from acfd.schemas.artifact import META_KEY, ArtifactError, ArtifactMeta, threshold_problem
from acfd.schemas.card import CardError, ModelCard

from . import registry

KIND_ONNX = "onnx"
KIND_PLAN = "plan"
KIND_RUN = "run"
# The registry kinds whose artifacts have a place for a card, and the names used here for them.
_WRITABLE = {registry.ONNX: KIND_ONNX, registry.TENSORRT: KIND_PLAN, registry.TORCH_RUN: KIND_RUN}
RUN_CARD_FILE = "card.json"  # a training run's model card (the torch backend reads it)
_VALIDATED = re.compile(r"\.validated-\d{8}T\d{6}$")
# The threshold as export._finish quotes it in an ONNX doc_string.
_DOC_THRESHOLD = re.compile(r"(fake if score > )(\S+)")


def artifact_kind(path: str | os.PathLike[str]) -> str:
    """``onnx``, ``plan`` or ``run`` for an artifact whose metadata can be rewritten, else ArtifactError.

    The registry decides what the path is (as :func:`acfd.engine.runtime.load` would); this only says
    which of those kinds has a place for a new card.
    """
    p = Path(path)
    found = registry.match(p)  # "does not exist" / "unknown model kind" come from here
    kind = _WRITABLE.get(found.name)
    if kind is None:
        raise ArtifactError(f"{p} is {found.describes}: acfd cannot write a new model card into it")
    if kind == KIND_RUN:
        if p.is_dir():
            if not (p / "config.json").is_file() or not (p / "model.safetensors").is_file():
                raise ArtifactError(f"{p} is not a training run (needs config.json and model.safetensors)")
            return KIND_RUN
        if p.is_file():
            raise ArtifactError(
                f"{p}: a bare .safetensors file has no place for a new model card; give its run directory "
                "(with config.json) or an exported .onnx/.plan"
            )
    if not p.is_file():
        raise ArtifactError(f"model {p} does not exist")
    return kind


def default_output(path: str | os.PathLike[str], when: dt.datetime | None = None) -> Path:
    """``<stem>.validated-<UTC yyyymmddTHHMMSS><suffix>`` beside ``path`` (a run directory: itself).

    An earlier ``.validated-...`` tag in the stem is dropped, so names do not grow with each validation.
    """
    p = Path(path)
    if p.is_dir():
        return p / RUN_CARD_FILE
    when = when or dt.datetime.now(dt.timezone.utc)
    stamp = when.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    stem = _VALIDATED.sub("", p.stem)
    return p.with_name(f"{stem}.validated-{stamp}{p.suffix}")


def read_meta(path: str | os.PathLike[str]) -> ArtifactMeta:
    """The metadata stored in an ``.onnx`` or ``.plan`` file (no runtime is started)."""
    kind = artifact_kind(path)
    if kind == KIND_ONNX:
        from .backends import read_onnx_meta

        return read_onnx_meta(Path(path))
    if kind == KIND_PLAN:
        from .tensorrt import read_plan

        return read_plan(Path(path))[0].artifact_meta
    raise ArtifactError(f"{path} is a training run: its metadata comes from its config (acfd.train.model)")


def read_run_card(run: str | os.PathLike[str]) -> ModelCard | None:
    """The card of a training run directory (``RUN/card.json``), None when it has none."""
    f = Path(run) / RUN_CARD_FILE
    return _read_card_file(f) if f.is_file() else None


def _read_card_file(path: Path) -> ModelCard:
    try:
        return ModelCard.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, CardError) as e:
        raise ArtifactError(f"{path}: invalid model card ({e})") from e


# -- writing ---------------------------------------------------------------------------------------
def _tmp_for(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.{os.getpid()}.partial")


def _publish(tmp: Path, dst: Path) -> None:
    """Give ``tmp`` its final name ``dst`` atomically, refusing to replace an existing file."""
    try:
        os.link(tmp, dst)  # atomic and fails if dst exists, unlike os.replace
    except FileExistsError:
        raise ArtifactError(f"{dst} already exists; refusing to overwrite it (choose another --out)") from None
    except OSError:  # a file system without hard links: check, then rename
        if dst.exists():
            raise ArtifactError(f"{dst} already exists; refusing to overwrite it (choose another --out)") from None
        os.replace(tmp, dst)
    else:
        tmp.unlink()


def _check_target(src: Path, dst: Path) -> None:
    if dst.exists():
        raise ArtifactError(f"{dst} already exists; refusing to overwrite it (choose another --out)")
    if not dst.parent.is_dir():
        raise ArtifactError(f"cannot write {dst}: folder {dst.parent} does not exist")
    if dst.resolve() == src.resolve():
        raise ArtifactError(f"{dst} is the model itself; a new artifact never replaces the one it came from")


def write_meta(src: str | os.PathLike[str], dst: str | os.PathLike[str], meta: ArtifactMeta) -> Path:
    """Copy the ``.onnx`` or ``.plan`` at ``src`` to the new file ``dst`` with ``meta`` as its metadata.

    Only the metadata changes (checked by reading ``dst`` back); ``dst`` must not exist yet.
    """
    src, dst = Path(src), Path(dst)
    kind = artifact_kind(src)
    if kind == KIND_RUN:
        raise ArtifactError(f"{src} is a training run: write its card with write_run_card")
    if dst.suffix.lower() != src.suffix.lower():
        raise ArtifactError(f"{dst}: the new artifact must keep the suffix {src.suffix!r} of {src.name}")
    _check_target(src, dst)
    tmp = _tmp_for(dst)
    try:
        if kind == KIND_ONNX:
            _write_onnx(src, tmp, meta)
        else:
            _write_plan(src, tmp, meta)
        _publish(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def save_checked_onnx(model: Any, meta: ArtifactMeta, out: Path, what: str, form: str | None = None) -> None:
    """Attach ``meta`` to the ONNX ``model``, run the full ONNX check, write ``out`` atomically (only a
    checked file lands there). ``what`` names the graph in the error; ``form`` describes it in the doc
    string (default: its precision)."""
    import onnx

    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {META_KEY: meta.to_json()})
    model.producer_name = "acfd"
    model.producer_version = meta.project_version
    model.doc_string = (
        f"acfd LQ branch ({meta.preset}, {form or meta.precision}): uint8 crops [N,{meta.input_size},"
        f"{meta.input_size},3] RGB -> score [N] ({meta.score}); fake if score > {meta.threshold}"
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ArtifactError(f"{what} fails the ONNX check: {e}") from e
    tmp = out.with_name(out.name + ".partial")
    try:
        onnx.save(model, str(tmp))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def _write_onnx(src: Path, tmp: Path, meta: ArtifactMeta) -> None:
    import onnx
    from google.protobuf.message import DecodeError

    from .backends import read_onnx_meta

    try:
        model = onnx.load(str(src), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as e:
        raise ArtifactError(f"{src} is not a valid ONNX model ({e})") from e
    from onnx.external_data_helper import uses_external_data

    if any(uses_external_data(t) for t in model.graph.initializer) and tmp.parent.resolve() != src.parent.resolve():
        raise ArtifactError(f"{src} keeps its weights in external files: write the new model into its folder")
    props = [p for p in model.metadata_props if p.key == META_KEY]
    if not props:
        raise ArtifactError(f"{src} carries no acfd metadata ({META_KEY}): it was not exported by acfd")
    props[0].value = meta.to_json()
    for extra in props[1:]:  # a second entry under our key would make the file ambiguous
        model.metadata_props.remove(extra)
    model.doc_string = _DOC_THRESHOLD.sub(lambda m: f"{m.group(1)}{meta.threshold}", model.doc_string)
    onnx.save(model, str(tmp))
    # Read back: the metadata must be ours and everything but the metadata byte-identical.
    if read_onnx_meta(tmp).to_dict() != meta.to_dict():
        raise ArtifactError(f"writing {tmp.name}: the metadata read back differs from what was written")
    a, b = onnx.load(str(src), load_external_data=False), onnx.load(str(tmp), load_external_data=False)
    for m in (a, b):
        del m.metadata_props[:]
        m.doc_string = ""
    if a.SerializeToString(deterministic=True) != b.SerializeToString(deterministic=True):
        raise ArtifactError(f"writing {tmp.name}: the graph read back differs from {src.name}")


def _write_plan(src: Path, tmp: Path, meta: ArtifactMeta) -> None:
    from .tensorrt import read_plan, write_plan

    header, engine = read_plan(src)
    write_plan(tmp, replace(header, meta=meta.to_dict()), engine)
    header2, engine2 = read_plan(tmp)  # checks the engine checksum and the metadata
    if header2.artifact_meta.to_dict() != meta.to_dict() or engine2 != engine:
        raise ArtifactError(f"writing {tmp.name}: the plan read back differs from what was written")


def write_run_card(run: str | os.PathLike[str], card: ModelCard) -> Path:
    """Replace ``RUN/card.json`` atomically (temporary file + ``os.replace``); returns its path."""
    run = Path(run)
    artifact_kind(run)  # a run directory, or a clear error
    dst = run / RUN_CARD_FILE
    tmp = _tmp_for(dst)
    try:
        tmp.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if _read_card_file(tmp) != card:
            raise ArtifactError(f"writing {dst}: the card read back differs from what was written")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


@dataclass(frozen=True)
class Updated:
    """Where a new card went: ``path`` (the new file, or a run's card.json) and what it holds."""

    path: Path
    kind: str
    card: ModelCard
    threshold: float | None  # the artifact's threshold now (None for a run: its config's)
    in_place: bool  # True for a run directory's card.json


def check_threshold(meta: ArtifactMeta, threshold: float) -> None:
    """ArtifactError unless ``threshold`` can decide the artifact's scores (``threshold_problem``)."""
    problem = threshold_problem(meta.score, threshold)
    if problem:
        raise ArtifactError(f"{problem}; nothing was written")


def check_update(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None, set_threshold: bool = False) -> Path:
    """What :func:`update_card` would write to, or the ArtifactError it would raise (cheap: no model read).

    Lets a caller refuse before minutes of work rather than after.
    """
    src = Path(src)
    kind = artifact_kind(src)
    if kind == KIND_RUN:
        if set_threshold:
            raise ArtifactError(
                f"{src} is a training run: its threshold is part of its training config; export it "
                "(acfd-train export) and validate the .onnx to set a threshold"
            )
        if dst is not None and Path(dst).resolve() != (src / RUN_CARD_FILE).resolve():
            raise ArtifactError(f"{src} is a training run: its card is always {src / RUN_CARD_FILE} (no --out)")
        return src / RUN_CARD_FILE
    out = Path(dst) if dst is not None else default_output(src)
    if out.suffix.lower() != src.suffix.lower():
        raise ArtifactError(f"{out}: the new artifact must keep the suffix {src.suffix!r} of {src.name}")
    _check_target(src, out)
    return out


def update_card(
    src: str | os.PathLike[str], card: ModelCard, dst: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
) -> Updated:
    """Write ``card`` (and, if given, ``threshold``) into a new artifact made from ``src``.

    ``.onnx``/``.plan``: a new file ``dst`` (default :func:`default_output`). A run directory: its
    ``card.json``, replaced atomically (``threshold`` is refused there). ``threshold`` must be able to
    decide the artifact's scores (``threshold_problem``: positive and finite for a distance).
    """
    src = Path(src)
    out = check_update(src, dst, threshold is not None)
    kind = artifact_kind(src)
    if kind == KIND_RUN:
        return Updated(write_run_card(src, card), kind, card, None, True)
    meta = read_meta(src)
    if threshold is not None:
        check_threshold(meta, threshold)
    new = replace(meta, card=card, threshold=meta.threshold if threshold is None else float(threshold))
    return Updated(write_meta(src, out, new), kind, card, new.threshold, False)
