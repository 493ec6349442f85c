"""Are the scanner's identities people? Purity and fragmentation against hand-made labels.

Runs the scanner's own stages on the shared clips - decode (``open_frames``), detect (BlazeFace, the
worker's default settings), crop, describe, track and merge (``acfd.scanner.track``) - for the
identity modes of ``acfd.scanner.track.MODES``: ``face`` (dlib face-recognition embedding of the faces
its schedule picks: the scanner's default), ``face-every`` (every face embedded, as before the
schedule) and the former ``appearance`` (colour histogram + HOG), at 1 and 5 frame/s, and compares
the identities with ``bench/identity_labels.json`` (every detected face of these clips labelled with a
person by looking at the crops). Each (video, sampling) is decoded and every face described once (its
embedding, glance and appearance); the trackers replay the same faces, so all modes see the same
detections, and a mode's embedded share counts the embeddings its tracker asked for. The worker's
per-video stage (``acfd.scanner.stages.frames_with_faces``) is run too on the multi-person clips, for
every mode at 1 frame/s and for ``face`` and ``face-every`` at 5 frame/s: its identities must equal
the replay's (a check that the bench measures what the scanner does), and its ``t_detect`` (detection
and identities) is that stage's real time per video.

Groups:
- ``multi``: the clips with several people (street, Hamilton);
- ``single``: one-person clips (fragmentation: how many identities one person becomes);
- ``cuts``: pairs of one-person clips played one after the other, the second one's boxes moved onto
  the first one's last box (a cut to another person at the same spot: boxes alone would link them).

Metrics: ``purity`` = share of identities whose labelled faces are all one person;
``weighted purity`` = share of labelled faces that belong to their identity's majority person;
``fragmentation`` = identities per person (mean over people of the identities holding them; 1 is best).
Faces labelled ``?`` (a box between two faces) or ``nf`` (not a face) are left out of both.

Also prints the distance distributions of same-person and different-person face pairs, how far the
schedule's glance moves (same person, and at the cuts), a sweep of the face method's two thresholds
and one of the embedding schedule (how they were chosen).
Descriptors stay in memory; only boxes, times and labels are written. Prints tables and writes
bench/results/identities.json.

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
from acfd.scanner.identity import chip_pixels, embedder
from acfd.scanner.track import (
    APPEARANCE,
    FACE,
    MODES,
    SCHEDULE,
    EmbedSchedule,
    Glance,
    IdentityMethod,
    IoUTracker,
    appearance,
    iou,
)

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path("..") / "shared" / "data"  # relative to the repository root
LABELS = HERE / "identity_labels.json"
MULTI = ("videos/unlabelled_street_1080p.mp4", "videos/unlabelled_hamilton_640x360.mp4")
SAMPLINGS = (1.0, 5.0)
IGNORED = ("?", "nf")  # labels left out of the metrics: a box between two faces, not a face
MATCH_IOU = 0.5  # a detection takes the label of the labelled box of its frame it overlaps this much
SHEET_TILE = 160
MODE_ORDER = ("appearance", "face-every", "face")  # the table's order: before, then the face method


@dataclass
class Det:
    """One detected face: where and when, its label, and (in memory only) its descriptors (``face``,
    ``appearance``) and its glance (``glance``, the schedule's cheap look)."""

    time_s: float
    index: int
    face: Face
    looks: dict[str, np.ndarray | Glance | None]
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
        # the face method's steps as the worker runs them (acfd.scanner.track.FrameLooks), each timed
        looks: dict[str, list] = {}
        t0 = time.process_time()
        chips = embedder().chips(fr.image, faces)  # contrast test, landmarks, alignment
        t1 = time.process_time()
        looks["face"] = [embedder().embed_chip(c) for c in chips]  # the ResNet
        t2 = time.process_time()
        looks["glance"] = [None if ch is None else Glance(appearance(c), chip_pixels(ch))
                           for ch, c in zip(chips, crops if crops is not None else [], strict=True)]
        t3 = time.process_time()
        looks["appearance"] = APPEARANCE.describe(fr.image, faces, crops)
        t4 = time.process_time()
        for k, dt, n in (("chip", t1 - t0, len(faces)), ("embed", t2 - t1, sum(c is not None for c in chips)),
                         ("glance", t3 - t2, sum(c is not None for c in chips)), ("appearance", t4 - t3, len(faces))):
            timing[k][0] += dt
            timing[k][1] += n
        timing["chip"][2] += sum(c is None for c in chips)
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


class Recorded:
    """:class:`acfd.scanner.track.Looks` of one recorded frame: what the tracker asks for, from memory."""

    def __init__(self, dets: list[Det], method: IdentityMethod):
        self.dets, self.key = dets, method.name

    def glances(self) -> list:
        return [d.looks["glance"] for d in self.dets]

    def embed(self, indices: list[int]) -> list:
        return [self.dets[i].looks[self.key] for i in indices]

    def later(self, indices: list[int]) -> list:
        return [lambda d=self.dets[i]: d.looks[self.key] for i in indices]


def replay(
    frames: list[list[Det]], method: IdentityMethod, schedule: EmbedSchedule | None = None, counts: dict | None = None
) -> list[list[int]]:
    """The tracker and merge on recorded faces: person identity of each face, frame by frame.
    ``counts``: adds the faces, and those the method described (``embedded``)."""
    tr = IoUTracker(method=method, schedule=schedule)
    for fr in frames:
        tr.observe([d.face for d in fr], Recorded(fr, method), fr[0].time_s if fr else None)
    m = tr.identity_map()  # checks the last reused faces: the tracklet ids are final after it
    if counts is not None:
        for k, v in (("faces", sum(len(fr) for fr in frames)), ("embedded", tr.n_embedded), ("moved", tr.n_moved)):
            counts[k] = counts.get(k, 0) + v
    return [[m[t] for t in tr.tracklets(i)] for i in range(len(frames))]


def replay_mode(frames: list[list[Det]], mode: str, counts: dict | None = None) -> list[list[int]]:
    method, schedule = MODES[mode]
    return replay(frames, method, schedule, counts)


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


def spliced(a: list[list[Det]], b: list[list[Det]], step_s: float) -> list[list[Det]] | None:
    """``a`` then ``b``, ``b``'s boxes moved and scaled onto ``a``'s last face box: a cut at one spot
    (and ``b``'s times moved to go on ``step_s`` after ``a``'s last face, as one stream's would).

    The one-person clips' labels name people across clips, so a cut between two clips of one person
    (labelled_real and labelled_fake) is one person.
    """
    last_det = next((fr[0] for fr in reversed(a) if fr), None)
    first_det = next((fr[0] for fr in b if fr), None)
    if last_det is None or first_det is None:
        return None
    last, first = last_det.face, first_det.face
    s = last.width / max(first.width, 1e-6)
    shift = last_det.time_s + step_s - first_det.time_s

    def move(f: Face) -> Face:
        return Face(last.x0 + (f.x0 - first.x0) * s, last.y0 + (f.y0 - first.y0) * s,
                    last.x0 + (f.x1 - first.x0) * s, last.y0 + (f.y1 - first.y0) * s, f.score, ())

    return [list(fr) for fr in a] + [[dataclasses.replace(d, face=move(d.face), time_s=d.time_s + shift) for d in fr]
                                     for fr in b]


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


def glance_changes(singles: dict[str, list[list[Det]]], schedule: EmbedSchedule) -> dict:
    """How far the schedule's glance moves (appearance, pixels): for the same person between consecutive
    samples of the one-person clips, and at each cut of the ``cuts`` group (the last face of a clip and
    the first of the next, two people), against the schedule's two thresholds."""
    valid = (None, *IGNORED)
    steps = []
    for frames in singles.values():
        for f0, f1 in zip(frames, frames[1:], strict=False):
            if len(f0) == 1 and len(f1) == 1 and f0[0].label == f1[0].label and f0[0].label not in valid:
                g0, g1 = f0[0].looks["glance"], f1[0].looks["glance"]
                if isinstance(g0, Glance) and isinstance(g1, Glance):
                    steps.append(g1.change(g0))
    names = list(singles)
    cuts = []
    for a, b in zip(names, names[1:] + names[:1], strict=True):
        da = [d for fr in singles[a] for d in fr if d.label not in valid and isinstance(d.looks["glance"], Glance)]
        db = [d for fr in singles[b] for d in fr if d.label not in valid and isinstance(d.looks["glance"], Glance)]
        if da and db and da[-1].label != db[0].label:
            cuts.append(db[0].looks["glance"].change(da[-1].looks["glance"]))  # type: ignore[union-attr]
    st, ct = np.asarray(steps), np.asarray(cuts)
    lim = np.array([schedule.max_change, schedule.max_pixel_change])

    def pct(v: np.ndarray) -> dict:
        return {f"p{q}": round(float(np.percentile(v, q)), 3) for q in (50, 95, 99)} if len(v) else {}

    margin = (ct / lim).max(1) if len(ct) else np.array([])
    closest = ct[int(np.argmin(margin))] if len(ct) else None
    return {
        "same_person_steps": len(st), "appearance": pct(st[:, 0]) if len(st) else {}, "pixels": pct(st[:, 1]) if len(st) else {},
        "steps_over_a_threshold": round(float(((st / lim) > 1).any(1).mean()), 3) if len(st) else None,
        "cuts": len(ct), "cuts_over_a_threshold": int((margin > 1).sum()),
        "cut_margin_min": round(float(margin.min()), 2) if len(ct) else None,
        "closest_cut": None if closest is None else [round(float(x), 3) for x in closest],
        "cut_appearance_min": round(float(ct[:, 0].min()), 3) if len(ct) else None,
    }


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


def worker_check(data: Path, rel: str, fps: float, frames: list[list[Det]], mode: str) -> dict:
    """The frames stage on one clip: whether it gives the replay's identities, its faces,
    the faces it embedded and its ``t_detect`` (detection, descriptors and tracking: wall seconds)."""
    from acfd.scanner import identity, stages

    calls = [0]
    real = identity.FaceEmbedder.embed_chip

    def counting(self, chip):  # noqa: ANN001, ANN202
        calls[0] += chip is not None
        return real(self, chip)

    cfg = stages.FramesConfig(sampling=Sampling(fps=fps), crop_size=299, crop_margin=1.3)
    identity.FaceEmbedder.embed_chip = counting  # type: ignore[method-assign]
    try:
        with FaceDetector(cfg.detector_model, cfg.min_face_score, cfg.detect_max_side) as det:  # type: ignore[arg-type]
            events = list(stages.frames_with_faces(cfg, det, str(data / rel), identity=mode))  # type: ignore[arg-type]
    finally:
        identity.FaceEmbedder.embed_chip = real  # type: ignore[method-assign]
    done = events[-1]
    assert isinstance(done, stages.Decoded)
    sent = [e for e in events if isinstance(e, stages.FrameFaces)]
    got = [[done.identity_map[t] for t in f.identities] for f in sent]
    faces = sum(len(f.faces) for f in sent)
    embedded = calls[0] if mode != "appearance" else None
    return {"fps": fps, "video": rel, "mode": mode, "matches_replay": got == replay_mode(frames, mode),
            "faces": faces, "embedded": embedded, "t_detect_s": round(done.t_detect, 2)}


def sweep(groups: dict[str, dict[str, list[list[Det]]]]) -> list[dict]:
    """The face method's thresholds on every group (every face embedded): how the defaults were chosen."""
    rows = []
    for link in (0.4, 0.42, 0.45, 0.48, 0.5, 0.55, 0.6):
        for merge in (0.35, 0.4, 0.42, 0.45, 0.48, 0.5, 0.55, 0.6):
            m = IdentityMethod("face", link, merge)
            row = {"link": link, "merge": merge}
            for g, vids in groups.items():
                row[g] = metrics([(f, replay(f, m)) for f in vids.values()])
            rows.append(row)
    return rows


SCHEDULES = [SCHEDULE] + [dataclasses.replace(SCHEDULE, **kw) for kw in (
    {"max_pixel_change": 2.0, "max_change": 0.04},  # appearance alone, at its closest cut
    {"max_pixel_change": 2.0, "max_change": 0.03},
    {"max_change": 0.04},
    {"max_change": 0.08, "max_pixel_change": 0.25},
    {"every_frames": 8, "every_seconds": 2.0},
    {"every_frames": 32, "every_seconds": 6.0},
    {"min_iou": 0.3},
    {"min_iou": 0.7},
)]


def schedule_sweep(groups: dict[str, dict[str, list[list[Det]]]]) -> list[dict]:
    """The embedding schedule around its defaults: purity, fragmentation and embedded share per group."""
    rows = []
    for sch in SCHEDULES:
        row: dict = {"schedule": dataclasses.asdict(sch)}
        for g, vids in groups.items():
            counts: dict = {}
            res = metrics([(f, replay(f, FACE, sch, counts)) for f in vids.values()])
            row[g] = {**res, "embedded": counts["embedded"] / max(counts["faces"], 1)}
        rows.append(row)
    return rows


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


@click.command()
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="the shared data folder (default ../shared/data from the repository root)")
@click.option("--sheets", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="write PNG contact sheets per video and method here (for labelling)")
@click.option("--no-sweep", is_flag=True, help="skip the threshold and schedule sweeps")
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
    # CPU s, faces, faces without a face descriptor; per step of collect()
    timing = {k: [0.0, 0, 0] for k in ("chip", "embed", "glance", "appearance")}
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
    per_face = {k: (t / n if n else 0.0) for k, (t, n, _) in timing.items()}

    def cpu_s(mode: str, counts: dict) -> float:
        """Identity CPU seconds of a replay: every face aligned (and glanced, ``face``), the asked ones embedded."""
        if mode == "appearance":
            return counts["faces"] * per_face["appearance"]
        glance = per_face["glance"] * counts["faces"] if mode == "face" else 0.0
        return counts["faces"] * per_face["chip"] + glance + counts["embedded"] * per_face["embed"]

    # faces without a label (1 frame/s faces are 5 frame/s ones: counted once)
    unlabelled = len({id(d) for rec in recorded.values() for fr in rec.values() for f in fr for d in f if d.label is None})
    checks = [worker_check(data, rel, fps, recorded[fps][rel], mode) for fps in SAMPLINGS for rel in MULTI if rel in clips
              for mode in MODE_ORDER if fps == 1.0 or mode != "appearance"]
    results: dict = {"runs": [], "totals": []}
    print(f"{'fps':>4} {'group':<7} {'mode':<11} {'ids':>4} {'people':>6} {'faces':>5} "
          f"{'purity':>7} {'w.purity':>8} {'frag':>6} {'impure':>6} {'embedded':>8} {'id CPU s/video':>14}")
    groups_by_fps = {}
    for fps in SAMPLINGS:
        rec = recorded[fps]
        singles = {r: f for r, f in rec.items() if r not in MULTI}
        names = list(singles)
        cuts = {}
        for a, b in zip(names, names[1:] + names[:1], strict=True):
            s = spliced(singles[a], singles[b], 1 / fps)
            if s is not None:
                cuts[f"{a} -> {b}"] = s
        groups = {"multi": {r: rec[r] for r in MULTI if r in rec}, "single": singles, "cuts": cuts}
        groups_by_fps[fps] = groups
        totals: dict[str, dict] = {mode: {} for mode in MODE_ORDER}  # every clip once: multi + single
        for g, vids in groups.items():
            for mode in MODE_ORDER:
                counts: dict = {}
                res = metrics([(f, replay_mode(f, mode, counts)) for f in vids.values()])
                if g != "cuts":
                    for k, v in counts.items():
                        totals[mode][k] = totals[mode].get(k, 0) + v
                    totals[mode]["videos"] = totals[mode].get("videos", 0) + len(vids)
                emb = None if mode == "appearance" else counts["embedded"] / max(counts["faces"], 1)
                cpu = cpu_s(mode, counts) / max(len(vids), 1)
                results["runs"].append({"fps": fps, "group": g, "mode": mode, **res, "embedded": emb,
                                        "identity_cpu_s_per_video": round(cpu, 2)})
                print(f"{fps:>4g} {g:<7} {mode:<11} {res['identities']:>4} {res['people']:>6} {res['faces']:>5} "
                      f"{fmt(res['purity']):>7} {fmt(res['weighted_purity']):>8} {fmt(res['fragmentation']):>6} "
                      f"{res['impure_identities']:>6} {fmt(emb):>8} {cpu:>14.2f}")
        for mode in ("face-every", "face"):
            t = totals[mode]
            row = {"fps": fps, "mode": mode, "videos": t["videos"], "faces": t["faces"], "embedded": t["embedded"],
                   "moved": t.get("moved", 0), "identity_cpu_s_per_video": round(cpu_s(mode, t) / t["videos"], 2)}
            results["totals"].append(row)
            print(f"{fps:>4g} all clips {mode:<11} embedded {t['embedded']} of {t['faces']} faces "
                  f"({t['embedded'] / max(t['faces'], 1):.3f}; reused faces moved by a check: {row['moved']}), "
                  f"identity CPU {row['identity_cpu_s_per_video']:.2f} s per video")
    per_video = []
    for fps in SAMPLINGS:
        for rel in (r for r in MULTI if r in recorded[fps]):
            for mode in MODE_ORDER:
                res = metrics([(recorded[fps][rel], replay_mode(recorded[fps][rel], mode))])
                per_video.append({"fps": fps, "video": rel, "mode": mode, **res})
    results["per_video"] = per_video
    print("\nmulti-person clips, per video:")
    for r in per_video:
        print(f"  {r['fps']:>3g} fps {Path(r['video']).name:<34} {r['mode']:<11} ids {r['identities']:>3} "
              f"people {r['people']:>3} purity {fmt(r['purity'])} frag {fmt(r['fragmentation'])}")
    results["worker"] = checks
    print("\nthe frames stage (stages.frames_with_faces) on the multi-person clips (t_detect: detection + identities, wall s):")
    for c in checks:
        print(f"  {c['fps']:>3g} fps {Path(c['video']).name:<34} {c['mode']:<11} faces {c['faces']:>3} "
              f"embedded {c['embedded'] if c['embedded'] is not None else '-':>3} t_detect {c['t_detect_s']:>6.2f} s "
              f"same as replay: {c['matches_replay']}")
    gl = glance_changes(groups_by_fps[5.0]["single"], SCHEDULE) if 5.0 in groups_by_fps else {}
    results["glance_5fps"] = gl
    print(f"\nthe schedule's glance at 5 frame/s: same person, consecutive samples ({gl.get('same_person_steps')}): "
          f"appearance {gl.get('appearance')}, pixels {gl.get('pixels')}, over a threshold "
          f"{gl.get('steps_over_a_threshold')}; cuts over a threshold {gl.get('cuts_over_a_threshold')} of "
          f"{gl.get('cuts')} (smallest margin {gl.get('cut_margin_min')}x, at {gl.get('closest_cut')}; "
          f"closest in appearance {gl.get('cut_appearance_min')})")
    both = {**recorded[5.0]}
    dists = {m.name: pair_distances(both, m) for m in (FACE, APPEARANCE)}
    results["distances_5fps"] = dists
    print("\nface-pair distances at 5 frame/s (labelled faces):")
    for name, d in dists.items():
        for k, v in d.items():
            print(f"  {name:<11} {k:<17} " + " ".join(f"{q}={v[q]}" for q in v))
    if not no_sweep:
        results["sweep"] = []
        print("\nface method thresholds, every face embedded (purity / fragmentation per group, 1 and 5 frame/s):")
        for fps in SAMPLINGS:
            for row in sweep(groups_by_fps[fps]):
                results["sweep"].append({"fps": fps, **row})
                cells = "  ".join(f"{g} {fmt(row[g]['purity'])}/{fmt(row[g]['fragmentation'])}" for g in groups_by_fps[fps])
                print(f"  {fps:g} fps link {row['link']:.2f} merge {row['merge']:.2f}: {cells}")
        results["schedule_sweep"] = []
        print("\nembedding schedule (purity / fragmentation / embedded share per group; first row: the default):")
        for fps in SAMPLINGS:
            for row in schedule_sweep(groups_by_fps[fps]):
                results["schedule_sweep"].append({"fps": fps, **row})
                sch = row["schedule"]
                cells = "  ".join(f"{g} {fmt(row[g]['purity'])}/{fmt(row[g]['fragmentation'])}/{row[g]['embedded']:.2f}"
                                  for g in groups_by_fps[fps])
                print(f"  {fps:g} fps iou {sch['min_iou']:.1f} change {sch['max_change']:.2f} pixels "
                      f"{sch['max_pixel_change']:.2f} every {sch['every_frames']:>2} / {sch['every_seconds']:g} s: {cells}")
    if sheets is not None:
        for fps in SAMPLINGS:
            for rel, frames in recorded[fps].items():
                for mode in MODE_ORDER:
                    write_sheets(sheets, rel, fps, frames, replay_mode(frames, mode), mode)
    if draft is not None:
        videos = {}
        for rel, frames in recorded[5.0].items():
            ids = replay_mode(frames, "face")
            videos[rel] = {"people": labels.get("videos", {}).get(rel, {}).get("people", {}), "faces": [
                [round(d.time_s, 3), *(round(v, 1) for v in (d.face.x0, d.face.y0, d.face.x1, d.face.y1)),
                 d.label or f"id{i}"] for fr, fid in zip(frames, ids, strict=True) for d, i in zip(fr, fid, strict=True)]}
        draft.write_text(json.dumps({**labels, "videos": videos}, indent=1))
    print(f"\nCPU per face: alignment {per_face['chip'] * 1e3:.1f} ms, embedding {per_face['embed'] * 1e3:.0f} ms, "
          f"glance {per_face['glance'] * 1e3:.2f} ms, appearance {per_face['appearance'] * 1e3:.2f} ms "
          f"({timing['chip'][1]} faces, {timing['chip'][2]} too dark or flat for a face descriptor); "
          f"unlabelled faces: {unlabelled}")
    results.update({
        "modes": {k: {"method": dataclasses.asdict(m), "schedule": sch and dataclasses.asdict(sch)} for k, (m, sch) in MODES.items()},
        "cpu_s_per_face": per_face, "faces_described": timing["chip"][1],
        "faces_without_face_descriptor": timing["chip"][2], "unlabelled_faces": unlabelled,
        "worker_matches_replay": all(c["matches_replay"] for c in checks), "labels": str(LABELS.relative_to(HERE.parent)),
        "machine": platform.processor() or platform.machine(), "wall_s": round(time.perf_counter() - t_start, 1),
        "date": time.strftime("%Y-%m-%d"),
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
