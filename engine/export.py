"""ONNX export of the LQ branch with the preprocessing inside the graph.

The exported graph takes what the scanner has - uint8 RGB face crops, NHWC, ``crops`` [N,S,S,3] with
a dynamic batch - and does the rest itself: cast, normalise with the artifact's mean/std, NHWC->NCHW,
the LQ branch, and the score. Outputs: ``score`` [N] float32 (||embedding||_2, or softmax P(fake) for
cross-entropy presets), ``attention`` [N,h,w] float32 when the model has an attention layer, and
optionally ``embedding`` [N,D]. The :class:`ArtifactMeta` travels as JSON in the ONNX
``metadata_props`` under ``META_KEY``, so a consumer never assumes preprocessing by convention.

FP16 (``fp16=True``): the branch is cast to half before tracing, so the graph itself is FP16 between
two casts - the form TensorRT 11 needs, since its networks are strongly typed and it no longer picks
precisions itself (docs/engines.md). Input stays uint8, outputs stay float32, and the normalisation,
the L2 norm and the softmax run in float32: a 2048-d embedding of norm ~18 squares to values that
FP16 (max 65504) represents only up to a norm of 256, and the norm is the decision.

Exporter (``exporter="auto"``): FP32 graphs go through the TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``): for this network it was 3x faster than the dynamo exporter
(4 s vs 13.5 s at 96 px on 2 cores) and gives the same graph up to rounding. FP16 graphs go through
the dynamo exporter (torch.export + onnxscript): it traces with fake tensors, whereas TorchScript
tracing runs the half-precision network for real, and half convolutions on a CPU took 10-20 s per
forward pass at 64 px here. Either can be forced; both are tested.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from acfd.schemas.artifact import ArtifactError, ArtifactMeta, project_version
from acfd.schemas.card import ModelCard
from torch import Tensor, nn

from .artifact import save_checked_onnx
from .backends import OrtBackend, load_branch, read_onnx_meta
from .scorer import CropScorer
from .signature import ATTENTION_NAME, INPUT_NAME, SCORE_NAME

# (CropScorer lives in .scorer, since the torch backend runs it too; it stays importable from here.)

OPSET = 18
EXPORTERS = ("auto", "torchscript", "dynamo")
# export_run refuses an FP32 graph whose scores differ from the torch model's by more (relative).
FP32_RTOL = 1e-3


def _check_outputs(scorer: CropScorer, outs: tuple[Tensor, ...], meta: ArtifactMeta, n: int) -> None:
    named = dict(zip(scorer.output_names, outs, strict=True))
    if named[SCORE_NAME].shape != (n,):
        raise ArtifactError(f"score has shape {tuple(named[SCORE_NAME].shape)}, expected ({n},)")
    if ATTENTION_NAME in named:
        a = meta.attention_size
        if named[ATTENTION_NAME].shape != (n, a, a):
            raise ArtifactError(
                f"the model's attention map is {tuple(named[ATTENTION_NAME].shape[1:])}, "
                f"the metadata says attention_size={a}"
            )


def export_onnx(
    module: nn.Module,
    meta: ArtifactMeta,
    out: Path,
    fp16: bool = False,
    with_embedding: bool = False,
    exporter: str = "auto",
    opset: int = OPSET,
) -> Path:
    """Export an LQ branch to ``out``.

    ``module`` behaves as ``acfd.train.model.LQBranch``: normalised float crops [N,3,S,S] in,
    (embedding [N,D] or logits [N,2], attention [N,1,h,w] or None) out.

    ``meta`` describes the model (``acfd.train.model.artifact_meta``); its ``precision`` and
    ``project_version`` are set here, its ``model_id`` (the weights' hash) moves to
    ``extra["weights_sha256"]``: the artifact's own id is the hash of the file, computed on load.
    """
    if exporter not in EXPORTERS:
        raise ArtifactError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if exporter == "auto":
        exporter = "dynamo" if fp16 else "torchscript"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = dict(meta.extra)
    if meta.model_id:
        extra["weights_sha256"] = meta.model_id
    extra["exporter"] = exporter
    meta = replace(
        meta,
        precision="fp16" if fp16 else "fp32",
        model_id="",
        project_version=meta.project_version or project_version(),
        extra=extra,
    )
    # A copy: the caller's module (often sharing weights with a training model) is never cast or moved.
    branch = copy.deepcopy(module).cpu().float().eval()
    scorer = CropScorer(branch, meta, torch.float32, with_embedding).eval()
    s = meta.input_size
    # Batch 2, not 1: a batch of 1 invites exporters to specialise the batch dimension.
    dummy = torch.randint(0, 256, (2, s, s, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _check_outputs(scorer, scorer(dummy), meta, 2)  # shapes, in fp32 (fast on a CPU)
    if fp16:
        scorer = CropScorer(branch, meta, torch.float16, with_embedding).eval()
    tmp = out.with_name(out.name + ".partial")
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.ExitStack() as stack:
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            if exporter == "torchscript":
                torch.onnx.export(
                    scorer, (dummy,), str(tmp),
                    input_names=[INPUT_NAME],
                    output_names=scorer.output_names,
                    dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *scorer.output_names]},
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
            else:
                # the dynamo exporter prints its progress to stdout; a CLI's output is ours
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
                torch.onnx.export(
                    scorer, (dummy,), str(tmp),
                    input_names=[INPUT_NAME],
                    output_names=scorer.output_names,
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                    opset_version=opset,
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                )
        _finish(tmp, out, meta)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _finish(tmp: Path, out: Path, meta: ArtifactMeta) -> None:
    """Attach the metadata, run the full ONNX check, write ``out`` (only a checked file lands there)."""
    import onnx

    save_checked_onnx(onnx.load(str(tmp)), meta, out, "the exported graph")


# -- checks ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Agreement:
    """How far one set of outputs lies from a reference on the same crops."""

    n: int
    score_max_rel: float  # max |a - b| / max(|b|, 1e-12)
    score_max_abs: float
    attention_max_abs: float  # 0 when there is no attention output
    verdict_flips: int  # crops on the other side of the threshold
    finite: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return self.__dict__.copy()


def agreement(
    score: np.ndarray, ref_score: np.ndarray, threshold: float,
    attention: np.ndarray | None = None, ref_attention: np.ndarray | None = None,
) -> Agreement:
    """Compare scores (and attention maps) with a reference: drift, and verdicts that flip."""
    score = np.asarray(score, np.float64)
    ref = np.asarray(ref_score, np.float64)
    diff = np.abs(score - ref)
    att = 0.0
    if attention is not None and ref_attention is not None:
        att = float(np.max(np.abs(np.asarray(attention, np.float64) - ref_attention), initial=0.0))
    return Agreement(
        n=int(ref.shape[0]),
        score_max_rel=float(np.max(diff / np.maximum(np.abs(ref), 1e-12), initial=0.0)),
        score_max_abs=float(np.max(diff, initial=0.0)),
        attention_max_abs=att,
        verdict_flips=int(np.sum((score > threshold) != (ref > threshold))),
        finite=bool(np.all(np.isfinite(score)) and (attention is None or np.all(np.isfinite(attention)))),
    )


def torch_reference(module: nn.Module, meta: ArtifactMeta, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(score, attention) of the torch model in float32 on CPU, through the export's own wrapper."""
    scorer = CropScorer(copy.deepcopy(module).cpu().float().eval(), meta).eval()
    with torch.inference_mode():
        out = dict(zip(scorer.output_names, scorer(torch.from_numpy(np.ascontiguousarray(crops))), strict=True))
    att = out.get(ATTENTION_NAME)
    return out[SCORE_NAME].numpy(), None if att is None else att.numpy()


def check_onnx(module: nn.Module, meta: ArtifactMeta, onnx_path: Path, crops: np.ndarray) -> Agreement:
    """Run ``onnx_path`` on ONNX Runtime (CPU) and the torch model on the same crops; compare."""
    ref_score, ref_att = torch_reference(module, meta, crops)
    with OrtBackend(onnx_path, device="cpu").load() as backend:
        pred = backend.infer(crops)
    return agreement(pred.score, ref_score, meta.threshold, pred.attention, ref_att)


# -- from a training run ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportResult:
    path: Path
    meta: ArtifactMeta
    check: Agreement  # against the torch fp32 model on a few random crops

    def summary(self) -> str:
        m, c = self.meta, self.check
        return (
            f"wrote {self.path} ({m.precision}, {m.input_size}px, score={m.score}, threshold {m.threshold:g}); "
            f"vs torch on {c.n} random crops: score rel {c.score_max_rel:.1e}, attention {c.attention_max_abs:.1e}"
        )


def export_run(
    run_dir: Path, out: Path, fp16: bool = False, with_embedding: bool = False, exporter: str = "auto",
    note: str | None = None,
) -> ExportResult:
    """Export the LQ branch of a training run (RUN/ or its model.safetensors) and check the file.

    ``note``: free text for the artifact's model card (``ModelCard.notes``: what the model is for, its
    terms); the run's own card is left as it is.

    The network comes from the run loader the training stack registers for the ``torch-run`` kind
    (:func:`acfd.engine.backends.run_loader`). The written graph is run on ONNX Runtime against the
    torch model; an FP32 graph that disagrees (> 1e-3 relative), or an FP16 graph with non-finite
    outputs (overflow), is an error and is not left behind.
    """
    branch, meta = load_branch(Path(run_dir))
    if note is not None:
        meta = replace(meta, card=replace(meta.card or ModelCard(), notes=note))
    path = export_onnx(branch, meta, out, fp16=fp16, with_embedding=with_embedding, exporter=exporter)
    s = meta.input_size
    crops = np.random.default_rng(0).integers(0, 256, (4, s, s, 3), dtype=np.uint8)
    check = check_onnx(branch, meta, path, crops)
    bad = None
    if not check.finite:
        bad = "non-finite outputs (FP16 overflow?)"
    elif not fp16 and check.score_max_rel > FP32_RTOL:
        bad = f"scores differ from torch by {check.score_max_rel:.2e} (relative)"
    if bad:
        Path(path).unlink(missing_ok=True)
        raise ArtifactError(f"the exported graph does not reproduce the model: {bad}")
    return ExportResult(path=path, meta=read_onnx_meta(path), check=check)


@dataclass(frozen=True)
class BuildResult:
    onnx_fp32: ExportResult
    onnx_fp16: ExportResult
    plan: Path | None
    note: str  # why there is no plan, or what was built


def build_run(
    run_dir: Path,
    out_dir: Path,
    min_batch: int = 1,
    opt_batch: int = 32,
    max_batch: int = 128,
    workspace_gb: float | None = None,
    timing_cache: Path | None = None,
) -> BuildResult:
    """Everything the scanner can run, in one step: model.onnx (FP32, CPU), model.fp16.onnx and,
    where TensorRT and a GPU are present, model.plan (FP16, strongly typed) built from the latter."""
    from .tensorrt import TensorRTUnavailable, build_engine, check_build_options

    check_build_options(min_batch, opt_batch, max_batch, workspace_gb)  # before minutes of export
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    r32 = export_run(run_dir, out_dir / "model.onnx")
    r16 = export_run(run_dir, out_dir / "model.fp16.onnx", fp16=True)
    try:
        plan = build_engine(
            r16.path, out_dir / "model.plan", min_batch=min_batch, opt_batch=opt_batch,
            max_batch=max_batch, workspace_gb=workspace_gb, timing_cache=timing_cache, precision="fp16",
        )
        note = f"TensorRT FP16 engine, batch {min_batch}..{max_batch} (opt {opt_batch})"
    except TensorRTUnavailable as e:
        plan, note = None, f"no TensorRT engine: {e}"
    return BuildResult(onnx_fp32=r32, onnx_fp16=r16, plan=plan, note=note)
