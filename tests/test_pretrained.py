"""`--pretrained imagenet|none|FILE`: timm's ImageNet weights (cached, offline), files, and the card's record.

No test reaches the network: every test that could download points the HTTP(S) proxy at a closed port
on 127.0.0.1, so an attempted download fails at once whether or not the machine has internet.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import urlparse

import pytest
import timm
import torch
from acfd.schemas.card import ModelCard
from acfd.train.cli import main
from acfd.train.config import resolve_config
from acfd.train.fit import FitOptions, fit
from acfd.train.model import (
    ModelError,
    TwoBranchXception,
    backbone_init,
    build_model,
    imagenet_backbone,
    imagenet_source,
    mid_channels,
    read_card,
)
from click.testing import CliRunner
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg

from tests.model_helpers import TinyPairs, crop_cache

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MARK = 0.125  # every weight of conv1 in the fixture: no random init produces it


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads go to a closed port (connection refused at once), never to the internet."""
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(k, "http://127.0.0.1:9")
    for k in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], Path, Path]:
    """A legacy_xception state dict shaped like timm's ImageNet file (1000-class head) with recognisable
    values, as safetensors and as a torch .pth (what torch hub caches)."""
    torch.manual_seed(3)
    sd = {k: v.clone() for k, v in timm.create_model("legacy_xception", pretrained=False).state_dict().items()}
    sd["conv1.weight"].fill_(MARK)
    sd["block7.rep.8.running_var"].uniform_(2.0, 3.0)  # BN statistics come along too
    sd["fc.bias"].fill_(7.0)
    d = tmp_path_factory.mktemp("weights")
    st = d / "xception.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    pth = d / "xception.pth"
    torch.save(sd, pth)
    return sd, st, pth


def hub_path(torch_home: Path) -> Path:
    """Where torch hub keeps timm's download: $TORCH_HOME/hub/checkpoints/<file name of timm's URL>."""
    url = get_pretrained_cfg("legacy_xception").url
    return torch_home / "hub" / "checkpoints" / os.path.basename(urlparse(url).path)


def assert_landed(model: TwoBranchXception, sd: dict[str, torch.Tensor]) -> None:
    for head in (model.lq_head, model.hq_head):
        assert torch.equal(head.conv1.weight, sd["conv1.weight"])
        assert torch.equal(head.block7.rep[8].running_var, sd["block7.rep.8.running_var"])
    assert torch.equal(model.tail.conv4.pointwise.weight, sd["conv4.pointwise.weight"])
    assert torch.equal(model.tail.block12.rep[4].pointwise.weight, sd["block12.rep.4.pointwise.weight"])


def test_offline_without_a_cached_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    url = get_pretrained_cfg("legacy_xception").url
    assert imagenet_source() == (url, hub_path(home))
    cfg = resolve_config("paper", image_size=32)
    with pytest.raises(ModelError) as e:
        build_model(cfg, "imagenet")
    msg = str(e.value)
    assert "\n" not in msg
    assert url in msg and str(hub_path(home)) in msg  # where to get the file and where to put it
    assert "--pretrained FILE" in msg and "--pretrained none" in msg
    assert not hub_path(home).exists()  # no half-downloaded file under the final name


def test_offline_cli_exits_non_zero_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache = crop_cache(tmp_path_factory)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    run = tmp_path / "run"
    args = ["fit", "--data", str(cache), "--out", str(run), "--image-size", "32", "--batch-size", "4",
            "--max-steps", "1", "--quiet"]  # fmt: skip
    r = CliRunner().invoke(main, args)  # the default is imagenet
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "cannot download the ImageNet weights" in errors[0]
    assert "--pretrained none" in errors[0]
    assert not run.exists()  # refused before the run folder (and a card claiming imagenet) was written


def test_cli_pretrained_file_and_its_deprecated_alias(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = crop_cache(tmp_path_factory)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    base = ["fit", "--data", str(cache), "--image-size", "32", "--max-steps", "1", "--quiet"]
    runner = CliRunner()
    # the old --backbone-weights FILE reaches the same file loader as --pretrained FILE
    for opt in ("--pretrained", "--backbone-weights"):
        r = runner.invoke(main, [*base, "--out", str(tmp_path / opt), opt, str(garbage)])
        assert r.exit_code == 1 and f"cannot read backbone weights {garbage}" in r.output, r.output
        assert "Traceback" not in r.output
    r = runner.invoke(main, [*base, "--out", str(tmp_path / "x"), "--pretrained", str(tmp_path / "missing.pth")])
    assert r.exit_code == 1 and "does not exist" in r.output
    r = runner.invoke(main, [*base, "--out", str(tmp_path / "y"), "--pretrained", "none",
                             "--backbone-weights", str(garbage)])  # fmt: skip
    assert r.exit_code == 2 and "only one" in r.output
    assert "--backbone-weights" not in runner.invoke(main, ["fit", "--help"]).output  # hidden


def test_timm_mechanism_loads_a_local_file(weights: tuple[dict[str, torch.Tensor], Path, Path]) -> None:
    sd, st, _ = weights
    backbone = imagenet_backbone(file=st)  # timm's pretrained_cfg_overlay=dict(file=...)
    assert torch.equal(backbone.conv1.weight, sd["conv1.weight"])
    assert backbone.num_classes == 0 and isinstance(backbone.fc, torch.nn.Identity)  # ImageNet head gone
    assert mid_channels(backbone) == 728 and backbone.num_features == 2048  # widths from timm
    assert_landed(TwoBranchXception(resolve_config("paper", image_size=32), backbone), sd)


def test_a_file_that_is_not_xception_weights_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(32, 3, 3, 3)}, str(f))
    with pytest.raises(ModelError, match="are not legacy_xception weights") as e:
        imagenet_backbone(file=f)  # strict: a file with missing layers never leaves them random
    assert "\n" not in str(e.value)


def test_cached_download_is_used_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights: tuple[dict[str, torch.Tensor], Path, Path]
) -> None:
    sd, _, pth = weights
    home = tmp_path / "torch-home"
    cached = hub_path(home)
    cached.parent.mkdir(parents=True)
    os.symlink(pth, cached)  # what a download on a machine with internet would have left there
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert_landed(build_model(resolve_config("paper", image_size=32), "imagenet"), sd)
    # a corrupt cached file: one line naming it, not a random start
    cached.unlink()
    cached.write_bytes(b"\x80\x02 truncated")
    with pytest.raises(ModelError, match=str(cached)) as e:
        build_model(resolve_config("paper", image_size=32), "imagenet")
    assert "\n" not in str(e.value)


def test_backbone_init_words(tmp_path: Path, weights: tuple[dict[str, torch.Tensor], Path, Path]) -> None:
    _, st, _ = weights
    assert backbone_init("imagenet") == "imagenet"
    assert backbone_init("none") == backbone_init(None) == "random"
    digest = hashlib.sha256(st.read_bytes()).hexdigest()
    assert backbone_init(st) == backbone_init(str(st)) == f"file:xception.safetensors sha256:{digest[:12]}"
    with pytest.raises(ModelError, match="does not exist"):
        backbone_init(tmp_path / "nope.pth")


@pytest.mark.parametrize("mode", ["none", "file", "imagenet"])
def test_the_card_records_the_initial_weights(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights: tuple[dict[str, torch.Tensor], Path, Path]
) -> None:
    sd, st, pth = weights
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    if mode == "imagenet":
        hub_path(home).parent.mkdir(parents=True)
        os.symlink(pth, hub_path(home))
    pretrained = {"none": "none", "file": str(st), "imagenet": "imagenet"}[mode]
    expected = {"none": "random", "file": backbone_init(st), "imagenet": "imagenet"}[mode]
    cfg = resolve_config("single-metric", image_size=32, batch_size=2, max_steps=1)
    run = tmp_path / "run"
    fit(cfg, FitOptions(out=run, pretrained=pretrained, progress=False), TinyPairs(4, 32, videos=2), None)
    card = ModelCard.from_dict(json.loads((run / "card.json").read_text()))
    assert card.backbone_init == expected and card.steps == 1 and card.preset == "single-metric"
    assert read_card(run / "model.safetensors") == card  # the weights carry the same card
    assert card.training is not None and card.training.kind == "unknown"  # data passed in code
    assert "passed in code" in card.notes
