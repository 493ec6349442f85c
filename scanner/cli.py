"""``acfd-scan``: scan videos for face forgeries and store verdicts (a thin layer over :mod:`.pipeline`).

``acfd-scan PATH...`` runs the ``scan`` command (the first argument is not a subcommand name), so both
``acfd-scan /media/archive --recursive`` and ``acfd-scan scan /media/archive --recursive`` work;
subcommands (``query``, ``report``, ``schema``, ...) are added to :data:`main` with ``main.add_command``.
A path that is literally named like a subcommand is scanned with ``acfd-scan scan NAME`` or ``./NAME``.

Exit status (bits, so a script can test each): 0 nothing flagged and no errors; 1 something flagged;
2 some files could not be scanned (error rows); 3 both; 4 the command failed (bad arguments, model
or database; nothing or only part scanned); 130 interrupted (Ctrl-C; what was committed stays).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from acfd.schemas.cli import AcfdGroup
from acfd.schemas.errors import AcfdError

from .aggregate import DEFAULT_STRATEGY, STRATEGIES

EXIT_OK = 0
EXIT_FLAGGED = 1
EXIT_ERRORS = 2
EXIT_FAILED = 4
EXIT_INTERRUPTED = 130

_GROUP_OPTIONS = ("--help", "-h", "--version")
SHOW = 20  # flagged videos and errors listed by name in the summary


class ScanGroup(AcfdGroup):
    """A group whose default command is ``scan``, with the documented exit statuses."""

    default_command = "scan"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in _GROUP_OPTIONS:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            e.exit_code = EXIT_FAILED
            raise

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            e.show()
            sys.exit(EXIT_FAILED)
        except click.Abort:
            click.echo("Aborted: what was committed is kept; run the same command again to resume.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)


@click.group(cls=ScanGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="acfd")
def main() -> None:
    """Scan videos for face forgeries and store per-video and per-person verdicts in a database.

    \b
    acfd-scan PATH... [options]      scan (see `acfd-scan scan --help`)
    Exit status: 0 clean, 1 flagged, 2 errors, 3 flagged and errors, 4 failed, 130 interrupted.
    """


def _fmt_s(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


@main.command("scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-r", "--recursive", is_flag=True, help="Walk folders recursively.")
@click.option("-m", "--model", "model", required=True, envvar="ACFD_MODEL", type=click.Path(exists=True, path_type=str),
              help="Model artifact: .onnx, .plan/.engine, or a training run directory [env ACFD_MODEL].")
@click.option("--db", default="acfd.sqlite", show_default=True,
              help="Verdict store: an SQLite file or any SQLAlchemy URL.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--fps", type=float, default=None, help="Frames sampled per second of video [default: 1].")
@click.option("--frames", type=int, default=None, help="Sample N frames spread evenly over each video instead.")
@click.option("--every-frame", is_flag=True, help="Take every frame (slow; for short clips and benchmarks).")
@click.option("--batch-size", type=int, default=None, help="Crops per model call [default: the engine's, else 4 on CPU].")
@click.option("--workers", type=int, default=None, help="Decode + face-detection processes [default: cores - 1].")
@click.option("--rescan", is_flag=True, help="Scan again videos already scanned with this model.")
@click.option("--retry-errors", is_flag=True, help="Scan again videos whose last scan ended in an error.")
@click.option("--jsonl", type=click.File("w", lazy=False), default=None, help="Also write one JSON line per video ('-': stdout).")
@click.option("--strategy", type=click.Choice(list(STRATEGIES)), default=DEFAULT_STRATEGY, show_default=True,
              help="How frame scores become an identity score (see docs/scanner.md).")
@click.option("--min-support", type=click.IntRange(min=1), default=None,
              help="Faces a person needs to flag a video on their own [default: max(2, 10% of the frames with "
                   "a face)]; 1 lets any single face flag it.")
@click.option("--decoder", type=click.Choice(["auto", "decord", "pyav"]), default="auto", show_default=True)
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True,
              help="Seconds a video's decoder may make no progress before it is killed (error row).")
@click.option("--store-crops", type=int, default=3, show_default=True,
              help="Face crops (JPEG + attention map) stored per identity, most suspicious first.")
@click.option("--detector", "detector_model", type=click.Choice(["full", "short", "auto"]), default="auto", show_default=True,
              help="BlazeFace model: full range (small and distant faces), short range, or auto (full, then short "
                   "range on frames where full finds no face).")
@click.option("--min-face-score", type=float, default=0.5, show_default=True)
@click.option("--worker-memory", "worker_memory_mb", type=int, default=None,
              help="Address-space limit per decode worker in MB (a runaway decoder becomes an error row).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def scan_cmd(paths: tuple[str, ...], quiet: bool, jsonl: Any, every_frame: bool, **kw: Any) -> int:
    """Scan the videos at PATH... (files or folders) and store the verdicts.

    Re-running the same command skips videos already scanned with the same size, mtime and model
    (so an interrupted scan resumes); --rescan forces. Exit status: 0 nothing flagged, 1 something
    flagged, 2 errors, 3 both, 4 the scan could not run, 130 interrupted.
    """
    from .pipeline import ScanConfig, Scanner

    if every_frame:
        if kw["fps"] is not None or kw["frames"] is not None:
            raise click.UsageError("--every-frame excludes --fps and --frames")
        kw["fps"] = 1000.0
    elif kw["frames"] is not None:
        if kw["fps"] is not None:
            raise click.UsageError("choose --fps or --frames, not both")
    elif kw["fps"] is None:
        kw["fps"] = 1.0
    cfg = ScanConfig(paths=tuple(paths), **kw)
    t0 = time.perf_counter()
    scanner = Scanner(cfg)
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(unit="video", dynamic_ncols=True, file=sys.stderr, desc="scan")
    flagged: list[str] = []
    errors: list[tuple[str, str]] = []

    def progress(r: Any, stats: dict[str, float]) -> None:
        if bar is None:
            return
        if bar.total is None and "total" in stats:
            bar.total = int(stats["total"])
        el = max(1e-6, time.perf_counter() - t0)
        bar.set_postfix(frames_s=f"{stats['frames'] / el:.1f}", faces_s=f"{stats['faces'] / el:.1f}", refresh=False)
        bar.update(1)

    def on_result(r: Any) -> None:  # keeps the first SHOW of each for the summary; the store has them all
        if r.flagged and len(flagged) < SHOW:
            flagged.append(f"{r.candidate.display} (score {r.verdict.score:.3g} > {scanner.meta.threshold:.3g})")
        if r.status == "error" and len(errors) < SHOW:
            errors.append((r.candidate.display, r.error or ""))
        if jsonl is not None:
            jsonl.write(r.to_json(scanner.scan_id, scanner.backend.model_id, scanner.meta.threshold, cfg.strategy) + "\n")
            jsonl.flush()

    try:
        s = scanner.run(progress, on_result)
    finally:
        if bar is not None:
            bar.close()
    out = sys.stderr
    click.echo(
        f"scan {s.scan_id}: {s.n_found} found: {s.n_ok} ok, {s.n_no_face} no face, {s.n_error} errors, "
        f"{s.n_skipped} skipped; {s.n_flagged} flagged", file=out,
    )
    if s.unchanged_flagged or s.unchanged_errors:
        click.echo(f"  of the skipped (unchanged since scanned): {s.unchanged_flagged} flagged, "
                   f"{s.unchanged_errors} errors", file=out)
    speed = s.video_seconds / s.wall_s if s.wall_s else 0.0
    t = s.timings
    click.echo(
        f"  {s.n_frames} frames, {s.n_faces} faces, {s.video_seconds:.1f} video-s in {_fmt_s(s.wall_s)} "
        f"({speed:.2f} video-s per s); stage time: decode {t.decode:.1f} s, detect {t.detect:.1f} s "
        f"(in {cfg.n_workers} worker processes), infer {s.infer_busy_s:.1f} s, store {t.store:.1f} s", file=out,
    )
    for line in flagged:
        click.echo(f"  FLAGGED {line}", file=out)
    if s.n_flagged > len(flagged):
        click.echo(f"  ... {s.n_flagged - len(flagged)} more flagged: SELECT path, score FROM latest_verdicts "
                   f"WHERE scan_id = {s.scan_id} AND label = 'fake'", file=out)
    for path, msg in errors:
        click.echo(f"  ERROR {path}: {msg}", file=out)
    if s.n_error > len(errors):
        click.echo(f"  ... {s.n_error - len(errors)} more errors: SELECT path, error FROM videos WHERE scan_id = {s.scan_id} "
                   "AND status = 'error'", file=out)
    click.echo(f"  database: {cfg.db}", file=out)
    return s.exit_code


# Subcommands by other modules register here (query, report, schema): main.add_command(...).
from .cli_report import COMMANDS as _REPORT_COMMANDS  # noqa: E402

for _cmd in _REPORT_COMMANDS:
    main.add_command(_cmd)

__all__ = ["main", "scan_cmd", "AcfdError"]
