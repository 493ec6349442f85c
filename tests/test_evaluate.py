"""Metrics against hand-computed values; `acfd-train fit` -> `evaluate --json` end to end on a real cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from acfd.train import metrics
from acfd.train.cli import main
from acfd.train.config import resolve_config
from acfd.train.evaluate import evaluate, predict, table
from acfd.train.fit import batch_inputs
from acfd.train.losses import mask_to_map
from acfd.train.model import build_model, save_run
from click.testing import CliRunner
from torch.utils.data import DataLoader

from tests.model_helpers import TinyPairs, crop_cache

FIVE = ("acc", "auc", "tar_0.1", "tar_0.01", "pbca")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


# -- metrics by hand -------------------------------------------------------------------------------
def test_auc_by_hand() -> None:
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    assert metrics.auc([0, 0, 1], [3.0, 1.0, 2.0]) == pytest.approx(0.5)
    assert np.isnan(metrics.auc([1, 1], [0.1, 0.2]))


def test_roc_and_tar_at_far_by_hand() -> None:
    reals = list(range(10))  # 0..9: FAR resolution 10%
    fakes = [5.5, 8.5, 9.5, 10.0]
    y = [0] * 10 + [1] * 4
    s = reals + fakes
    fpr, tpr, thr = metrics.roc_curve(y, s)
    assert fpr[0] == 0 and tpr[0] == 0 and thr[0] == np.inf and fpr[-1] == 1 and tpr[-1] == 1
    # FAR 10%: threshold 8.5 admits one real (9) and three fakes (8.5, 9.5, 10)
    assert metrics.tar_at_far(y, s, 0.1) == (pytest.approx(0.75), pytest.approx(8.5))
    # FAR 1% < 1/10: only FAR 0 qualifies -> above every real: 9.5 and 10
    assert metrics.tar_at_far(y, s, 0.01) == (pytest.approx(0.5), pytest.approx(9.5))
    # all fakes tied with the top real: no threshold separates them at FAR 0
    assert metrics.tar_at_far([0, 1, 1], [1.0, 1.0, 1.0], 0.01)[0] == 0.0


def test_accuracy_pbca_and_video_scores_by_hand() -> None:
    assert metrics.accuracy([0, 1], [9.05, 9.06], 9.05) == 1.0  # fake iff strictly above
    assert metrics.accuracy([0, 1, 1, 0], [1, 20, 5, 12], 9.05) == 0.5
    assert metrics.pbca(np.array([[0.6, 0.4], [0.5, 0.9]]), np.array([[1, 1], [0, 1]])) == 0.75
    names, vy, vs = metrics.video_scores(["b", "a", "a"], np.array([0, 1, 1]), np.array([2.0, 1.0, 3.0]))
    assert names == ["a", "b"] and vy.tolist() == [1, 0] and vs.tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="both labels"):
        metrics.video_scores(["a", "a"], np.array([0, 1]), np.array([1.0, 2.0]))
    out = metrics.summarize(np.array([0, 1]), np.array([1.0, 20.0]), 9.05, (3, 4))
    assert [out[k] for k in FIVE] == [1.0, 1.0, 1.0, 1.0, 0.75]
    assert out["far_resolution"] == 1.0
    # a one-class split has no AUC: NaN in memory, null in JSON
    one = metrics.summarize(np.array([1, 1]), np.array([1.0, 2.0]), 9.05)
    assert np.isnan(one["auc"]) and metrics.jsonable(one)["auc"] is None


def test_summarize_with_enough_reals_to_resolve_both_fars() -> None:
    """20000 reals (scores 0..19999) resolve FAR 0.1% (20 false accepts) and 0.01% (2); by hand."""
    reals = np.arange(20000, dtype=np.float64)
    fakes = np.array([30000, 19999.5, 19990, 19980, 19979, 100], dtype=np.float64)
    y = np.r_[np.zeros(reals.size, np.int64), np.ones(fakes.size, np.int64)]
    s = np.r_[reals, fakes]
    out = metrics.summarize(y, s, 19989.5)
    assert (out["n"], out["n_real"], out["n_fake"]) == (20006, 20000, 6)
    # ACC: reals 19990..19999 and fakes 19979, 19980, 100 are wrong
    assert out["acc"] == pytest.approx((19990 + 3) / 20006)
    # AUC: per fake, reals below + half the tied ones: 20000, 20000, 19990.5, 19980.5, 19979.5, 100.5
    assert out["auc"] == pytest.approx(100051 / (6 * 20000))
    # FAR 0.1%: at t = 19980 (fake iff >= t) reals 19980..19999 pass (20 = 0.1%), so do 4 fakes
    assert (out["tar_0.1"], out["tar_0.1_threshold"]) == (pytest.approx(4 / 6), 19980.0)
    # FAR 0.01%: 2 reals may pass; 2 fakes do, first at t = 19999.5 (0 reals), still at 19998 (2)
    assert (out["tar_0.01"], out["tar_0.01_threshold"]) == (pytest.approx(2 / 6), 19999.5)
    assert out["far_resolution"] == pytest.approx(5e-5) and out["pbca"] is None
    # the scanner's form (fake iff score > t) gives the same TAR at 0.1%, with t one real lower
    assert metrics.threshold_at_far(y, s, 1e-3) == (19979.0, pytest.approx(4 / 6), pytest.approx(1e-3))
    # and the same numbers from the definitions, by brute force over every candidate threshold
    for far, key in ((1e-3, "tar_0.1"), (1e-4, "tar_0.01")):
        assert _brute_tar(y, s, far) == (pytest.approx(out[key]), out[f"{key}_threshold"])


def test_metrics_agree_with_their_definitions_on_tied_random_scores() -> None:
    """Integer scores (many ties) and 3000 reals: AUC as P(fake > real) + ties / 2, TAR by brute force."""
    rng = np.random.default_rng(11)
    y = np.r_[np.zeros(3000, np.int64), np.ones(400, np.int64)]
    s = np.r_[rng.integers(0, 60, 3000), rng.integers(30, 90, 400)].astype(np.float64)
    assert metrics.auc(y, s) == pytest.approx(_pairwise_auc(y, s), abs=1e-12)
    for far in (1e-3, 1e-2, 0.1):
        tar, thr = metrics.tar_at_far(y, s, far)
        assert (tar, thr) == (pytest.approx(_brute_tar(y, s, far)[0]), _brute_tar(y, s, far)[1]), far
        assert np.mean(s[y == 0] >= thr) <= far  # the reported point keeps its promise
    assert metrics.accuracy(y, s, 45.0) == pytest.approx(float(np.mean((s > 45.0) == (y == 1))))


def _brute_tar(y: np.ndarray, s: np.ndarray, far: float) -> tuple[float, float]:
    """(TAR, threshold): the best TPR over thresholds t (fake iff s >= t, t from +inf down through the
    distinct scores) whose FPR <= far; the highest such t on a tie."""
    reals, fakes = s[y == 0], s[y == 1]
    best = (0.0, float("inf"))
    for t in sorted(set(s.tolist()), reverse=True):
        if np.mean(reals >= t) <= far and np.mean(fakes >= t) > best[0]:
            best = (float(np.mean(fakes >= t)), t)
    return best


# -- evaluate ---------------------------------------------------------------------------------------
def test_evaluate_matches_a_direct_computation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = resolve_config("paper", image_size=32)
    model = build_model(cfg).eval()
    ds = TinyPairs(8, 32, seed=4, videos=4)
    # Scale the last batch norm so the scores straddle the 9.05 threshold (random weights give ~1e-3,
    # every crop "real", ACC 0.5 whatever the comparison): put it halfway between two sorted scores,
    # at the first cut whose ACC is not 0.5, so a reversed or missing comparison would show.
    b0 = batch_inputs(next(iter(DataLoader(ds, batch_size=8))), cfg, torch.device("cpu"))
    with torch.no_grad():
        norms, order = model.lq_branch()(b0.x)[0].norm(dim=1).sort()
    lab = b0.label[order].numpy()
    cut = next(i for i in range(1, 8) if np.mean(np.r_[lab[:i] == 0, lab[i:] == 1]) != 0.5)
    k = 9.05 / float(norms[cut - 1 : cut + 1].mean())
    with torch.no_grad():
        model.tail.bn4.weight.mul_(k)
        model.tail.bn4.bias.mul_(k)
    save_run(tmp_path, model, cfg)
    res = evaluate(tmp_path, [], dataset=ds, progress=False, batch_size=5)
    # recompute: ||C_l|| of the exported branch, PBCA vs the area-averaged mask
    from acfd.train.model import load_run

    model, _ = load_run(tmp_path)
    loader = DataLoader(ds, batch_size=8)
    batch = next(iter(loader))
    b = batch_inputs(batch, cfg, torch.device("cpu"))
    with torch.no_grad():
        c, m = model.lq_branch()(b.x)
    s = c.norm(dim=1).numpy()
    y = b.label.numpy()
    target = mask_to_map(b.mask, m.shape[-1]).numpy()
    assert 0 < int((s > 9.05).sum()) < s.size and float(np.mean((s > 9.05) == y)) != 0.5
    assert res.frame["acc"] == pytest.approx(float(np.mean((s > 9.05) == y)))
    assert res.frame["auc"] == pytest.approx(_pairwise_auc(y, s))
    # 4 reals: FAR 0.1% and 0.01% both mean FAR 0, i.e. fakes strictly above every real
    tar0 = float(np.mean(s[y == 1] > s[y == 0].max()))
    assert (res.frame["tar_0.1"], res.frame["tar_0.01"]) == (pytest.approx(tar0), pytest.approx(tar0))
    assert res.frame["far_resolution"] == pytest.approx(1 / 4)
    assert res.frame["pbca"] == pytest.approx(float(np.mean((m.numpy() > 0.5) == (target > 0.5))))
    assert res.video["n"] == 4 and res.frame["n"] == 8 and res.threshold == pytest.approx(9.05)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["frame"]["auc"] == pytest.approx(res.frame["auc"])
    # the table prints those numbers as percentages, one row per level, counts last
    text = table(res)
    frame_row = next(ln for ln in text.splitlines() if " frame " in ln)
    pct = [f"{100 * res.frame[k]:.2f}" for k in FIVE]
    assert frame_row.split()[-6:] == [*pct, "4r/4f"], text
    assert text.splitlines()[0].split()[-6:] == ["ACC", "AUC", "TAR0.1%", "TAR0.01%", "PBCA", "n"]
    assert "preset paper, split test, threshold 9.05 (distance score)" in text
    assert "4 real frames resolve FAR only down to 25%" in text
    # predict() leaves out fakes whose mask is not ground truth from PBCA
    ds.items[1]["mask_valid"] = False
    pred = predict(model.lq_branch(), DataLoader(ds, batch_size=8), cfg, torch.device("cpu"))
    h = m.shape[-1]
    assert pred["pixels"][1] == 7 * h * h


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return crop_cache(tmp_path_factory)  # `acfd-train synth` data through `prepare`


def test_cli_fit_then_evaluate_json_end_to_end(cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    runner = CliRunner()
    r = runner.invoke(main, ["fit", "--data", str(cache), "--out", str(run), "--image-size", "32",
                             "--batch-size", "4", "--max-steps", "2", "--quiet", "--seed", "1", "--precise-bn", "1",
                             "--pretrained", "none"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "paper: 2 steps" in r.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preset"] == "paper" and cfg["data"]["image_size"] == 32 and cfg["optim"]["max_steps"] == 2
    assert cfg["optim"]["precise_bn"] == 1
    r = runner.invoke(main, ["evaluate", "--run", str(run), "--data", str(cache), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["split"] == "test" and out["preset"] == "paper" and out["threshold"] == pytest.approx(9.05)
    # The metrics, recomputed here from the run's weights and the cache with plain numpy.
    y, s, vids, pbca = _direct_scores(run, cache)
    vnames = sorted(set(vids))
    vy = np.array([y[[v == n for v in vids]][0] for n in vnames])
    vs = np.array([s[[v == n for v in vids]].mean() for n in vnames])
    for level, (ly, ls) in {"frame": (y, s), "video": (vy, vs)}.items():
        got = out[level]
        assert (got["n"], got["n_real"], got["n_fake"]) == (ly.size, int((ly == 0).sum()), int(ly.sum()))
        assert got["acc"] == pytest.approx(float(np.mean((ls > 9.05) == (ly == 1)))), level
        assert got["auc"] == pytest.approx(_pairwise_auc(ly, ls)), level
        # fewer than 1000 reals: only FAR 0 meets 0.1% and 0.01%, i.e. fakes above every real
        assert got["n_real"] < 1000
        tar0 = float(np.mean(ls[ly == 1] > ls[ly == 0].max()))
        assert (got["tar_0.1"], got["tar_0.01"]) == (pytest.approx(tar0), pytest.approx(tar0)), level
        assert got["pbca"] == pytest.approx(pbca), level
    assert out["frame"]["n_real"] > 0 and out["frame"]["n_fake"] > 0
    assert len(np.unique(s)) == s.size  # distinct scores: the AUC above is not a tie artefact
    assert out["video"]["n"] < out["frame"]["n"]
    assert json.loads((run / "metrics.json").read_text())["frame"] == out["frame"]
    # the table form, and resume that changes the method: one line, no traceback
    r = runner.invoke(main, ["evaluate", "--run", str(run), "--data", str(cache)])
    assert r.exit_code == 0 and "ACC" in r.output and "frame" in r.output
    r = runner.invoke(main, ["fit", "--data", str(cache), "--out", str(run), "--resume", "--lr", "1"])
    assert r.exit_code == 1 and "cannot change lr" in r.output and "Traceback" not in r.output


def _pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    """AUC as P(fake score > real score) over all (fake, real) pairs, ties counting half."""
    f, r = s[y == 1][:, None], s[y == 0][None, :]
    return float(np.mean((f > r) + 0.5 * (f == r)))


def _direct_scores(run: Path, cache: Path) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """(labels, ||C_l||, video names, PBCA) of the run's LQ branch on the cache's test split."""
    from acfd.train.fit import open_datasets
    from acfd.train.model import load_run

    model, cfg = load_run(run)
    branch = model.lq_branch().eval()
    ds = open_datasets([cache], "test", cfg.data.image_size, balance=False)
    ys, ss, vids, hits = [], [], [], []
    with torch.no_grad():
        for batch in DataLoader(ds, batch_size=16, shuffle=False):
            b = batch_inputs(batch, cfg, torch.device("cpu"))
            c, m = branch(b.x)
            ys.append(b.label.numpy())
            ss.append(np.linalg.norm(c.double().numpy(), axis=1))
            vids.extend(batch["video"])
            target = mask_to_map(b.mask, tuple(m.shape[-2:]), binary=True)
            hit = ((m > 0.5) == (target > 0.5)).flatten(1)
            hits.append(hit[b.mask_valid] if b.mask_valid is not None else hit)
    h = torch.cat(hits)
    return np.concatenate(ys), np.concatenate(ss), vids, float(h.float().mean())


def test_cli_errors_are_one_line(tmp_path: Path, cache: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["evaluate", "--run", str(tmp_path), "--data", str(cache)])
    assert r.exit_code == 1 and "config.json" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["fit", "--data", str(cache), "--out", str(tmp_path / "r"), "--preset", "nope"])
    assert r.exit_code == 1 and "unknown preset" in r.output
    r = runner.invoke(main, ["evaluate", "--run", str(tmp_path), "--data", str(cache), "--device", "bogus"])
    assert r.exit_code == 1 and "unknown device 'bogus'" in r.output


def test_two_caches_for_both_pair_levels(cache: Path, tmp_path: Path) -> None:
    import shutil

    from acfd.train.fit import check_levels, open_datasets

    c0 = tmp_path / "cache-c0"
    shutil.copytree(cache, c0)
    meta = json.loads((c0 / "cache.json").read_text())
    meta["hq"] = "c0"
    (c0 / "cache.json").write_text(json.dumps(meta))
    one = open_datasets([cache], "train", 32, balance=True)
    both = open_datasets([c0, cache], "train", 32, balance=True)
    assert one is not None and both is not None and len(both) == 2 * len(one)
    assert both[0]["hq"].shape == (3, 32, 32)
    assert check_levels(resolve_config("paper-both"), [c0, cache]) == []
    assert check_levels(resolve_config("paper"), [cache]) == []
    assert "HQ c0+c23" in check_levels(resolve_config("paper-both"), [cache])[0]
