"""File lists (``--files-from``): both formats, comments, odd names, and streaming without loading."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from acfd.scanner.cli import main
from acfd.scanner.lists import BLOCK, MAX_ENTRY, EntryTooLong, entries, raw_entries
from click.testing import CliRunner

from tests import scan_helpers as H
from tests.url_helpers import Route, Site


def test_newline_lists_skip_blanks_and_comments_and_keep_spaces() -> None:
    text = b"# made by find\n/a/one.mp4\r\n\n   \n  # indented comment\n/b/ two .mp4 \nhttp://h/x.mp4\n/c/last.mp4"
    assert list(raw_entries(io.BytesIO(text))) == [b"/a/one.mp4", b"/b/ two .mp4 ", b"http://h/x.mp4", b"/c/last.mp4"]


def test_null_lists_take_every_name_as_given() -> None:
    names = [b"/a/with\nnewline.mp4", b"#hash-first.mp4", b" spaced ", b"/x/\xff\xfe-not-utf8.mp4"]
    data = b"\0".join(names) + b"\0\0"  # an empty entry (two NULs) is skipped
    assert list(raw_entries(io.BytesIO(data), null=True)) == names
    # decoded as the file system decodes: the same bytes come back
    assert [os.fsencode(e) for e in entries(io.BytesIO(data), null=True)] == names


def test_entries_cut_across_blocks_are_whole() -> None:
    first = b"/a/" + b"a" * (BLOCK - 200) + b".mp4"  # the next entry starts near the end of the first block
    long = b"/d/" + b"x" * 30_000 + b".mp4"
    data = first + b"\n" + long + b"\n/b.mp4\n"
    assert list(raw_entries(io.BytesIO(data))) == [first, long, b"/b.mp4"]


@pytest.mark.parametrize("null", [False, True])
def test_an_endless_entry_is_refused_not_held(null: bool) -> None:
    """A binary file given as a list: one line naming the entry, after the good entries before it, and
    never more than about two blocks held (the entry is not collected)."""
    sep = b"\0" if null else b"\n"

    class Endless(io.RawIOBase):
        served = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # noqa: ANN001
            head = sep.join([b"/ok1.mp4", b"/ok2.mp4", b""]) if self.served == 0 else b""
            chunk = (head + b"z" * len(b))[: len(b)]
            b[: len(chunk)] = chunk
            self.served += len(chunk)
            return len(chunk)

    src = Endless()
    it = raw_entries(io.BufferedReader(src, BLOCK), null=null)
    assert [next(it), next(it)] == [b"/ok1.mp4", b"/ok2.mp4"]
    with pytest.raises(EntryTooLong) as e:
        next(it)
    word = "entry" if null else "line"
    assert str(e.value).startswith(f"{word} 3 is longer than {MAX_ENTRY} bytes: not a list of paths")
    assert src.served <= MAX_ENTRY + 2 * BLOCK


def test_a_video_or_a_device_as_list_is_one_line(tmp_path: Path) -> None:  # noqa: ANN001
    blob = tmp_path / "clip.mp4"
    blob.write_bytes(bytes(range(1, 256)).replace(b"\n", b"") * 600)  # 150 kB, no newline
    db = str(tmp_path / "s.sqlite")
    r = CliRunner().invoke(main, ["--files-from", str(blob), "--db", db, "-q"])
    assert r.exit_code == 4
    line = r.output.strip().splitlines()[-1]  # after the model's banner: the list is read as the scan goes
    assert line == (f"Error: --files-from {blob}: line 1 is longer than {MAX_ENTRY} bytes: not a list of paths "
                    "(a binary file, or a NUL-separated list without --null?)")
    for extra in ([], ["--null"]):
        r = CliRunner().invoke(main, ["--files-from", "/dev/zero", *extra, "--db", db])
        assert r.exit_code == 4
        (line,) = r.output.strip().splitlines()
        assert line == "Error: --files-from /dev/zero is a device, not a list: give a file, a pipe or - (standard input)"


def test_a_list_is_read_as_it_is_written() -> None:
    """The first entry comes out while the writer has not finished (a pipe from find)."""
    r, w = os.pipe()
    wrote_rest = threading.Event()
    with os.fdopen(r, "rb") as reader, os.fdopen(w, "wb") as writer:
        writer.write(b"/first.mp4\n")
        writer.flush()
        it = raw_entries(reader)
        got: list[bytes] = []

        def finish() -> None:
            wrote_rest.set()
            writer.write(b"/second.mp4\n")
            writer.close()

        t = threading.Timer(0.5, finish)
        t.start()
        got.append(next(it))
        assert got == [b"/first.mp4"] and not wrote_rest.is_set()  # read before the rest was written
        got.extend(it)
        t.join()
    assert got == [b"/first.mp4", b"/second.mp4"]


def test_a_million_lines_stream_in_little_memory(tmp_path) -> None:  # noqa: ANN001
    lst = tmp_path / "million.txt"
    with open(lst, "wb") as f:
        for k in range(0, 1_000_000, 1000):
            f.write(b"".join(b"/archive/%07d.mp4\n" % (k + j) for j in range(1000)))
    size = lst.stat().st_size
    tracemalloc.start()
    n = 0
    last = b""
    with open(lst, "rb") as f:
        for e in raw_entries(f):
            n += 1
            last = e
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 1_000_000 and last == b"/archive/0999999.mp4"
    assert peak < 1 << 20 and size > 20 << 20  # under 1 MiB for a list of more than 20 MiB


# -- --files-from end to end ------------------------------------------------------------------------





def _rows(db: Path) -> dict[str, tuple]:
    with sqlite3.connect(db) as c:
        return {p: (s, e) for p, s, e in c.execute("SELECT path, status, error FROM videos")}


def test_find_print0_into_files_from_stdin(tmp_path: Path, models) -> None:  # noqa: ANN001
    if shutil.which("find") is None:
        pytest.skip("no find")
    arch = tmp_path / "archive"
    (arch / "sub").mkdir(parents=True)
    H.face_video(arch / "a.mp4", n=4)
    H.face_video(arch / "sub" / "line\nbreak.mp4", n=4)  # a name that a newline list cannot carry
    (arch / "notes.txt").write_text("not a video")
    find = subprocess.run(["find", str(arch), "-name", "*.mp4", "-print0"], capture_output=True, check=True)
    db = tmp_path / "s.sqlite"
    cmd = [sys.executable, "-m", "acfd.scanner", "--files-from", "-", "--null", "--model", str(models["fake"]),
           "--db", str(db), "--workers", "0", "--frames", "2", "-q"]
    r = subprocess.run(cmd, input=find.stdout, capture_output=True, timeout=180)
    assert r.returncode == 1, r.stderr.decode()[-2000:]  # both flagged by the "fake" model, no error
    assert _rows(db) == {str(arch / "a.mp4"): ("ok", None), str(arch / "sub" / "line\nbreak.mp4"): ("ok", None)}
    with sqlite3.connect(db) as c:
        args = json.loads(c.execute("SELECT args FROM scans").fetchone()[0])
    assert (args["files_from"], args["null"], args["paths"]) == ("-", True, [])  # stdin: "-"


def _wait_rows(db: Path, n: int, proc: subprocess.Popen, timeout: float = 120.0) -> dict[str, tuple]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else proc.returncode
        try:
            got = _rows(db)
        except sqlite3.Error:  # not created yet, or the scan is writing it
            got = {}
        if len(got) >= n:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{n} rows not stored within {timeout} s: {got}")


@pytest.mark.parametrize("via", ["fifo", "stdin"])
def test_a_fed_list_stores_each_video_before_the_next_path_comes(tmp_path: Path, models, via: str) -> None:  # noqa: ANN001
    """A scan fed paths one by one (a named pipe, or stdin from a watcher) is a resident scanner: each
    video is decoded, scored and stored while the writer has not written the next path; the pipe is
    opened once (a test open of a named pipe would wait for its writer and end its stream)."""
    a = H.face_video(tmp_path / "a.mp4", n=4)
    b = H.no_face_video(tmp_path / "b.mp4")
    db = tmp_path / "s.sqlite"
    lst = "-"
    if via == "fifo":
        lst = str(tmp_path / "list")
        os.mkfifo(lst)
    cmd = H.cli("--files-from", lst, "--model", models["real"], "--db", db, "--workers", "1", "--frames", "2", "-q")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if via == "stdin" else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        writer = proc.stdin if via == "stdin" else open(lst, "wb")  # noqa: SIM115 - closed below
        assert writer is not None
        writer.write(os.fsencode(a) + b"\n")
        writer.flush()
        assert _wait_rows(db, 1, proc) == {str(a): ("ok", None)}  # stored with the list still open
        writer.write(os.fsencode(b) + b"\n")
        writer.flush()
        got = _wait_rows(db, 2, proc)
        assert got[str(b)] == ("no_face", None)
        writer.close()  # the end of the list: the scan finishes
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    with sqlite3.connect(db) as c:
        faces = dict(c.execute("SELECT path, n_faces FROM videos"))
    assert faces[str(a)] > 0 and faces[str(b)] == 0


def test_a_named_pipe_list_is_not_opened_before_the_scan(tmp_path: Path) -> None:
    """Checking a --files-from named pipe returns at once (no writer yet) and does not read from it."""
    from acfd.scanner.pipeline import ScanConfig

    lst = tmp_path / "list"
    os.mkfifo(lst)
    done = threading.Event()
    t = threading.Thread(target=lambda: (ScanConfig(paths=(), files_from=str(lst)), done.set()), daemon=True)
    t.start()
    t.join(5)
    returned = done.is_set()
    if not returned:  # blocked in open(), waiting for a writer: give it one so that the thread ends
        with open(lst, "wb"):
            pass
    assert returned


def test_a_list_mixes_paths_and_urls_and_bad_entries_become_rows(tmp_path: Path, models) -> None:  # noqa: ANN001
    clip = H.face_video(tmp_path / "clip.mp4", n=4)
    with Site() as site:
        site.routes["/b.mp4"] = Route(clip.read_bytes(), "video/mp4", etag='"b-1"')
        lst = tmp_path / "list.txt"
        lst.write_text(
            "# a list made by hand\r\n"
            f"{clip}\r\n\n"
            f"{site.url('/b.mp4', auth='u:secret')}\n"
            "ftp://example.org/c.mp4\n"
            f"{tmp_path / 'gone.mp4'}\n"
            f"{clip}\n"  # named twice: one row
            f"{site.url('/missing.mp4')}\n"
        )
        db = tmp_path / "s.sqlite"
        args = ["--files-from", str(lst), "--model", str(models["real"]), "--db", str(db), "--workers", "0",
                "--frames", "2", "-q"]
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, r.output  # errors, nothing flagged
        assert _rows(db) == {
            str(clip): ("ok", None),
            site.url("/b.mp4"): ("ok", None),  # stored without u:secret
            "ftp://example.org/c.mp4": ("error", "unsupported scheme 'ftp' in ftp://example.org/c.mp4: acfd-scan "
                                                 "reads http, https, rtsp, rtmp, srt, udp"),
            str(tmp_path / "gone.mp4"): ("error", "no such file or directory"),
            site.url("/missing.mp4"): ("error", "HTTP 404 Not Found"),
        }
        assert "secret" not in r.output and b"secret" not in db.read_bytes()
        # the same list again: the file and the URL with an ETag are unchanged, the errors stand
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, r.output
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT n_found, n_skipped, n_ok FROM scans WHERE id = 2").fetchone() == (5, 4, 0)  # only the 404 (no validators) is tried again


@pytest.mark.parametrize("args, message", [
    (["--files-from", "{tmp}/nolist.txt"], "cannot read --files-from {tmp}/nolist.txt: No such file or directory"),
    (["--files-from", "{tmp}"], "--files-from {tmp} is a folder: give a file that lists paths or URLs"),
    (["--null", "x.mp4"], "--null describes the list of --files-from: give --files-from FILE (or -)"),
    ([], "give at least one path to scan, or --files-from FILE"),
])
def test_list_options_refused_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    r = CliRunner().invoke(main, [a.format(tmp=tmp_path) for a in args] + ["--db", str(tmp_path / "s.sqlite")])
    assert r.exit_code == 4
    (line,) = r.output.strip().splitlines()
    assert line.startswith("Error: " + message.format(tmp=tmp_path))
    assert not (tmp_path / "s.sqlite").exists() or args == []


def test_a_scan_that_stops_with_its_stdin_list_open_exits_with_its_own_code(tmp_path: Path) -> None:
    """The list's reader thread is still blocked reading stdin (the feeder keeps it open) when the scan
    stops on a fatal error (a full disk was the case seen): the process must exit with the scan's code.
    Reading through sys.stdin.buffer, the interpreter aborted at exit instead (exit 134, "Fatal Python
    error: ... could not acquire lock for <stdin> at interpreter shutdown")."""
    clip = H.face_video(tmp_path / "a.mp4", n=2)
    script = (
        "import sys, time\n"
        "from acfd.scanner.sources import FileList, Lookahead\n"
        "walk = Lookahead(FileList('-').items(), idle_s=0.05)\n"
        "print(next(iter(walk)).path, flush=True)\n"
        "time.sleep(0.2)  # the reader is back in its read, waiting for the next path\n"
        "sys.exit(3)  # the scan's fatal error\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)  # fmt: skip
    assert p.stdin is not None
    p.stdin.write(os.fsencode(clip) + b"\n")
    p.stdin.flush()  # ... and kept open, like inotifywait's pipe
    try:
        rc = p.wait(timeout=60)  # with stdin still open: a few lines of output fit the pipes
    finally:
        p.stdin.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    out, err = p.stdout.read(), p.stderr.read()  # type: ignore[union-attr]
    assert (rc, out.decode().strip()) == (3, str(clip)), err.decode()
    assert b"Fatal Python error" not in err


def test_files_from_stdin_when_stdin_is_closed_is_one_line(tmp_path: Path, models) -> None:  # noqa: ANN001
    """`acfd-scan --files-from - <&-` (a cron job, a service without stdin): one line and the unreadable
    list's exit code, before anything starts; it was an AttributeError ('NoneType' ... 'buffer')."""
    scan = Path(sys.executable).with_name("acfd-scan")
    r = subprocess.run([str(scan), "--files-from", "-", "--model", str(models["fake"]), "--db", str(tmp_path / "s.sqlite"),
                        "-q"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: os.close(0))  # noqa: PLW1509 (closes the child's fd 0 only)  # fmt: skip
    assert (r.returncode, r.stderr.strip().splitlines()) == (
        4, ["Error: --files-from -: standard input is closed; pipe the list in, or give --files-from FILE"]), r.stderr
    assert not (tmp_path / "s.sqlite").exists()
