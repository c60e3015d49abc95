"""scripts/package_model.py: one run or several (an ensemble) become a shipped model folder with measured numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _builders import write_dataset

from sen.checkpoint import load_model
from sen.model import Ensemble
from sen.predict import Predictor
from sen.training.config import TrainConfig
from sen.training.data import load_dataset
from sen.training.loop import train
from sen.training.metrics import predict_packed

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "package_model.py"
FE, GAP = "formation_energy_per_atom", "band_gap"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Four tiny runs on 40 built crystals: three on the split of seed 0 (one refit on train + validation),
    one on the split of seed 1."""
    root = tmp_path_factory.mktemp("package")
    data, _ = write_dataset(root / "crystals.jsonl.gz", 40)
    (root / "tiny.toml").write_text(
        f'data = "{data}"\ncache_dir = "{root / "cache"}"\nwidth = 16\nn_capsules = 4\ncapsule_dim = 8\n'
        'epochs = 2\nbatch_size = 8\nlr = 0.003\nthreads = 1\nprogress = false\ndevice = "cpu"\n'
    )
    runs = {"a": {}, "b": {"dropout": 0.1}, "other_split": {"seed": 1}, "refit": {"train_on_val": True, "seed": 0}}
    for name, overrides in runs.items():
        torch.set_num_threads(1)
        train(TrainConfig.from_file(root / "tiny.toml", out=str(root / "runs" / name), **overrides))
    return root


def package(root: Path, name: str, *runs: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    args = [sys.executable, str(SCRIPT), name, *(f"runs/{r}" for r in runs), "--config", "tiny.toml", "--models-dir", "models", *options]
    return subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=300)


def test_an_ensemble_of_runs_is_packaged_and_measured(runs):
    done = package(runs, "duo", "a", "b")
    assert done.returncode == 0, done.stderr
    folder = runs / "models" / "duo"
    model = load_model(folder / "model.pt")
    assert isinstance(model, Ensemble) and len(model.members) == 2
    for member, run in zip(model.members, ("a", "b"), strict=True):
        trained = load_model(runs / "runs" / run / "best.pt")
        for key, value in trained.state_dict().items():
            assert torch.equal(member.state_dict()[key], value), key
    card = json.loads((folder / "metrics.json").read_text())
    assert card["n_members"] == 2 and card["arch"] == "ensemble" and len(card["members"]) == 2
    for target in (FE, GAP):
        entry = card["targets"][target]
        assert entry["test_mae"] > 0 and entry["test_n"] == 4 and entry["val_mae"] > 0
        assert len(entry["spread"]["mae_by_spread_quartile"]) == 4
    assert [m["dropout"] for m in card["members"]] == [0.0, 0.1]
    assert (folder / "log_member1.csv").is_file() and (folder / "log_member2.csv").is_file()
    assert json.loads((folder / "split.json").read_text()) == json.loads(
        (runs / "runs" / "a" / "split.json").read_text()
    )
    assert Predictor.load(folder, device="cpu").n_members == 2

    # the test MAE recorded is the packaged ensemble's, measured on the run's test split
    summary_a = json.loads((runs / "runs" / "a" / "summary.json").read_text())
    assert card["members"][0]["test_mae"][FE] == pytest.approx(summary_a["test"][FE]["mae"], rel=1e-5)
    cfg = TrainConfig.from_file(runs / "tiny.toml")
    packed, _ = load_dataset(cfg.data, cfg.targets, graph_config=cfg.graph, cache_dir=cfg.cache_dir)
    test = np.array([list(packed.ids).index(c) for c in json.loads((folder / "split.json").read_text())["test"]])
    pred = predict_packed(model, packed, test, "cpu")
    for j, target in enumerate((FE, GAP)):
        want = float(np.abs(pred[:, j] - packed.targets[test, j]).mean())
        assert card["targets"][target]["test_mae"] == pytest.approx(want, rel=1e-5)


def test_one_run_ships_its_best_checkpoint(runs):
    done = package(runs, "solo", "a")
    assert done.returncode == 0, done.stderr
    folder = runs / "models" / "solo"
    assert (folder / "model.pt").read_bytes() == (runs / "runs" / "a" / "best.pt").read_bytes()
    card = json.loads((folder / "metrics.json").read_text())
    summary = json.loads((runs / "runs" / "a" / "summary.json").read_text())
    assert card["n_members"] == 1 and card["best_epoch"] == summary["best_epoch"]
    assert card["targets"][FE]["test_mae"] == pytest.approx(summary["test"][FE]["mae"], rel=1e-5)
    assert "spread" not in card["targets"][FE]
    assert card["hardware"].endswith("CPU, 1 thread(s) per run, torch " + torch.__version__)

    # networks trained elsewhere (a GPU, say) say so in the card
    done = package(runs, "solo_gpu", "a", options=("--hardware", "1 NVIDIA H200 (2 runs at a time)"))
    assert done.returncode == 0, done.stderr
    assert json.loads((runs / "models" / "solo_gpu" / "metrics.json").read_text())["hardware"] == (
        "1 NVIDIA H200 (2 runs at a time)"
    )


def test_runs_on_different_splits_are_refused(runs):
    done = package(runs, "mixed", "a", "other_split")
    assert done.returncode != 0
    assert done.stderr.strip() == "error: the runs were trained on different splits; an ensemble needs one split"
    assert not (runs / "models" / "mixed").exists()


def test_an_ensemble_can_take_each_target_from_chosen_runs(runs):
    done = package(runs, "chosen", "a", "b", options=("--target-runs", f"{FE}=runs/b"))
    assert done.returncode == 0, done.stderr
    folder = runs / "models" / "chosen"
    model = load_model(folder / "model.pt")
    assert model.target_members == {FE: [1], GAP: [0, 1]}
    card = json.loads((folder / "metrics.json").read_text())
    assert card["target_members"] == {FE: ["runs/b"], GAP: ["runs/a", "runs/b"]}
    # formation energy is run b's alone: the ensemble's number is that member's, with no spread
    assert card["targets"][FE]["test_mae"] == pytest.approx(card["members"][1]["test_mae"][FE], rel=1e-6)
    assert "spread" not in card["targets"][FE] and len(card["targets"][GAP]["spread"]["mae_by_spread_quartile"]) == 4

    for bad, message in (
        ([f"{FE}=runs/zzz"], "every run must be one of the runs being packaged"),
        ([f"{FE}=runs/a", f"{GAP}=runs/a"], "serve no target"),
    ):
        options = tuple(a for spec in bad for a in ("--target-runs", spec))
        done = package(runs, "bad_choice", "a", "b", options=options)
        assert done.returncode != 0 and done.stderr.strip().startswith("error: --target-runs")
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not (runs / "models" / "bad_choice").exists()


def test_networks_refit_on_validation_report_no_validation_number(runs):
    split = json.loads((runs / "runs" / "a" / "split.json").read_text())
    done = package(runs, "plain", "a", "b")
    assert done.returncode == 0, done.stderr
    plain = json.loads((runs / "models" / "plain" / "metrics.json").read_text())
    assert plain["trained_on"] == "train" and plain["n_train"] == len(split["train"])

    done = package(runs, "refit", "a", "refit")
    assert done.returncode == 0, done.stderr
    card = json.loads((runs / "models" / "refit" / "metrics.json").read_text())
    # validation is in-sample for the refit network, so neither it nor the ensemble gets a validation MAE
    assert [m["trained_on"] for m in card["members"]] == ["train", "train+val"]
    assert card["members"][0]["val_mae"][FE] > 0 and card["members"][1]["val_mae"] is None
    assert all(card["targets"][t]["val_mae"] is None and card["targets"][t]["test_mae"] > 0 for t in (FE, GAP))
    assert card["trained_on"] == "mixed" and card["n_train"] == len(split["train"]) + len(split["val"])

    done = package(runs, "refit_solo", "refit")
    assert done.returncode == 0, done.stderr
    card = json.loads((runs / "models" / "refit_solo" / "metrics.json").read_text())
    summary = json.loads((runs / "runs" / "refit" / "summary.json").read_text())
    assert card["trained_on"] == "train+val" and card["targets"][FE]["val_mae"] is None
    assert card["targets"][FE]["test_mae"] == pytest.approx(summary["test"][FE]["mae"], rel=1e-5)
