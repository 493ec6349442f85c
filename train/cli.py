"""`acfd-train`: a thin click layer over the training library. Each command calls one library function."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from acfd.schemas.cli import AcfdGroup
from acfd.train.config import PRESETS

_PAPER = PRESETS["paper"]


def _from_preset(text: str, paper: object) -> str:
    """Help of a `fit` option whose default is the preset's value (shown for the paper preset)."""
    return f"{text} [default: from the preset; paper: {paper}]"


def _presets_epilog() -> str:
    """Every preset of train/config.py on its own line (click's \\b keeps the lines as they are)."""
    w = max(map(len, PRESETS))
    rows = [f"  {name:<{w}}  {f'row {c.table_row}: ' if c.table_row is not None else ''}{c.description}"
            for name, c in PRESETS.items()]  # fmt: skip
    return ("Presets (--preset): the rows of Table 3 of Cao et al., \"Metric Learning for Anti-Compression "
            "Facial Forgery Detection\", and the authors' public code.\n\n\b\n" + "\n".join(rows))


def _tensorrt_options(f: Callable[..., None]) -> Callable[..., None]:
    """The TensorRT build options shared by `engine` and `build` (same names, defaults and help)."""
    options = [
        click.option("--min-batch", default=1, show_default=True, help="Smallest batch the engine accepts."),
        click.option("--opt-batch", default=32, show_default=True, help="Batch size TensorRT tunes the kernels for."),
        click.option("--max-batch", default=128, show_default=True, help="Largest batch the engine accepts."),
        click.option("--workspace-gb", type=float, default=None, help="TensorRT workspace limit (default: TensorRT's)."),
        click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Timing cache file, read if present and updated (faster rebuilds on the same GPU)."),
    ]
    for option in reversed(options):  # applied bottom-up, so --help lists them in this order
        f = option(f)
    return f


@click.group(cls=AcfdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="acfd")
def main() -> None:
    """Build data, train, evaluate and export the anti-compression forgery detector."""


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--videos", default=8, show_default=True, help="Real videos (even); as many fakes are made.")
@click.option(
    "--source",
    "sources",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Photo or video with a face, or a folder of them (repeatable); default: scikit-image's astronaut photo.",
)
@click.option("--frames", default=16, show_default=True, help="Frames per video.")
@click.option("--size", default=256, show_default=True, help="Frame side in pixels (square, even).")
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same dataset).")
@click.option("--exclude", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="People file from `acfd-train people --holdout`: leave out every source of its held-out persons.")
def synth(
    out: Path, videos: int, sources: tuple[Path, ...], frames: int, size: int, seed: int, exclude: Path | None
) -> None:
    """Write an FF++-shaped dataset of real footage and self-blended fakes to OUT."""
    from acfd.train.synth import SynthConfig, synthesize

    s = synthesize(SynthConfig(out=out, videos=videos, frames=frames, seed=seed, sources=sources, size=size,
                               exclude=exclude))  # fmt: skip
    splits = ", ".join(f"{k} {v}" for k, v in s.splits.items())
    n_src = f"{s.sources} source{'s' if s.sources != 1 else ''}"
    click.echo(f"{s.reals} real + {s.fakes} self-blended videos ({s.frames} frames) from {n_src} in {out} "
               f"[{s.seconds:.1f} s]")  # fmt: skip
    if s.skipped:
        click.echo(s.skipped_line())
    if exclude is not None:
        click.echo(f"left out {len(s.excluded)} sources of held-out persons ({exclude.name}); the videos show "
                   f"{s.persons} persons" + (f" ({s.persons_alone} of them counted by file)" if s.persons_alone else ""))
    if s.corpora:
        click.echo(f"from {len(s.corpora)} source repositories (their terms bind a model trained on this): "
                   + ", ".join(s.corpora))
        if s.unknown:
            click.echo(f"{len(s.unknown)} sources are not in {exclude.name}: their persons were never compared "
                       "with the held-out ones (run `acfd-train people` on every source)")
    click.echo(f"split pairs: {splits}")


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="People file (JSON) to write.")
@click.option("--distance", default=0.6, show_default=True, type=float,
              help="Average-linkage threshold on dlib face-descriptor distances: groups closer than this are one person.")
@click.option("--frames", default=5, show_default=True, help="Frames sampled per video (their descriptors are averaged).")
@click.option("--holdout", default=0.0, show_default=True, type=float,
              help="Share of the persons to mark held out (for `swaps`; `synth --exclude` leaves them out).")
@click.option("--seed", default=0, show_default=True, help="Random seed of the held-out choice.")
@click.option("--sheets", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for contact sheets: a PNG per person and the near-threshold pairs, to check by eye.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def people(
    sources: tuple[Path, ...], out: Path, distance: float, frames: int, holdout: float, seed: int,
    sheets: Path | None, quiet: bool,
) -> None:  # fmt: skip
    """Group the faces of SOURCES (photos, videos or folders of them) into persons; optionally hold some out."""
    from acfd.train.people import PeopleConfig, group_people

    cfg = PeopleConfig(sources=sources, out=out, distance=distance, video_frames=frames, holdout=holdout,
                       seed=seed, sheets=sheets)  # fmt: skip
    for line in group_people(cfg, progress=not quiet).lines():
        click.echo(line)


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", "sources", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Photo, video or folder of them (repeatable) [default: every file of the people file's persons].")
@click.option("--people", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="People file from `acfd-train people`: pairs are two different persons, and only held-out "
                   "persons when it marks any.")
@click.option("--pairs", default=24, show_default=True, help="Pairs of persons; each gives 2 real and 2 swapped videos.")
@click.option("--frames", default=16, show_default=True, help="Frames per video.")
@click.option("--size", default=256, show_default=True, help="Frame side in pixels (square, even).")
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same set).")
@click.option("--half", type=click.Choice(["selection", "test"]), default=None,
              help="Only one half of the persons (a seeded cut by person, same --seed for both): 'selection' "
                   "for choosing recipes and thresholds, 'test' for the figure reported once. [default: all]")
def swaps(
    out: Path, sources: tuple[Path, ...], people: Path | None, pairs: int, frames: int, size: int, seed: int,
    half: str | None,
) -> None:  # fmt: skip
    """Write a held-apart validation set of cross-identity face swaps (FF++ layout) to OUT; never train on it."""
    from acfd.train.swaps import SwapConfig, make_swaps

    cfg = SwapConfig(out=out, sources=sources, people=people, pairs=pairs, frames=frames, size=size, seed=seed,
                     half=half)  # fmt: skip
    for line in make_swaps(cfg).lines(pairs):
        click.echo(line)


@main.command()
@click.option("--ffpp", "root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="FaceForensics++ root (original_sequences/, manipulated_sequences/).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Crop cache folder.")
@click.option("--frames", default=270, show_default=True, help="Frames sampled uniformly per video.")
@click.option("--methods", multiple=True, help="Method folders to use (repeatable; default: all present).")
@click.option("--hq", default="c23", show_default=True, type=click.Choice(["raw", "c0", "c23", "c40"]),
              help="High-quality level of each pair (FF++ compression folder; raw and c0 stand in for each other).")
@click.option("--lq", default="c40", show_default=True, type=click.Choice(["raw", "c0", "c23", "c40"]),
              help="Low-quality level of each pair (what the scanner's branch is trained on).")
@click.option("--splits", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with train/val/test.json (default: ROOT/splits or ROOT; else a deterministic split).")
@click.option("--size", default=299, show_default=True, help="Crop side in pixels.")
@click.option("--detector", default="auto", show_default=True, type=click.Choice(["full", "short", "auto"]),
              help="BlazeFace model; auto: full range, then short range on frames where it finds no face.")
@click.option("--workers", default=1, show_default=True, help="Processes (one face detector each).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prepare(
    root: Path, out: Path, frames: int, methods: tuple[str, ...], hq: str, lq: str,
    splits: Path | None, size: int, detector: str, workers: int, quiet: bool,
) -> None:  # fmt: skip
    """Crop paired HQ/LQ faces and masks from an FF++-shaped dataset into a resumable cache."""
    from acfd.train.prepare import PrepareConfig
    from acfd.train.prepare import prepare as run_prepare

    cfg = PrepareConfig(
        ffpp=root, out=out, frames=frames, methods=methods or None, hq=hq, lq=lq, splits=splits,
        size=size, detector=detector, workers=workers,
    )  # fmt: skip
    for line in run_prepare(cfg, progress=not quiet).lines():
        click.echo(line)


# -- training and evaluation (acfd.train.fit / evaluate; owner: model engineer) -------------------
@main.command(epilog=_presets_epilog())
@click.option("--data", "caches", multiple=True, required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Crop cache from `prepare` (repeat for the two-pair-level preset: one cache per HQ level).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--preset", metavar="NAME", default=None,
              help="Training recipe, one of the presets listed below. [default: paper; with --resume: the run's]")
@click.option("--epochs", type=int, default=None,
              help=_from_preset("Maximum epochs (early stopping may end sooner).", _PAPER.optim.epochs))
@click.option("--max-steps", type=int, default=None,
              help=_from_preset("Stop after this many optimisation steps.",
                                _PAPER.optim.max_steps or "none, --epochs decides"))
@click.option("--batch-size", type=int, default=None, help=_from_preset("Batch size.", _PAPER.optim.batch_size))
@click.option("--lr", type=float, default=None, help=_from_preset("Adam learning rate.", _PAPER.optim.lr))
@click.option("--image-size", type=int, default=None,
              help=_from_preset("Model input side in pixels.", _PAPER.data.image_size))
@click.option("--patience", type=int, default=None,
              help=_from_preset("Validations without improvement before stopping.", _PAPER.optim.patience))
@click.option("--n-critic", type=int, default=None,
              help=_from_preset("Critic updates per model update (GAN presets).", _PAPER.loss.n_critic))
@click.option("--amp", type=click.Choice(["bf16", "fp16", "fp32"]), default=None,
              help=_from_preset("CUDA mixed precision (CPU runs fp32).", _PAPER.optim.amp))
@click.option("--seed", type=int, default=None,
              help=_from_preset("Random seed (data order, initialisation).", _PAPER.optim.seed))
@click.option("--precise-bn", type=int, default=None,
              help=_from_preset("Recompute batch-norm statistics over N training batches before each validation "
                                "(short runs).", _PAPER.optim.precise_bn))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint, under its saved config (only --epochs "
                   "and --max-steps may differ).")
@click.option("--pretrained", default=None, metavar="imagenet|none|FILE",
              help="Initial backbone weights: imagenet (timm's legacy_xception ImageNet weights, downloaded once "
                   "into $TORCH_HOME/hub/checkpoints), none (random) or a local .safetensors/.pth FILE. "
                   "[default: imagenet]")
@click.option("--backbone-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), hidden=True,
              help="Deprecated: --pretrained FILE.")
@click.option("--workers", default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fit(
    caches: tuple[Path, ...], out: Path, preset: str | None, epochs: int | None, max_steps: int | None,
    batch_size: int | None, lr: float | None, image_size: int | None, patience: int | None,
    n_critic: int | None, amp: str | None, seed: int | None, precise_bn: int | None, device: str,
    resume: bool, pretrained: str | None, backbone_weights: Path | None, workers: int, quiet: bool,
) -> None:  # fmt: skip
    """Train the paper's model (or a Table 3 ablation) on a crop cache; best weights go to OUT."""
    from acfd.train.config import resolve_config
    from acfd.train.fit import FitOptions, resume_config
    from acfd.train.fit import fit as run_fit

    changes = dict(batch_size=batch_size, lr=lr, image_size=image_size, patience=patience,
                   n_critic=n_critic, amp=amp, seed=seed, precise_bn=precise_bn)  # fmt: skip
    if resume:
        cfg = resume_config(out, preset=preset, epochs=epochs, max_steps=max_steps, **changes)
    else:
        cfg = resolve_config(preset or "paper", epochs=epochs, max_steps=max_steps, **changes)
    if backbone_weights is not None:
        if pretrained is not None:
            raise click.UsageError("--backbone-weights is the old name of --pretrained FILE: pass only one")
        pretrained = str(backbone_weights)
    if resume and pretrained is not None:
        raise click.UsageError("--pretrained sets the weights a new run starts from; --resume continues from the "
                               "run's checkpoint")  # fmt: skip
    opts = FitOptions(out=out, data=caches, device=device, resume=resume, pretrained=pretrained or "imagenet",
                      workers=workers, progress=not quiet)  # fmt: skip
    r = run_fit(cfg, opts)
    best = f"{r.best_val_loss:.4g}" if r.best_val_loss is not None else "n/a (no validation split)"
    click.echo(f"{cfg.preset}: {r.steps} steps, {r.epochs_done} epochs, best validation loss {best}"
               f"{', stopped early' if r.stopped_early else ''}; weights in {out}/model.safetensors")
    from acfd.train.model import read_card

    card = read_card(out)
    if card is not None:
        click.echo(f"model card ({out}/card.json): {card.one_line()}")


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, path_type=Path),
              help="Training run directory.")
@click.option("--data", "caches", multiple=True, required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path), help="Crop cache (repeatable).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]),
              help="Split of the cache to evaluate on.")
@click.option("--batch-size", default=64, show_default=True, help="Crops per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--workers", default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON instead of a table.")
def evaluate(
    run_dir: Path, caches: tuple[Path, ...], split: str, batch_size: int, device: str, workers: int, as_json: bool
) -> None:
    """ACC, AUC, TAR@0.1%, TAR@0.01% and PBCA of the LQ branch, per frame and per video (RUN/metrics.json)."""
    import json

    from acfd.train.evaluate import evaluate as run_evaluate
    from acfd.train.evaluate import table

    r = run_evaluate(run_dir, list(caches), split=split, batch_size=batch_size, device=device,
                     workers=workers, progress=not as_json)  # fmt: skip
    click.echo(json.dumps(r.to_dict(), indent=2, sort_keys=True) if as_json else table(r))


# -- engines (acfd.engine; owner: engine engineer) ------------------------------------------------
def _int8_recipe_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The int8 recipe's two knobs (docs/engines.md, "CPU precisions"): models differ in how they take
    quantisation, and the recorded fidelity check says how each setting fared on the held-out crops."""
    f = click.option("--int8-float-tail", "int8_float_tail", type=click.IntRange(min=0), default=None,
                     help="Convolutions at the end left in float (they make the embedding whose norm is the "
                          "score) [default: 4].")(f)  # fmt: skip
    return click.option("--int8-percentile", "int8_percentile", type=click.FloatRange(90, 100, max_open=True),
                        default=None, help="Activation ranges: this percentile of each activation's histogram, "
                                           "both tails [default: 99.99].")(f)  # fmt: skip


@main.command()
@click.option("--run", "run_dir", type=click.Path(exists=True, path_type=Path),
              help="Training run directory (or its model.safetensors).")
@click.option("--onnx", "onnx_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --int8: quantise this exported FP32/FP16 .onnx instead of a run.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX file to write (with --run --int8: the FP32 file; its int8 sibling NAME.int8.onnx lands "
                   "beside it) [with --onnx: NAME.int8.onnx beside it].")
@click.option("--fp16", is_flag=True, help="FP16 graph (I/O stay uint8/float32): what TensorRT builds FP16 engines from.")
@click.option("--int8", is_flag=True,
              help="Also write an int8 artifact (static QDQ quantisation, per-channel weights), calibrated on --calibrate.")
@click.option("--calibrate", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of real face photos/videos for --int8: faces are cropped the scanner's way.")
@click.option("--calibrate-crops", default=256, show_default=True, help="Most face crops used to calibrate.")
@click.option("--embedding", is_flag=True, help="Also output the embedding (or logits) [N,D].")
@click.option("--exporter", default="auto", show_default=True, type=click.Choice(["auto", "torchscript", "dynamo"]),
              help="auto: TorchScript for FP32, dynamo (torch.export) for FP16.")
@click.option("--note", default=None, help="Free text for the artifact's model card (what it is for, its terms).")
@_int8_recipe_options
def export(
    run_dir: Path | None, onnx_path: Path | None, out: Path | None, fp16: bool, int8: bool, calibrate: Path | None,
    calibrate_crops: int, embedding: bool, exporter: str, note: str | None, int8_percentile: float | None,
    int8_float_tail: int | None,
) -> None:  # fmt: skip
    """Export the LQ branch of a run to ONNX (uint8 NHWC crops in, scores and attention out); --int8 also
    quantises it (or the --onnx given) to an int8 sibling, NAME.int8.onnx."""
    from acfd.engine.export import export_run

    if (run_dir is None) == (onnx_path is None):
        raise click.UsageError("give --run RUN (export a training run) or --onnx FILE (with --int8), not both")
    if int8 and calibrate is None:
        raise click.UsageError("--int8 needs --calibrate DIR: a folder of real face photos or videos")
    if calibrate is not None and not int8:
        raise click.UsageError("--calibrate is for --int8")
    if not int8 and (int8_percentile is not None or int8_float_tail is not None):
        raise click.UsageError("--int8-percentile and --int8-float-tail are for --int8")
    if onnx_path is not None and not int8:
        raise click.UsageError("--onnx FILE is quantised with --int8; to export a run, give --run")
    if int8 and fp16:
        raise click.UsageError("--int8 quantises an FP32 graph: leave out --fp16 (an FP16 .onnx given to --onnx is "
                               "converted to FP32 first)")  # fmt: skip
    if run_dir is not None:
        if out is None:
            raise click.UsageError("--run needs --out FILE.onnx")
        r = export_run(run_dir, out, fp16=fp16, with_embedding=embedding, exporter=exporter, note=note)
        click.echo(r.summary())
        onnx_path = r.path
    if int8:
        assert onnx_path is not None and calibrate is not None
        _export_int8(onnx_path, out if run_dir is None else None, calibrate, calibrate_crops,
                     int8_percentile, int8_float_tail)  # fmt: skip


def _export_int8(src: Path, out: Path | None, calibrate: Path, limit: int, percentile: float | None = None,
                 float_tail: int | None = None) -> None:  # fmt: skip
    from acfd.engine.artifact import read_meta
    from acfd.engine.precision import int8_sibling
    from acfd.engine.quantize import export_int8
    from acfd.train.calibrate import calibration_crops

    meta = read_meta(src)
    cal = calibration_crops(calibrate, meta.input_size, meta.crop_margin, limit=limit)
    recipe: dict[str, Any] = {}  # only what was given: the recipe's own defaults live in acfd.engine.quantize
    if percentile is not None:
        recipe["percentile"] = percentile
    if float_tail is not None:
        recipe["float_tail"] = float_tail
    r = export_int8(src, out or int8_sibling(src), cal.crops, source=cal.describe(), **recipe)
    click.echo(r.summary())
    if not r.check.within_tolerance:
        click.echo(f"note: {r.path.name} is outside the int8 fidelity tolerance: `--precision auto` will not run it "
                   f"in place of {src.name}; `--precision int8` does")  # fmt: skip


@main.command()
@click.option("--onnx", "onnx_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="ONNX file from `acfd-train export` (FP16 graph: FP16 engine).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Plan file to write.")
@_tensorrt_options
def engine(
    onnx_path: Path, out: Path, min_batch: int, opt_batch: int, max_batch: int,
    workspace_gb: float | None, timing_cache: Path | None,
) -> None:  # fmt: skip
    """Build a TensorRT engine for this GPU from an exported ONNX (precision comes from the ONNX)."""
    from acfd.engine.tensorrt import build_engine, read_plan

    plan = build_engine(onnx_path, out, min_batch, opt_batch, max_batch, workspace_gb, timing_cache)
    h, _ = read_plan(plan)
    click.echo(f"wrote {plan}: TensorRT {h.tensorrt}, {h.gpu}, {h.artifact_meta.precision}, batch {min_batch}..{max_batch}")


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, path_type=Path),
              help="Training run directory (or its model.safetensors).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for model.onnx, model.fp16.onnx and model.plan.")
@click.option("--calibrate", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Also write model.int8.onnx, calibrated on this folder of real face photos/videos.")
@click.option("--calibrate-crops", default=256, show_default=True, help="Most face crops used to calibrate.")
@_int8_recipe_options
@_tensorrt_options
def build(
    run_dir: Path, out_dir: Path, calibrate: Path | None, calibrate_crops: int, min_batch: int, opt_batch: int,
    max_batch: int, workspace_gb: float | None, timing_cache: Path | None, int8_percentile: float | None,
    int8_float_tail: int | None,
) -> None:  # fmt: skip
    """Export model.onnx (FP32) and model.fp16.onnx, build model.plan where TensorRT is present, and with
    --calibrate the int8 sibling model.int8.onnx (for CPUs)."""
    from acfd.engine.export import build_run

    if calibrate is None and (int8_percentile is not None or int8_float_tail is not None):
        raise click.UsageError("--int8-percentile and --int8-float-tail are for --calibrate (the int8 sibling)")
    r = build_run(run_dir, out_dir, min_batch, opt_batch, max_batch, workspace_gb, timing_cache)
    click.echo(r.onnx_fp32.summary())
    click.echo(r.onnx_fp16.summary())
    click.echo(f"wrote {r.plan}: {r.note}" if r.plan else r.note)
    if calibrate is not None:
        _export_int8(r.onnx_fp32.path, None, calibrate, calibrate_crops, int8_percentile, int8_float_tail)
