"""`acfd-scan report`: the static HTML report, its escaping, its images, and the page in a real browser."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest
from acfd.scanner.cli import main
from acfd.scanner.report import _COLUMNS as COLUMNS
from acfd.scanner.report import ReportConfig, build_report, overlay_attention, score_plot
from acfd.schemas import db as store
from click.testing import CliRunner

from tests.report_helpers import ARCHIVE, XSS_NAME, attention_map, face_crop, populate

CHROMIUM = Path("/usr/bin/chromium")
# The attention masks of each path's newest row: the ones the report shows.
CURRENT_MASKS = (
    "SELECT m.id FROM attention_masks m JOIN detections d ON d.id = m.detection_id "
    "WHERE d.video_id IN (SELECT MAX(id) FROM videos GROUP BY path_key) ORDER BY m.id"
)
# Hostile names beside the populated ones: attribute break-outs, a script end tag, an SVG handler.
NASTY = [
    '"><svg onload=alert(2)>.mp4',
    "</script><script>alert(3)</script>.mp4",
    "x' onmouseover='alert(4).mp4",
    "<!--.mp4",
]


class Tags(HTMLParser):
    """Every start tag with its attributes, and the page text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.rows: list[list[dict[str, str | None]]] = []  # the td attributes of each data row, in order

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr" and "data-label" in dict(attrs):
            self.rows.append([])
        elif tag == "td" and self.rows:
            self.rows[-1].append(dict(attrs))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]


def parse(html_text: str) -> Tags:
    p = Tags()
    p.feed(html_text)
    return p


@pytest.fixture(scope="module")
def nasty_store(tmp_path_factory):
    """The populated store plus flagged videos with hostile names, model ids and error texts."""
    pop = populate(tmp_path_factory.mktemp("store") / "acfd.sqlite")
    engine = store.make_engine(pop.path)
    try:
        with store.session(engine) as s:
            for i, name in enumerate(NASTY):
                p = f"{ARCHIVE}/{name}"
                v = store.Video(scan_id=1, model_id=pop_model(s), path=p, path_key=os.fsencode(p), status="ok",
                                n_faces=1, n_identities=1, duration_s=1.0)  # fmt: skip
                s.add(v)
                s.flush()
                s.add(store.Detection(video_id=v.id, frame_index=0, time_s=0.5, identity=0, x0=0, y0=0, x1=10,
                                      y1=10, det_score=0.9, score=20.0 + i))  # fmt: skip
                s.add(store.Verdict(video_id=v.id, scan_id=1, model_id=v.model_id, identity=None, label="fake",
                                    score=20.0 + i, threshold=9.05, strategy="mean<b>"))  # fmt: skip
            p = f"{ARCHIVE}/err.mp4"
            s.add(store.Video(scan_id=1, model_id=pop_model(s), path=p, path_key=os.fsencode(p), status="error",
                              error='cannot open "<img src=y onerror=alert(5)>"'))  # fmt: skip
            s.commit()
    finally:
        engine.dispose()
    return pop


def pop_model(s) -> str:
    return s.execute(store.select(store.Scan.model_id).where(store.Scan.id == 1)).scalar_one()


@pytest.fixture(scope="module")
def report_all(nasty_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "all"
    summary = build_report(nasty_store.path, ReportConfig(out=out, only="all"))
    return summary, out


# --- the page --------------------------------------------------------------------------------------


def test_every_database_string_is_escaped(report_all):
    summary, out = report_all
    page = (out / "index.html").read_text(encoding="utf-8")
    tags = parse(page)
    # Exactly our one script, no event-handler attribute anywhere, no element made from a file name.
    assert len(tags.all("script")) == 1
    handlers = [(t, k) for t, a in tags.tags for k in a if k.lower().startswith("on")]
    assert handlers == []
    assert not any(a.get("src") in ("x", "y") for a in tags.all("img"))
    assert tags.all("svg") and all("onload" not in a for a in tags.all("svg"))
    # The names are shown, as text.
    text = "".join(tags.text)
    for name in [XSS_NAME, *NASTY]:
        assert f"{ARCHIVE}/{name}" in text
    assert 'cannot open "<img src=y onerror=alert(5)>"' in text
    assert "mean<b>" in text and "mean<b>" not in page and "mean&lt;b&gt;" in page
    for raw in ("<img src=x", "<svg onload", "<script>alert", "<!--.mp4", "' onmouseover='"):
        assert raw not in page
    # No remote reference anywhere: every src/href is local, an anchor, a file:// link or data:.
    for _, attrs in tags.tags:
        for k in ("src", "href"):
            v = attrs.get(k)
            if v is not None:
                assert re.match(r"^(img/[\w.]+|#v\d+|file:///|data:image/png;base64,)", v), v
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page.replace("http://www.w3.org/2000/svg", ""))


def test_csp_allows_only_the_page_script(report_all):
    _, out = report_all
    page = (out / "index.html").read_text(encoding="utf-8")
    (meta,) = [a for a in parse(page).all("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    csp = meta["content"]
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp


def test_table_rows_and_details(report_all, nasty_store, tmp_path):
    summary, out = report_all
    tags = parse((out / "index.html").read_text(encoding="utf-8"))
    rows = [a for a in tags.all("tr") if "data-label" in a]
    # 9 paths in the populated store + 4 hostile flagged + 1 error.
    assert summary.n_videos == len(rows) == 14
    assert sorted(a["data-label"] for a in rows).count("fake") == 3 + len(NASTY)
    assert summary.n_flagged == 7
    # Details: every video with faces (6 populated + 4 hostile); sections sorted by score.
    sections = [a["id"] for a in tags.all("section")]
    assert summary.n_detailed == len(sections) == 10
    assert len(tags.all("svg")) == 10 + 0  # one plot per section (the colour bar is a PNG)

    flagged = build_report(nasty_store.path, ReportConfig(out=tmp_path / "f"))
    ftags = parse((tmp_path / "f" / "index.html").read_text(encoding="utf-8"))
    assert flagged.n_videos == 7 == len([a for a in ftags.all("tr") if "data-label" in a])
    assert {a["data-label"] for a in ftags.all("tr") if "data-label" in a} == {"fake"}
    assert flagged.n_detailed == 7
    # The summary cards count every current video in both modes.
    fpage = (tmp_path / "f" / "index.html").read_text(encoding="utf-8")
    for count, name in ((14, "videos"), (7, "flagged"), (3, "real"), (1, "no face"), (2, "errors"), (1, "skipped")):
        assert f'<div class="card"><b>{count}</b><span>{name}</span></div>' in fpage


def test_images_are_the_stored_crops_with_the_attention_overlaid(report_all, nasty_store):
    summary, out = report_all
    tags = parse((out / "index.html").read_text(encoding="utf-8"))
    srcs = [a["src"] for a in tags.all("img") if a["src"].startswith("img/")]
    crops = [s for s in srcs if s.endswith("_crop.jpg")]
    overlays = [s for s in srcs if s.endswith("_attention.jpg")]
    con = sqlite3.connect(nasty_store.path)
    n_current = len(con.execute(CURRENT_MASKS).fetchall())
    assert n_current == 5 < nasty_store.n_masks  # older scans' crops are not shown
    assert len(crops) == len(overlays) == n_current == summary.n_images // 2
    assert sorted(s.replace("_crop.jpg", "") for s in crops) == sorted(s.replace("_attention.jpg", "") for s in overlays)
    for s in srcs:
        assert (out / s).is_file()
    # The overlay of detection N is its stored crop, tinted where (and only where) its map is high.
    det, h, w, enc, data = con.execute(
        "SELECT detection_id, h, w, encoding, data FROM attention_masks WHERE detection_id = ?",
        (int(crops[0][5:].split("_")[0]),),
    ).fetchone()
    con.close()
    crop = cv2.imread(str(out / "img" / f"d{det}_crop.jpg"))
    over = cv2.imread(str(out / "img" / f"d{det}_attention.jpg"))
    att = store.decode_mask(data, h, w, enc)
    big = cv2.resize(att, crop.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    diff = np.abs(over.astype(float) - crop.astype(float)).mean(axis=2)
    assert diff[big > 0.8].mean() > 40
    assert diff[big < 0.02].mean() < 6


def test_overlay_attention_blends_by_attention():
    crop = np.full((32, 32, 3), 100, np.uint8)
    assert np.array_equal(overlay_attention(crop, np.zeros((7, 7), np.float32)), crop)
    full = overlay_attention(crop, np.ones((7, 7), np.float32), alpha=0.5)
    hot = cv2.applyColorMap(np.full((1, 1), 255, np.uint8), cv2.COLORMAP_JET)[0, 0].astype(float)
    assert np.allclose(full[5, 5], np.rint(0.5 * 100 + 0.5 * hot), atol=1)
    blob = overlay_attention(face_crop(96)[..., ::-1].copy(), attention_map(cy=0.8, cx=0.5))
    d = np.abs(blob.astype(float) - face_crop(96)[..., ::-1]).mean(axis=2)
    assert d[76, 48] > 15 and d[10, 10] < 1


def test_score_plot_draws_scores_and_threshold():
    pts = [(0.0, 0, 2.0), (1.0, 0, 3.0), (2.0, 0, 2.5), (0.0, 1, 12.0), (2.0, 1, 14.0)]
    svg = score_plot(pts, threshold=9.05, t_max=4.0, width=400, height=200)
    root = ElementTree.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f".//{ns}circle")) == 5
    lines = root.findall(f".//{ns}polyline")
    assert len(lines) == 2 and lines[0].get("stroke") != lines[1].get("stroke")
    (thr,) = [e for e in root.iter(f"{ns}line") if e.get("class") == "threshold"]
    # Plot area y: top 14, height 200 - 14 - 34 = 152; y from 0 to 14 * 1.12 rounded up to a nice step (5): 20.
    assert float(thr.get("y1")) == pytest.approx(14 + 152 * (1 - 9.05 / 20), abs=0.1)
    ys = {float(c.get("cy")) for c in root.iter(f"{ns}circle")}
    assert max(ys) == pytest.approx(14 + 152 * (1 - 2.0 / 20), abs=0.1)  # lowest score, lowest point
    xs = sorted(float(c.get("cx")) for c in root.iter(f"{ns}circle"))
    assert xs[0] == pytest.approx(48) and xs[-1] == pytest.approx(48 + 336 * 2 / 4)
    assert "no face scores" in score_plot([], 0.5)


def test_unreadable_stored_images_are_reported_not_fatal(nasty_store, tmp_path):
    db = tmp_path / "s.sqlite"
    shutil.copyfile(nasty_store.path, db)
    con = sqlite3.connect(db)
    ids = [r[0] for r in con.execute(CURRENT_MASKS)]
    con.execute("UPDATE attention_masks SET crop_jpeg = x'00010203' WHERE id = ?", (ids[0],))
    con.execute("UPDATE attention_masks SET data = x'0badf00d' WHERE id = ?", (ids[1],))
    con.commit()
    con.close()
    r = CliRunner().invoke(main, ["report", "--db", str(db), "--out", str(tmp_path / "r"), "--only", "all"])
    assert r.exit_code == 0, r.output
    assert r.stderr.count("warning:") == 2
    assert "not a readable JPEG" in r.stderr and "corrupt" in r.stderr
    assert f"{len(ids) - 1} with" not in r.stdout  # summary line is about videos, not images
    assert f"{2 * len(ids) - 3} images" in r.stdout  # one crop dropped, one overlay missing


def test_report_cli_scan_filter_and_errors(nasty_store, tmp_path):
    r = CliRunner().invoke(main, ["report", "--db", str(nasty_store.path), "--out", str(tmp_path / "r"),
                                  "--scan", "2", "--only", "all"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "(3 videos in the table, 2 flagged, 3 with details" in r.stdout
    # A report written over an older one drops the older one's face images, and only those.
    (tmp_path / "r" / "img" / "d999_crop.jpg").write_bytes(b"old face")
    (tmp_path / "r" / "img" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(main, ["report", "--db", str(nasty_store.path), "--out", str(tmp_path / "r"), "--scan", "2"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "r" / "img" / "d999_crop.jpg").exists() and (tmp_path / "r" / "img" / "notes.txt").exists()
    assert len(list((tmp_path / "r" / "img").glob("d*_*.jpg"))) == 4  # scan 2's two flagged videos, 1 crop each
    r = CliRunner().invoke(main, ["report", "--db", str(nasty_store.path), "--out", str(tmp_path / "r"), "--scan", "9"])
    assert r.exit_code == 4 and "no scan 9" in r.stderr
    f = tmp_path / "file"
    f.write_text("x")
    r = CliRunner().invoke(main, ["report", "--db", str(nasty_store.path), "--out", str(f)])
    assert r.exit_code == 4 and "Traceback" not in r.output and "is a file" in r.output
    r = CliRunner().invoke(main, ["report", "--db", str(nasty_store.path), "--out", str(f / "r")])
    assert r.exit_code == 4 and r.stderr.startswith("Error: cannot write the report to") and "Traceback" not in r.output


# --- in a real browser ----------------------------------------------------------------------------------


def chromium(args: list[str], user_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-crash-reporter", "--disable-extensions", f"--user-data-dir={user_dir}",
        "--virtual-time-budget=5000", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


# Loaded first in a test copy of the page (without its CSP, so nothing is blocked): records any
# alert/confirm/prompt and every image the page shows (URL, decoded width) where the DOM dump shows them.
HOOK = """<script>
(function () {
  var root = document.documentElement;
  var mark = function (what) { root.setAttribute('data-hook-' + what, '1'); };
  window.alert = function () { mark('alert'); };
  window.confirm = window.alert; window.prompt = window.alert;
  window.addEventListener('load', function () {
    var imgs = Array.prototype.map.call(document.images, function (i) { return [i.currentSrc, i.naturalWidth]; });
    var pre = document.createElement('pre');
    pre.id = 'hook-images';
    pre.textContent = JSON.stringify(imgs);
    document.body.appendChild(pre);
  });
})();
</script>"""


def page_requests(netlog: Path) -> list[str]:
    """URLs the page (a file:// document) asked the network for, from Chromium's NetLog.

    Chromium's own background requests (updates, accounts) have another isolation key and are ignored.
    """
    log = json.loads(netlog.read_text(encoding="utf-8"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start and "file://" in e.get("params", {}).get("network_isolation_key", "")
    ]


def harness(report_dir: Path, work: Path, inject_raw: str | None = None) -> tuple[str, list[str]]:
    """The rendered DOM and the network requests of a copy of the report with the CSP removed and
    :data:`HOOK` first in <head>. ``inject_raw`` puts that markup unescaped into the copy: the control
    that shows the hook and the NetLog catch an injection that runs and a remote load.
    """
    copy = work / "copy"
    shutil.copytree(report_dir, copy)
    page = (copy / "index.html").read_text(encoding="utf-8")
    page, n = re.subn(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    assert n == 1
    page = page.replace("<head>", "<head>" + HOOK, 1)
    if inject_raw is not None:
        page = page.replace("<main>", "<main>" + inject_raw, 1)
    (copy / "index.html").write_text(page, encoding="utf-8")
    netlog = work / "net.json"
    dom = chromium([f"--log-net-log={netlog}", "--dump-dom", (copy / "index.html").as_uri()], work / "profile").stdout
    return dom, page_requests(netlog)


def check_no_script_ran(dom: str, requests: list[str], copy: Path) -> None:
    """No alert, no element made from a file name, no network request, every image a local file that decoded."""
    tags = parse(dom)
    (html_attrs,) = tags.all("html")
    assert not [k for k in html_attrs if k.startswith("data-hook-")], html_attrs
    assert not any(a.get("src") in ("x", "y") for a in tags.all("img"))
    assert requests == []
    images = json.loads(html.unescape(re.search(r'<pre id="hook-images">(.*?)</pre>', dom, re.S).group(1)))
    assert images
    base = copy.as_uri() + "/img/"
    for src, width in images:
        assert (src.startswith(base) or src.startswith("data:image/png;base64,")) and width > 0, (src, width)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return CHROMIUM


def test_report_in_headless_chromium(browser, report_all, tmp_path):
    summary, out = report_all
    # 1. The real page, with its CSP: our script runs (sorts by score), images load, nothing injected.
    dom = chromium(["--dump-dom", (out / "index.html").as_uri()], tmp_path / "p1").stdout
    tags = parse(dom)
    assert [a for a in tags.all("table") if a.get("id") == "videos"]
    (score_th,) = [a for a in tags.all("th") if a.get("data-key") == "score"]
    assert score_th.get("aria-sort") == "descending"
    keys = [k for k, *_ in COLUMNS]
    col = {k: keys.index(k) for k in ("path", "score")}
    row_scores = [r[col["score"]]["data-sort"] for r in tags.rows]
    with_score = [float(x) for x in row_scores if x]
    assert len(with_score) == 10 and row_scores == [str(x) for x in row_scores[:10]] + [""] * 4
    assert with_score == sorted(with_score, reverse=True)  # by score, empty cells last
    body = tags.all("body")[0]
    assert body.get("data-images-broken") == "0"
    assert len(tags.all("svg")) == summary.n_detailed
    assert len([a for a in tags.all("img") if a.get("class") == "overlay"]) == summary.n_images // 2
    assert not any(a.get("src") in ("x", "y") for a in tags.all("img"))
    assert len(tags.all("script")) == 1

    # 2. A sort chosen by the URL (#sort=path:asc): the script reorders the rows.
    dom2 = chromium(["--dump-dom", (out / "index.html").as_uri() + "#sort=path:asc"], tmp_path / "p2").stdout
    paths = [r[col["path"]]["data-sort"] for r in parse(dom2).rows]
    assert len(paths) == summary.n_videos and paths == sorted(paths, key=str.lower)

    # 3. Without the CSP safety net: no script from the database runs, only local files load.
    dom3, requests = harness(out, tmp_path / "h")
    check_no_script_ran(dom3, requests, tmp_path / "h" / "copy")
    # ... and the checks do catch markup that runs and a remote load (the control).
    bad, bad_requests = harness(out, tmp_path / "c", '<img src=x onerror=alert(1)><img src="http://198.51.100.7/a.png">')
    assert 'data-hook-alert="1"' in bad
    assert bad_requests == ["http://198.51.100.7/a.png"]

    # 4. A screenshot in the test's output folder, for people.
    shot = tmp_path / "report.png"
    chromium([f"--screenshot={shot}", "--window-size=1280,2000", (out / "index.html").as_uri()], tmp_path / "p3")
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (2000, 1280)
    assert img.std() > 20  # not a blank page
    keep = os.environ.get("ACFD_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


# --- end to end: a real scan of a file with a hostile name ----------------------------------------------


@pytest.fixture(scope="module")
def scanned_report(tmp_path_factory):
    """``acfd-scan`` over a real video named like an HTML injection (and a two-person video), then the report."""
    from tests.scan_helpers import face_video, make_model, two_face_video

    root = tmp_path_factory.mktemp("e2e")
    vids = root / "archive"
    vids.mkdir()
    face_video(vids / XSS_NAME, n=8)
    two_face_video(vids / "two.mp4", n=4)
    model = make_model(root / "tiny.onnx", bias=12.0)  # every face scores ~12 > 9.05: flagged
    db = root / "acfd.sqlite"
    runner = CliRunner()
    r = runner.invoke(main, [str(vids), "-m", str(model), "--db", str(db), "--workers", "0", "--frames", "4", "-q"])
    assert r.exit_code == 1, r.output  # 1: something flagged, no errors
    out = root / "report"
    r = runner.invoke(main, ["report", "--db", str(db), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "(2 videos in the table, 2 flagged, 2 with details" in r.stdout
    return out, vids / XSS_NAME


@pytest.mark.slow
def test_scanned_hostile_name_is_shown_as_text(scanned_report):
    out, video = scanned_report
    page = (out / "index.html").read_text(encoding="utf-8")
    tags = parse(page)
    assert str(video) in "".join(tags.text)
    assert "<img src=x" not in page and html.escape(str(video)) in page
    assert len(tags.all("script")) == 1
    assert not [k for _, a in tags.tags for k in a if k.lower().startswith("on")]
    assert not any(a.get("src") == "x" for a in tags.all("img"))
    # Its section: a plot, one identity, and its stored crops with attention overlays.
    assert any(a.get("href") == video.as_uri() for a in tags.all("a"))  # a file:// link to the original
    sections = [a["id"] for a in tags.all("section")]
    assert len(sections) == 2 and len(tags.all("svg")) == 2
    overlays = [a for a in tags.all("img") if a.get("class") == "overlay"]
    assert len(overlays) >= 3 and all((out / a["src"]).is_file() for a in overlays)


@pytest.mark.slow
def test_scanned_hostile_name_runs_no_script_in_chromium(browser, scanned_report, tmp_path):
    out, _ = scanned_report
    dom = chromium(["--dump-dom", (out / "index.html").as_uri()], tmp_path / "p").stdout
    tags = parse(dom)
    assert tags.all("body")[0].get("data-images-broken") == "0"
    assert not any(a.get("src") == "x" for a in tags.all("img"))
    dom2, requests = harness(out, tmp_path / "h")
    check_no_script_ran(dom2, requests, tmp_path / "h" / "copy")


def test_crops_are_shared_between_identities():
    from acfd.scanner.report import _Crop, _pick_crops

    cands = [_Crop(i, 0, i * 0.1, 20.0 - i) for i in range(6)] + [_Crop(10, 1, 0.3, 5.0), _Crop(11, 2, 0.2, 1.0)]
    chosen = _pick_crops(cands, 4)
    # Each identity's most suspicious crop first, then identity 0's next best; shown by identity and time.
    assert [(c.identity, c.detection_id) for c in chosen] == [(0, 0), (0, 1), (1, 10), (2, 11)]
    assert _pick_crops(cands, 0) == [] and len(_pick_crops(cands, 50)) == 8
