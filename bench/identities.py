"""Are the scanner's identities people? Purity and fragmentation against hand-made labels.

Runs the scanner's own stages on the shared clips - decode (``open_frames``), detect (BlazeFace, the
worker's default settings), crop, describe, track and merge (``acfd.scanner.track``) - for the
``face`` identity method (dlib face-recognition embedding, the default) and the former ``appearance``
one (colour histogram + HOG), at 1 and 5 frame/s, and compares the identities with
``bench/identity_labels.json`` (every detected face of these clips labelled with a person by looking
at the crops). Each (video, sampling) is decoded and described once; the trackers replay the same
faces, so both methods see the same detections. The worker's per-video function
(``acfd.scanner.worker._process_video``) is run too on the multi-person clips at 1 frame/s, and its
identities must equal the replay's (a check that the bench measures what the scanner does).

Groups:
- ``multi``: the clips with several people (street, Hamilton);
- ``single``: one-person clips (fragmentation: how many identities one person becomes);
- ``cuts``: pairs of one-person clips played one after the other, the second one's boxes moved onto
  the first one's last box (a cut to another person at the same spot: boxes alone would link them).

Metrics: ``purity`` = share of identities whose labelled faces are all one person;
``weighted purity`` = share of labelled faces that belong to their identity's majority person;
``fragmentation`` = identities per person (mean over people of the identities holding them; 1 is best).
Faces labelled ``?`` (a box between two faces) or ``nf`` (not a face) are left out of both.

Also prints the distance distributions of same-person and different-person face pairs and a sweep of
the face method's two thresholds (how they were chosen). Descriptors stay in memory; only boxes,
times and labels are written. Prints tables and writes bench/results/identities.json.

    .venv/bin/python bench/identities.py [--data ../shared/data] [--no-sweep]
    .venv/bin/python bench/identities.py --only hamilton --sheets /tmp/sheets --draft /tmp/labels.json  # labelling
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
from acfd.scanner.decode import Sampling, open_frames
from acfd.scanner.faces import Face, FaceDetector, crop, crop_box
from acfd.scanner.track import APPEARANCE, FACE, IdentityMethod, IoUTracker, iou

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path("..") / "shared" / "data"  # relative to the repository root
LABELS = HERE / "identity_labels.json"
MULTI = ("videos/unlabelled_street_1080p.mp4", "videos/unlabelled_hamilton_640x360.mp4")
SAMPLINGS = (1.0, 5.0)
IGNORED = ("?", "nf")  # labels left out of the metrics: a box between two faces, not a face
MATCH_IOU = 0.5  # a detection takes the label of the labelled box of its frame it overlaps this much
SHEET_TILE = 160


@dataclass
class Det:
    """One detected face: where and when, its label, and (in memory only) its two descriptors."""

    time_s: float
    index: int
    face: Face
    looks: dict[str, np.ndarray | None]
    tile: np.ndarray | None = None
    label: str | None = None


def single_clips(data: Path) -> list[str]:
    found = sorted(p.relative_to(data).as_posix() for p in (data / "faces" / "videos").glob("*.mp4"))
    return ["videos/unlabelled_1080p.mp4", "videos/labelled_real.mp4", "videos/labelled_fake.mp4", *found]


def collect(
    data: Path, rel: str, fps: float, detector: FaceDetector, timing: dict, keep_tiles: bool, seen: dict
) -> list[list[Det]]:
    """Decode, detect and describe one video (the worker's steps); one list of faces per sampled frame.

    ``seen``: faces of frames already described at another sampling, by (video, frame index): the
    1 frame/s frames are a subset of the 5 frame/s ones, and detection is deterministic.
    """
    _, frames = open_frames(str(data / rel), Sampling(fps=fps))
    out = []
    for fr in frames:
        if (rel, fr.index) in seen:
            out.append(seen[rel, fr.index])
            continue
        faces = detector.detect(fr.image)
        crops = np.stack([crop(fr.image, crop_box(f, 1.3), 299) for f in faces]) if faces else None
        looks: dict[str, list] = {}
        for m in (FACE, APPEARANCE):
            t0 = time.process_time()
            looks[m.name] = m.describe(fr.image, faces, crops)
            timing[m.name][0] += time.process_time() - t0
            timing[m.name][1] += len(faces)
            timing[m.name][2] += sum(x is None for x in looks[m.name])
        dets = []
        for i, f in enumerate(faces):
            tile = None
            if keep_tiles:  # the face with its surroundings (2x its box), the box drawn in
                tile = crop(fr.image, crop_box(f, 2.0), SHEET_TILE).copy()
                a, b = SHEET_TILE // 4, SHEET_TILE - SHEET_TILE // 4
                tile[[a, b], a:b] = tile[a:b, [a, b]] = (255, 0, 255)
            dets.append(Det(fr.time_s, fr.index, f, {k: v[i] for k, v in looks.items()}, tile))
        out.append(dets)
        seen[rel, fr.index] = dets
    return out


def replay(frames: list[list[Det]], method: IdentityMethod) -> list[list[int]]:
    """The tracker and merge on recorded faces: person identity of each face, frame by frame."""
    tr = IoUTracker(method=method)
    tracklets = [tr.update([d.face for d in fr], [d.looks[method.name] for d in fr]) for fr in frames]
    m = tr.identity_map()
    return [[m[t] for t in ids] for ids in tracklets]


def attach_labels(rel: str, frames: list[list[Det]], labels: dict) -> int:
    """Set each face's label from the labels file; returns how many faces found none."""
    entries = labels.get("videos", {}).get(rel, {}).get("faces", [])
    by_time: dict[float, list] = defaultdict(list)
    for t, x0, y0, x1, y1, who in entries:
        by_time[round(t, 3)].append((Face(x0, y0, x1, y1, 1.0, ()), who))
    missing = 0
    for fr in frames:
        for d in fr:
            cands = by_time.get(round(d.time_s, 3), [])
            best = max(cands, key=lambda c: iou(c[0], d.face), default=None)
            if best is not None and iou(best[0], d.face) >= MATCH_IOU:
                d.label = best[1]
            else:
                missing += 1
    return missing


def metrics(videos: list[tuple[list[list[Det]], list[list[int]]]]) -> dict:
    """Purity and fragmentation over several videos (identities and people are per video)."""
    n_ids = pure = faces = majority = 0
    frag: list[int] = []
    for frames, ids in videos:
        members: dict[int, list[str]] = defaultdict(list)
        for fr, fid in zip(frames, ids, strict=True):
            for d, i in zip(fr, fid, strict=True):
                if d.label is not None and d.label not in IGNORED:
                    members[i].append(d.label)
        holders: dict[str, set[int]] = defaultdict(set)
        for i, who in members.items():
            n_ids += 1
            pure += len(set(who)) == 1
            faces += len(who)
            majority += max(who.count(w) for w in set(who))
            for w in who:
                holders[w].add(i)
        frag += [len(s) for s in holders.values()]
    return {
        "identities": n_ids,
        "people": len(frag),
        "faces": faces,
        "purity": pure / n_ids if n_ids else None,
        "weighted_purity": majority / faces if faces else None,
        "fragmentation": float(np.mean(frag)) if frag else None,
        "impure_identities": n_ids - pure,
    }


def spliced(a: list[list[Det]], b: list[list[Det]]) -> list[list[Det]] | None:
    """``a`` then ``b``, ``b``'s boxes moved and scaled onto ``a``'s last face box: a cut at one spot.

    The one-person clips' labels name people across clips, so a cut between two clips of one person
    (labelled_real and labelled_fake) is one person.
    """
    last = next((fr[0].face for fr in reversed(a) if fr), None)
    first = next((fr[0].face for fr in b if fr), None)
    if last is None or first is None:
        return None
    s = last.width / max(first.width, 1e-6)

    def move(f: Face) -> Face:
        return Face(last.x0 + (f.x0 - first.x0) * s, last.y0 + (f.y0 - first.y0) * s,
                    last.x0 + (f.x1 - first.x0) * s, last.y0 + (f.y1 - first.y0) * s, f.score, ())

    return [list(fr) for fr in a] + [[dataclasses.replace(d, face=move(d.face)) for d in fr] for fr in b]


def pair_distances(all_frames: dict[str, list[list[Det]]], method: IdentityMethod) -> dict:
    """Distance percentiles of same-person and different-person face pairs (labels), and of the same
    person on consecutive samples (what the link gate sees)."""
    same, diff, consecutive = [], [], []
    for frames in all_frames.values():
        dets = [d for fr in frames for d in fr if d.label not in (None, *IGNORED) and d.looks[method.name] is not None]
        if not dets:
            continue
        x = np.stack([d.looks[method.name] for d in dets]).astype(np.float64)
        dist = method.distances(x, x)
        lab = np.array([d.label for d in dets])
        iu = np.triu_indices(len(dets), 1)
        eq = lab[iu[0]] == lab[iu[1]]
        same += dist[iu][eq].tolist()
        diff += dist[iu][~eq].tolist()
        for f0, f1 in zip(frames, frames[1:], strict=False):
            for d0 in f0:
                for d1 in f1:
                    if d0.label == d1.label and d0.label not in (None, *IGNORED):
                        l0, l1 = d0.looks[method.name], d1.looks[method.name]
                        if l0 is not None and l1 is not None:
                            consecutive.append(float(method.distances(l0[None], l1[None])[0, 0]))
    # different people of different clips (one person per one-person clip; clips of one person share a label)
    heads = []
    for rel, frames in all_frames.items():
        if rel in MULTI:
            continue
        ds = [d for fr in frames for d in fr if d.label not in (None, *IGNORED) and d.looks[method.name] is not None]
        heads += [(d.label, d.looks[method.name]) for d in ds[:: max(1, len(ds) // 5)][:5]]
    for i, (la, xa) in enumerate(heads):
        for lb, xb in heads[i + 1:]:
            if la != lb:
                diff.append(float(method.distances(xa[None].astype(np.float64), xb[None].astype(np.float64))[0, 0]))

    def pct(v: list[float]) -> dict:
        if not v:
            return {"n": 0}
        a = np.asarray(v)
        return {"n": len(v), **{f"p{q}": round(float(np.percentile(a, q)), 3) for q in (1, 5, 50, 95, 99)},
                "min": round(float(a.min()), 3), "max": round(float(a.max()), 3)}

    return {"same": pct(same), "same_consecutive": pct(consecutive), "different": pct(diff)}


def write_sheets(out: Path, rel: str, fps: float, frames: list[list[Det]], ids: list[list[int]], method: str) -> None:
    """PNG pages per video: a row per identity, each face (boxed, in 2x context) with its time, its index
    on the frame and its label (for labelling by eye)."""
    import cv2

    rows: dict[int, list[tuple[Det, int]]] = defaultdict(list)
    for fr, fid in zip(frames, ids, strict=True):
        for k, (d, i) in enumerate(zip(fr, fid, strict=True)):
            rows[i].append((d, k))
    per_row, per_page, t = 6, 6, SHEET_TILE
    lines = [(i, rows[i][s : s + per_row]) for i in sorted(rows) for s in range(0, len(rows[i]), per_row)]
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{rel.replace('/', '_').removesuffix('.mp4')}_fps{fps:g}_{method}"
    for page in range(0, len(lines), per_page):
        chunk = lines[page : page + per_page]
        sheet = np.full((len(chunk) * (t + 16), 40 + per_row * (t + 4), 3), 255, np.uint8)
        for r, (i, items) in enumerate(chunk):
            y = r * (t + 16)
            cv2.putText(sheet, str(i), (4, y + t // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (200, 0, 0), 2)
            for c, (d, k) in enumerate(items):
                x = 40 + c * (t + 4)
                if d.tile is not None:
                    sheet[y : y + t, x : x + t] = d.tile
                text = f"{d.time_s:.2f}#{k} {d.label or ''}"
                cv2.putText(sheet, text, (x, y + t + 12), cv2.FONT_HERSHEY_PLAIN, 1.0, (0, 0, 0), 1)
        cv2.imwrite(str(out / f"{stem}_p{page // per_page}.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def worker_check(data: Path, rel: str, frames: list[list[Det]], method: IdentityMethod) -> bool:
    """The worker's per-video function gives the replay's identities (1 frame/s)."""
    from acfd.scanner import worker

    class Sink:
        def __init__(self) -> None:
            self.msgs: list = []

        def send(self, m: object) -> None:
            self.msgs.append(m)

    cfg = worker.WorkerConfig(sampling=Sampling(fps=1.0), crop_size=299, crop_margin=1.3)
    sink = Sink()
    with FaceDetector(cfg.detector_model, cfg.min_face_score, cfg.detect_max_side) as det:  # type: ignore[arg-type]
        worker._process_video(cfg, det, 0, str(data / rel), sink, identity=method.name)  # type: ignore[arg-type]
    done = sink.msgs[-1][2][4]
    got = [[done[t] for t in m[2].identities] for m in sink.msgs if m[0] == worker.MSG_FRAME]
    return got == replay(frames, method)


def sweep(groups: dict[str, dict[str, list[list[Det]]]]) -> list[dict]:
    """The face method's thresholds on every group: how the defaults were chosen."""
    rows = []
    for link in (0.4, 0.42, 0.45, 0.48, 0.5, 0.55, 0.6):
        for merge in (0.35, 0.4, 0.42, 0.45, 0.48, 0.5, 0.55, 0.6):
            m = IdentityMethod("face", link, merge)
            row = {"link": link, "merge": merge}
            for g, vids in groups.items():
                row[g] = metrics([(f, replay(f, m)) for f in vids.values()])
            rows.append(row)
    return rows


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


@click.command()
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="the shared data folder (default ../shared/data from the repository root)")
@click.option("--sheets", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="write PNG contact sheets per video and method here (for labelling)")
@click.option("--no-sweep", is_flag=True, help="skip the threshold sweep")
@click.option("--only", default=None, help="only the clips whose path contains this text (labelling)")
@click.option("--draft", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write a labels file for the 5 frame/s faces here, each face's label its stored one or, "
                   "where it has none, 'face method identity N' (to be corrected by eye with --sheets)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=HERE / "results" / "identities.json")
def main(
    data: Path | None, sheets: Path | None, no_sweep: bool, only: str | None, draft: Path | None, out: Path
) -> None:
    data = data or (HERE.parent / DEFAULT_DATA)
    labels = json.loads(LABELS.read_text()) if LABELS.is_file() else {}
    timing = {m: [0.0, 0, 0] for m in ("face", "appearance")}  # CPU s, faces, without a descriptor
    clips = [c for c in (*MULTI, *single_clips(data)) if only is None or only in c]
    recorded: dict[float, dict[str, list[list[Det]]]] = {}
    t_start = time.perf_counter()
    seen: dict = {}
    with FaceDetector("auto", 0.5, 640) as det:
        for fps in sorted(SAMPLINGS, reverse=True):
            recorded[fps] = {}
            for rel in clips:
                frames = collect(data, rel, fps, det, timing, sheets is not None, seen)
                attach_labels(rel, frames, labels)
                recorded[fps][rel] = frames
    # faces without a label (1 frame/s faces are 5 frame/s ones: counted once)
    unlabelled = len({id(d) for rec in recorded.values() for fr in rec.values() for f in fr for d in f if d.label is None})
    checks = {rel: {m.name: worker_check(data, rel, recorded[1.0][rel], m) for m in (FACE, APPEARANCE)}
              for rel in MULTI if rel in clips}
    results: dict = {"runs": []}
    print(f"{'fps':>4} {'group':<7} {'method':<11} {'ids':>4} {'people':>6} {'faces':>5} "
          f"{'purity':>7} {'w.purity':>8} {'frag':>6} {'impure':>6}")
    groups_by_fps = {}
    for fps in SAMPLINGS:
        rec = recorded[fps]
        singles = {r: f for r, f in rec.items() if r not in MULTI}
        names = list(singles)
        cuts = {}
        for a, b in zip(names, names[1:] + names[:1], strict=True):
            s = spliced(singles[a], singles[b])
            if s is not None:
                cuts[f"{a} -> {b}"] = s
        groups = {"multi": {r: rec[r] for r in MULTI if r in rec}, "single": singles, "cuts": cuts}
        groups_by_fps[fps] = groups
        for g, vids in groups.items():
            for m in (APPEARANCE, FACE):
                res = metrics([(f, replay(f, m)) for f in vids.values()])
                results["runs"].append({"fps": fps, "group": g, "method": m.name, **res})
                print(f"{fps:>4g} {g:<7} {m.name:<11} {res['identities']:>4} {res['people']:>6} {res['faces']:>5} "
                      f"{fmt(res['purity']):>7} {fmt(res['weighted_purity']):>8} {fmt(res['fragmentation']):>6} "
                      f"{res['impure_identities']:>6}")
    per_video = []
    for fps in SAMPLINGS:
        for rel in (r for r in MULTI if r in recorded[fps]):
            for m in (APPEARANCE, FACE):
                res = metrics([(recorded[fps][rel], replay(recorded[fps][rel], m))])
                per_video.append({"fps": fps, "video": rel, "method": m.name, **res})
    results["per_video"] = per_video
    print("\nmulti-person clips, per video:")
    for r in per_video:
        print(f"  {r['fps']:>3g} fps {Path(r['video']).name:<34} {r['method']:<11} ids {r['identities']:>3} "
              f"people {r['people']:>3} purity {fmt(r['purity'])} frag {fmt(r['fragmentation'])}")
    both = {**recorded[5.0]}
    dists = {m.name: pair_distances(both, m) for m in (FACE, APPEARANCE)}
    results["distances_5fps"] = dists
    print("\nface-pair distances at 5 frame/s (labelled faces):")
    for name, d in dists.items():
        for k, v in d.items():
            print(f"  {name:<11} {k:<17} " + " ".join(f"{q}={v[q]}" for q in v))
    if not no_sweep:
        results["sweep"] = []
        print("\nface method thresholds (purity / fragmentation per group, 1 and 5 frame/s):")
        for fps in SAMPLINGS:
            for row in sweep(groups_by_fps[fps]):
                results["sweep"].append({"fps": fps, **row})
                cells = "  ".join(f"{g} {fmt(row[g]['purity'])}/{fmt(row[g]['fragmentation'])}" for g in groups_by_fps[fps])
                print(f"  {fps:g} fps link {row['link']:.2f} merge {row['merge']:.2f}: {cells}")
    if sheets is not None:
        for fps in SAMPLINGS:
            for rel, frames in recorded[fps].items():
                for m in (FACE, APPEARANCE):
                    write_sheets(sheets, rel, fps, frames, replay(frames, m), m.name)
    if draft is not None:
        videos = {}
        for rel, frames in recorded[5.0].items():
            ids = replay(frames, FACE)
            videos[rel] = {"people": labels.get("videos", {}).get(rel, {}).get("people", {}), "faces": [
                [round(d.time_s, 3), *(round(v, 1) for v in (d.face.x0, d.face.y0, d.face.x1, d.face.y1)),
                 d.label or f"id{i}"] for fr, fid in zip(frames, ids, strict=True) for d, i in zip(fr, fid, strict=True)]}
        draft.write_text(json.dumps({**labels, "videos": videos}, indent=1))
    per_face = {m: (t / n if n else None) for m, (t, n, _) in timing.items()}
    print(f"\nCPU per face: face {fmt(per_face['face'])} s, appearance {fmt(per_face['appearance'])} s "
          f"({timing['face'][1]} faces, {timing['face'][2]} too dark or flat for a face descriptor); "
          f"unlabelled faces: {unlabelled}; worker check: {checks}")
    results.update({
        "face_method": dataclasses.asdict(FACE), "appearance_method": dataclasses.asdict(APPEARANCE),
        "cpu_s_per_face": per_face, "faces_described": timing["face"][1], "faces_without_face_descriptor": timing["face"][2], "unlabelled_faces": unlabelled,
        "worker_matches_replay": checks, "labels": str(LABELS.relative_to(HERE.parent)),
        "machine": platform.processor() or platform.machine(), "wall_s": round(time.perf_counter() - t_start, 1),
        "date": time.strftime("%Y-%m-%d"),
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
