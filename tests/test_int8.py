"""int8 artifacts (export, metadata, parity with FP32 on real-ish face crops), the precision choice
(siblings, refusals, what ran), CPU feature parsing, and --precision on both CLIs."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from acfd.engine import runtime
from acfd.engine.backends import onnx_props, read_onnx_meta
from acfd.engine.cpu import CpuFeatures, detect, parse_cpuinfo
from acfd.engine.export import export_onnx
from acfd.engine.precision import PrecisionError, int8_sibling
from acfd.engine.quantize import MAX_FLIP_RATE, MIN_SPEARMAN, export_int8, fidelity, float32_model, spearman
from acfd.engine.tensorrt import PlanHeader, write_plan
from acfd.schemas.artifact import ArtifactError
from click.testing import CliRunner

from tests.engine_helpers import STANDIN_SIZE, face_crops, standin, standin_meta, tiny_run
from tests.media import astronaut

VNNI = CpuFeatures("test EPYC", frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16"}), "test")
AVX2 = CpuFeatures("test old CPU", frozenset({"avx2"}), "test")


def augmented(n: int, size: int, seed: int) -> np.ndarray:
    """Real-ish face crops: the astronaut's face (the scanner's detector and crop rule, four margins,
    mirrored) under random contrast, brightness, sensor noise, small shifts and JPEG compression."""
    base = face_crops(size)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = (base[i % len(base)].astype(np.float32) - 128) * rng.uniform(0.6, 1.4) + 128 + rng.uniform(-40, 40)
        x = x + rng.normal(0, rng.uniform(0, 8), x.shape)
        x = np.roll(x, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
        ok, enc = cv2.imencode(".jpg", np.clip(x, 0, 255).astype(np.uint8),
                               [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 95))])  # fmt: skip
        out.append(cv2.imdecode(enc, cv2.IMREAD_UNCHANGED))
    return np.ascontiguousarray(np.stack(out))


def varied_standin() -> torch.nn.Module:
    """The stand-in branch with its biases removed and its embedding scaled so that scores spread over
    about 3.5..14 around the 9.05 threshold: ranks and verdict flips then mean something."""
    branch = standin(scale=450.0)
    with torch.no_grad():
        for m in branch.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.zero_()
    return branch


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return augmented(64, STANDIN_SIZE, seed=0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, crops: np.ndarray) -> tuple[Path, Path, object]:
    """(model.onnx FP32, its int8 sibling model.int8.onnx, the export result)."""
    d = tmp_path_factory.mktemp("int8")
    meta = replace(standin_meta(), config_hash="c" * 64, crop_margin=1.25)
    fp32 = export_onnx(varied_standin(), meta, d / "model.onnx")
    r = export_int8(fp32, int8_sibling(fp32), crops, source="astronaut test crops")
    return fp32, r.path, r


def test_export_int8_metadata_and_card(pair: tuple[Path, Path, object], crops: np.ndarray) -> None:
    fp32, q8, r = pair
    assert q8 == fp32.with_name("model.int8.onnx")
    src, meta = read_onnx_meta(fp32), read_onnx_meta(q8)
    assert meta.precision == "int8" and src.precision == "fp32"
    for field in ("input_size", "input_layout", "mean", "std", "crop_margin", "r_minus", "r_plus", "threshold",
                  "score", "attention_size", "preset", "config_hash"):  # fmt: skip
        assert getattr(meta, field) == getattr(src, field), field
    assert meta.crop_margin == 1.25 and meta.config_hash == "c" * 64
    e = meta.extra
    assert e["quantised_from"] == "model.onnx"
    assert e["quantised_from_id"] == hashlib.sha256(fp32.read_bytes()).hexdigest()[:16]
    assert e["calibration_crops"] == "48" and e["calibration_source"] == "astronaut test crops"  # 16 held out
    assert len(e["calibration_sha256"]) == 16 and e["int8_within_tolerance"] == "yes"
    card = meta.card.to_dict()
    assert card["precision"] == "int8"
    assert card["calibration"] == {"crops": 48, "sha256": e["calibration_sha256"], "source": "astronaut test crops"}
    ops = {n.op_type for n in onnx.load(str(q8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # QDQ around the convolutions
    w = [t for t in onnx.load(str(q8)).graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert w and any(len(t.dims) == 4 for t in w)  # int8 conv weights ...
    scales = [t for t in onnx.load(str(q8)).graph.initializer if t.name.endswith("weight_scale")]
    assert any(len(t.dims) == 1 and t.dims[0] > 1 for t in scales)  # ... with a scale per output channel
    assert r.check.n == 16 and "within the tolerance" in r.summary()
    # the runtime reads the metadata off the protobuf without the onnx package: the same entries
    for f in (fp32, q8):
        assert onnx_props(f.read_bytes()) == {p.key: p.value for p in onnx.load(str(f)).metadata_props}
    with pytest.raises(ValueError):
        onnx_props(b"\x0a\xff\xff")  # a length running past the end


def test_int8_parity_with_fp32_within_tolerance(pair: tuple[Path, Path, object]) -> None:
    """On other augmented crops than the calibration's: the documented tolerance (rank correlation
    >= 0.99, verdict flips <= 1% at the threshold) and close attention maps."""
    fp32, q8, _ = pair
    test = augmented(64, STANDIN_SIZE, seed=1)
    with runtime.load(fp32, precision="fp32") as a, runtime.load(q8, precision="int8") as b:
        pa, pb = a.infer(test), b.infer(test)
    assert 3 < np.min(pa.score) < 9.05 < np.max(pa.score)  # verdicts on both sides of the threshold
    f = fidelity(pb.score, pa.score, a.meta.threshold, pb.attention, pa.attention)
    assert f.spearman >= MIN_SPEARMAN and f.flip_rate <= MAX_FLIP_RATE and f.within_tolerance
    assert f.score_median_rel < 0.01 and f.attention_mad < 0.01


def test_fp16_source_is_converted_first(tmp_path: Path, crops: np.ndarray) -> None:
    meta = standin_meta()
    fp16 = export_onnx(varied_standin(), meta, tmp_path / "m16.onnx", fp16=True)
    m32 = float32_model(onnx.load(str(fp16)))
    types = {t.data_type for t in m32.graph.initializer}
    assert onnx.TensorProto.FLOAT16 not in types
    onnx.checker.check_model(m32, full_check=True)
    r = export_int8(fp16, tmp_path / "m16.int8.onnx", crops[:20])  # 16 + a short batch of 4
    assert r.meta.extra["quantised_from_precision"] == "fp16" and r.check.n == 20  # < 32 crops: in-sample
    # asked for FP32, the FP16 artifact is converted on load and agrees with its own FP16 graph (auto)
    with runtime.load(fp16, device="cpu", precision="fp32") as up, runtime.load(fp16, device="cpu", cpu=AVX2) as own:
        assert up.choice.precision == "fp32" and up.choice.upcast and up.model_id == own.model_id
        assert own.choice.precision == "fp16" and not own.choice.upcast
        assert up.device_name().endswith("; fp32 (fp32: fp16 artifact, converted to FP32 on load)")
        a, b = up.infer(crops[:8]).score, own.infer(crops[:8]).score
    np.testing.assert_allclose(a, b, rtol=2e-3)


def test_export_int8_refusals(pair: tuple[Path, Path, object], tmp_path: Path, crops: np.ndarray) -> None:
    fp32, q8, _ = pair
    with pytest.raises(ArtifactError, match="at least 8 are needed"):
        export_int8(fp32, tmp_path / "a.onnx", crops[:3])
    with pytest.raises(ArtifactError, match=r"uint8 \[N,64,64,3\]"):
        export_int8(fp32, tmp_path / "a.onnx", crops[:, :32, :32])
    with pytest.raises(ArtifactError, match="already int8"):
        export_int8(q8, tmp_path / "a.onnx", crops)
    with pytest.raises(ArtifactError, match="is the source model itself"):
        export_int8(fp32, fp32, crops)


def test_auto_takes_the_int8_sibling_with_vnni_only(pair: tuple[Path, Path, object]) -> None:
    fp32, q8, _ = pair
    id32, id8 = (hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in (fp32, q8))
    with runtime.load(fp32, device="cpu", cpu=VNNI) as b:
        assert b.model_id == id8 and b.meta.precision == "int8" and b.choice.path == q8
        assert b.device_name().endswith("; int8 (auto: int8 sibling model.int8.onnx; CPU avx512_vnni+avx_vnni)")
    with runtime.load(fp32, device="cpu", cpu=AVX2) as b:
        assert b.model_id == id32 and b.choice.precision == "fp32"
        assert "not used: CPU has no VNNI/AMX" in b.device_name()
    # an int8 artifact given on a CPU without VNNI runs its float source, found beside it by name and id
    with runtime.load(q8, device="cpu", cpu=AVX2) as b:
        assert b.model_id == id32 and b.choice.path == fp32 and "float source model.onnx" in b.choice.why
    with runtime.load(q8, device="cpu", cpu=VNNI) as b:
        assert b.model_id == id8
    # asked explicitly: int8 even without VNNI, fp32 even with it
    with runtime.load(fp32, device="cpu", cpu=AVX2, precision="int8") as b:
        assert b.model_id == id8 and b.device_name().endswith("int8 (int8: int8 sibling model.int8.onnx; CPU no VNNI/AMX)")
    with runtime.load(q8, device="cpu", cpu=VNNI, precision="fp32") as b:
        assert b.model_id == id32 and b.choice.precision == "fp32"


def test_precision_mismatches_are_refused_in_one_line(pair: tuple[Path, Path, object], tmp_path: Path) -> None:
    fp32, q8, _ = pair
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(fp32.read_bytes())  # no sibling beside it
    with pytest.raises(PrecisionError) as e:
        runtime.load(lone, precision="int8")
    assert str(e.value) == (
        f"--precision int8: {lone} is an fp32 artifact and there is no int8 sibling lone.int8.onnx beside it; "
        f"make one with `acfd-train export --onnx {lone} --int8 --calibrate DIR --out {tmp_path / 'lone.int8.onnx'}`"
    )
    # a stale sibling (quantised from another file) is never used
    (tmp_path / "lone.int8.onnx").write_bytes(q8.read_bytes())
    other = onnx.load(str(fp32))
    other.doc_string = "another model"  # other bytes, so another id
    onnx.save(other, str(tmp_path / "other.onnx"))
    stale = tmp_path / "other.int8.onnx"
    stale.write_bytes(q8.read_bytes())
    with pytest.raises(PrecisionError, match="was quantised from another file"):
        runtime.load(tmp_path / "other.onnx", precision="int8")
    with runtime.load(lone, precision="int8") as b:  # the same bytes as model.onnx: a valid sibling
        assert b.meta.precision == "int8"
    # an int8 artifact whose float source is missing cannot run as fp32
    solo = tmp_path / "solo"
    solo.mkdir()
    (solo / "m.int8.onnx").write_bytes(q8.read_bytes())
    with pytest.raises(PrecisionError, match=r"float source model\.onnx is not beside it"):
        runtime.load(solo / "m.int8.onnx", precision="fp32")
    with runtime.load(solo / "m.int8.onnx", cpu=AVX2) as b:  # auto: runs int8 and says why
        assert b.choice.precision == "int8" and "no VNNI/AMX, and its float source" in b.choice.why
    with pytest.raises(PrecisionError, match="bf16 is not available for an .onnx file"):
        runtime.load(fp32, precision="bf16")
    with pytest.raises(PrecisionError, match="unknown precision 'int4'"):
        runtime.load(fp32, precision="int4")
    # a TensorRT plan runs at the precision it was built with (the header is read; no TensorRT needed)
    engine = b"engine"
    header = PlanHeader(meta=replace(standin_meta(), precision="fp16").to_dict(), tensorrt="10.9", gpu="t",
                        compute_capability="9.0", min_batch=1, opt_batch=1, max_batch=1, engine_bytes=len(engine),
                        engine_sha256=hashlib.sha256(engine).hexdigest())  # fmt: skip
    plan = write_plan(tmp_path / "m.plan", header, engine)
    with pytest.raises(PrecisionError) as e:
        runtime.load(plan, precision="int8")
    assert str(e.value) == (f"{plan} is a TensorRT fp16 plan: it runs at the precision it was built with, not int8; "
                            "use --precision auto (or build a plan from an int8 ONNX)")  # fmt: skip


def test_training_run_precisions(tmp_path: Path) -> None:
    run = tiny_run(tmp_path / "run", image_size=64, preset="single-metric-att")
    x = face_crops(64)
    with pytest.raises(PrecisionError, match="a training run has no int8 form"):
        runtime.load(run, precision="int8")
    with pytest.raises(PrecisionError, match="bf16 needs a CPU with AVX-512 BF16 or AMX-BF16; this one has no "):
        runtime.load(run, device="cpu", precision="bf16", cpu=AVX2)
    with runtime.load(run, device="cpu") as a, runtime.load(run, device="cpu", precision="bf16", cpu=VNNI) as b:
        assert a.meta.precision == "fp32" and b.meta.precision == "bf16"
        assert b.device_name().endswith("bf16 (bf16: torch oneDNN; CPU avx512_bf16)")
        pa, pb = a.infer(x), b.infer(x)
    assert pb.score.dtype == np.float32 and np.all(np.isfinite(pb.score))
    np.testing.assert_allclose(pb.score, pa.score, rtol=0.1)  # bf16 keeps 8 bits of mantissa


# -- CPU features --------------------------------------------------------------------------------------
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu vme sse sse2 avx f16c avx2 avx512f avx512dq avx512bw avx512vl avx_vnni avx512_bf16 avx512vbmi avx512_vnni
processor\t: 1
model name\t: AMD EPYC 9B14
flags\t\t: fpu avx2
"""
XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
OLD = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
flags\t\t: fpu sse sse2 avx fma avx2
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes
"""


def test_cpu_features_from_cpuinfo() -> None:
    epyc, xeon, old, arm = map(parse_cpuinfo, (EPYC, XEON, OLD, ARM))
    assert epyc.model == "AMD EPYC 9B14" and epyc.source == "/proc/cpuinfo"
    assert epyc.flags == {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16"}  # first processor's line
    assert epyc.vnni and epyc.fast_int8 and epyc.fast_bf16 and not epyc.has("amx_int8")
    assert epyc.int8_reason() == "avx512_vnni+avx_vnni" and epyc.bf16_reason() == "avx512_bf16"
    assert xeon.flags == {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
    assert xeon.int8_reason() == "amx_int8+avx512_vnni" and xeon.bf16_reason() == "amx_bf16+avx512_bf16"
    assert old.flags == {"avx2"} and not old.fast_int8 and not old.fast_bf16
    assert old.int8_reason() == "no VNNI/AMX" and old.describe().endswith(": avx2 (/proc/cpuinfo)")
    assert arm.flags == frozenset() and arm.source == "unknown" and not arm.fast_int8  # never assumed
    here = detect()
    assert here.source in ("/proc/cpuinfo", "numpy", "unknown") and detect() is here


def test_spearman() -> None:
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 2, 2, 3]), np.array([1.0, 2, 3, 4])) == pytest.approx(0.9486833, abs=1e-6)


# -- the CLIs ------------------------------------------------------------------------------------------
def _source_and_faces(pair: tuple[Path, Path, object], tmp_path: Path) -> tuple[Path, Path]:
    """(a copy of the FP32 model, a folder of 8 photos of a face at other sizes, some mirrored: each is
    cropped the scanner's way)."""
    src = tmp_path / "m.onnx"
    src.write_bytes(pair[0].read_bytes())
    faces = tmp_path / "faces"
    faces.mkdir()
    img = astronaut()
    for i in range(8):
        photo = cv2.resize(img, None, fx=1 - 0.05 * i, fy=1 - 0.05 * i)
        cv2.imwrite(str(faces / f"a{i}.png"), cv2.cvtColor(photo[:, ::-1] if i % 2 else photo, cv2.COLOR_RGB2BGR))
    return src, faces


def test_train_export_int8_cli(pair: tuple[Path, Path, object], tmp_path: Path) -> None:
    from acfd.train.cli import main

    src, faces = _source_and_faces(pair, tmp_path)
    (faces / "notes.txt").write_text("not a photo")
    r = CliRunner().invoke(main, ["export", "--onnx", str(src), "--int8", "--calibrate", str(faces)])
    assert r.exit_code == 0, r.output
    meta = read_onnx_meta(tmp_path / "m.int8.onnx")
    assert meta.precision == "int8" and meta.extra["calibration_source"] == "8 face crops from 8 photos and 0 videos in faces"
    assert "int8 QDQ" in r.output and "Collecting" not in r.output
    # no photo at all / photos without a face: one line each, exit 1 (a usage-level error), nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(main, ["export", "--onnx", str(src), "--int8", "--calibrate", str(empty), "--out",
                                  str(tmp_path / "x.onnx")])  # fmt: skip
    assert r.exit_code != 0 and "no photos or videos in" in r.output and len(r.output.strip().splitlines()) == 1
    blank = tmp_path / "blank"
    blank.mkdir()
    cv2.imwrite(str(blank / "grey.png"), np.full((120, 160, 3), 128, np.uint8))
    r = CliRunner().invoke(main, ["export", "--onnx", str(src), "--int8", "--calibrate", str(blank), "--out",
                                  str(tmp_path / "x.onnx")])  # fmt: skip
    assert r.exit_code != 0 and "no faces found in the 1 photos and 0 videos of" in r.output
    assert not (tmp_path / "x.onnx").exists()
    r = CliRunner().invoke(main, ["export", "--onnx", str(src), "--int8"])
    assert r.exit_code == 2 and "--int8 needs --calibrate DIR" in r.output


def test_train_export_int8_recipe_options(pair: tuple[Path, Path, object], crops: np.ndarray, tmp_path: Path) -> None:
    """--int8-percentile and --int8-float-tail reach the quantiser: recorded in the metadata, and the tail
    count is the number of convolutions left without quantised weights."""
    from acfd.train.cli import main

    src, faces = _source_and_faces(pair, tmp_path)

    def float_convs(path: Path) -> int:
        g = onnx.load(str(path)).graph
        dq_out = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
        return sum(1 for n in g.node if n.op_type == "Conv" and n.input[1] not in dq_out)

    outs = {}
    for tail in (0, 2):
        out = tmp_path / f"t{tail}.onnx"
        r = CliRunner().invoke(main, ["export", "--onnx", str(src), "--int8", "--calibrate", str(faces), "--out",
                                      str(out), "--int8-percentile", "99.999", "--int8-float-tail", str(tail)])  # fmt: skip
        assert r.exit_code == 0, r.output
        outs[tail] = out
        q = read_onnx_meta(out).extra["quantisation"]
        assert "percentile 99.999 (both tails)" in q and f"1 head + {tail} tail convolutions in float" in q, q
    convs = sum(1 for n in onnx.load(str(src)).graph.node if n.op_type == "Conv")
    assert convs > 3 and (float_convs(outs[0]), float_convs(outs[2])) == (1, 3)
    # out of range, or without --int8: click's usage errors (exit 2), nothing written
    for bad in (["--int8", "--calibrate", str(faces), "--int8-percentile", "100"],
                ["--int8", "--calibrate", str(faces), "--int8-float-tail", "-1"], ["--int8-percentile", "99.9"]):  # fmt: skip
        r = CliRunner().invoke(main, ["export", "--onnx", str(src), "--out", str(tmp_path / "bad.onnx"), *bad])
        assert r.exit_code == 2 and not (tmp_path / "bad.onnx").exists(), (bad, r.output)
    # more float convolutions than the model has: refused in one line, not quietly quantised whole
    r = CliRunner().invoke(main, ["export", "--onnx", str(src), "--int8", "--calibrate", str(faces), "--out",
                                  str(tmp_path / "bad.onnx"), "--int8-float-tail", str(convs)])  # fmt: skip
    assert r.exit_code == 1 and f"leave none of the model's {convs} convolutions to quantise" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "bad.onnx").exists()
    # no float convolution at all: the recipe line says so rather than naming float convolutions
    whole = export_int8(src, tmp_path / "whole.onnx", crops, float_head=0, float_tail=0)
    assert whole.meta.extra["quantisation"].endswith(f"every convolution int8 (the graph has {convs})")
    assert float_convs(tmp_path / "whole.onnx") == 0
    # the library refuses them too, in one line
    for kw, msg in (({"percentile": 0.0}, "between 0 and 100"), ({"float_tail": -1}, "must be >= 0")):
        with pytest.raises(ArtifactError, match=msg):
            export_int8(src, tmp_path / "lib.onnx", crops, **kw)


def test_minmax_ranges_folded_per_batch_are_the_whole_sets(pair: tuple[Path, Path, object], crops: np.ndarray,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MinMax calibration, batch by batch, gives the ranges of all calibration crops at once (it failed
    outright with ONNX Runtime 1.32's own per-batch option: "No data is collected")."""
    import acfd.engine.quantize as q
    from onnx import numpy_helper

    fp32, _, _ = pair

    def ranges(path: Path) -> dict[str, np.ndarray]:
        g = onnx.load(str(path)).graph
        return {t.name: numpy_helper.to_array(t) for t in g.initializer if t.name.endswith(("_scale", "_zero_point"))}

    batched = export_int8(fp32, tmp_path / "batched.onnx", crops, method="minmax")
    assert "minmax ranges" in batched.meta.extra["quantisation"] and batched.check.within_tolerance
    monkeypatch.setattr(q, "CALIBRATION_BATCH", 10_000)  # one batch of every calibration crop
    whole = export_int8(fp32, tmp_path / "whole.onnx", crops, method="minmax")
    a, b = ranges(batched.path), ranges(whole.path)
    assert len(a) > 4 and a.keys() == b.keys()
    assert all(np.allclose(a[k], b[k], rtol=1e-6) for k in a), [k for k in a if not np.allclose(a[k], b[k], rtol=1e-6)]
    # ... and they are not what one batch alone gives: the test would notice ranges from the last batch only
    monkeypatch.setattr(q, "CALIBRATION_BATCH", 16)
    last = export_int8(fp32, tmp_path / "last.onnx", crops[32:48], method="minmax")
    c = ranges(last.path)
    assert any(not np.allclose(a[k], c[k], rtol=1e-6) for k in a)


def test_scan_precision_option(pair: tuple[Path, Path, object], tmp_path: Path) -> None:
    from acfd.scanner.cli import main

    from tests.scan_helpers import face_video

    fp32, _, _ = pair
    (tmp_path / "v").mkdir()
    video = face_video(tmp_path / "v" / "clip.mp4", n=4, fps=4, size=(128, 160))
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(fp32.read_bytes())
    db = tmp_path / "s.sqlite"
    args = [str(video.parent), "--db", str(db), "--workers", "0", "-q"]
    r = CliRunner().invoke(main, [*args, "--model", str(lone), "--precision", "int8"])
    assert r.exit_code == 4 and "--precision int8: " in r.output and "no int8 sibling lone.int8.onnx" in r.output
    r = CliRunner().invoke(main, [*args, "--model", str(fp32), "--precision", "int8"])
    assert r.exit_code in (0, 1), r.output
    r = CliRunner().invoke(main, [*args, "--model", str(fp32), "--precision", "fp32", "--rescan"])
    assert r.exit_code in (0, 1), r.output
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT backend, device_name, args FROM scans ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["onnxruntime", "onnxruntime"]
    assert rows[0][1].endswith("int8 (int8: int8 sibling model.int8.onnx; CPU " + detect().int8_reason() + ")")
    assert rows[1][1].endswith("; fp32 (fp32: fp32 artifact)") and '"precision": "fp32"' in rows[1][2]
    r = CliRunner().invoke(main, [*args, "--model", str(fp32), "--precision", "int4"])
    assert r.exit_code == 4 and "'int4' is not one of" in r.output  # bad arguments: exit 4
    # watch takes the same option and refuses the same mismatch before it opens any stream
    r = CliRunner().invoke(main, ["watch", str(video), "--db", str(tmp_path / "w.sqlite"), "--model", str(lone),
                                  "--precision", "int8", "--duration", "5s"])
    assert r.exit_code == 4 and "--precision int8: " in r.output and "no int8 sibling lone.int8.onnx" in r.output
    assert not (tmp_path / "w.sqlite").exists() or sqlite3.connect(tmp_path / "w.sqlite").execute(
        "SELECT COUNT(*) FROM windows").fetchone() == (0,)
