"""`acfd-train`: a thin click layer over the training library. Each command calls one library function."""

from __future__ import annotations

from pathlib import Path

import click
from acfd.schemas.cli import AcfdGroup


@click.group(cls=AcfdGroup)
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
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Photo or video with a face (repeatable); default: scikit-image's astronaut photo.",
)
@click.option("--frames", default=16, show_default=True, help="Frames per video.")
@click.option("--size", default=256, show_default=True, help="Frame side in pixels (square, even).")
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same dataset).")
def synth(out: Path, videos: int, sources: tuple[Path, ...], frames: int, size: int, seed: int) -> None:
    """Write an FF++-shaped dataset of real footage and self-blended fakes to OUT."""
    from acfd.train.synth import SynthConfig, synthesize

    s = synthesize(SynthConfig(out=out, videos=videos, frames=frames, seed=seed, sources=sources, size=size))
    splits = ", ".join(f"{k} {v}" for k, v in s.splits.items())
    click.echo(f"{s.reals} real + {s.fakes} self-blended videos ({s.frames} frames) in {out} [{s.seconds:.1f} s]")
    click.echo(f"split pairs: {splits}")


@main.command()
@click.option("--ffpp", "root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="FaceForensics++ root (original_sequences/, manipulated_sequences/).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Crop cache folder.")
@click.option("--frames", default=270, show_default=True, help="Frames sampled uniformly per video.")
@click.option("--methods", multiple=True, help="Method folders to use (repeatable; default: all present).")
@click.option("--hq", default="c23", show_default=True, type=click.Choice(["raw", "c0", "c23", "c40"]))
@click.option("--lq", default="c40", show_default=True, type=click.Choice(["raw", "c0", "c23", "c40"]))
@click.option("--splits", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with train/val/test.json (default: ROOT/splits or ROOT; else a deterministic split).")
@click.option("--size", default=299, show_default=True, help="Crop side in pixels.")
@click.option("--detector", default="full", show_default=True, type=click.Choice(["full", "short"]))
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


# -- engines (acfd.engine; owner: engine engineer) ------------------------------------------------
@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, path_type=Path),
              help="Training run directory (or its model.safetensors).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="ONNX file to write.")
@click.option("--fp16", is_flag=True, help="FP16 graph (I/O stay uint8/float32): what TensorRT builds FP16 engines from.")
@click.option("--embedding", is_flag=True, help="Also output the embedding (or logits) [N,D].")
@click.option("--exporter", default="torchscript", show_default=True, type=click.Choice(["torchscript", "dynamo"]))
def export(run_dir: Path, out: Path, fp16: bool, embedding: bool, exporter: str) -> None:
    """Export the LQ branch of a run to ONNX (uint8 NHWC crops in, scores and attention out)."""
    from acfd.engine.export import export_run

    click.echo(export_run(run_dir, out, fp16=fp16, with_embedding=embedding, exporter=exporter).summary())


@main.command()
@click.option("--onnx", "onnx_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Plan file to write.")
@click.option("--min-batch", default=1, show_default=True)
@click.option("--opt-batch", default=32, show_default=True)
@click.option("--max-batch", default=128, show_default=True)
@click.option("--workspace-gb", type=float, default=None, help="TensorRT workspace limit (default: TensorRT's).")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Timing cache file, read if present and updated (faster rebuilds on the same GPU).")
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
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--min-batch", default=1, show_default=True)
@click.option("--opt-batch", default=32, show_default=True)
@click.option("--max-batch", default=128, show_default=True)
@click.option("--workspace-gb", type=float, default=None)
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None)
def build(
    run_dir: Path, out_dir: Path, min_batch: int, opt_batch: int, max_batch: int,
    workspace_gb: float | None, timing_cache: Path | None,
) -> None:  # fmt: skip
    """Export model.onnx (FP32) and model.fp16.onnx, and build model.plan where TensorRT is present."""
    from acfd.engine.export import build_run

    r = build_run(run_dir, out_dir, min_batch, opt_batch, max_batch, workspace_gb, timing_cache)
    click.echo(r.onnx_fp32.summary())
    click.echo(r.onnx_fp16.summary())
    click.echo(f"wrote {r.plan}: {r.note}" if r.plan else r.note)
