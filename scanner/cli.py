"""``acfd-scan``: scan videos for face forgeries and store verdicts (a thin layer over :mod:`.pipeline`).

``acfd-scan PATH...`` runs the ``scan`` command (the first argument is not a subcommand name), so both
``acfd-scan /media/archive --recursive`` and ``acfd-scan scan /media/archive --recursive`` work;
subcommands (``query``, ``report``, ``schema``, ...) are added to :data:`main` with ``main.add_command``.
A path that is literally named like a subcommand is scanned with ``acfd-scan scan NAME`` or ``./NAME``.

Exit status (bits, so a script can test each): 0 nothing flagged and no errors; 1 something flagged;
2 some files could not be scanned (error rows); 3 both; 4 the command failed (bad arguments, model
or database, disk full, unexpected error: one line, ``--debug`` for a traceback); 130 interrupted
(Ctrl-C; what was committed stays); 141 the reader of ``--jsonl -`` went away; 143 terminated (SIGTERM,
handled like Ctrl-C).
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

import click
from acfd.schemas.artifact import ArtifactMeta
from acfd.schemas.card import (
    CHANCE_AUC,
    EVAL_SWAPS,
    FAKES_REAL,
    VALIDATION_NONE,
    VALIDATION_REAL,
    ModelCard,
    validation_banner,
)
from acfd.schemas.cli import AcfdGroup
from acfd.schemas.errors import AcfdError, OutputClosed, Terminated

from . import timeline
from .aggregate import DEFAULT_STRATEGY, STRATEGIES
from .config import DECODERS, DEFAULTS, DETECTORS, DEVICES, PRECISIONS
from .text import printable

EXIT_OK = 0
EXIT_FLAGGED = 1
EXIT_ERRORS = 2
EXIT_FAILED = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process killed by it
EXIT_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away (e.g. `| head`)

_GROUP_OPTIONS = ("--help", "-h", "--version")
DEBUG_FLAG = "--debug"


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise Terminated()


def describe_failure(e: BaseException) -> str:
    """One line for an error that is not a domain error (disk full, read-only store, a bug)."""
    import errno

    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    first = text[0] if text else type(e).__name__
    low = first.lower()
    if "database or disk is full" in low or (isinstance(e, OSError) and e.errno == errno.ENOSPC):
        where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
        return f"disk full{where}: the scan stopped; what was committed is kept (free space, then rerun to resume)"
    if "readonly database" in low or "read-only file system" in low:
        return "the verdict store cannot be written (read-only file or folder): choose another --db or fix its permissions"
    return f"unexpected {type(e).__name__}: {first} (run with {DEBUG_FLAG} for the traceback)"


# Subcommands defined by other modules (each module's COMMANDS), by name. A module is imported when one
# of its commands is named (or all are listed, by --help): a scan then imports neither the watcher nor
# the report, and none of the store's SQLAlchemy models before its decode workers start.
# tests/test_startup.py checks this table against the modules.
LAZY_COMMANDS: dict[str, str] = {
    "query": "cli_report", "schema": "cli_report", "report": "cli_report",
    "validate": "cli_validate", "watch": "cli_watch",
}


class ScanGroup(AcfdGroup):
    """A group whose default command is ``scan``, with the documented exit statuses.

    Every failure that stops a command is one line and exit 4; ``--debug`` (anywhere before ``--``)
    shows the traceback of unexpected ones instead. SIGTERM is handled like Ctrl-C (exit 143).
    """

    default_command = "scan"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = list(args)
        end = args.index("--") if "--" in args else len(args)
        # main() has read it already (it decides before any context exists); the commands never see it
        args = [a for i, a in enumerate(args) if not (i < end and a == DEBUG_FLAG)]
        if args and args[0] not in self.commands and args[0] not in LAZY_COMMANDS and args[0] not in _GROUP_OPTIONS:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = LAZY_COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            import importlib

            for cmd in importlib.import_module(f"{__package__}.{module}").COMMANDS:
                self.add_command(cmd)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY_COMMANDS})

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            e.exit_code = EXIT_FAILED
            if getattr(e.__cause__, "multiline", False):  # our own text of a few lines: keep its lines
                e.message = "\n".join(printable(line) for line in e.message.split("\n"))
            elif not isinstance(e, click.UsageError):
                e.message = printable(e.message)  # it may quote a file name: keep it one inert line
            raise

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        import signal

        argv = list(sys.argv[1:] if args is None else args)
        debug = DEBUG_FLAG in argv[: argv.index("--") if "--" in argv else len(argv)]
        terminated = False
        previous = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            e.show()
            sys.exit(EXIT_FAILED)
        except click.Abort as e:
            terminated = isinstance(e.__context__, Terminated) or isinstance(e.__cause__, Terminated)
            what = "Terminated" if terminated else "Aborted"
            click.echo(f"{what}: what was committed is kept; run the same command again to resume.", err=True)
            sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
        except (BrokenPipeError, OutputClosed):
            # The reader of our output is gone (`--jsonl - | head`): stop quietly, like other Unix tools.
            _silence_stdout()
            sys.exit(EXIT_PIPE)
        except Exception as e:
            if debug:
                raise
            click.echo(f"Error: {printable(describe_failure(e))}", err=True)
            sys.exit(EXIT_FAILED)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail a second time."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


# Which model a scan uses and how to get a better one: the epilog of `acfd-scan --help` and of
# `acfd-scan scan --help` (README "Starter model" and "Getting a model" say the same at more length).
MODEL_HELP = (
    "\b\n"
    "Model: without --model (or $ACFD_MODEL) a scan uses the starter model packaged with acfd: trained on\n"
    "self-blends of real people's photos and clips from public repositories, validated on synthetic face\n"
    "swaps only, never on real deepfakes; a starter, not an oracle. Its terms are its own (research and\n"
    "evaluation use, those of its training data): STARTER-NOTICE.md beside it in acfd/scanner/models/.\n"
    "Other models:\n"
    "  train on FaceForensics++ with acfd-train (README \"Training\"), for the paper's model;\n"
    "  retrain the starter on footage you have rights to: `make starter-model` in a checkout (docs/starter.md);\n"
    "  a model someone published: --model 'https://host/model.onnx#sha256=<hex>'\n"
    "    or --model 'hf://org/repo@<commit>/model.onnx' (downloaded once, checked, cached);\n"
    "  `make demo` trains a toy model that only shows the machinery."
)


@click.group(cls=ScanGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=MODEL_HELP)
@click.version_option(package_name="acfd")
def main() -> None:
    """Scan videos for face forgeries and store per-video and per-person verdicts in a database.

    \b
    acfd-scan PATH... [options]      scan (see `acfd-scan scan --help`)
    Exit status: 0 clean, 1 flagged, 2 errors, 3 flagged and errors, 4 failed, 130 interrupted, 143 terminated.
    --debug (anywhere before --) shows the traceback of an unexpected failure.
    """


def _fmt_s(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def card_line(spec: str, model_id: str, meta: ArtifactMeta) -> str:
    """The model and its card in one line, as the scan prints it at the start and in its summary."""
    card = meta.card
    what = card.one_line() if card is not None else "no model card (made before cards): unvalidated"
    # one inert line: a card comes from an artifact file, so it may hold any character
    return printable(f"model: {spec} ({model_id[:12]}): {what}")


# FF++ compression levels, as a folder of labelled videos names them (train/ffpp.py writes them so).
_LEVELS = {"c0": "lossless", "c23": "H.264 CRF 23", "c40": "H.264 CRF 40"}


def _level(data: str) -> str | None:
    """The one compression level the evaluated folders name (``.../c40``), if they name exactly one."""
    found = set(re.findall(r"(?:^|[/\\ ])(c0|c23|c40)(?=$|[/\\;])", data))
    return found.pop() if len(found) == 1 else None


def starter_line(card: ModelCard | None) -> str:
    """What the packaged starter model is, in plain words from its card, for a scan that uses it because
    no model was given. Every part holds when a field is unknown: it is then left out, not guessed."""
    t = card.training if card is not None else None
    if t is not None and t.kind == "synth":
        persons = t.persons  # 0: unknown
        who = f"{persons} real {'person' if persons == 1 else 'people'}" if persons else "real people"
        trained = f"trained on self-blends of {who}"
    else:
        trained = f"trained on {card.trained_on()}" if card is not None else "no model card: training data unknown"
    ev = card.best_evaluation() if card is not None else None
    if ev is None:
        checked = "never evaluated: its verdicts are not evidence"
    else:
        if ev.kind == EVAL_SWAPS:
            what = "synthetic face swaps"
        else:
            what = "real forgeries" if ev.fakes == FAKES_REAL else "synthetic forgeries"
        auc = ev.metrics.get("auc")
        measured = f"AUC {auc:.3f}" if isinstance(auc, (int, float)) else "AUC n/a"
        if isinstance(auc, (int, float)) and auc <= CHANCE_AUC:
            measured += " (close to chance)"
        measured += f" on {ev.n_real} real + {ev.n_fake} fake videos"
        level = _level(ev.data)
        if level is not None:
            measured += f" at {level} ({_LEVELS[level]})"
        state = card.validation if card is not None else VALIDATION_NONE
        if state == VALIDATION_NONE:
            checked = f"not validated ({ev.reason or 'too few videos'}): {measured} of {what}"
        elif state == VALIDATION_REAL:
            checked = f"validated on {what}, {measured}"
        else:
            checked = f"validated on {what} only, {measured}"
    # one inert line: a card comes from an artifact file, so it may hold any character
    return printable(f"starter model: {trained}; {checked}; a starter, not an oracle (acfd-scan --help: other models)")


def warning_line(state: str) -> str | None:
    """The warning printed before a scan by a model not validated on real forgeries (None when it is)."""
    return None if state == VALIDATION_REAL else f"WARNING: {validation_banner(state)}"


def validation_line(state: str) -> str:
    """The validation state in one line, as the summary ends with it."""
    return f"validation: {state}: {warning_line(state) or validation_banner(state)}"


@main.command("scan", epilog=MODEL_HELP)
@click.argument("paths", nargs=-1, required=False, type=click.Path(path_type=str))
@click.option("-r", "--recursive", is_flag=True, help="Walk folders recursively.")
@click.option("--files-from", "files_from", default=None, metavar="FILE|-",
              help="Also scan the paths and URLs listed in FILE ('-': stdin), one per line; blank lines and "
                   "lines starting with # are skipped. Read as the scan goes.")
@click.option("--null", is_flag=True, help="The --files-from list is NUL-separated (find -print0).")
@click.option("-m", "--model", "model", default=None, envvar="ACFD_MODEL", metavar="PATH|URL",
              help="Model artifact: .onnx, .plan/.engine, a training run directory, or a URL "
                   "(https://...#sha256=HEX, hf://org/repo@REV/file), downloaded once [env ACFD_MODEL].")
@click.option("--db", default="acfd.sqlite", show_default=True,
              help="Verdict store: an SQLite file or any SQLAlchemy URL.")
@click.option("--device", type=click.Choice(list(DEVICES)), default=DEFAULTS.device, show_default=True)
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="auto", show_default=True,
              help="auto: the fastest the model and this CPU allow (int8 with VNNI/AMX where the model is int8 or "
                   "has a NAME.int8.onnx sibling, else FP32); what ran is stored in scans.device_name.")
@click.option("--fps", type=float, default=None, help="Frames sampled per second of video [default: 1].")
@click.option("--frames", type=int, default=None, help="Sample N frames spread evenly over each video instead.")
@click.option("--every-frame", is_flag=True, help="Take every frame (slow; for short clips and benchmarks).")
@click.option("--batch-size", type=int, default=None, help="Crops per model call [default: the engine's, else 4 on CPU].")
@click.option("--workers", type=int, default=None, help="Decode + face-detection processes [default: cores - 1]; 0 runs them in the scanning "
              "process (no isolation: a decoder crash or hang stops the scan; for debugging).")
@click.option("--rescan", is_flag=True, help="Scan again videos already scanned with this model.")
@click.option("--retry-errors", is_flag=True, help="Scan again videos whose last scan ended in an error.")
@click.option("--jsonl", type=click.File("w", lazy=False), default=None, help="Also write one JSON line per video ('-': stdout).")
@click.option("--strategy", type=click.Choice(list(STRATEGIES)), default=DEFAULT_STRATEGY, show_default=True,
              help="How frame scores become an identity score (see docs/scanner.md).")
@click.option("--min-support", type=click.IntRange(min=1), default=None,
              help="Faces a person needs to flag a video on their own [default: max(2, 10% of the frames with "
                   "a face)]; 1 lets any single face flag it.")
@click.option("--decoder", type=click.Choice(list(DECODERS)), default=DEFAULTS.decoder, show_default=True)
@click.option("--timeout", "timeout_s", type=float, default=DEFAULTS.timeout_s, show_default=True,
              help="Seconds a video's decoder may make no progress before it is killed (error row); for a URL "
                   "also the connection and read timeout.")
@click.option("--store-crops", type=int, default=DEFAULTS.store_crops, show_default=True,
              help="Face crops (JPEG + attention map) stored per identity, most suspicious first.")
@click.option("--detector", "detector_model", type=click.Choice(list(DETECTORS)), default=DEFAULTS.detector, show_default=True,
              help="BlazeFace model: full range (small and distant faces), short range, or auto (full, then short "
                   "range on frames where full finds no face).")
@click.option("--min-face-score", type=float, default=DEFAULTS.min_face_score, show_default=True)
@click.option("--worker-memory", "worker_memory_mb", type=int, default=None,
              help="Address-space limit per decode worker in MB (a runaway decoder becomes an error row).")
@click.option("--ray", "ray", is_flag=False, flag_value="auto", default=None, metavar="[auto|ADDRESS]",
              help="Run on a Ray cluster (Ray Data): --ray alone or auto uses $RAY_ADDRESS, else a cluster "
                   "running here, else starts a local Ray instance; or a cluster's HOST:PORT. Inputs must be on "
                   "storage every node sees at the same path, and acfd installed on every node (docs/scanner.md, "
                   "Ray).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def scan_cmd(paths: tuple[str, ...], quiet: bool, jsonl: Any, every_frame: bool, **kw: Any) -> int:
    """Scan the videos at PATH... (files, folders, or http(s)/HLS, rtsp, rtmp, srt, udp URLs) and store the verdicts.

    Long lists: find /archive -name '*.mp4' -print0 | acfd-scan --files-from - --null

    Re-running the same command skips videos already scanned with the same size, mtime and model
    (a URL: the same ETag, Last-Modified and Content-Length, as far as the server gives them), so an
    interrupted scan resumes; --rescan forces. A URL's user:password@ is used, never stored or printed. Exit status: 0 nothing flagged, 1 something
    flagged, 2 errors, 3 both, 4 the scan could not run, 130 interrupted, 143 terminated.
    """
    timeline.mark("scan_command")
    from .pipeline import SUMMARY_NAMES as SHOW
    from .pipeline import ScanConfig, Scanner

    if every_frame:
        if kw["fps"] is not None or kw["frames"] is not None:
            raise click.UsageError("--every-frame excludes --fps and --frames")
        kw["every_frame"] = True
    elif kw["frames"] is not None:
        if kw["fps"] is not None:
            raise click.UsageError("choose --fps or --frames, not both")
    elif kw["fps"] is None:
        kw["fps"] = 1.0
    cfg = ScanConfig(paths=tuple(paths), **kw)
    t0 = time.perf_counter()
    scanner = Scanner(cfg, progress=not quiet)
    cfg = scanner.cfg  # as stored: a model URL without any user:password@ it held
    # What the verdicts will be worth, before any verdict: the card, and a warning unless validated on real fakes.
    model_line = card_line(scanner.cfg.model or "", scanner.backend.model_id, scanner.meta)  # spec minus passwords
    state = scanner.meta.validation
    # The packaged starter (used because no model was given) says what it is before its card.
    starter = starter_line(scanner.meta.card) if scanner.starter else None
    if starter:
        click.echo(starter, err=True)
    click.echo(model_line, err=True)
    warning = warning_line(state)
    if warning:
        click.echo(warning, err=True)
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

    from .sinks import JsonlSink  # the store's models: imported once the workers have started

    sinks = [] if jsonl is None else [lambda ctx: JsonlSink(jsonl, ctx)]
    try:
        s = scanner.run(progress, on_result, sinks)
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
    # What the store says about every video under these paths, not only the ones this run analysed.
    click.echo(f"  flagged in the store for these paths: {s.n_flagged + s.unchanged_flagged} "
               f"({s.n_flagged} in this run, {s.unchanged_flagged} unchanged since an earlier scan)", file=out)
    speed = s.video_seconds / s.wall_s if s.wall_s else 0.0
    t = s.timings
    click.echo(
        f"  {s.n_frames} frames, {s.n_faces} faces, {s.video_seconds:.1f} video-s in {_fmt_s(s.wall_s)} "
        f"({speed:.2f} video-s per s); stage time: decode {t.decode:.1f} s, detect {t.detect:.1f} s "
        f"({_where(cfg.n_workers, cfg.ray)}), infer {s.infer_busy_s:.1f} s, store {t.store:.1f} s", file=out,
    )
    # Names come from the file system: printable() keeps escape sequences and newlines inert.
    for line in flagged:
        click.echo(f"  FLAGGED {printable(line)}", file=out)
    if s.n_flagged > len(flagged):
        click.echo(f"  ... {s.n_flagged - len(flagged)} more flagged: SELECT path, score FROM latest_verdicts "
                   f"WHERE scan_id = {s.scan_id} AND label = 'fake'", file=out)
    unchanged = s.unchanged_flagged_videos[: max(0, SHOW - len(flagged))]
    for path, score in unchanged:
        shown = f"score {score:.3g}" if score is not None else "no score"
        click.echo(f"  FLAGGED (unchanged) {printable(path)} ({shown})", file=out)
    if s.unchanged_flagged > len(unchanged):
        # the stored verdicts of this model (other models' verdicts of the same paths are not these)
        click.echo(f"  ... {s.unchanged_flagged - len(unchanged)} more flagged unchanged videos: SELECT path, score "
                   f"FROM latest_verdicts WHERE model_id = '{scanner.backend.model_id}' AND label = 'fake'", file=out)
    for path, msg in errors:
        click.echo(f"  ERROR {printable(path)}: {printable(msg)}", file=out)
    if s.n_error > len(errors):
        click.echo(f"  ... {s.n_error - len(errors)} more errors: SELECT path, error FROM videos WHERE scan_id = {s.scan_id} "
                   "AND status = 'error'", file=out)
    if starter:
        click.echo(f"  {starter}", file=out)
    click.echo(f"  {model_line}", file=out)
    click.echo(f"  {validation_line(state)}", file=out)
    from acfd.schemas.db import safe_url  # a URL's password is never printed

    click.echo(f"  database: {printable(safe_url(cfg.db))}", file=out)
    timeline.mark("summary_printed")
    return s.exit_code


def _where(n_workers: int, ray: str | None = None) -> str:
    if ray is not None:
        return "on Ray"
    return "in the scanning process" if n_workers == 0 else f"in {n_workers} worker processes"


timeline.mark("cli_imported")

__all__ = ["main", "scan_cmd", "AcfdError"]
