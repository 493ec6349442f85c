"""The Ray executor (``acfd-scan --ray``) on a real local Ray instance with 2 CPUs, no mocks.

One instance per module (``ray start --head --block`` on 127.0.0.1, its own temp dir and ports), stopped
after by its own process group (never ``ray stop``: other tests or benchmarks may run Ray). The test
process connects to it once; the executor then uses that connection (and the CLI runs connect on their own).

- the same files and model give the same store with ``--ray`` as with the local scanner (videos,
  detections, labels, scores within 1e-5, kept crops), taken in two chunks (two datasets), and a path
  that vanishes between discovery and decoding is one error row;
- a frames actor and a scoring actor killed by PID mid-scan: Ray restarts them and retries, every video
  is stored once, none lost;
- the scanning process killed mid-scan (SIGKILL): the rerun resumes from the store;
- without ``--ray`` Ray is never imported; without Ray installed, ``--ray`` is one line, exit 4;
- the driver's reassembly on rows as Ray Data hands them back (no cluster): scores before events, rows
  twice, a failed video's late score, a lost video, a row that stops the scan.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from acfd.engine.runtime import load
from acfd.scanner.pipeline import ScanConfig, Scanner
from acfd.scanner.sources import Inputs

from tests import scan_helpers as H
from tests.ray_helpers import ENV, LocalRay

pytestmark = pytest.mark.slow

try:
    import ray
except ImportError:  # on CI (CI set) the dev extras install Ray: its absence is a failure there
    if os.environ.get("CI"):
        raise
    pytest.skip("Ray is not installed: pip install 'acfd[ray]'", allow_module_level=True)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The module's Ray instance, and this process connected to it."""
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    c = LocalRay(tmp_path_factory.mktemp("raycluster"))
    try:
        c.wait_started()
        sigterm = signal.getsignal(signal.SIGTERM)
        ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
        signal.signal(signal.SIGTERM, sigterm)  # ray.init set one that exits at once: not for the session
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return H.face_video(tmp_path_factory.mktemp("rayclip") / "clip.mp4", n=12, fps=10)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """Long enough (40 frames, every one taken) that a kill lands while a video is being decoded."""
    return H.face_video(tmp_path_factory.mktemp("raylong") / "long.mp4", n=40, fps=10)


def _comparer():
    path = ROOT / "bench" / "store_equivalence.py"
    spec = importlib.util.spec_from_file_location("store_equivalence", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class VanishingInputs:
    """The real walk of a folder; ``vanish`` is deleted once it has been discovered (before any decoding:
    the Ray executor collects its chunk of candidates first)."""

    def __init__(self, folder: Path, vanish: Path) -> None:
        self.inner = Inputs((str(folder),), False, True, 30.0)
        self.vanish = vanish

    def items(self):  # noqa: ANN201
        for c in self.inner.items():
            yield c
            if Path(c.path) == self.vanish:
                self.vanish.unlink()


def test_ray_scan_stores_what_a_local_scan_stores(tmp_path, cluster, models, clip):
    d = tmp_path / "v"
    d.mkdir()
    shutil.copy(clip, d / "a_face.mp4")
    H.two_face_video(d / "b_two.mp4")
    H.no_face_video(d / "c_none.mp4")
    H.random_bytes(d / "d_corrupt.mp4")
    backend = load(models["fake"])
    local = ScanConfig(paths=(str(d),), db=str(tmp_path / "local.sqlite"), workers=1, every_frame=True)
    s_local = Scanner(local, backend).run()
    shutil.copy(clip, d / "e_vanish.mp4")
    on_ray = ScanConfig(
        paths=(str(d),), db=str(tmp_path / "ray.sqlite"), every_frame=True, ray=cluster.address
    )
    scanner = Scanner(on_ray, backend)
    scanner.source = VanishingInputs(d, d / "e_vanish.mp4")
    scanner.executor.chunk = 3  # two datasets (3 + 2 videos): how a long walk is taken, a chunk at a time
    s_ray = scanner.run()

    got = H.by_name(tmp_path / "ray.sqlite")
    status, error = got.pop("e_vanish.mp4")[:2]
    assert status == "error" and error.startswith(
        f"not visible on node {socket.gethostname()}: {d / 'e_vanish.mp4'}"
    )
    assert (s_ray.n_ok, s_ray.n_no_face, s_ray.n_error) == (
        s_local.n_ok,
        s_local.n_no_face,
        s_local.n_error + 1,
    )
    assert (s_ray.n_frames, s_ray.n_faces, s_ray.exit_code) == (s_local.n_frames, s_local.n_faces, 3)
    assert got == H.by_name(tmp_path / "local.sqlite")
    assert got["a_face.mp4"][:4] == ("ok", None, 12, "fake") and got["c_none.mp4"][0] == "no_face"
    assert got["d_corrupt.mp4"][0] == "error"
    # everything a scan decides, per video: detections (boxes, identities, scores within 1e-5), verdicts,
    # kept crops (JPEG and attention bytes), the video's facts
    cmp = _comparer()
    a, b = cmp.load(tmp_path / "local.sqlite"), cmp.load(tmp_path / "ray.sqlite")
    b.pop(str(d / "e_vanish.mp4"))
    rows, worst = cmp.compare(a, b, 1e-5)
    assert [r["diffs"] for r in rows] == [[], [], [], []] and worst <= 1e-5
    assert sum(r["detections"] for r in rows) == s_local.n_faces > 12
    assert H.rows(tmp_path / "ray.sqlite", "SELECT COUNT(*) FROM attention_masks") == H.rows(
        tmp_path / "local.sqlite", "SELECT COUNT(*) FROM attention_masks"
    )
    assert s_ray.infer_busy_s > 0
    ex = scanner.executor
    assert ex.plan["frames_actors"] == 1 and ex.plan["score_actors"] == 1 and ex.plan["score_device"] == "cpu"
    assert ex.datasets == 2


def _copies(clip: Path, folder: Path, n: int) -> Path:
    """``folder`` holding ``n`` copies of ``clip`` (clip0.mp4 ...): a folder that keeps the actors busy."""
    folder.mkdir()
    for i in range(n):
        shutil.copy(clip, folder / f"clip{i}.mp4")
    return folder


def test_killed_actors_are_retried_nothing_lost_or_twice(tmp_path, cluster, models, long_clip):
    n = 6
    d = _copies(long_clip, tmp_path / "v", n)
    cfg = ScanConfig(paths=(str(d),), db=str(tmp_path / "k.sqlite"), every_frame=True, ray=cluster.address)
    killed: list[str] = []

    def kill_one(result) -> None:  # noqa: ANN001
        # after the 1st video, the frames actor while it decodes another (a task in flight, which Ray must
        # run again on its restarted actor); after the 2nd, the scoring actor
        kind = {0: "FlatMap(_Frames)", 1: "MapBatches(_Score)"}.get(len(killed))
        if kind is None:
            return
        deadline = time.monotonic() + 10
        pids = cluster.actor_pids(kind, busy=kind.startswith("FlatMap"))
        while not pids and time.monotonic() < deadline:
            time.sleep(0.02)
            pids = cluster.actor_pids(kind, busy=kind.startswith("FlatMap"))
        assert len(pids) == 1, (kind, pids)
        os.kill(pids[0], signal.SIGKILL)
        killed.append(kind)

    s = Scanner(cfg, load(models["fake"])).run(on_result=kill_one)
    assert killed == ["FlatMap(_Frames)", "MapBatches(_Score)"]
    rows = H.rows(
        tmp_path / "k.sqlite", "SELECT path, status, n_faces, COUNT(*) FROM videos GROUP BY path_key"
    )
    assert len(rows) == n and all(count == 1 for *_, count in rows)  # every clip stored, once
    # Ray restarted both actors and retried their work: every clip scanned (an error row would also keep the
    # promise, but these are plain files: a retry must succeed)
    assert sorted(status for _, status, _, _ in rows) == ["ok"] * n and s.n_ok == n
    assert H.rows(tmp_path / "k.sqlite", "SELECT COUNT(*) FROM detections") == [(n * 40,)]  # each face once
    assert H.rows(
        tmp_path / "k.sqlite", "SELECT COUNT(DISTINCT video_id || '/' || frame_index) FROM detections"
    ) == [(n * 40,)]


def test_killed_driver_then_rerun_resumes(tmp_path, cluster, models, long_clip):
    n = 6
    d = _copies(long_clip, tmp_path / "v", n)
    dbp = tmp_path / "k.sqlite"
    args = H.cli(d, "--model", models["fake"], "--db", dbp, "--every-frame", "-q", "--ray", cluster.address)
    env = {**os.environ, **ENV}
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and p.poll() is None:
        if dbp.exists():
            try:
                committed = H.rows(dbp, "SELECT COUNT(*) FROM videos")[0][0]
            except Exception:  # tables not created yet
                committed = 0
            if committed >= 1:
                break
        time.sleep(0.05)
    assert p.poll() is None, f"the scan ended before it could be killed: {p.stderr.read().decode()[-2000:]}"
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stderr.close()
    first = H.rows(dbp, "SELECT id, n_ok FROM scans")
    committed = H.rows(dbp, "SELECT COUNT(*) FROM videos WHERE scan_id = ?", first[0][0])[0][0]
    assert 1 <= committed < n and first[0][1] == committed
    H.rows(dbp, "UPDATE scans SET lease_until = '2000-01-01 00:00:00.000000'")  # its lease ran out
    r = subprocess.run(args, capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 1, r.stderr
    assert "on Ray" in r.stderr and "Traceback" not in r.stderr
    rows = H.rows(dbp, "SELECT path, COUNT(*) FROM videos GROUP BY path_key")
    assert len(rows) == n and all(c == 1 for _, c in rows)
    scans = H.rows(dbp, "SELECT status, n_ok, n_skipped FROM scans ORDER BY id")
    assert scans == [("interrupted", committed, 0), ("done", n - committed, committed)]
    assert H.rows(dbp, "SELECT COUNT(*) FROM detections") == [(n * 40,)]


def test_without_ray_flag_ray_is_never_imported(tmp_path, models, clip):
    code = (
        "import sys\n"
        "import acfd.scanner.ray_exec  # the module imports Ray only when a scan runs on it\n"
        "from acfd.scanner.cli import main\n"
        "try:\n"
        f"    main([{str(clip)!r}, '--model', {str(models['fake'])!r},"
        f" '--db', {str(tmp_path / 'n.sqlite')!r}, '--workers', '0', '--fps', '2', '-q'])\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code)\n"
        "print('ray' in sys.modules, any(m.startswith('ray.') for m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split("\n")[-3:-1] == ["exit 1", "False False"], r.stdout + r.stderr


def test_ray_missing_is_one_line_exit_4(tmp_path, clip):
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if Ray were not installed\n"
        "from acfd.scanner.cli import main\n"
        f"main([{str(clip)!r}, '--db', {str(tmp_path / 'm.sqlite')!r}, '--ray'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 4
    assert r.stderr.strip() == "Error: --ray needs Ray: pip install 'acfd[ray]'"
    r = subprocess.run(
        H.cli(clip, "--db", tmp_path / "m.sqlite", "--ray", tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        r.returncode == 4 and "is not a Ray address" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    )


# -- the driver's reassembly, on rows as Ray Data hands them back (no cluster) ---------------------------


def _batch(rows: list[dict]) -> dict:
    import numpy as np

    return {
        k: np.array(
            [r[k] for r in rows],
            dtype=object if k in ("crop", "thumb", "events", "fatal", "attention") else None,
        )
        for k in rows[0]
    }


def _control(vid: int, events: list) -> dict:
    import pickle

    from acfd.scanner.ray_exec import _row, _strip
    from acfd.scanner.stages import FrameFaces

    return _row(vid, events=pickle.dumps([_strip(e) if isinstance(e, FrameFaces) else e for e in events]))


def _scored(vid: int, face: int, score: float, infer_s: float = 0.5) -> dict:
    import pickle

    import numpy as np
    from acfd.scanner.ray_exec import _row

    r = _row(vid, face, thumb=b"jpeg%d" % face)
    r.update(score=score, infer_s=infer_s, attention=pickle.dumps(np.full((2, 2), score, np.float32)))
    return r


def test_driver_counts_each_face_once_in_any_order(tmp_path):
    from acfd.scanner.config import ScanError
    from acfd.scanner.ray_exec import COLUMNS, _Assembly, _row
    from acfd.scanner.stages import Failed, VideoWork

    from tests.test_local_executor import cand, settings, video

    assert tuple(_row(0)) == tuple(_scored(0, 0, 1.0)) == COLUMNS  # one schema for every row
    s = settings(keep=1)
    works = {v: VideoWork(v, cand(tmp_path, f"v{v}.mp4"), keep=1) for v in range(4)}
    asm = _Assembly(works, s)
    # video 0: two frames of one face each; its scores come first (one of them twice: a retried task)
    assert asm.take(_batch([_scored(0, 1, 8.0), _scored(0, 0, 6.0), _scored(0, 1, 8.0)])) == []
    [r0] = asm.take(_batch([_control(0, video([[6], [8]])), _control(0, video([[6], [8]]))]))
    assert [f.score for f in r0.faces] == [6.0, 8.0] and r0.timings.infer == 1.0
    assert r0.verdict.label == "fake"
    # the highest-scoring crop of its identity kept, with the thumbnail made where it was decoded
    assert [(c.face_index, c.jpeg) for c in r0.crops] == [(1, b"jpeg1")]
    # video 1: failed after a frame; its face's score arrives after the failure and changes nothing
    [r1] = asm.take(_batch([_control(1, video([[9]])[:2] + [Failed("decoder crashed (SIGSEGV)")])]))
    assert (r1.status, r1.error, r1.faces) == ("error", "decoder crashed (SIGSEGV)", [])
    assert asm.take(_batch([_scored(1, 0, 9.0)])) == []
    # video 2: its events came, one of its two scores never does; video 3: nothing came at all
    assert asm.take(_batch([_control(2, video([[1, 2]])), _scored(2, 0, 1.0)])) == []
    lost = {r.candidate.display.rsplit("/", 1)[-1]: r for r in asm.lost()}
    assert sorted(lost) == ["v2.mp4", "v3.mp4"] and {r.status for r in lost.values()} == {"error"}
    assert lost["v3.mp4"].error.startswith("the Ray dataset ended without this video's results")
    assert asm.busy_s == 0.5 * 4 and asm.works == {}  # each scored face's share once (0:2, 1:1, 2:1)
    # a row that says the scan cannot go on (a node without the model, another acfd version) stops it
    asm = _Assembly({5: VideoWork(5, cand(tmp_path, "v5.mp4"))}, s)
    with pytest.raises(ScanError, match="^node n1 has acfd 0.1 but"):
        asm.take(_batch([_row(5, fatal="node n1 has acfd 0.1 but the scanning process runs acfd 0.2")]))
