"""TensorRT: the .plan container, the errors without TensorRT, and (where TensorRT and a GPU exist)
real FP32/FP16 builds run through the runtime."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from acfd.engine import tensorrt as trt_mod
from acfd.engine.export import build_run, export_onnx
from acfd.engine.runtime import load
from acfd.engine.tensorrt import (
    INSTALL_HINT,
    PlanHeader,
    TensorRTUnavailable,
    build_engine,
    check_compatible,
    read_plan,
    write_plan,
)
from acfd.schemas.artifact import ArtifactError
from acfd.schemas.errors import AcfdError
from acfd.train.cli import main
from click.testing import CliRunner

from tests.engine_helpers import STANDIN_SIZE, random_crops, standin, standin_meta, tiny_run


def header_for(engine: bytes, **kw: object) -> PlanHeader:
    d = dict(
        meta=standin_meta().to_dict(), tensorrt="10.9.0", gpu="NVIDIA H100 80GB HBM3", compute_capability="9.0",
        min_batch=1, opt_batch=32, max_batch=128, engine_bytes=len(engine),
        engine_sha256=hashlib.sha256(engine).hexdigest(),
    )  # fmt: skip
    d.update(kw)
    return PlanHeader(**d)  # type: ignore[arg-type]


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import tensorrt` fail, as on a machine without it (even where it is installed)."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture(scope="module")
def onnx32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(standin(scale=30.0), standin_meta(), tmp_path_factory.mktemp("trt") / "m.onnx")


# -- the container ---------------------------------------------------------------------------------
def test_plan_container_round_trip(tmp_path: Path) -> None:
    engine = np.random.default_rng(0).bytes(1000)
    path = write_plan(tmp_path / "m.plan", header_for(engine, onnx_sha256="cd" * 32), engine)
    header, body = read_plan(path)
    assert body == engine
    assert header.tensorrt == "10.9.0" and header.gpu == "NVIDIA H100 80GB HBM3" and header.max_batch == 128
    assert header.artifact_meta == standin_meta()
    assert path.read_bytes()[:8] == b"ACFDPLAN"
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(TypeError):  # a write that fails half-way leaves neither the plan nor a .partial
        write_plan(tmp_path / "bad.plan", header_for(engine), None)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.plan"]


def test_plan_container_damage_is_detected(tmp_path: Path) -> None:
    engine = np.random.default_rng(1).bytes(500)
    good = write_plan(tmp_path / "good.plan", header_for(engine), engine).read_bytes()
    cases = {
        "bare.plan": (engine, "no acfd header"),
        "tiny.plan": (b"ACFD", "no acfd header"),
        "cut_header.plan": (good[:40], "truncated"),
        "cut_engine.plan": (good[:-10], "truncated or padded"),
        "flipped.plan": (good[:-1] + bytes([good[-1] ^ 0xFF]), "checksum"),
        "newer.plan": (good[:8] + (99).to_bytes(4, "little") + good[12:], "newer acfd"),
    }
    for name, (data, match) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ArtifactError, match=match):
            read_plan(tmp_path / name)
    bad_json = tmp_path / "json.plan"
    head = b"{not json"
    bad_json.write_bytes(b"ACFDPLAN" + (1).to_bytes(4, "little") + len(head).to_bytes(4, "little") + head)
    with pytest.raises(ArtifactError, match="header is corrupt"):
        read_plan(bad_json)
    bad_meta = write_plan(tmp_path / "meta.plan", header_for(engine, meta={"input_size": 8}), engine)
    with pytest.raises(ArtifactError, match="too small"):
        read_plan(bad_meta)


def test_plan_from_elsewhere_says_rebuild(tmp_path: Path) -> None:
    h = header_for(b"x")
    check_compatible(h, "10.9.0", "NVIDIA H100 80GB HBM3", tmp_path / "m.plan")  # same: fine
    with pytest.raises(ArtifactError, match=r"TensorRT 10\.9\.0 \(this machine has 11\.4\.0\).*rebuild"):
        check_compatible(h, "11.4.0", "NVIDIA H100 80GB HBM3", tmp_path / "m.plan")
    with pytest.raises(ArtifactError, match=r"GPU 'NVIDIA H100 80GB HBM3' \(this machine has 'NVIDIA L4'\).*rebuild"):
        check_compatible(h, "10.9.0", "NVIDIA L4", tmp_path / "m.plan")


# -- without TensorRT --------------------------------------------------------------------------------
def test_build_without_tensorrt_names_the_extra(tmp_path: Path, onnx32: Path, no_tensorrt: None) -> None:
    with pytest.raises(TensorRTUnavailable, match=r"pip install 'acfd\[tensorrt\]'"):
        build_engine(onnx32, tmp_path / "m.plan")
    assert not (tmp_path / "m.plan").exists()


def test_load_plan_without_tensorrt(tmp_path: Path, no_tensorrt: None) -> None:
    engine = b"\x01" * 64
    path = write_plan(tmp_path / "m.plan", header_for(engine), engine)
    with pytest.raises(TensorRTUnavailable, match="acfd\\[tensorrt\\]"):
        load(path)
    with pytest.raises(ArtifactError, match="CUDA GPU only"):
        load(path, device="cpu")


def test_build_checks_arguments_before_tensorrt(tmp_path: Path, onnx32: Path, no_tensorrt: None) -> None:
    with pytest.raises(AcfdError, match="min <= opt <= max"):
        build_engine(onnx32, tmp_path / "m.plan", min_batch=8, opt_batch=4)
    with pytest.raises(AcfdError, match="export it with `acfd-train export --fp16`"):
        build_engine(onnx32, tmp_path / "m.plan", precision="fp16")  # never a silent FP32 engine
    with pytest.raises(ArtifactError, match="does not exist"):
        build_engine(tmp_path / "none.onnx", tmp_path / "m.plan")
    with pytest.raises(AcfdError, match="workspace_gb must be positive"):
        build_engine(onnx32, tmp_path / "m.plan", workspace_gb=0)
    # `build` checks the profile before it spends minutes exporting two graphs
    with pytest.raises(AcfdError, match="min <= opt <= max"):
        build_run(tmp_path / "no-run", tmp_path / "out", min_batch=0)
    assert not (tmp_path / "out").exists()


def test_cli_engine_without_tensorrt_is_one_line(tmp_path: Path, onnx32: Path, no_tensorrt: None) -> None:
    res = CliRunner().invoke(main, ["engine", "--onnx", str(onnx32), "--out", str(tmp_path / "m.plan")])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and INSTALL_HINT in lines[0] and "Traceback" not in res.output


def test_cli_build_without_tensorrt_writes_both_onnx(tmp_path: Path, no_tensorrt: None) -> None:
    run = tiny_run(tmp_path / "run", image_size=64, preset="single-metric-att")
    res = CliRunner().invoke(main, ["build", "--run", str(run), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out/model.onnx").is_file() and (tmp_path / "out/model.fp16.onnx").is_file()
    assert not (tmp_path / "out/model.plan").exists()
    assert "no TensorRT engine" in res.output and INSTALL_HINT in res.output
    with load(tmp_path / "out/model.fp16.onnx") as b:
        assert b.meta.precision == "fp16"


# -- with TensorRT and a GPU -------------------------------------------------------------------------
def _need_tensorrt() -> object:
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'acfd[tensorrt]')")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    return trt


@pytest.mark.tensorrt
@pytest.mark.parametrize("fp16", [False, True])
def test_real_engine_matches_onnxruntime(tmp_path: Path, fp16: bool) -> None:
    _need_tensorrt()
    branch, meta = standin(scale=30.0), standin_meta()
    onnx_path = export_onnx(branch, meta, tmp_path / "m.onnx", fp16=fp16)
    cache = tmp_path / "timing.cache"
    plan = build_engine(onnx_path, tmp_path / "m.plan", min_batch=1, opt_batch=4, max_batch=8, timing_cache=cache,
                        precision="fp16" if fp16 else "fp32")  # fmt: skip
    assert cache.is_file() and cache.stat().st_size > 0
    header, _ = read_plan(plan)
    assert header.artifact_meta.precision == ("fp16" if fp16 else "fp32")
    assert header.gpu == torch.cuda.get_device_name()
    crops = random_crops(19, STANDIN_SIZE)  # > max batch 8: split into 8, 8, 3
    with load(plan) as trt_b, load(onnx_path, device="cpu") as ort_b:
        assert trt_b.name == "tensorrt" and trt_b.max_batch == 8 and trt_b.meta.precision == header.artifact_meta.precision
        p, q = trt_b.infer(crops), ort_b.infer(crops)
        on_gpu = trt_b.infer_cuda(torch.from_numpy(crops).cuda())  # crops decoded on the GPU: no host trip
    np.testing.assert_allclose(on_gpu.score, p.score, rtol=1e-6)
    tol = 2e-2 if fp16 else 1e-3
    np.testing.assert_allclose(p.score, q.score, rtol=tol)
    np.testing.assert_allclose(p.attention, q.attention, atol=tol)
    # the same plan, claimed for another TensorRT: refuses to run
    other = write_plan(tmp_path / "other.plan", replace(header, tensorrt="0.0.1"), read_plan(plan)[1])
    with pytest.raises(ArtifactError, match="rebuild"):
        load(other)


@pytest.mark.tensorrt
def test_fp16_request_on_fp32_network_fails(tmp_path: Path) -> None:
    _need_tensorrt()
    onnx_path = export_onnx(standin(), standin_meta(), tmp_path / "m.onnx")
    with pytest.raises(AcfdError, match="fp32 graph"):
        build_engine(onnx_path, tmp_path / "m.plan", precision="fp16")


def test_network_flags_follow_the_tensorrt_version() -> None:
    class Flags:
        STRONGLY_TYPED = 2

    class Trt10:
        __version__ = "10.9.0"
        NetworkDefinitionCreationFlag = Flags

    class Trt11:
        __version__ = "11.4.0"

        class NetworkDefinitionCreationFlag:
            pass

    class TrtOld:
        __version__ = "10.0.0"

        class NetworkDefinitionCreationFlag:
            pass

    assert trt_mod.network_flags(Trt10) == 1 << 2
    assert trt_mod.network_flags(Trt11) == 0
    with pytest.raises(TensorRTUnavailable, match="strongly typed"):
        trt_mod.network_flags(TrtOld)
