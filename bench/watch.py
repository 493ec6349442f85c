"""Benchmark of `acfd-scan watch`: memory over time while watching a real-time live stream, and how many
windows per second the loop and the store handle.

1. **Live** (``--minutes``, default 2): a separate process remuxes a real clip (default the shared
   Hamilton clip, several faces, keyframes every 2 s; read in place, never copied) in a loop, in real
   time, into a live HLS playlist (2-s segments, no ENDLIST) in a temporary folder; the real watch
   (one isolated decode worker, the engine thread, the SQLite store) watches it with the packaged starter
   model (or ``--model``), 10-s windows at ``--fps`` (default 1). Every ``--every`` seconds the resident
   memory (VmRSS) of the watching process and of its decode worker is sampled. ``--stall S`` pauses the
   writer once, at half time, for S seconds (longer than ``--timeout``), to measure a reconnect: from the
   ``dropped`` event to the next ``opened`` and to the first window after it.
2. **Throughput**: the loop and the store alone (a scripted pool that hands out frames at once, a numpy
   model): ``--streams`` streams, windows of one frame, each window its own transaction.
3. **Tracker**: memory kept by the tracker per sampled frame with and without history (a video's tracker
   keeps every frame's ids and descriptors for its final merge; a stream's keeps none), by tracemalloc.

Prints tables and writes bench/results/watch.json.

    .venv/bin/python bench/watch.py [--minutes 2] [--clip FILE] [--model FILE] [--fps 1] [--stall 0]
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_CLIP = HERE.parent.parent / "shared" / "data" / "videos" / "unlabelled_hamilton_640x360.mp4"


# -- the live stream ---------------------------------------------------------------------------------------

def live_writer(clip: str, folder: str, stop, pause, seg_s: float = 2.0) -> None:  # noqa: ANN001
    """Remux ``clip`` in a loop, in real time, into ``folder/live.m3u8`` (no re-encoding: cheap)."""
    import av

    out = av.open(os.path.join(folder, "live.m3u8"), "w", format="hls",
                  options={"hls_time": f"{seg_s:g}", "hls_list_size": "6", "hls_flags": "delete_segments"})
    with av.open(clip) as probe:
        ostream = out.add_stream_from_template(probe.streams.video[0])
        rate = probe.streams.video[0].average_rate
    step = 1.0 / float(rate) if rate else 1 / 25
    t0 = time.monotonic()
    offset = 0.0
    paused = 0.0
    while not stop.is_set():
        with av.open(clip) as inp:
            s = inp.streams.video[0]
            tb = s.time_base
            first = None
            last = 0.0
            for p in inp.demux(s):
                if p.pts is None or stop.is_set():
                    continue
                t = float(p.pts * tb)
                first = t if first is None else first
                last = max(last, t)
                shift = int(round((offset - first) / tb))
                p.pts += shift
                if p.dts is not None:
                    p.dts += shift
                p.stream = ostream
                while pause.is_set() and not stop.is_set():
                    time.sleep(0.05)
                    paused += 0.05
                wait = t0 + paused + (float(p.dts * tb) if p.dts is not None else offset + t - first) - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                out.mux(p)
        offset += last - (first or 0.0) + step
    out.close()


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_live(clip: Path, minutes: float, model: str | None, fps: float, every: float, stall: float,
             timeout_s: float) -> dict:
    from acfd.scanner.watch import StreamPool, WatchConfig, Watcher, watch
    from acfd.scanner.worker import WorkerConfig

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        stop, pause = ctx.Event(), ctx.Event()
        writer = ctx.Process(target=live_writer, args=(str(clip), tmp, stop, pause), daemon=True)
        writer.start()
        playlist = Path(tmp) / "live.m3u8"
        deadline = time.monotonic() + 60
        while not (playlist.exists() and playlist.read_text().count("#EXTINF") >= 2):
            if time.monotonic() > deadline:
                raise SystemExit("the live writer produced no playlist")
            time.sleep(0.2)
        db = Path(tmp) / "w.sqlite"
        cfg = WatchConfig(sources=(str(playlist),), model=model, db=str(db), window_s=10.0, fps=fps,
                          duration_s=minutes * 60, timeout_s=timeout_s)
        pools: list[StreamPool] = []

        def factory(n: int) -> StreamPool:
            w = watcher
            p = StreamPool(WorkerConfig(w.frames, cfg.worker_memory_mb), n, cfg.timeout_s)
            pools.append(p)
            return p

        watcher = Watcher(cfg, progress=False, pool_factory=factory)
        samples: list[dict] = []
        done = threading.Event()
        t0 = time.monotonic()

        def sampler() -> None:
            while True:
                workers = [w.proc.pid for p in pools for w in p._workers] if pools else []
                n = 0
                if db.exists():
                    try:
                        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                            n = c.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
                    except sqlite3.Error:
                        pass
                samples.append({
                    "t_s": round(time.monotonic() - t0, 1), "main_rss_mb": rss_mb(os.getpid()),
                    "worker_rss_mb": sum(r for r in (rss_mb(pid) for pid in workers) if r) or None,
                    "windows": n,
                })
                if done.wait(every):
                    return

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        if stall > 0:
            def stall_once() -> None:
                time.sleep(minutes * 30)
                pause.set()
                time.sleep(stall)
                pause.clear()

            threading.Thread(target=stall_once, daemon=True).start()
        summary = watch(watcher)
        done.set()
        th.join()
        stop.set()
        writer.join(10)
        if writer.is_alive():
            writer.kill()
        with sqlite3.connect(db) as c:
            events = c.execute("SELECT kind, message, at FROM stream_events ORDER BY id").fetchall()
            wins = c.execute("SELECT window_index, n_frames, n_faces, label, score, started_at, ended_at "
                             "FROM windows ORDER BY window_index").fetchall()
        reconnect = None
        drops = [e for e in events if e[0] == "dropped"]
        if drops:
            import datetime as dt

            def ts(x: str) -> float:
                return dt.datetime.fromisoformat(x).timestamp()

            d0 = ts(drops[0][2])
            reopen = next((ts(e[2]) for e in events if e[0] == "opened" and ts(e[2]) > d0), None)
            first_after = next((ts(w[5]) for w in wins if ts(w[5]) > d0), None)
            reconnect = {"dropped": drops[0][1], "drop_to_opened_s": None if reopen is None else round(reopen - d0, 2),
                         "drop_to_first_window_s": None if first_after is None else round(first_after - d0, 2),
                         "n_dropped": len(drops)}
        return {
            "clip": clip.name, "minutes": minutes, "fps": fps, "window_s": 10.0, "model": watcher.cfg.model,
            "windows": summary.n_windows, "flagged": summary.n_flagged, "frames": summary.n_frames,
            "faces": summary.n_faces, "wall_s": round(summary.wall_s, 1), "infer_busy_s": round(summary.infer_busy_s, 1),
            "events": [list(e[:2]) for e in events], "samples": samples, "reconnect": reconnect,
        }


# -- the loop and the store alone -------------------------------------------------------------------------

def run_throughput(n_streams: int, n_windows: int) -> dict:
    from dataclasses import dataclass

    from acfd.scanner.decode import VideoInfo
    from acfd.scanner.faces import Face
    from acfd.scanner.stages import FrameFaces, Opened
    from acfd.scanner.watch import WatchConfig, Watcher, watch
    from acfd.scanner.worker import WorkerMessage
    from acfd.schemas.artifact import ArtifactMeta

    @dataclass
    class Pred:
        score: np.ndarray
        attention: None = None

    class Model:
        meta = ArtifactMeta(input_size=32, attention_size=0, preset="bench")
        name, model_id, max_batch = "numpy", "bench:mean", None

        def infer(self, crops: np.ndarray) -> Pred:
            return Pred(crops.reshape(len(crops), -1).mean(axis=1).astype(np.float32))

    crop = np.full((1, 32, 32, 3), 20, np.uint8)
    face = Face(0.0, 0.0, 32.0, 32.0, 0.9, ())

    class Pool:
        """Hands out each stream's next frame at every poll (one frame per 1-s window)."""

        def __init__(self, n: int) -> None:
            self.next = [0] * n
            self.video: dict[int, int] = {}

        def submit(self, wid: int, video: int, target: str) -> None:
            self.video[wid] = video

        def poll(self, timeout: float = 0.05) -> list[WorkerMessage]:
            out = []
            for wid, video in self.video.items():
                k = self.next[wid]
                if k == 0:
                    out.append(WorkerMessage(video, Opened(VideoInfo("hls", "h264", None, 1.0, None, 32, 32, 0, "pyav"))))
                if k <= n_windows:
                    out.append(WorkerMessage(video, FrameFaces(k, float(k), (face,), (0,), crop, 0.0, 0.0)))
                    self.next[wid] = k + 1
            if not out:
                time.sleep(timeout)
            return out

        def pause_clock(self) -> None:
            pass

        def close(self) -> None:
            pass

    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n_streams):
            (Path(tmp) / f"s{i}").write_bytes(b"x")
        pool = Pool(n_streams)
        cfg = WatchConfig(sources=tuple(str(Path(tmp) / f"s{i}") for i in range(n_streams)), db=str(Path(tmp) / "t.sqlite"),
                          window_s=1.0, fps=1.0, strategy="mean", min_support=1)
        watcher = Watcher(cfg, backend=Model(), pool_factory=lambda n: pool)  # type: ignore[arg-type]
        stop_at = n_streams * n_windows
        from acfd.scanner.watch import Stop

        stop = Stop()
        count = {"n": 0}

        class Counter:
            def write(self, ev: object) -> None:
                if type(ev).__name__ == "WindowResult":
                    count["n"] += 1
                    if count["n"] >= stop_at:
                        stop.set("done")

        t0 = time.perf_counter()
        s = watch(watcher, [lambda ctx: Counter()], stop)
        wall = time.perf_counter() - t0
    return {"streams": n_streams, "windows": s.n_windows, "wall_s": round(wall, 2),
            "windows_per_s": round(s.n_windows / wall, 1)}


# -- the tracker -------------------------------------------------------------------------------------------

def tracker_growth(frames: int = 3600) -> dict:
    import tracemalloc

    from acfd.scanner.faces import Face
    from acfd.scanner.track import IoUTracker

    rng = np.random.default_rng(0)
    people = rng.normal(size=(3, 128))
    people /= np.linalg.norm(people, axis=1, keepdims=True) * 3
    out = {}
    for history in (True, False):
        tr = IoUTracker(history=history)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(frames):
            k = (i // 50) % 3 + 1
            faces = [Face(100.0 * j + i % 7, 10.0, 100.0 * j + 60 + i % 7, 70.0, 0.9, ()) for j in range(k)]
            tr.update(faces, [people[j] + rng.normal(scale=0.01, size=128) for j in range(k)])
            tr.tracklets(i)
            if not history:
                tr.forget(i + 1)
        kept = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        out["video" if history else "stream"] = {"frames": frames, "kept_mb": round(kept / 2**20, 2),
                                                 "bytes_per_frame": round(kept / frames)}
    return out


@click.command()
@click.option("--minutes", type=float, default=2.0, show_default=True, help="How long to watch the live stream.")
@click.option("--clip", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEFAULT_CLIP, show_default=True)
@click.option("--model", default=None, help="Model [default: the packaged starter].")
@click.option("--fps", type=float, default=1.0, show_default=True)
@click.option("--every", type=float, default=10.0, show_default=True, help="Seconds between memory samples.")
@click.option("--stall", type=float, default=0.0, show_default=True, help="Pause the stream once, at half time, this long.")
@click.option("--timeout", "timeout_s", type=float, default=30.0, show_default=True)
@click.option("--streams", type=int, default=4, show_default=True, help="Streams of the throughput part.")
@click.option("--windows", "n_windows", type=int, default=500, show_default=True, help="Windows per stream there.")
@click.option("--out", type=click.Path(path_type=Path), default=HERE / "results" / "watch.json", show_default=True)
def main(minutes: float, clip: Path, model: str | None, fps: float, every: float, stall: float, timeout_s: float,
         streams: int, n_windows: int, out: Path) -> None:
    tracker = tracker_growth()
    click.echo("tracker memory kept (3600 sampled frames, 1-3 faces each):")
    for k, v in tracker.items():
        click.echo(f"  {k:6s} {v['kept_mb']:6.2f} MB ({v['bytes_per_frame']} bytes per frame)")
    thr = run_throughput(streams, n_windows)
    click.echo(f"loop + store: {thr['windows']} windows from {thr['streams']} streams in {thr['wall_s']} s: "
               f"{thr['windows_per_s']} windows/s")
    live = run_live(clip, minutes, model, fps, every, stall, timeout_s)
    click.echo(f"\nlive: {live['clip']} for {minutes:g} min at {fps:g} frame/s, 10-s windows: {live['windows']} windows, "
               f"{live['frames']} frames, {live['faces']} faces, engine busy {live['infer_busy_s']} s")
    click.echo("| t (s) | main RSS (MB) | worker RSS (MB) | windows stored |")
    click.echo("|---|---|---|---|")
    for s in live["samples"]:
        w = f"{s['worker_rss_mb']:.0f}" if s["worker_rss_mb"] else "-"
        m = f"{s['main_rss_mb']:.0f}" if s["main_rss_mb"] else "-"
        click.echo(f"| {s['t_s']:.0f} | {m} | {w} | {s['windows']} |")
    if live["reconnect"]:
        click.echo(f"reconnect: {live['reconnect']}")
    result = {"date": time.strftime("%Y-%m-%d"), "machine": {"cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count()}, "tracker": tracker, "throughput": thr, "live": live}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
