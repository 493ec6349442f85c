"""Runtime: backend choice, the one infer() call, batch splitting, and clear errors for bad input/files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from acfd.engine.backends import InputError, OrtBackend, TorchBackend
from acfd.engine.export import export_onnx, torch_reference
from acfd.engine.runtime import backend_class, load
from acfd.engine.tensorrt import TensorRTBackend
from acfd.schemas.artifact import ArtifactError

from tests.engine_helpers import STANDIN_ATT, STANDIN_SIZE, random_crops, standin, standin_meta, tiny_run


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(standin(scale=30.0), standin_meta(), tmp_path_factory.mktemp("rt") / "m.onnx")


def test_load_picks_onnxruntime_and_fills_meta(onnx_model: Path) -> None:
    with load(onnx_model, device="cpu") as b:
        assert isinstance(b, OrtBackend) and b.name == "onnxruntime" and b.device == "cpu"
        assert b.model_id == hashlib.sha256(onnx_model.read_bytes()).hexdigest()[:16]
        assert b.meta.model_id == b.model_id and b.meta.input_size == STANDIN_SIZE
        assert b.max_batch is None
        crops = random_crops(5, STANDIN_SIZE)
        p = b.infer(crops)
    assert p.score.dtype == np.float32 and p.score.shape == (5,)
    assert p.attention is not None and p.attention.dtype == np.float32
    assert p.attention.shape == (5, STANDIN_ATT, STANDIN_ATT)
    ref, ref_att = torch_reference(standin(scale=30.0), standin_meta(), crops)
    np.testing.assert_allclose(p.score, ref, rtol=1e-4)
    np.testing.assert_allclose(p.attention, ref_att, atol=1e-4)
    assert len(p) == 5


def test_batches_beyond_max_batch_are_split(onnx_model: Path) -> None:
    crops = random_crops(7, STANDIN_SIZE, seed=3)
    with load(onnx_model) as whole, load(onnx_model, max_batch=3) as split:
        calls: list[int] = []
        run = split._run
        split._run = lambda c: (calls.append(len(c)), run(c))[1]  # type: ignore[method-assign]
        a, b = whole.infer(crops), split.infer(crops)
    assert calls == [3, 3, 1]
    np.testing.assert_allclose(b.score, a.score, rtol=1e-6)
    np.testing.assert_allclose(b.attention, a.attention, atol=1e-6)


def test_empty_batch_and_non_contiguous_crops(onnx_model: Path) -> None:
    with load(onnx_model) as b:
        empty = b.infer(np.zeros((0, STANDIN_SIZE, STANDIN_SIZE, 3), np.uint8))
        assert empty.score.shape == (0,) and empty.attention.shape == (0, STANDIN_ATT, STANDIN_ATT)
        crops = random_crops(2, STANDIN_SIZE)
        flipped = crops[:, :, ::-1]  # a view with negative strides
        np.testing.assert_allclose(b.infer(flipped).score, b.infer(np.ascontiguousarray(flipped)).score)


@pytest.mark.parametrize(
    ("crops", "match"),
    [
        (np.zeros((2, 32, 32, 3), np.uint8), r"\[N,64,64,3\]"),
        (np.zeros((2, 3, 64, 64), np.uint8), "NHWC"),
        (np.zeros((64, 64, 3), np.uint8), "batch"),
        (np.zeros((2, 64, 64, 3), np.float32), "uint8"),
        ([[0]], "numpy array"),
    ],
)
def test_bad_crops_are_clear_errors(onnx_model: Path, crops: object, match: str) -> None:
    with load(onnx_model) as b, pytest.raises(InputError, match=match):
        b.infer(crops)  # type: ignore[arg-type]


def test_garbage_truncated_and_wrong_kind_files(tmp_path: Path, onnx_model: Path) -> None:
    rnd = tmp_path / "random.onnx"
    rnd.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_model.read_bytes()[: onnx_model.stat().st_size // 2])
    text = tmp_path / "notes.onnx"
    text.write_text("this is a text file, not a model\n")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for path in (rnd, truncated, text, empty):
        with pytest.raises(ArtifactError, match="not a valid ONNX model|acfd metadata"):
            load(path)
    plain = tmp_path / "plain.onnx"  # a valid ONNX model without acfd metadata
    m = onnx.load(str(onnx_model))
    del m.metadata_props[:]
    onnx.save(m, str(plain))
    with pytest.raises(ArtifactError, match="carries no acfd metadata"):
        load(plain)
    bare = tmp_path / "bare.plan"  # e.g. a trtexec plan: no acfd header
    bare.write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="no acfd header"):
        load(bare)
    other = tmp_path / "model.pt"
    other.write_bytes(b"PK")
    with pytest.raises(ArtifactError, match="unknown model kind"):
        load(other)
    with pytest.raises(ArtifactError, match="does not exist"):
        load(tmp_path / "missing.bin")
    with pytest.raises(ArtifactError, match="does not exist"):
        load(tmp_path / "missing.onnx")
    (tmp_path / "notarun").mkdir()
    with pytest.raises(ArtifactError, match="not a training run"):
        load(tmp_path / "notarun")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(ArtifactError):
        load(junk)


def test_graph_that_disagrees_with_its_metadata(tmp_path: Path, onnx_model: Path) -> None:
    from acfd.schemas.artifact import META_KEY, ArtifactMeta

    m = onnx.load(str(onnx_model))
    meta = ArtifactMeta.from_json(next(p.value for p in m.metadata_props if p.key == META_KEY))
    from dataclasses import replace

    for bad, match in ((replace(meta, input_size=96), "does not match the metadata"),
                       (replace(meta, attention_size=0), "attention output and metadata disagree")):  # fmt: skip
        del m.metadata_props[:]
        onnx.helper.set_model_props(m, {META_KEY: bad.to_json()})
        path = tmp_path / "lying.onnx"
        onnx.save(m, str(path))
        with pytest.raises(ArtifactError, match=match):
            load(path)


def test_devices(onnx_model: Path) -> None:
    with pytest.raises(ArtifactError, match="unknown device"):
        load(onnx_model, device="tpu")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ArtifactError, match="no CUDA provider"):
            load(onnx_model, device="cuda")
    with pytest.raises(ArtifactError, match="max_batch"):
        load(onnx_model, max_batch=0)


def test_backend_classes_by_kind(tmp_path: Path) -> None:
    assert backend_class(tmp_path / "a.plan") is TensorRTBackend
    assert backend_class(tmp_path / "a.engine") is TensorRTBackend
    assert backend_class(tmp_path / "a.onnx") is OrtBackend
    assert backend_class(tmp_path / "model.safetensors") is TorchBackend
    assert backend_class(tmp_path) is TorchBackend


def test_infer_before_load_is_an_error(onnx_model: Path) -> None:
    b = OrtBackend(onnx_model)
    with pytest.raises(ArtifactError, match="not loaded"):
        b.infer(random_crops(1, STANDIN_SIZE))


def test_torch_backend_from_run_and_safetensors(tmp_path: Path) -> None:
    pytest.importorskip("acfd.train.model")
    run = tiny_run(tmp_path / "run", image_size=64, preset="single-metric-att")
    crops = random_crops(3, 64)
    with load(run, device="cpu") as a, load(run / "model.safetensors") as b:
        assert a.name == b.name == "torch" and a.device == "cpu" and a.meta.precision == "fp32"
        assert a.meta.input_size == 64 and a.meta.attention_size == 4
        assert len(a.model_id) == 16 and a.model_id != b.model_id  # run: config + weights; file: weights
        pa, pb = a.infer(crops), b.infer(crops)
    np.testing.assert_array_equal(pa.score, pb.score)
    assert pa.attention.shape == (3, 4, 4) and np.all((pa.attention >= 0) & (pa.attention <= 1))
    if not torch.cuda.is_available():
        with pytest.raises(ArtifactError, match="no CUDA GPU"):
            load(run, device="cuda")
