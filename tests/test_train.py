"""sen.training.loop (Trainer): a short run that learns, its files, early stopping, resume after an interruption, the CLI."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path

import _builders
import numpy as np
import pytest
import torch
from _builders import write_dataset

import sen.training.loop
from sen.checkpoint import _plain, load_model, save_ensemble
from sen.cli import main
from sen.model import SEN
from sen.training.config import TrainConfig
from sen.training.data import PackedGraphs, load_dataset, split_ids
from sen.training.loop import train
from sen.training.metrics import predict_packed, regression_metrics

FE, GAP = "formation_energy_per_atom", "band_gap"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    """40 built crystals as gzip JSON Lines, featurised once into a cache shared by this module's runs."""
    root = tmp_path_factory.mktemp("train_data")
    path, _ = write_dataset(root / "crystals.jsonl.gz", 40)
    cache = root / "cache"
    load_dataset(path, (FE, GAP), graph_config=TrainConfig().graph, cache_dir=cache, progress=False)
    return path, cache


def tiny_config(dataset, out: Path, **overrides) -> TrainConfig:
    """A tiny SEN (width 16, 4 capsules of 8) trained on one thread."""
    path, cache = dataset
    values = dict(
        data=str(path), out=str(out), cache_dir=str(cache), width=16, n_capsules=4, capsule_dim=8, epochs=4,
        batch_size=8, lr=3e-3, patience=100, seed=0, device="cpu", threads=1, progress=False,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig.from_dict(values)


def read_log(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_short_run_learns_and_writes_its_files(dataset, tmp_path):
    out = tmp_path / "run"
    summary = train(tiny_config(dataset, out, epochs=8))

    log = read_log(out)
    assert list(log[0]) == [
        "epoch", "elapsed_s", "lr", "train_loss", f"train_mae_{FE}", f"train_mae_{GAP}",
        f"val_mae_{FE}", f"val_mae_{GAP}", "val_score",
    ]  # fmt: skip
    assert [int(r["epoch"]) for r in log] == list(range(1, 9))
    loss = [float(r["train_loss"]) for r in log]
    assert loss[-1] < 0.6 * loss[0], loss  # it learns
    train_mae = [float(r[f"train_mae_{FE}"]) for r in log]
    assert train_mae[-1] < train_mae[0], train_mae  # the running train MAE (physical units) falls too
    lr = [float(r["lr"]) for r in log]
    assert max(lr) <= 3e-3 and lr[-1] < 0.2 * max(lr)  # warm-up, then cosine decay
    assert all(math.isfinite(float(r[f"val_mae_{t}"])) for r in log for t in (FE, GAP))

    # the split: 80/10/10 by id, the same as split_ids, written next to the checkpoints
    split = json.loads((out / "split.json").read_text())
    ids = [f"tc-{k}" for k in range(60)]
    packed, _ = load_dataset(dataset[0], (FE, GAP), cache_dir=dataset[1], progress=False)
    assert split == {"seed": 0, **split_ids(packed.ids, seed=0)}
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(packed.ids.tolist())
    assert set(packed.ids) <= set(ids)
    assert json.loads((out / "data_report.json").read_text()) == {"total": 40, "kept": 40, "skipped": {}}

    # checkpoints: last.pt (to resume) and best.pt (the best validation epoch); no temporary files left
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt", "data_report.json", "last.pt", "log.csv", "split.json", "summary.json",
    ]  # fmt: skip
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["state"]["epoch"] == 8 and last["train_config"]["network"]["width"] == 16
    scores = [float(r["val_score"]) for r in log]
    assert summary["best_epoch"] == 1 + int(np.argmin(scores))
    best = load_model(out / "best.pt")
    assert isinstance(best, SEN) and not best.training
    assert best.extra["epoch"] == summary["best_epoch"]

    # the summary: written to disk, test metrics that the best checkpoint reproduces
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["epochs_run"] == 8 and summary["data_report"]["kept"] == 40
    test_idx = np.array([list(packed.ids).index(c) for c in split["test"]])
    pred = predict_packed(best, packed, test_idx, "cpu")
    for j, t in enumerate((FE, GAP)):
        want = regression_metrics(pred[:, j], packed.targets[test_idx, j])
        assert summary["test"][t]["n"] == len(split["test"])
        assert summary["test"][t]["mae"] == pytest.approx(want["mae"], rel=1e-5)
        assert summary["test"][t]["r2"] == pytest.approx(want["r2"], rel=1e-4, abs=1e-6)
        assert t in summary["val_mean_predictor"]


def test_early_stopping_on_validation_mae(dataset, tmp_path):
    out = tmp_path / "run"
    summary = train(tiny_config(dataset, out, epochs=20, patience=1))
    log = read_log(out)
    assert summary["epochs_run"] < 20
    assert summary["epochs_run"] == summary["best_epoch"] + 1  # stopped at the first epoch without improvement
    assert len(log) == summary["epochs_run"]
    assert float(log[-1]["val_score"]) >= float(log[summary["best_epoch"] - 1]["val_score"])


def test_split_seed_keeps_the_split_while_seed_changes_the_network(dataset, tmp_path):
    """Another network for an ensemble: new weights and data order, the same train/val/test split."""
    a = train(tiny_config(dataset, tmp_path / "a", epochs=1))
    b = train(tiny_config(dataset, tmp_path / "b", epochs=1, seed=3, split_seed=0))
    train(tiny_config(dataset, tmp_path / "c", epochs=1, seed=3))
    split = {k: json.loads((tmp_path / k / "split.json").read_text()) for k in "abc"}
    assert split["b"] == split["a"] and split["b"]["seed"] == 0
    assert split["c"]["seed"] == 3 and split["c"]["test"] != split["a"]["test"]  # seed alone re-draws the split
    assert a["test"][FE]["mae"] != b["test"][FE]["mae"]  # a different network
    wa = load_model(tmp_path / "a" / "best.pt").state_dict()
    wb = load_model(tmp_path / "b" / "best.pt").state_dict()
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_loss_weights_scale_each_target_in_loss_and_validation_score(dataset, tmp_path):
    cfg = SEN().config
    y = torch.tensor([[-1.0, 0.0], [-2.0, 1.5]])
    out = {
        FE: torch.tensor([-1.2, -1.7]),
        "band_gap_logit": torch.tensor([0.3, 0.8]),
        "band_gap_amplitude": torch.tensor([0.5, 1.0]),
    }
    fe_std = cfg.target_stats[FE][1]
    fe_part = (0.2 + 0.3) / 2 / fe_std
    plain = float(sen.training.loop.loss_fn(out, y, cfg))
    weighted = float(sen.training.loop.loss_fn(out, y, cfg, {FE: 3.0, GAP: 1.0}))
    assert weighted == pytest.approx(plain + 2 * fe_part, rel=1e-6)

    # the validation score (what picks best.pt) is the weighted mean of the standardised MAEs
    out_dir = tmp_path / "w"
    train(tiny_config(dataset, out_dir, epochs=2, loss_weights={FE: 3.0}))
    stats = load_model(out_dir / "best.pt").config.target_stats
    for row in read_log(out_dir):
        fe, gap = float(row[f"val_mae_{FE}"]), float(row[f"val_mae_{GAP}"])
        want = (3 * fe / stats[FE][1] + gap / stats[GAP][1]) / 4
        assert float(row["val_score"]) == pytest.approx(want, rel=1e-3)

    with pytest.raises(ValueError, match="not a target"):
        TrainConfig.from_dict({"loss_weights": {"volume": 2.0}})
    with pytest.raises(ValueError, match="positive number"):
        TrainConfig.from_dict({"loss_weights": {FE: 0}})


def test_loss_is_fe_l1_plus_gate_bce_plus_gap_l1_over_non_metals_only():
    cfg = SEN().config
    fe_std, gap_std = cfg.target_stats[FE][1], cfg.target_stats[GAP][1]
    logit = torch.tensor([0.3, 0.8, -0.4])
    out = {FE: torch.tensor([-1.2, -1.7, 0.1]), "band_gap_logit": logit,
           "band_gap_amplitude": torch.tensor([0.5, 1.0, 2.0])}  # fmt: skip
    y = torch.tensor([[-1.0, 0.0], [-2.0, 1.5], [0.0, 3.0]])  # a metal and two non-metals
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.tensor([0.0, 1.0, 1.0]))
    want = (0.2 + 0.3 + 0.1) / 3 / fe_std + float(bce) + (0.5 + 1.0) / 2 / gap_std  # the metal's amplitude is free
    assert float(sen.training.loop.loss_fn(out, y, cfg)) == pytest.approx(want, rel=1e-6)

    metals = y.clone()
    metals[:, 1] = 0.0  # no non-metal in the batch: no amplitude term at all (and no division by zero)
    bce0 = torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.zeros(3))
    assert float(sen.training.loop.loss_fn(out, metals, cfg)) == pytest.approx(0.6 / 3 / fe_std + float(bce0), rel=1e-6)


class Interrupted(KeyboardInterrupt):
    """Raised inside the training loop, like Ctrl-C or a killed job."""


def test_resume_after_an_interruption_gives_the_same_run(dataset, tmp_path, monkeypatch):
    epochs = 5
    straight = tmp_path / "straight"
    summary_straight = train(tiny_config(dataset, straight, epochs=epochs))

    # the same run, interrupted in the middle of epoch 3 (after the epoch-2 checkpoint)
    resumed = tmp_path / "resumed"
    n_train = len(json.loads((straight / "split.json").read_text())["train"])
    steps_per_epoch = math.ceil(n_train / 8)
    calls = []
    real_loss = sen.training.loop.loss_fn

    def interrupt_in_epoch_3(*args):
        calls.append(1)
        if len(calls) == 2 * steps_per_epoch + 2:
            raise Interrupted
        return real_loss(*args)

    monkeypatch.setattr(sen.training.loop, "loss_fn", interrupt_in_epoch_3)
    with pytest.raises(Interrupted):
        train(tiny_config(dataset, resumed, epochs=epochs))
    monkeypatch.undo()
    assert len(read_log(resumed)) == 2
    assert torch.load(resumed / "last.pt", weights_only=True)["state"]["epoch"] == 2

    summary_resumed = train(tiny_config(dataset, resumed, epochs=epochs), resume=True)

    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(resumed / "last.pt", weights_only=True)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert {k: v for k, v in a["state"].items() if k != "elapsed"} == {
        k: v for k, v in b["state"].items() if k != "elapsed"
    }
    best_a = torch.load(straight / "best.pt", weights_only=True)["state_dict"]
    best_b = torch.load(resumed / "best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, best_b[k]) for k, v in best_a.items())

    def without_time(rows):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]

    assert without_time(read_log(resumed)) == without_time(read_log(straight))
    assert summary_resumed["test"] == summary_straight["test"]
    assert summary_resumed["best_epoch"] == summary_straight["best_epoch"]


def test_resume_a_finished_run_with_more_epochs_continues_it(dataset, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(dataset, out, epochs=2))
    summary = train(tiny_config(dataset, out, epochs=3), resume=True)
    assert summary["epochs_run"] == 3
    assert [int(r["epoch"]) for r in read_log(out)] == [1, 2, 3]


def _crystals_trained_on(monkeypatch) -> set[int]:
    """Record which crystals (indices into the packed dataset) training steps use; predictions are not counted."""
    seen: set[int] = set()
    predicting = []
    graph, predict = PackedGraphs.graph, sen.training.loop.predict_packed

    def spy_graph(self, i):
        if not predicting:
            seen.add(int(i))
        return graph(self, i)

    def spy_predict(*args, **kwargs):
        predicting.append(1)
        try:
            return predict(*args, **kwargs)
        finally:
            predicting.pop()

    monkeypatch.setattr(PackedGraphs, "graph", spy_graph)
    monkeypatch.setattr(sen.training.loop, "predict_packed", spy_predict)
    return seen


def test_train_on_val_refits_on_train_and_validation_and_keeps_test_out(dataset, tmp_path, monkeypatch):
    packed, _ = load_dataset(dataset[0], (FE, GAP), cache_dir=dataset[1], progress=False)
    split = split_ids(packed.ids, seed=0)
    index = {c: i for i, c in enumerate(packed.ids)}
    part = {k: {index[c] for c in v} for k, v in split.items()}

    seen = _crystals_trained_on(monkeypatch)
    train(tiny_config(dataset, tmp_path / "plain", epochs=3))
    assert seen == part["train"]  # an ordinary run trains on the training crystals only

    seen.clear()
    out = tmp_path / "refit"
    summary = train(tiny_config(dataset, out, epochs=3, patience=1, train_on_val=True))
    assert seen == part["train"] | part["val"] and not seen & part["test"]
    assert json.loads((out / "split.json").read_text()) == {"seed": 0, **split}  # the same split, test held out

    # nothing left to validate on: no early stopping, the last epoch is kept, no validation numbers at all
    log = read_log(out)
    assert [int(r["epoch"]) for r in log] == [1, 2, 3] and summary["epochs_run"] == 3
    assert all(r[f"val_mae_{FE}"] == r[f"val_mae_{GAP}"] == r["val_score"] == "" for r in log)
    assert summary["best_epoch"] == 3 and summary["trained_on"] == "train+val"
    assert "val" not in summary and "val_mean_predictor" not in summary
    last = torch.load(out / "last.pt", weights_only=True)["model"]
    best = load_model(out / "best.pt")
    assert best.extra == {"epoch": 3, "trained_on": "train+val"}
    assert all(torch.equal(best.state_dict()[k], v) for k, v in last.items())
    test_idx = np.array(sorted(part["test"]))
    want = regression_metrics(predict_packed(best, packed, test_idx, "cpu")[:, 0], packed.targets[test_idx, 0])
    assert summary["test"][FE]["mae"] == pytest.approx(want["mae"], rel=1e-5)
    assert train(tiny_config(dataset, tmp_path / "plain2", epochs=1))["trained_on"] == "train"


def test_cli_train_applies_command_line_overrides_to_the_toml(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path, cache = dataset
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'data = "{path}"\ncache_dir = "{cache}"\nout = "{tmp_path / "from_toml"}"\n'
        'targets = ["formation_energy_per_atom", "band_gap"]\n'
        "width = 64\nn_capsules = 4\ncapsule_dim = 8\nepochs = 50\nbatch_size = 32\nlr = 0.01\n"
        "seed = 0\nthreads = 1\npatience = 100\n[loss_weights]\nformation_energy_per_atom = 2.0\n"
    )
    out = tmp_path / "from_cli"
    rc = main(
        ["train", "--config", str(config), "--epochs", "2", "--width", "16", "--batch-size", "8", "--lr", "0.004",
         "--seed", "3", "--device", "cpu", "--targets", FE, "--out", str(out), "--dropout", "0.2",
         "--weight-decay", "0.001", "--split-seed", "5", "--train-on-val", "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    assert "epoch 2:" in capsys.readouterr().out
    assert not (tmp_path / "from_toml").exists()

    saved = torch.load(out / "last.pt", weights_only=True)["train_config"]
    expected = asdict(TrainConfig.from_file(config))
    expected.update(epochs=2, batch_size=8, lr=0.004, seed=3, device="cpu", targets=[FE], out=str(out))
    expected.update(weight_decay=0.001, split_seed=5)
    expected["network"].update(width=16, dropout=0.2)  # network settings live in their own part
    expected.update(progress=False, train_on_val=True)
    assert expected["loss_weights"] == {FE: 2.0}  # from the TOML file's table
    assert saved == _plain(expected)
    assert saved["network"]["n_capsules"] == 4 and saved["network"]["capsule_dim"] == 8  # from the TOML file

    model = load_model(out / "best.pt")
    assert model.config.width == 16 and model.config.targets == (FE,) and model.config.dropout == 0.2
    assert json.loads((out / "split.json").read_text())["seed"] == 5  # --split-seed, not --seed
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 2
    assert json.loads((out / "summary.json").read_text())["trained_on"] == "train+val"
    assert len(read_log(out)) == 2


def test_cli_train_rejects_an_unknown_setting_in_one_line(tmp_path, capsys):
    config = tmp_path / "typo.toml"
    config.write_text("widht = 16\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown training setting(s): widht"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad", ["1.0", "-0.1"])
def test_cli_train_rejects_a_dropout_outside_0_1_in_one_line(tmp_path, capsys, bad):
    assert main(["train", "--dropout", bad, "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.strip() == f"error: dropout must be in [0, 1), got {float(bad)}"
    assert not (tmp_path / "run").exists()


def test_init_from_starts_from_trained_weights_and_their_scaling(dataset, tmp_path):
    def largest_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
        return max(float((a.state_dict()[k] - v).abs().max()) for k, v in b.state_dict().items())

    first = tmp_path / "first"
    train(tiny_config(dataset, first, epochs=3))
    source = load_model(first / "best.pt")

    # a learning rate of ~0 leaves the weights where they start: here, exactly at the trained ones
    second = tmp_path / "second"
    train(tiny_config(dataset, second, epochs=1, lr=1e-12, init_from=str(first)))
    started = load_model(second / "best.pt")
    assert started.config.target_stats == source.config.target_stats
    assert largest_difference(started, source) < 1e-6
    # the same run without --init-from starts from fresh weights, far from the trained ones
    train(tiny_config(dataset, tmp_path / "scratch", epochs=1, lr=1e-12))
    assert largest_difference(load_model(tmp_path / "scratch" / "best.pt"), source) > 1e-3

    # from an ensemble (a shipped model), a run starts from its first network
    save_ensemble(tmp_path / "duo.pt", [source, load_model(tmp_path / "scratch" / "best.pt")])
    train(tiny_config(dataset, tmp_path / "from_duo", epochs=1, lr=1e-12, init_from=str(tmp_path / "duo.pt")))
    assert largest_difference(load_model(tmp_path / "from_duo" / "best.pt"), source) < 1e-6

    # resuming a run that started from other weights keeps their target scaling
    train(tiny_config(dataset, second, epochs=2, init_from=str(first)), resume=True)
    assert load_model(second / "best.pt").config.target_stats == source.config.target_stats
    assert len(read_log(second)) == 2


def test_cli_init_from_weights_of_another_shape_is_one_line(dataset, tmp_path, capsys):
    first = tmp_path / "first"
    train(tiny_config(dataset, first, epochs=1))
    path, cache = dataset
    args = ["train", "--data", str(path), "--out", str(tmp_path / "second"), "--width", "32", "--no-progress",
            "--init-from", str(first / "best.pt")]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --init-from") and "width 32 vs 16" in err and "\n" not in err
    assert not (tmp_path / "second").exists()
    assert main(["train", "--init-from", str(tmp_path / "none"), "--out", str(tmp_path / "third")]) == 1
    assert "no model weights at" in capsys.readouterr().err


def test_any_gap_target_is_trained_with_the_metal_gate(tmp_path):
    """`--targets optical_gap`: every target whose name contains "gap" gets the gate, as the README says."""
    items = _builders.crystals(40)
    rows = [{"material_id": c.id, "optical_gap": c.targets()[GAP], "cif": _builders.cif_text(c.structure)}
            for c in items]  # fmt: skip
    data = _builders.write_jsonl(tmp_path / "optical.jsonl.gz", rows)
    cfg = TrainConfig.from_dict(dict(
        data=str(data), targets="optical_gap", out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
        width=16, n_capsules=4, capsule_dim=8, epochs=2, batch_size=8, device="cpu", threads=1, progress=False,
    ))  # fmt: skip
    summary = train(cfg)
    assert summary["test"]["optical_gap"]["n"] > 0
    model = load_model(tmp_path / "run" / "best.pt")
    assert model.config.targets == ("optical_gap",)
    from sen.predict import Predictor

    predictions = Predictor(model, device="cpu").predict([c.structure for c in items[:6]])
    assert all(p["optical_gap"] >= 0.0 for p in predictions)  # gated: never negative, exactly 0 for "no gap"
    assert "metal_probability" not in predictions[0]  # that name belongs to the band gap only
