"""Sources yield items lazily (the walk runs ahead in a thread); sinks consume the result stream."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from acfd.scanner.discover import Candidate
from acfd.scanner.results import Unchanged, VideoResult
from acfd.scanner.sinks import JsonlSink, ScanContext, ScanOutputError, StoreSink, Tally
from acfd.scanner.sources import LocalFiles, Lookahead
from acfd.scanner.stages import ready_result
from acfd.scanner.store import Store
from acfd.schemas import db
from acfd.schemas.errors import OutputClosed


def test_local_files_walk_in_name_order_and_describe_absolute_paths(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    for name in ("b.mp4", "a.mkv", "notes.txt"):
        (tmp_path / name).write_bytes(b"\0" * 16)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.mp4").write_bytes(b"\0" * 16)
    monkeypatch.chdir(tmp_path)
    src = LocalFiles((".",), recursive=True)
    assert [Path(c.path).relative_to(tmp_path).as_posix() for c in src.items()] == ["a.mkv", "b.mp4", "sub/c.mp4"]
    assert src.describe() == [str(tmp_path)]
    assert [Path(c.path).name for c in LocalFiles((".",)).items()] == ["a.mkv", "b.mp4"]


def _cands(n: int) -> list[Candidate]:
    return [Candidate(f"/v/{k:03d}.mp4", size=k, mtime_ns=k) for k in range(n)]


def test_lookahead_keeps_order_and_knows_the_total_only_at_the_end() -> None:
    gate = threading.Event()

    def source():  # noqa: ANN202
        yield from _cands(3)
        gate.wait(5)  # the walk is slow here: the consumer already has the first three
        yield from _cands(5)[3:]

    la = Lookahead(source())
    it = iter(la)
    assert [next(it).size for _ in range(3)] == [0, 1, 2]
    assert la.total is None and la.found == 3
    gate.set()
    assert [c.size for c in it] == [3, 4]
    assert la.total == la.found == 5


def test_lookahead_raises_the_sources_error_in_its_place() -> None:
    def source():  # noqa: ANN202
        yield from _cands(2)
        raise PermissionError(13, "Permission denied", "/v/locked")

    got = []
    with pytest.raises(PermissionError, match="Permission denied"):
        for c in Lookahead(source()):
            got.append(c.size)
    assert got == [0, 1]


def test_lookahead_close_stops_an_endless_walk() -> None:
    walked = itertools.count()

    def endless():  # noqa: ANN202
        for k in walked:
            yield Candidate(f"/v/{k}.mp4")

    la = Lookahead(endless(), limit=4)
    first = next(iter(la))
    la.close()
    time.sleep(0.3)
    n = la.found
    time.sleep(0.3)
    assert first.path == "/v/0.mp4" and la.found == n <= 6 and la.total is None  # bounded, and stopped
    assert not la._thread.is_alive()


CTX = ScanContext(scan_id=1, model_id="m1", threshold=9.05, strategy="confident", validation="synthetic")


def _error_result(tmp_path: Path) -> VideoResult:
    return ready_result(Candidate(str(tmp_path / "gone.mp4"), error="no such file or directory"), db.STATUS_ERROR,
                        "no such file or directory")


def test_jsonl_sink_writes_one_line_per_video_and_nothing_for_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    with open(out, "w") as f:
        sink = JsonlSink(f, CTX)
        sink.write(_error_result(tmp_path))
        sink.write(Unchanged(Candidate(str(tmp_path / "old.mp4"), 1, 1), db.STATUS_OK, True, 12.0))
    (line,) = out.read_text().splitlines()
    d = json.loads(line)
    assert (d["path"], d["status"], d["error"], d["scan_id"], d["model_id"], d["model_validation"], d["threshold"]) == (
        str(tmp_path / "gone.mp4"), "error", "no such file or directory", 1, "m1", "synthetic", 9.05)


def test_jsonl_sink_a_full_disk_is_one_line_and_a_closed_reader_ends_quietly(tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    full = open("/dev/full", "w")  # noqa: SIM115 - closing it fails too (the line is still buffered)
    with pytest.raises(ScanOutputError) as e:
        JsonlSink(full, CTX).write(_error_result(tmp_path))
    with pytest.raises(OSError):
        full.close()
    assert str(e.value) == "cannot write --jsonl /dev/full: No space left on device"
    r, w = os.pipe()
    os.close(r)
    with open(w, "w") as pipe:
        with pytest.raises(OutputClosed):
            JsonlSink(pipe, CTX).write(_error_result(tmp_path))
        try:
            pipe.close()
        except BrokenPipeError:
            pass


def test_store_sink_stores_each_result_and_counts_unchanged_in_the_scan_row(tmp_path: Path) -> None:
    engine = db.open_store(tmp_path / "s.sqlite")
    with db.session(engine) as s, s.begin():
        s.add(db.Model(model_id="m1", path="m.onnx", backend="onnxruntime", meta_json="{}"))
    store = Store(engine)
    sid = store.start_scan("m1", "confident", 9.05, "onnxruntime", "cpu", {"paths": ["/v"]}, "0.1.0")
    ctx = ScanContext(sid, "m1", 9.05, "confident", "none")
    sink, tally = StoreSink(store, ctx, "verdict-key", "error-key"), Tally()
    same = Unchanged(Candidate(str(tmp_path / "old.mp4"), 1, 1), db.STATUS_ERROR, False, None)
    err = _error_result(tmp_path)
    for ev in (same, same, err, same):
        sink.write(ev)
        tally.write(ev)
    with sqlite3.connect(tmp_path / "s.sqlite") as c:
        # the two unchanged before the error row went in with it; the last one waits for a flush
        assert c.execute("SELECT n_skipped, n_error FROM scans WHERE id = ?", (sid,)).fetchone() == (2, 1)
        assert c.execute("SELECT path, status, settings_key FROM videos").fetchall() == [
            (str(tmp_path / "gone.mp4"), "error", "error-key")]
    sink.flush()
    with sqlite3.connect(tmp_path / "s.sqlite") as c:
        assert c.execute("SELECT n_skipped FROM scans WHERE id = ?", (sid,)).fetchone() == (3,)
    assert err.video_row_id == 1 and err.timings.store > 0
    assert (tally.videos, tally.unchanged_errors, tally.unchanged_flagged) == (1, 3, 0)
    engine.dispose()
