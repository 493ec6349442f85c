"""End to end: `acfd-scan` over an archive of good and broken files, through the real ONNX runtime.

The archive holds every fault the brief lists; one scan covers them all (worker processes cost a
few seconds to start on 2 cores), and the later tests re-use its database.
"""

from __future__ import annotations

import json
import os
import sqlite3

import cv2
import numpy as np
import pytest
from acfd.scanner.cli import main
from acfd.scanner.decode import EVERY_FRAME, open_frames
from acfd.scanner.faces import Face, crop, crop_box
from acfd.schemas import db
from click.testing import CliRunner

from tests import scan_helpers as H
from tests.media import write_video

FAKE_BIAS = H.FAKE_BIAS


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    H.face_video(root / "face.mp4", n=15, fps=10)  # 1.5 s: frames at 0 and 1 s
    H.two_face_video(root / "two_faces.mp4", n=6, fps=5)
    H.no_face_video(root / "no_face.mp4", n=5, fps=10)
    H.rotated_face_video(root / "rotated.mp4", n=3, fps=5)
    H.vfr_video(root / "vfr.mp4", [0.0, 0.05, 0.1, 1.2, 1.25, 2.05])
    write_video(root / "one_frame.mp4", H.moving_face_frames(1, (240, 320)), fps=25)
    H.four_k(root / "4k.mp4")
    (root / "zero.mp4").write_bytes(b"")
    H.truncated(root / "face.mp4", root / "truncated.mp4")
    H.random_bytes(root / "random.mp4")
    (root / "text.avi").write_text("this is not a video\n" * 10)
    H.audio_only(root / "audio_only.mp4")
    nonutf8 = os.fsencode(root) + b"/caf\xe9.mp4"
    with open(nonutf8, "wb") as f:
        f.write((root / "one_frame.mp4").read_bytes())
    os.symlink(root / "gone.mp4", root / "broken_link.mp4")
    os.symlink("loop_b.mp4", root / "loop_a.mp4")
    os.symlink("loop_a.mp4", root / "loop_b.mp4")
    (root / ".hidden.mp4").write_bytes((root / "face.mp4").read_bytes())
    sub = root / "sub"
    sub.mkdir()
    os.link(root / "face.mp4", sub / "same_inode.mp4")
    os.symlink(root, sub / "up")  # a directory loop
    return root


EXPECTED = {
    # name: (status, error starts with, n_faces, whole-video label)
    "face.mp4": ("ok", None, 2, "fake"),
    "two_faces.mp4": ("ok", None, 4, "fake"),
    "no_face.mp4": ("no_face", None, 0, "no_face"),
    "rotated.mp4": ("ok", None, 1, "fake"),
    "vfr.mp4": ("ok", None, 3, "fake"),
    "one_frame.mp4": ("ok", None, 1, "fake"),
    "4k.mp4": ("ok", None, 1, "fake"),
    "caf\ufffd.mp4": ("ok", None, 1, "fake"),
    "zero.mp4": ("error", "empty file (0 bytes)", 0, None),
    "truncated.mp4": ("error", "not a readable video container", 0, None),
    "random.mp4": ("error", "not a readable video container", 0, None),
    "text.avi": ("error", "not a readable video container", 0, None),
    "audio_only.mp4": ("error", "no video stream (streams: audio)", 0, None),
    "broken_link.mp4": ("error", "broken symbolic link", 0, None),
    "loop_a.mp4": ("error", "symbolic link loop", 0, None),
    "loop_b.mp4": ("error", "symbolic link loop", 0, None),
    "same_inode.mp4": ("skipped", "same file as ", 0, None),
}


def _scan(*args, input=None):
    r = CliRunner().invoke(main, [str(a) for a in args], input=input)
    return r


@pytest.fixture(scope="module")
def scanned(archive, models, tmp_path_factory):
    d = tmp_path_factory.mktemp("store")
    dbp, jsonl = d / "acfd.sqlite", d / "out.jsonl"
    r = _scan(archive, "--recursive", "--model", models["fake"], "--db", dbp, "--fps", 1,
              "--jsonl", jsonl, "--workers", 1, "--quiet")
    return r, dbp, jsonl


def test_every_file_gets_its_row(scanned):
    r, dbp, _ = scanned
    assert r.exit_code == 3, r.output  # 1 (flagged) | 2 (errors)
    got = H.by_name(dbp)
    assert sorted(got) == sorted(EXPECTED)
    for name, (status, err, n_faces, label) in EXPECTED.items():
        g_status, g_err, g_faces, g_label, g_score = got[name]
        assert (g_status, g_faces, g_label) == (status, n_faces, label), name
        if err is None:
            assert g_err is None, (name, g_err)
        else:
            assert g_err.startswith(err) and "\n" not in g_err, (name, g_err)
        if label == "fake":
            assert g_score > 9.05
        else:
            assert g_score is None  # no made-up score for no_face and errors
    assert "ERROR" in r.output and "FLAGGED" in r.output
    scan = H.rows(dbp, "SELECT status, n_found, n_ok, n_no_face, n_error, n_skipped, n_flagged, n_faces FROM scans")
    assert scan == [("done", 17, 7, 1, 8, 1, 7, 13)]


def test_detections_scores_and_masks_are_the_models(scanned, archive):
    _, dbp, _ = scanned
    # Recompute one stored score from scratch: decode, crop with the stored box, the model's formula.
    (vid, ) = H.rows(dbp, "SELECT id FROM videos WHERE path LIKE '%/face.mp4'")[0]
    dets = H.rows(dbp, "SELECT frame_index, time_s, identity, x0, y0, x1, y1, det_score, score, id FROM detections "
                       "WHERE video_id = ? ORDER BY frame_index", vid)
    assert [(d[0], d[1], d[2]) for d in dets] == [(0, 0.0, 0), (10, 1.0, 0)]
    _, frames = open_frames(str(archive / "face.mp4"), EVERY_FRAME)
    frames = {f.index: f.image for f in frames}
    for fi, _, _, x0, y0, x1, y1, ds, score, _ in dets:
        assert 0.5 <= ds <= 1.0
        c = crop(frames[fi], crop_box(Face(x0, y0, x1, y1, ds, ()), 1.3), H.MODEL_SIZE)
        assert score == pytest.approx(H.expected_score(c, FAKE_BIAS), abs=2e-3)
    # two people -> two identities, two identity verdicts + the video's
    (vid2,) = H.rows(dbp, "SELECT id FROM videos WHERE path LIKE '%/two_faces.mp4'")[0]
    v = H.rows(dbp, "SELECT identity, label, n_faces FROM verdicts WHERE video_id = ? ORDER BY identity IS NULL, identity", vid2)
    assert v == [(0, "fake", 2), (1, "fake", 2), (None, "fake", 4)]
    # stored crops: a JPEG thumbnail and the 8x8 attention map the model produced
    masks = H.rows(dbp, "SELECT m.h, m.w, m.encoding, m.data, m.crop_size, m.crop_jpeg FROM attention_masks m "
                        "JOIN detections d ON d.id = m.detection_id WHERE d.video_id = ?", vid)
    assert len(masks) == 2
    h, w, enc, data, cs, jpeg = masks[0]
    att = db.decode_mask(data, h, w, enc)
    assert (h, w) == (8, 8) and 0 < att.min() and att.max() < 1  # a sigmoid
    thumb = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape == (cs, cs, 3) == (128, 128, 3)
    # the model id is on every verdict, and the view gives each path's verdict
    assert H.rows(dbp, "SELECT COUNT(DISTINCT model_id) FROM verdicts") == [(1,)]
    assert H.rows(dbp, "SELECT COUNT(*) FROM latest_verdicts") == [(8,)]
    # facts: rotation honoured, 4K size, non-UTF-8 name kept byte-exact
    assert H.rows(dbp, "SELECT width, height, rotation FROM videos WHERE path LIKE '%rotated.mp4'") == [(320, 240, 90)]
    assert H.rows(dbp, "SELECT width, height FROM videos WHERE path LIKE '%4k.mp4'") == [(3840, 2160)]
    keys = [bytes(k[0]) for k in H.rows(dbp, "SELECT path_key FROM videos")]
    assert os.fsencode(archive) + b"/caf\xe9.mp4" in keys


def test_jsonl(scanned):
    _, _, jsonl = scanned
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(lines) == 17
    face = next(x for x in lines if x["path"].endswith("/face.mp4"))
    assert face["label"] == "fake" and face["n_faces"] == 2 and len(face["identities"]) == 1
    nf = next(x for x in lines if x["path"].endswith("/no_face.mp4"))
    assert nf["label"] == "no_face" and nf["score"] is None


def test_rerun_skips_everything_then_rescan_and_new_model(scanned, archive, models):
    _, dbp, _ = scanned
    n_rows = H.rows(dbp, "SELECT COUNT(*) FROM videos")[0][0]
    r = _scan(archive, "-r", "--model", models["fake"], "--db", dbp, "--workers", 0, "-q")
    # nothing new was scanned, yet the status still reports the stored flags and errors
    assert r.exit_code == 3, r.output
    assert H.rows(dbp, "SELECT COUNT(*) FROM videos")[0][0] == n_rows
    assert H.rows(dbp, "SELECT n_skipped, n_ok, n_error FROM scans ORDER BY id DESC LIMIT 1") == [(17, 0, 0)]
    # --retry-errors: only the error rows are tried again (they fail again, one new row each)
    r = _scan(archive, "-r", "--model", models["fake"], "--db", dbp, "--workers", 0, "-q", "--retry-errors")
    assert H.rows(dbp, "SELECT n_skipped, n_error FROM scans ORDER BY id DESC LIMIT 1") == [(9, 8)]
    n_rows += 8
    assert H.rows(dbp, "SELECT COUNT(*) FROM videos")[0][0] == n_rows
    # a changed file is scanned again (size and mtime are the key)
    os.utime(archive / "no_face.mp4", ns=(1, 10**18))
    r = _scan(archive, "-r", "--model", models["fake"], "--db", dbp, "--workers", 0, "-q")
    assert H.rows(dbp, "SELECT n_skipped, n_no_face FROM scans ORDER BY id DESC LIMIT 1") == [(16, 1)]
    # another model: everything is scanned again, verdicts of both models are kept
    r = _scan(archive / "face.mp4", archive / "no_face.mp4", "--model", models["real"], "--db", dbp, "-q",
              "--workers", 0, "--strategy", "mean")
    assert r.exit_code == 0, r.output
    latest = dict(H.rows(dbp, "SELECT path, label FROM latest_verdicts"))
    assert latest[str(archive / "face.mp4")] == "real"
    assert H.rows(dbp, "SELECT COUNT(DISTINCT model_id) FROM verdicts") == [(2,)]
    # --rescan forces
    r = _scan(archive / "face.mp4", "--model", models["real"], "--db", dbp, "-q", "--rescan")
    assert r.exit_code == 0 and H.rows(dbp, "SELECT n_ok FROM scans ORDER BY id DESC LIMIT 1") == [(1,)]


def test_cli_forms_and_failures(archive, models, tmp_path):
    dbp = tmp_path / "c.sqlite"
    one = archive / "one_frame.mp4"
    # the same scan with and without the explicit subcommand
    r1 = _scan("scan", one, "--model", models["real"], "--db", dbp, "-q")
    r2 = _scan(one, "--model", models["real"], "--db", dbp, "-q", "--rescan", "--frames", 3)
    assert (r1.exit_code, r2.exit_code) == (0, 0), r1.output + r2.output
    assert H.rows(dbp, "SELECT COUNT(*), SUM(status = 'ok') FROM videos") == [(2, 2)]
    assert _scan("--help").exit_code == 0 and "Exit status" in _scan("--help").output
    # bad usage / bad model / bad database: exit 4 with one line, no traceback
    r = _scan(one, "--model", models["real"], "--fps", 2, "--frames", 3, "--db", dbp)
    assert r.exit_code == 4 and "not both" in r.output
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    r = _scan(one, "--model", bad, "--db", dbp)
    assert r.exit_code == 4 and "not a valid ONNX model" in r.output and "Traceback" not in r.output
    r = _scan(one, "--model", models["real"], "--db", "nosuchdialect://x")
    assert r.exit_code == 4 and "cannot open database" in r.output
    r = _scan(one, "--model", models["real"], "--db", dbp, "--strategy", "nope")
    assert r.exit_code == 4 and "Invalid value for '--strategy': 'nope' is not one of" in r.output, r.output
    assert "Traceback" not in r.output


def test_any_sqlalchemy_url(archive, models, tmp_path):
    url = f"sqlite:///{tmp_path / 'u.sqlite'}"
    r = _scan(archive / "one_frame.mp4", "--model", models["fake"], "--db", url, "-q")
    assert r.exit_code == 1, r.output
    assert H.rows(tmp_path / "u.sqlite", "SELECT label FROM latest_verdicts") == [("fake",)]


def test_sqlite_file_is_readable_by_plain_sqlite(scanned):
    _, dbp, _ = scanned
    with sqlite3.connect(dbp) as c:
        assert c.execute("PRAGMA journal_mode").fetchone() == ("wal",)
