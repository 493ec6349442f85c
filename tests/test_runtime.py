"""Runtime: the kind registry and its plugin hook, the one infer() call, batch splitting, and clear
errors for bad input/files."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from acfd.engine import registry
from acfd.engine.backends import Backend, InputError, OrtBackend, Prediction, TorchBackend, TorchRunFactory
from acfd.engine.export import export_onnx, torch_reference
from acfd.engine.runtime import kind_of, load
from acfd.engine.tensorrt import TensorRTBackend
from acfd.schemas.artifact import ArtifactError, ArtifactMeta
from acfd.train.engine_loader import load_branch

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


def test_kinds_by_path(tmp_path: Path) -> None:
    assert registry.kinds()[:3] == ("onnx", "tensorrt", "torch-run")
    assert kind_of(tmp_path / "a.plan") == kind_of(tmp_path / "a.ENGINE") == "tensorrt"
    assert kind_of(tmp_path / "a.onnx") == "onnx"
    assert kind_of(tmp_path / "model.safetensors") == kind_of(tmp_path) == "torch-run"
    assert registry.factory("onnx") is OrtBackend and registry.factory("tensorrt") is TensorRTBackend
    torch_run = registry.factory("torch-run")  # registered by acfd.train (imported above)
    assert isinstance(torch_run, TorchRunFactory) and torch_run.load_run is load_branch
    assert isinstance(torch_run(tmp_path, device="cpu"), TorchBackend)


@pytest.fixture
def kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A private copy of the registry's kinds: what a test registers is gone afterwards."""
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))


class MeanBackend(Backend):
    """A custom kind's backend: the score of a crop is its mean pixel value; the file holds the size."""

    name = "mean"

    def load(self) -> MeanBackend:
        data = self.path.read_bytes()
        self._set_meta(ArtifactMeta(input_size=int(data), attention_size=0), "m" * 16)
        self._loaded = True
        return self

    def _run(self, crops: np.ndarray) -> Prediction:
        return Prediction(score=crops.reshape(len(crops), -1).mean(axis=1).astype(np.float32), attention=None)


def test_unknown_kind_lists_the_registered_kinds(tmp_path: Path, kinds: None) -> None:
    other = tmp_path / "model.pt"
    other.write_bytes(b"PK")
    with pytest.raises(ArtifactError) as e:
        load(other)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{other}: unknown model kind '.pt'; registered kinds: ")
    assert msg.endswith(
        "onnx (an .onnx file for ONNX Runtime), tensorrt (a .plan/.engine file for TensorRT), "
        "torch-run (a training run directory or its .safetensors, for PyTorch)"
    )
    registry.register("mean", lambda p: p.suffix == ".mean", MeanBackend, describes="a .mean file")
    with pytest.raises(ArtifactError, match=r"torch-run \(.*\), mean \(a \.mean file\)$"):
        load(other)
    with pytest.raises(ArtifactError, match=r"unknown model kind 'tflite'; registered kinds: onnx "):
        registry.factory("tflite")


def test_a_registered_kind_is_used(tmp_path: Path, kinds: None) -> None:
    registry.register("mean", lambda p: p.suffix == ".mean", MeanBackend)
    model = tmp_path / "m.mean"
    model.write_text("32")
    assert kind_of(model) == "mean"
    crops = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (0, 10, 200, 255, 7)])
    with load(model, max_batch=2) as b:
        assert isinstance(b, MeanBackend) and b.model_id == "m" * 16 and b.meta.input_size == 32
        calls: list[int] = []
        run = b._run
        b._run = lambda c: (calls.append(len(c)), run(c))[1]  # type: ignore[method-assign]
        p = b.infer(crops)
        with pytest.raises(InputError, match=r"\[N,32,32,3\]"):  # Backend's checks apply to every kind
            b.infer(np.zeros((1, 5, 5, 3), np.uint8))
    assert calls == [2, 2, 1]
    np.testing.assert_array_equal(p.score, np.array([0, 10, 200, 255, 7], np.float32))
    # replacing a kind keeps its place in the match order: .onnx files now go to the new factory
    registry.register("onnx", registry.matches_onnx, MeanBackend)
    assert registry.kinds()[0] == "onnx"
    (tmp_path / "fake.onnx").write_text("40")
    with load(tmp_path / "fake.onnx") as b:
        assert type(b) is MeanBackend and b.meta.input_size == 40
    registry.unregister("mean")
    with pytest.raises(ArtifactError, match="unknown model kind '.mean'"):
        load(model)


def test_a_factory_must_build_a_backend(tmp_path: Path, kinds: None) -> None:
    registry.register("odd", lambda p: p.suffix == ".odd", lambda path, **kw: object())
    (tmp_path / "m.odd").write_text("x")
    with pytest.raises(ArtifactError, match="'odd' model kind built object, not an acfd Backend"):
        load(tmp_path / "m.odd")
    registry.declare("ghost", lambda p: p.suffix == ".ghost", "a ghost", provider="json")
    (tmp_path / "m.ghost").write_text("x")
    with pytest.raises(ArtifactError, match="json was imported but did not register the 'ghost' kind"):
        load(tmp_path / "m.ghost")


def test_torch_run_without_the_training_stack_is_one_line(
    tmp_path: Path, kinds: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a scanning machine without acfd.train: the kind is only declared, its provider is missing.
    registry._KINDS["torch-run"] = replace(registry._KINDS["torch-run"], factory=None)
    monkeypatch.setitem(sys.modules, "acfd.train.engine_loader", None)  # `import` of it raises ImportError
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ArtifactError) as e:
        load(run)
    msg = str(e.value)
    assert msg.startswith(
        f"{run} is a training run directory or its .safetensors, for PyTorch: loading it needs the training "
        "stack (acfd.train), which cannot be imported here ("
    )
    assert msg.endswith("or export the run with `acfd-train export` and load the .onnx") and "\n" not in msg
    # the torch backend built directly (no loader given) and the exporter ask the same hook
    (run / "config.json").write_text("{}")
    (run / "model.safetensors").write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"^model kind 'torch-run' \(a training run .*needs the training stack"):
        TorchBackend(run, device="cpu").load()


def test_torch_run_whose_model_code_cannot_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "model.safetensors").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "acfd.train.model", None)  # e.g. timm missing: the loader's import fails
    with pytest.raises(ArtifactError, match=r"^running a training checkpoint needs the training stack \(acfd.train\)"):
        load(run)


def test_infer_before_load_is_an_error(onnx_model: Path) -> None:
    b = OrtBackend(onnx_model)
    with pytest.raises(ArtifactError, match="not loaded"):
        b.infer(random_crops(1, STANDIN_SIZE))


def test_torch_backend_from_run_and_safetensors(tmp_path: Path) -> None:
    run = tiny_run(tmp_path / "run", image_size=64, preset="single-metric-att")
    crops = random_crops(3, 64)
    with load(run, device="cpu") as a, load(run / "model.safetensors") as b:
        assert a.name == b.name == "torch" and a.device == "cpu" and a.meta.precision == "fp32"
        assert a.meta.input_size == 64 and a.meta.attention_size == 4
        assert len(a.model_id) == 16 and a.model_id != b.model_id  # run: config + weights; file: weights
        pa, pb = a.infer(crops), b.infer(crops)
    np.testing.assert_array_equal(pa.score, pb.score)
    assert pa.attention.shape == (3, 4, 4) and np.all((pa.attention >= 0) & (pa.attention <= 1))
    with TorchBackend(run, device="cpu").load() as c:  # no loader given: the registered one
        np.testing.assert_array_equal(c.infer(crops).score, pa.score)
    if not torch.cuda.is_available():
        with pytest.raises(ArtifactError, match="no CUDA GPU"):
            load(run, device="cuda")


def test_artifact_kind_follows_the_registry(tmp_path: Path, kinds: None) -> None:
    """Which artifact `validate` may rewrite is decided by the registry's matchers, not a second if-chain."""
    from acfd.engine.artifact import artifact_kind

    onnx_file, plan_file = tmp_path / "m.onnx", tmp_path / "m.ENGINE"
    onnx_file.write_bytes(b"x")
    plan_file.write_bytes(b"x")
    assert (artifact_kind(onnx_file), artifact_kind(plan_file)) == ("onnx", "plan")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="is not a training run"):
        artifact_kind(run)
    (run / "model.safetensors").write_bytes(b"")
    assert artifact_kind(run) == "run"
    with pytest.raises(ArtifactError, match="bare .safetensors"):
        artifact_kind(run / "model.safetensors")
    with pytest.raises(ArtifactError, match=r"model .*gone\.onnx does not exist"):
        artifact_kind(tmp_path / "gone.onnx")
    registry.register("mean", lambda p: p.suffix == ".mean", MeanBackend, describes="a .mean file")
    mean = tmp_path / "m.mean"
    mean.write_text("32")
    with pytest.raises(ArtifactError) as e:
        artifact_kind(mean)
    assert str(e.value) == f"{mean} is a .mean file: acfd cannot write a new model card into it"
