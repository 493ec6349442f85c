"""``acfd-scan watch``: a thin click command over :mod:`.watch`, registered on ``acfd-scan`` in :mod:`.cli`.

Flagged windows go to stdout as JSON lines, at once; everything else (the model's card, opened,
dropped and given-up streams, the summary) to stderr. Ctrl-C and SIGTERM stop the watch after its open
windows are committed (exit 130 / 143); a second one stops it at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import click

from .aggregate import DEFAULT_STRATEGY, STRATEGIES
from .config import DEFAULTS, DETECTORS, DEVICES, PRECISIONS
from .text import printable
from .watch import DEFAULT_RECONNECT, DEFAULT_WINDOW_S, WATCH_TIMEOUT_S

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def _seconds(what: str) -> Any:
    def convert(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
        from acfd.schemas.errors import AcfdError

        from .watch import parse_seconds

        if value is None:
            return None
        try:
            return parse_seconds(value, what)
        except AcfdError as e:
            raise click.BadParameter(str(e)) from e

    return convert


@click.command("watch")
@click.argument("sources", nargs=-1, required=True)
@click.option("--window", "window_s", default=f"{DEFAULT_WINDOW_S:g}s", show_default=True, callback=_seconds("--window"),
              help="Length of a window of stream time judged at once: 10s, 2m, 1h or seconds.")
@click.option("--duration", "duration_s", default=None, callback=_seconds("--duration"),
              help="Stop after this much wall time (10s, 2m, 1h, or seconds) [default: until every stream ended "
                   "or was given up, or Ctrl-C].")
@click.option("-m", "--model", "model", default=None, envvar="ACFD_MODEL", metavar="PATH|URL",
              help="Model artifact as for a scan [env ACFD_MODEL; default: the packaged starter model].")
@click.option("--db", default="acfd.sqlite", show_default=True, help="Verdict store: an SQLite file or any SQLAlchemy URL.")
@click.option("--device", type=click.Choice(list(DEVICES)), default=DEFAULTS.device, show_default=True)
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="auto", show_default=True,
              help="The model's arithmetic on a CPU, as for a scan (auto: the fastest the model and this CPU allow).")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.fps, show_default=True,
              help="Frames sampled per second of stream.")
@click.option("--jsonl", type=click.File("w", lazy=False), default=None,
              help="Also write every window and stream event as JSON lines to this file ('-': stdout, which then "
                   "gets them instead of the flagged windows alone).")
@click.option("--timeout", "timeout_s", type=float, default=WATCH_TIMEOUT_S, show_default=True,
              help="Seconds a stream may deliver nothing before it counts as dropped (and is reopened).")
@click.option("--reconnect", type=click.IntRange(min=1), default=DEFAULT_RECONNECT, show_default=True,
              help="Attempts in a row without a frame before a stream is given up (waits 1, 2, 4 ... 30 s between).")
@click.option("--strategy", type=click.Choice(list(STRATEGIES)), default=DEFAULT_STRATEGY, show_default=True,
              help="How frame scores become an identity score (as for a scan).")
@click.option("--min-support", type=click.IntRange(min=1), default=None,
              help="Faces a person needs to flag a window on their own [default: max(2, 10% of its frames with a face)].")
@click.option("--detector", "detector_model", type=click.Choice(list(DETECTORS)), default=DEFAULTS.detector,
              show_default=True, help="BlazeFace model (as for a scan).")
@click.option("--min-face-score", type=float, default=DEFAULTS.min_face_score, show_default=True)
@click.option("--batch-size", type=int, default=None, help="Crops per model call [default: as for a scan].")
@click.option("--worker-memory", "worker_memory_mb", type=int, default=None,
              help="Address-space limit per decode worker in MB.")
@click.option("--in-process", is_flag=True,
              help="Decode in threads of this process instead of one worker process per stream (no isolation: a "
                   "decoder crash ends the watch; for debugging).")
@click.option("-q", "--quiet", is_flag=True, help="Only flagged windows, given-up streams and the summary.")
def watch_cmd(sources: tuple[str, ...], jsonl: Any, quiet: bool, **kw: Any) -> int:
    """Watch live streams (files, growing HLS playlists, URLs) and judge each window of stream time.

    Each window's verdict is stored at once (table windows); a flagged window is printed at once as
    one JSON line on stdout. Stream events (opened, dropped, gave_up, ended) go to the table
    stream_events. Exit status: 0 nothing flagged, 1 a window was flagged, 2 a stream was given up,
    3 both, 4 the watch could not run, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM); the open
    windows are committed first. See docs/scanner.md, "Live streams (watch)".
    """
    from .cli import card_line, starter_line, validation_line, warning_line
    from .watch import Stop, StreamNote, WatchConfig, Watcher, WindowJsonlSink, WindowResult, watch

    cfg = WatchConfig(sources=tuple(sources), **kw)
    watcher = Watcher(cfg, progress=not quiet)
    cfg = watcher.cfg
    state = watcher.meta.validation
    starter = starter_line(watcher.meta.card) if watcher.starter else None
    model_line = card_line(cfg.model or "", watcher.backend.model_id, watcher.meta)
    for line in (starter, model_line, warning_line(state)):
        if line:
            click.echo(line, err=True)
    until = f"for {cfg.duration_s:g} s" if cfg.duration_s else "until every stream ends (Ctrl-C stops)"
    click.echo(f"watching {len(watcher.sources)} source(s) {until}; windows of {cfg.window_s:g} s at "
               f"{cfg.fps:g} frame/s", err=True)

    class Stderr:
        """Stream events, one line each on stderr (given-up streams even with --quiet)."""

        def write(self, ev: Any) -> None:
            if isinstance(ev, StreamNote) and (not quiet or ev.kind == "gave_up"):
                click.echo(printable(f"{ev.kind}: {ev.source.public}: {ev.message}"), err=True)
            elif isinstance(ev, WindowResult) and ev.flagged and not quiet:
                click.echo(printable(f"FLAGGED {ev.source.public} window {ev.index} ({ev.start_s:.1f}-"
                                     f"{ev.end_s:.1f} s): score {ev.verdict.score:.3g}"), err=True)

    to_stdout = jsonl is not None and getattr(jsonl, "name", "") == "<stdout>"
    sinks: list[Any] = []
    if not to_stdout:
        sinks.append(lambda ctx: WindowJsonlSink(sys.stdout, ctx))  # flagged windows: the alerts
    if jsonl is not None:
        sinks.append(lambda ctx: WindowJsonlSink(jsonl, ctx, every=True))
    sinks.append(lambda ctx: Stderr())

    stop = Stop()
    signals = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
    got: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if got:  # a second signal: stop at once (what is committed stays)
            raise KeyboardInterrupt
        got.append(signum)
        stop.set(signals.get(signum, f"signal {signum}"))

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            previous[sig] = signal.signal(sig, on_signal)
    try:
        s = watch(watcher, sinks, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(
        f"watch {s.scan_id}: {s.n_windows} windows from {s.n_sources} source(s) in {s.wall_s:.1f} s: "
        f"{s.n_flagged} flagged; {s.n_frames} frames, {s.n_faces} faces", err=True,
    )
    for public in s.gave_up:
        click.echo(printable(f"  GAVE UP {public}"), err=True)
    if starter:
        click.echo(f"  {starter}", err=True)
    click.echo(f"  {model_line}", err=True)
    click.echo(f"  {validation_line(state)}", err=True)
    from acfd.schemas.db import safe_url  # a URL's password is never printed

    click.echo(f"  database: {printable(safe_url(cfg.db))}", err=True)
    if got:
        term = got[0] == signal.SIGTERM
        click.echo(f"{'Terminated' if term else 'Aborted'}: the open windows were committed.", err=True)
        return EXIT_TERMINATED if term else EXIT_INTERRUPTED
    return s.exit_code


COMMANDS = (watch_cmd,)
