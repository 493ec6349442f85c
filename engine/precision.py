"""Which precision runs an artifact: the one asked for, or with ``auto`` the fastest the artifact allows here.

Precisions (``runtime.load(..., precision=...)``, ``acfd-scan --precision``):

* ``auto`` (default): on a CPU, int8 where the artifact is int8 or has a verified int8 *sibling* within
  the fidelity tolerance, and the CPU has VNNI (AVX-512 VNNI or AVX-VNNI) or AMX-INT8; the float
  artifact otherwise (an FP16 graph as it is). An int8 artifact on a CPU without VNNI/AMX runs its
  float source instead when that lies beside it. On a GPU, the artifact as it is. ``auto`` never picks bf16 (docs/engines.md has the figures).
* ``fp32``: a float graph computing in FP32 (an FP16 graph is converted on load); an int8 artifact runs
  its float source, which must lie beside it.
* ``int8``: an int8 artifact, or the int8 sibling of a float one; refused when there is none.
* ``bf16``: a training run through torch with oneDNN on a CPU with AVX-512 BF16 or AMX-BF16; refused for
  ONNX files (ONNX Runtime's CPU provider has no bf16 arithmetic) and on other CPUs.

Siblings (decided here, documented in docs/engines.md): the int8 sibling of ``DIR/NAME.onnx`` is
``DIR/NAME.int8.onnx``, and it counts only if its metadata says it was quantised from exactly that file
(``extra.quantised_from_id`` equals the float file's id, the sha256 of its bytes), so a stale sibling
left from an older model is never run in its place. An int8 artifact names its float source in
``extra.quantised_from`` (a file name in the same folder), checked the same way.

A mismatch (int8 asked of a float artifact without a sibling, any precision but its own asked of a
TensorRT plan, bf16 of an ONNX file) is one :class:`ArtifactError` line. What was chosen, and the CPU
features that decided it, is a :class:`Choice`; backends put its words into ``device_name()``, which
the scanner stores in ``scans.device_name``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from acfd.schemas.artifact import ArtifactError, ArtifactMeta

from .cpu import CpuFeatures

PRECISIONS = ("auto", "fp32", "int8", "bf16")
# Not offered to users: the given file at its own precision, nothing swapped or converted - what
# `acfd-scan validate` measures, since it writes its result into that very file's card.
ARTIFACT = "artifact"
INT8_TAG = ".int8"
# read_meta(path) -> (model_id, metadata) of another .onnx file (a sibling), read only when needed
ReadMeta = Callable[[Path], tuple[str, ArtifactMeta]]


class PrecisionError(ArtifactError):
    """A precision the artifact (or this CPU, or device) cannot run: a mismatch, refused in one line."""


def _an(word: str) -> str:
    return f"an {word}" if word[:1] in "aefhilmnorsx" else f"a {word}"  # an fp32, an int8, a bf16


def check_precision(precision: str) -> str:
    if precision not in (*PRECISIONS, ARTIFACT):
        raise PrecisionError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def int8_sibling(path: Path) -> Path:
    """Where the int8 sibling of a float ``.onnx`` lies: ``NAME.onnx`` -> ``NAME.int8.onnx``."""
    path = Path(path)
    return path.with_name(f"{path.stem}{INT8_TAG}{path.suffix}")


@dataclass(frozen=True)
class Choice:
    """What runs: the file, the precision it computes in, and why."""

    path: Path
    precision: str  # fp32 | fp16 | int8 | bf16: what the arithmetic is
    asked: str  # auto | fp32 | int8 | bf16
    why: str  # the artifact and CPU facts that decided, in words
    upcast: bool = False  # an FP16 graph converted to FP32 on load

    def words(self) -> str:
        """``int8 (auto: int8 sibling m.int8.onnx; CPU avx512_vnni)`` - for ``device_name()``."""
        return f"{self.precision} ({self.asked}: {self.why})"


def _float_precision(meta: ArtifactMeta, asked: str) -> tuple[str, bool]:
    """(what a float graph computes in, whether it is upcast) for an FP32/FP16 artifact: an FP16 graph is
    converted to FP32 only when FP32 is asked for (``auto`` runs it as it is: at 96 px the conversion
    measured 1.09x, within the noise, and it needs the onnx package, which takes over a second to import)."""
    if meta.precision == "fp16" and asked == "fp32":
        return "fp32", True
    return meta.precision, False


def choose_onnx(
    path: Path,
    model_id: str,
    meta: ArtifactMeta,
    asked: str,
    on_cuda: bool,
    cpu: CpuFeatures,
    read_meta: ReadMeta,
) -> Choice:
    """The :class:`Choice` for the ``.onnx`` at ``path`` (id ``model_id``, metadata ``meta``).

    ``read_meta(path) -> (model_id, meta)`` reads another candidate file (a sibling), only when needed.
    """
    check_precision(asked)
    path = Path(path)
    if asked == ARTIFACT:
        return Choice(path, meta.precision, asked, "the artifact as it is")
    if asked == "bf16":
        raise PrecisionError(
            f"{path}: bf16 is not available for an .onnx file (ONNX Runtime's CPU provider has no bf16 "
            "arithmetic); bf16 runs a training run through torch; use --precision fp32 or int8 here"
        )
    if on_cuda:
        if asked == "int8":
            raise PrecisionError(f"{path}: int8 is a CPU path here; on a GPU use --precision auto (or a TensorRT plan)")
        if asked == "fp32" and meta.precision == "int8":
            raise PrecisionError(f"{path} is an int8 artifact; for a GPU give its float source")
        if asked == "fp32" and meta.precision == "fp16":
            return Choice(path, "fp32", asked, "FP16 graph converted to FP32", upcast=True)
        return Choice(path, meta.precision, asked, "on the GPU the artifact runs as it is")
    if meta.precision == "int8":
        return _from_int8(path, asked, cpu, read_meta, meta)
    if meta.precision not in ("fp32", "fp16"):
        if asked == "auto":
            return Choice(path, meta.precision, asked, "the artifact's own precision")
        raise PrecisionError(f"{path} is {_an(meta.precision)} artifact; --precision {asked} cannot run it")
    run, upcast = _float_precision(meta, asked)
    own = f"{meta.precision} artifact" + (", converted to FP32 on load" if upcast else "")
    if asked == "fp32":
        return Choice(path, "fp32", asked, own, upcast)
    sib = int8_sibling(path)
    found, problem = _check_sibling(sib, model_id, read_meta)
    if asked == "int8":
        if found is None:
            raise PrecisionError(
                f"--precision int8: {path} is {_an(meta.precision)} artifact and {problem}; make one with "
                f"`acfd-train export --onnx {path} --int8 --calibrate DIR --out {sib}`"
            )
        return Choice(sib, "int8", asked, f"int8 sibling {sib.name}; CPU {cpu.int8_reason()}")
    # auto
    if found is None:
        return Choice(path, run, asked, f"{own}; {problem}", upcast)
    if not cpu.fast_int8:
        return Choice(path, run, asked, f"{own}; int8 sibling {sib.name} not used: CPU has {cpu.int8_reason()}", upcast)
    if found.extra.get("int8_within_tolerance") != "yes":
        return Choice(path, run, asked, f"{own}; int8 sibling {sib.name} not used: its fidelity check is outside "
                                        "the tolerance (--precision int8 runs it)", upcast)  # fmt: skip
    return Choice(sib, "int8", asked, f"int8 sibling {sib.name}; CPU {cpu.int8_reason()}")


def _from_int8(path: Path, asked: str, cpu: CpuFeatures, read_meta: ReadMeta, meta: ArtifactMeta) -> Choice:
    if asked == "int8":
        return Choice(path, "int8", asked, f"int8 artifact; CPU {cpu.int8_reason()}")
    if asked == "auto" and cpu.fast_int8:
        return Choice(path, "int8", asked, f"int8 artifact; CPU {cpu.int8_reason()}")
    name = meta.extra.get("quantised_from", "")
    src = path.with_name(name) if name and Path(name).name == name else None
    found, problem = (None, "its metadata names no float source") if src is None else \
        _check_source(src, meta.extra.get("quantised_from_id", ""), read_meta)  # fmt: skip
    if found is not None and src is not None:
        run, upcast = _float_precision(found, asked)
        why = f"float source {src.name} of the int8 artifact" + (", converted to FP32 on load" if upcast else "")
        if asked == "auto":
            why += f"; CPU has {cpu.int8_reason()}, where int8 is not expected to beat FP32"
        return Choice(src, run, asked, why, upcast)
    if asked == "fp32":
        raise PrecisionError(f"{path} is an int8 artifact and its float source cannot be used ({problem}); "
                            "give the FP32 .onnx itself")  # fmt: skip
    return Choice(path, "int8", asked, f"int8 artifact; CPU has {cpu.int8_reason()}, and {problem}")


def _read_partner(path: Path, what: str, missing: str, read_meta: ReadMeta) -> tuple[str, ArtifactMeta | None, str]:
    """(its id, its metadata, "") for the partner file ``path`` (``what``: how a message names it), else
    ("", None, why not): ``missing`` when there is no such file, or unreadable."""
    if not path.is_file():
        return "", None, missing
    try:
        mid, meta = read_meta(path)
    except ArtifactError as e:
        return "", None, f"{what} {path.name} is unreadable ({e})"
    return mid, meta, ""


def _check_sibling(sib: Path, model_id: str, read_meta: ReadMeta) -> tuple[ArtifactMeta | None, str]:
    """(the int8 sibling's metadata, "") when ``sib`` is an int8 quantisation of the file ``model_id``,
    else (None, why not)."""
    what = "its int8 sibling"
    _, meta, why = _read_partner(sib, what, f"there is no int8 sibling {sib.name} beside it", read_meta)
    if meta is None:
        return None, why
    if meta.precision != "int8":
        return None, f"{what} {sib.name} is not int8 ({meta.precision})"
    if meta.extra.get("quantised_from_id") != model_id:
        return None, f"{what} {sib.name} was quantised from another file (a stale copy?)"
    return meta, ""


def _check_source(src: Path, source_id: str, read_meta: ReadMeta) -> tuple[ArtifactMeta | None, str]:
    mid, meta, why = _read_partner(src, "its float source", f"its float source {src.name} is not beside it", read_meta)
    if meta is None:
        return None, why
    if not source_id or mid != source_id:
        return None, f"{src.name} is not the file it was quantised from (its id differs)"
    if meta.precision not in ("fp32", "fp16"):
        return None, f"{src.name} is {meta.precision}, not a float graph"
    return meta, ""


def choose_torch(asked: str, on_cuda: bool, cpu: CpuFeatures, path: Path) -> Choice:
    """The :class:`Choice` for a training run (torch): fp32 on a CPU, fp16 on a GPU, or bf16 when asked."""
    check_precision(asked)
    if asked == "int8":
        raise PrecisionError(
            f"{path}: a training run has no int8 form; export it with `acfd-train export --run {path} --int8 "
            "--calibrate DIR --out model.onnx` (writes model.onnx and its int8 sibling model.int8.onnx)"
        )
    if asked == "bf16":
        if on_cuda:
            raise PrecisionError(f"{path}: bf16 is a CPU path here; on a GPU use --precision auto (fp16)")
        if not cpu.fast_bf16:
            raise PrecisionError(
                f"bf16 needs a CPU with AVX-512 BF16 or AMX-BF16; this one has {cpu.bf16_reason()} "
                f"({cpu.describe()}); use --precision fp32"
            )
        return Choice(path, "bf16", asked, f"torch oneDNN; CPU {cpu.bf16_reason()}")
    if asked == "fp32" or not on_cuda:
        why = "training run" + ("" if asked == "fp32" else "; auto keeps a run in FP32 on a CPU")
        return Choice(path, "fp32", asked, why)
    return Choice(path, "fp16", asked, "training run on the GPU")


def check_plan(path: Path, plan_precision: str, asked: str) -> None:
    """A TensorRT plan runs at the precision it was built with: any other one asked is refused."""
    check_precision(asked)
    if asked not in ("auto", ARTIFACT, plan_precision):
        raise PrecisionError(
            f"{path} is a TensorRT {plan_precision} plan: it runs at the precision it was built with, not "
            f"{asked}; use --precision auto (or build a plan from an {asked} ONNX)"
        )
