"""Benchmark of decoding long videos at 1 frame/s: decode seconds per video-minute, per decoder and path.

Makes (once, cached in bench/results/cache/, never committed) a 10-minute 1080p H.264 video from a shared
clip: the clip's frames looped for one minute and encoded with x264's defaults (CRF 23, preset medium,
3 B-frames, keyframe interval 250: ``k250``) or with a keyframe every 2 s (``k2s``), then that minute
copied ten times (packets remuxed with shifted times, no re-encoding). Then decodes each at 1 frame/s the
way a scan's frames stage does (:func:`acfd.scanner.decode.open_frames`, no face detection), timing:

- ``auto``: what a scan does by default (``--decoder auto``: on a CPU, PyAV's fast path for a sample);
- ``decord``: decord (``--decoder decord``, and ``auto``'s choice on a GPU and for every frame; it seeks
  to the keyframe before a sample when that is ahead of where it is);
- ``pyav``: PyAV as it decodes (:data:`acfd.scanner.decode.FAST_SEEK` on: keyframe-aligned seeking,
  non-reference frames skipped far from a sample);
- ``pyav-plain``: PyAV decoding every frame, the path before the fast one (``FAST_SEEK`` off);
- ``references``: the floor for exact frames: PyAV decoding only the frames other frames refer to (every
  non-reference frame skipped, nothing converted to RGB). A frame taken needs every reference frame
  since its keyframe, so where keyframes are further apart than the sampling step no decoder that gives
  the exact frames can do less.

Each is timed in its own process (wall and CPU seconds), with one and two decoder threads. Prints a
table and writes bench/results/decode.json; ``bench/scan.py --modes long`` puts the same rows beside
the model's time per video-minute.

    .venv/bin/python bench/decode.py [--clip FILE] [--minutes 10] [--threads 1,2]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import click

HERE = Path(__file__).resolve().parent
CACHE = HERE / "results" / "cache"
DEFAULT_CLIP = HERE.parent.parent / "shared" / "data" / "videos" / "unlabelled_1080p.mp4"
VARIANTS = {"k250": {}, "k2s": {"g": "2s"}}  # x264 options over its defaults ("2s": 2 s of frames)
SEGMENT_S = 60.0  # encoded once, then copied to the length asked


def _encode_segment(clip: Path, out: Path, options: dict[str, str], seconds: float) -> None:
    """``seconds`` of ``clip``'s frames (looped) encoded with libx264's defaults plus ``options``."""
    import av

    with av.open(str(clip)) as src:
        s = src.streams.video[0]
        rate = s.average_rate or Fraction(30000, 1001)
        frames = [f.to_ndarray(format="yuv420p") for f in src.decode(s)]
        width, height = s.codec_context.width, s.codec_context.height
    n = int(round(seconds * rate))
    opts = dict(options)
    if opts.get("g", "").endswith("s"):
        opts["g"] = str(int(round(float(opts["g"][:-1]) * rate)))
    tmp = out.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as dst:
        st = dst.add_stream("libx264", rate=rate)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.options = opts
        for i in range(n):
            k = i % (2 * len(frames) - 2) if len(frames) > 1 else 0  # ping-pong: no cut at each loop
            img = frames[k if k < len(frames) else 2 * len(frames) - 2 - k]
            frame = av.VideoFrame.from_ndarray(img, format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, 1) / rate
            for pkt in st.encode(frame):
                dst.mux(pkt)
        for pkt in st.encode(None):
            dst.mux(pkt)
    tmp.replace(out)


def _repeat(segment: Path, out: Path, copies: int) -> None:
    """``segment`` copied ``copies`` times into one file (packets remuxed with shifted times)."""
    import av

    tmp = out.with_suffix(".part.mp4")
    with av.open(str(segment)) as src, av.open(str(tmp), "w") as dst:
        s = src.streams.video[0]
        st = dst.add_stream_from_template(s)
        packets = [p for p in src.demux(s) if p.size]
        last = max(p.pts for p in packets)
        step = last - min(p.pts for p in packets) + (packets[1].pts - packets[0].pts if len(packets) > 1 else 1)
        step = int(round(float(s.duration or 0))) or step  # the segment's own duration when known
        for k in range(copies):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts = p.pts + k * step, p.dts + k * step
                q.is_keyframe = p.is_keyframe
                q.time_base = s.time_base
                q.stream = st
                dst.mux(q)
    tmp.replace(out)


def long_video(variant: str, minutes: float = 10.0, clip: Path = DEFAULT_CLIP) -> Path:
    """The cached ``minutes``-long 1080p video of ``variant`` (made on first use: a few minutes)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"long_{clip.stem}_{variant}_{minutes:g}min.mp4"
    if out.is_file():
        return out
    seg = CACHE / f"segment_{clip.stem}_{variant}_{SEGMENT_S:g}s.mp4"
    if not seg.is_file():
        t0 = time.perf_counter()
        _encode_segment(clip, seg, VARIANTS[variant], SEGMENT_S)
        print(f"encoded {seg.name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    _repeat(seg, out, max(1, int(round(minutes * 60 / SEGMENT_S))))
    return out


def gop_facts(path: Path) -> dict:
    """Frames, keyframes and the median keyframe interval of ``path`` (from packets alone)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        packets = [p.is_keyframe for p in c.demux(s) if p.size]
        duration = float(s.duration * s.time_base) if s.duration else None
        rate = float(s.average_rate) if s.average_rate else None
    key = [i for i, k in enumerate(packets) if k]
    gaps = sorted(b - a for a, b in zip(key, key[1:], strict=False))
    return {"frames": len(packets), "keyframes": len(key), "median_keyint": gaps[len(gaps) // 2] if gaps else None,
            "duration_s": duration, "fps": rate}


# The child process that times one decode: prints one JSON line.
_CHILD = r"""
import json, os, sys, time
from acfd.scanner import decode
path, decoder, threads, fast = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
decode.FAST_SEEK = fast
decode.PYAV_THREADS = decode.DECORD_THREADS = threads
t0, c0 = time.perf_counter(), time.process_time()
n = 0
first = None
if decoder == "references":
    import av
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        s.codec_context.thread_count = threads
        s.codec_context.skip_frame = "NONREF"
        duration = float(s.duration * s.time_base)
        for f in c.decode(s):
            n += 1
            if first is None:
                first = time.perf_counter() - t0
    name = "pyav (references only)"
else:
    info, frames = decode.open_frames(path, decode.Sampling(fps=1.0), decoder=decoder)
    for f in frames:
        n += 1
        if first is None:
            first = time.perf_counter() - t0
    name, duration = info.decoder, info.duration_s
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "frames": n,
                  "first_frame_s": first, "decoder": name, "duration_s": duration}))
"""

PATHS = {"auto": ("auto", True), "decord": ("decord", True), "pyav": ("pyav", True), "pyav-plain": ("pyav", False),
         "references": ("references", True)}


def time_decode(path: Path, path_name: str, threads: int) -> dict:
    """Decode ``path`` at 1 frame/s in a fresh process; wall and CPU seconds."""
    decoder, fast = PATHS[path_name]
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), decoder, str(threads), "1" if fast else "0"],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    minutes = (r["duration_s"] or 0.0) / 60.0
    r.update(path=path_name, threads=threads, wall_s_per_min=r["wall_s"] / minutes, cpu_s_per_min=r["cpu_s"] / minutes)
    return r


def measure(minutes: float = 10.0, clip: Path = DEFAULT_CLIP, threads: tuple[int, ...] = (1,),
            paths: tuple[str, ...] = tuple(PATHS), variants: tuple[str, ...] = tuple(VARIANTS)) -> list[dict]:
    rows = []
    for variant in variants:
        video = long_video(variant, minutes, clip)
        facts = gop_facts(video)
        for th in threads:
            for name in paths:
                r = time_decode(video, name, th)
                rows.append({"video": variant, **facts, **r})
                print(f"done: {variant} {name} threads {th}: {r['cpu_s_per_min']:.1f} CPU s per video-minute",
                      file=sys.stderr, flush=True)
    return rows


def print_rows(rows: list[dict], model_s_per_min: float | None = None) -> None:
    print(f"{'video':6} {'keyint':>6} {'decoder':11} {'threads':>7} {'frames':>6} {'first s':>7} {'wall s':>7} "
          f"{'CPU s':>6} {'CPU s/min':>9} {'wall s/min':>10}" + (f" {'of model':>8}" if model_s_per_min else ""))
    for r in rows:
        line = (f"{r['video']:6} {r['median_keyint'] or 0:6d} {r['path']:11} {r['threads']:7d} {r['frames']:6d} "
                f"{r['first_frame_s']:7.2f} {r['wall_s']:7.1f} {r['cpu_s']:6.1f} {r['cpu_s_per_min']:9.2f} "
                f"{r['wall_s_per_min']:10.2f}")
        if model_s_per_min:
            line += f" {100 * r['cpu_s_per_min'] / model_s_per_min:7.0f}%"
        print(line)


@click.command()
@click.option("--clip", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEFAULT_CLIP)
@click.option("--minutes", type=float, default=10.0, show_default=True)
@click.option("--threads", default="1", show_default=True, help="Decoder threads to try, e.g. 1,2.")
@click.option("--paths", default=",".join(PATHS), show_default=True)
def main(clip: Path, minutes: float, threads: str, paths: str) -> None:
    rows = measure(minutes, clip, tuple(int(t) for t in threads.split(",")), tuple(paths.split(",")))
    print(f"decode at 1 frame/s, {minutes:g}-minute 1080p H.264 from {clip.name}, {os.cpu_count()} cores")
    print_rows(rows)
    out = HERE / "results" / "decode.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"clip": str(clip), "minutes": minutes, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
