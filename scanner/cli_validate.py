"""``acfd-scan validate``: a thin click command over :mod:`.validate`, registered on ``acfd-scan`` in :mod:`.cli`.

Library errors (:class:`~acfd.schemas.errors.AcfdError`) become one line and exit status 4 through the group.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from acfd.schemas.card import FAKES_KINDS

from .aggregate import DEFAULT_STRATEGY, STRATEGIES
from .config import DECODERS, DEFAULTS, DETECTORS, DEVICES
from .text import printable


@click.command("validate")
@click.option("-m", "--model", required=True, envvar="ACFD_MODEL", type=click.Path(exists=True, path_type=str),
              help="Model artifact: .onnx, .plan/.engine, or a training run directory [env ACFD_MODEL].")
@click.option("--real", "real", required=True, type=click.Path(path_type=str),
              help="Folder of real videos (walked recursively).")
@click.option("--fake", "fake", required=True, type=click.Path(path_type=str),
              help="Folder of fake videos (walked recursively).")
@click.option("--fakes", type=click.Choice(list(FAKES_KINDS)), required=True,
              help="How the fakes were made: real (actual deepfakes) or synthetic (made by a program, e.g. "
                   "acfd-train synth self-blends).")
@click.option("--far", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01, show_default=True,
              help="False-alarm rate on the real videos for the threshold reported (and set by --set-threshold).")
@click.option("--set-threshold", is_flag=True,
              help="Make the threshold at --far the model's decision threshold in the new artifact.")
@click.option("--out", type=click.Path(path_type=str), default=None,
              help="The new artifact [default: <stem>.validated-<UTC time><suffix> beside the model]; never overwritten.")
@click.option("--db", default=None,
              help="Keep the validation scans in this store (SQLite file or SQLAlchemy URL) [default: a temporary "
                   "file, deleted]; never your archive's store.")
@click.option("--device", type=click.Choice(list(DEVICES)), default=DEFAULTS.device, show_default=True)
@click.option("--fps", type=float, default=None, help="Frames sampled per second of video [default: 1].")
@click.option("--frames", type=int, default=None, help="Sample N frames spread evenly over each video instead.")
@click.option("--strategy", type=click.Choice(list(STRATEGIES)), default=DEFAULT_STRATEGY, show_default=True,
              help="How frame scores become an identity score (as for a scan).")
@click.option("--min-support", type=click.IntRange(min=1), default=None,
              help="Faces a person needs to decide a video on their own (as for a scan).")
@click.option("--detector", "detector_model", type=click.Choice(list(DETECTORS)), default=DEFAULTS.detector,
              show_default=True, help="BlazeFace model (as for a scan).")
@click.option("--min-face-score", type=float, default=DEFAULTS.min_face_score, show_default=True)
@click.option("--decoder", type=click.Choice(list(DECODERS)), default=DEFAULTS.decoder, show_default=True)
@click.option("--workers", type=int, default=None, help="Decode + face-detection processes [default: cores - 1]; 0: in this process (no isolation).")
@click.option("--batch-size", type=int, default=None, help="Crops per model call [default: as for a scan].")
@click.option("--timeout", "timeout_s", type=float, default=DEFAULTS.timeout_s, show_default=True,
              help="Seconds a video's decoder may make no progress before it is killed (error, left out).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def validate_cmd(quiet: bool, **kw: Any) -> int:
    """Measure a model on your own labelled videos and record it in the model's card.

    Scans --real and --fake as a scan would (into a temporary store unless --db), prints AUC, ACC,
    TAR at 1% and 0.1% FAR and the threshold at --far with counts per class, and writes a NEW artifact
    beside the model whose card holds this evaluation (a run directory: its card.json). It validates
    the model only with at least 20 videos per class that were not training data. See docs/scanner.md.
    """
    from .validate import ValidateConfig, format_result, validate

    if kw["frames"] is not None and kw["fps"] is not None:
        raise click.UsageError("choose --fps or --frames, not both")
    if kw["frames"] is None and kw["fps"] is None:
        kw["fps"] = 1.0
    cfg = ValidateConfig(**kw)
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(unit="video", dynamic_ncols=True, file=sys.stderr, desc="validate")

    def progress(r: Any, stats: dict[str, float]) -> None:
        assert bar is not None
        if bar.total is None and "total" in stats:
            bar.total = int(stats["total"])
        bar.update(1)

    try:
        res = validate(cfg, progress if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    for line in format_result(res):
        click.echo(printable(line))  # it names folders and files: keep control characters inert
    return 0


COMMANDS = (validate_cmd,)
