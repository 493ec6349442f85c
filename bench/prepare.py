"""Benchmark of the face pipeline `acfd-train prepare` runs per frame: decode, detect, crop.

Runs over the real videos in ../shared/data/videos (and, with --faces, ../shared/data/faces/videos),
prints a table (video, resolution, frames, frames/s, frames with a face, faces) and writes JSON to
bench/results/prepare.json.

    .venv/bin/python bench/prepare.py [--data DIR] [--faces] [--frames N] [--detector full|short|auto]
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import click
from acfd.scanner.faces import FaceDetector, crop, crop_box, largest_face
from acfd.train.ffpp import VIDEO_SUFFIXES, frame_count, iter_frames
from acfd.train.prepare import sample_indices

HERE = Path(__file__).resolve().parent


def bench_video(path: Path, det: FaceDetector, frames: int | None, size: int) -> dict[str, object]:
    n = frame_count(path)
    wanted = set(sample_indices(n, frames)) if frames else None
    t_decode = t_detect = t_crop = 0.0
    done = with_face = faces = 0
    shape = None
    t = time.perf_counter()
    for _, frame in iter_frames(path, wanted=wanted):
        t1 = time.perf_counter()
        t_decode += t1 - t
        if frame is not None:
            shape = frame.shape
            found = det.detect(frame)
            t2 = time.perf_counter()
            t_detect += t2 - t1
            face = largest_face(found)
            if face is not None:
                crop(frame, crop_box(face), size)
                with_face += 1
            faces += len(found)
            done += 1
            t_crop += time.perf_counter() - t2
        t = time.perf_counter()
    total = t_decode + t_detect + t_crop
    return {
        "video": path.name,
        "resolution": f"{shape[1]}x{shape[0]}" if shape else "?",
        "frames_in_video": n,
        "frames": done,
        "frames_with_face": with_face,
        "faces": faces,
        "seconds": round(total, 3),
        "fps": round(done / total, 1) if total else 0.0,
        "ms_decode": round(1000 * t_decode / max(done, 1), 2),
        "ms_detect": round(1000 * t_detect / max(done, 1), 2),
        "ms_crop": round(1000 * t_crop / max(done, 1), 2),
    }


@click.command()
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of videos (default: ../shared/data/videos next to the repository).",
)
@click.option("--faces", "with_faces", is_flag=True, help="Also the talking-head clips in data/faces/videos.")
@click.option("--frames", default=0, show_default=True, help="Frames sampled per video (0: every frame).")
@click.option("--detector", default="auto", show_default=True, type=click.Choice(["full", "short", "auto"]))
@click.option("--size", default=299, show_default=True, help="Crop side.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=HERE / "results" / "prepare.json"
)
def main(data: Path | None, with_faces: bool, frames: int, detector: str, size: int, out: Path) -> None:
    """Decode + detect + crop throughput and faces found, per video."""
    data = data or HERE.parent.parent / "shared" / "data" / "videos"
    if not data.is_dir():
        raise click.ClickException(f"no video folder {data}: pass --data")
    videos = sorted(p for p in data.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if with_faces:
        fv = data.parent / "faces" / "videos"
        videos += sorted(fv.glob("*.mp4")) if fv.is_dir() else []
    rows = []
    with FaceDetector(detector) as det:  # type: ignore[arg-type]  # warmed up on construction
        for v in videos:
            rows.append(bench_video(v, det, frames or None, size))
    head = f"{'video':<48} {'res':>9} {'frames':>6} {'fps':>7} {'decode':>7} {'detect':>7} {'crop':>6} {'w/face':>6} {'faces':>6}"
    click.echo(head)
    click.echo("-" * len(head))
    for r in rows:
        click.echo(
            f"{r['video'][:48]:<48} {r['resolution']:>9} {r['frames']:>6} {r['fps']:>7} {r['ms_decode']:>6}ms "
            f"{r['ms_detect']:>6}ms {r['ms_crop']:>5}ms {r['frames_with_face']:>6} {r['faces']:>6}"
        )
    tot_frames = sum(r["frames"] for r in rows)
    tot_s = sum(r["seconds"] for r in rows)
    label = "auto (full, then short range)" if detector == "auto" else f"{detector}-range"
    click.echo(f"all: {tot_frames} frames in {tot_s:.1f} s = {tot_frames / max(tot_s, 1e-9):.1f} frames/s "
               f"({label} detector, {os.cpu_count()} CPUs)")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "bench": "prepare",
        "detector": detector,
        "frames_per_video": frames or "all",
        "crop_size": size,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "videos": rows,
        "total": {
            "frames": tot_frames,
            "seconds": round(tot_s, 3),
            "fps": round(tot_frames / max(tot_s, 1e-9), 1),
        },
    }
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
