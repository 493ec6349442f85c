"""Discovery: extensions, content sniffing, hidden/system files, links, loops, duplicates, odd names."""

from __future__ import annotations

import os

from acfd.scanner.discover import discover, sniff_video

MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 40


def _names(cands):
    return [(os.path.basename(c.path), c.error, c.duplicate_of is not None) for c in cands]


def test_sniff():
    assert sniff_video(MP4_HEAD)
    assert sniff_video(b"\x1a\x45\xdf\xa3" + b"\x00" * 20)
    assert sniff_video(b"RIFF\x00\x00\x00\x00AVI LIST")
    assert not sniff_video(b"hello world, this is text")
    assert not sniff_video(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)


def test_walk(tmp_path):
    (tmp_path / "a.mp4").write_bytes(MP4_HEAD)
    (tmp_path / "b.MKV").write_bytes(b"x")  # extension in any case; content checked when decoding
    (tmp_path / "clip_without_ext").write_bytes(MP4_HEAD)  # found by content
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / ".hidden.mp4").write_bytes(MP4_HEAD)
    (tmp_path / "._a.mp4").write_bytes(MP4_HEAD)  # AppleDouble
    (tmp_path / "Thumbs.db").write_bytes(MP4_HEAD)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "c.mov").write_bytes(MP4_HEAD)
    sysdir = tmp_path / "$RECYCLE.BIN"
    sysdir.mkdir()
    (sysdir / "d.mp4").write_bytes(MP4_HEAD)
    flat = _names(discover([tmp_path]))
    assert flat == [("a.mp4", None, False), ("b.MKV", None, False), ("clip_without_ext", None, False)]
    deep = _names(discover([tmp_path], recursive=True))
    assert deep == flat + [("c.mov", None, False)]
    assert _names(discover([tmp_path], sniff=False)) == flat[:2]
    # a file named explicitly is a candidate whatever its name
    assert _names(discover([tmp_path / "notes.txt"])) == [("notes.txt", None, False)]
    c = next(iter(discover([tmp_path / "a.mp4"])))
    st = os.stat(tmp_path / "a.mp4")
    assert (c.size, c.mtime_ns, c.path) == (st.st_size, st.st_mtime_ns, str(tmp_path / "a.mp4"))


def test_links_loops_duplicates(tmp_path):
    (tmp_path / "a.mp4").write_bytes(MP4_HEAD)
    os.link(tmp_path / "a.mp4", tmp_path / "hard.mp4")  # same inode
    os.symlink(tmp_path / "a.mp4", tmp_path / "soft.mp4")  # same inode through a link
    os.symlink(tmp_path / "missing.mp4", tmp_path / "broken.mp4")
    os.symlink("loop2.mp4", tmp_path / "loop1.mp4")
    os.symlink("loop1.mp4", tmp_path / "loop2.mp4")
    os.symlink("nowhere", tmp_path / "dangling_note.txt")  # not a video name: not worth a row
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.mp4").write_bytes(MP4_HEAD)
    os.symlink(tmp_path, d / "up")  # directory loop
    os.symlink(d, tmp_path / "d_again")  # a second way into d
    got = _names(discover([tmp_path], recursive=True))
    assert got[:6] == [
        ("a.mp4", None, False),
        ("broken.mp4", "broken symbolic link (target '" + str(tmp_path / "missing.mp4") + "' does not exist)", False),
        ("hard.mp4", None, True),
        ("loop1.mp4", "symbolic link loop", False),
        ("loop2.mp4", "symbolic link loop", False),
        ("soft.mp4", None, True),
    ]
    # d is walked once (as d or as d_again, whichever comes first), the loop back up ends
    assert got[6:] == [("x.mp4", None, False)]


def test_non_utf8_name_and_missing_path(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.mp4"  # latin-1 bytes: not UTF-8
    with open(raw, "wb") as f:
        f.write(MP4_HEAD)
    (c,) = list(discover([tmp_path]))
    assert c.key == raw and c.error is None
    assert c.display.endswith("/caf\ufffd.mp4")
    (c,) = list(discover([os.fsencode(tmp_path) + b"/nope.mp4"]))
    assert c.error == "no such file or directory"


def test_unreadable_is_recorded(tmp_path, monkeypatch):
    # Tests run as root, which reads anything: make open() fail the way a permission problem does.
    # (tests/test_scan_faults.py checks a real chmod 000 file without root's read override.)
    (tmp_path / "locked.mp4").write_bytes(MP4_HEAD)
    import builtins

    real_open = builtins.open

    def fake_open(path, *a, **kw):
        if os.fspath(path).endswith("locked.mp4"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **kw)

    monkeypatch.setattr(builtins, "open", fake_open)
    (c,) = list(discover([tmp_path]))
    assert c.error == "permission denied (cannot open for reading)"
