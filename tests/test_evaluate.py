"""sen evaluate / sen.training.evaluate and sen.training.metrics.regression_metrics: the numbers are right, the plots are written."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from _builders import crystals, jsonl_rows, write_dataset, write_jsonl

from sen.checkpoint import save_model
from sen.cli import main
from sen.model import SEN, SENConfig
from sen.predict import Predictor
from sen.training.config import TrainConfig
from sen.training.evaluate import evaluate
from sen.training.loop import train
from sen.training.metrics import regression_metrics

FE, GAP = "formation_energy_per_atom", "band_gap"
LINE = re.compile(r"^(\w+): MAE (\S+)  RMSE (\S+)  R² (\S+)  \(n = (\d+)\)$")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_regression_metrics_by_hand():
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    # errors 0, 0, -2; true mean 8/3, total sum of squares 26/3
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert m["r2"] == pytest.approx(1 - 4 / (26 / 3))  # 7/13
    assert m["n"] == 3
    perfect = regression_metrics(np.array([0.5, -1.0]), np.array([0.5, -1.0]))
    assert perfect["mae"] == 0 and perfect["rmse"] == 0 and perfect["r2"] == 1
    assert math.isnan(regression_metrics(np.array([1.0, 2.0]), np.array([3.0, 3.0]))["r2"])  # constant truth


def toy_model(tmp_path):
    """A randomly initialised tiny SEN saved like a trained one: its predictions are whatever they are."""
    torch.manual_seed(5)
    stats = {FE: (-1.5, 0.8), GAP: (2.0, 1.5)}
    model = SEN(SENConfig(width=16, n_capsules=4, capsule_dim=8, targets=(FE, GAP), target_stats=stats)).eval()
    path = tmp_path / "toy" / "model.pt"
    path.parent.mkdir()
    save_model(path, model)
    return path


def test_cli_evaluate_prints_the_metrics_of_the_models_predictions(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default cache (.cache/sen) goes under tmp_path
    model_path = toy_model(tmp_path)
    items = crystals(12)
    data, _ = write_dataset(tmp_path / "crystals.jsonl.gz", 12)
    out = tmp_path / "evaluation"

    assert main(["evaluate", "--model", str(model_path), "--data", str(data), "--out", str(out)]) == 0
    printed = {}
    for line in capsys.readouterr().out.splitlines():
        if match := LINE.match(line):
            name, mae, rmse, r2, n = match.groups()
            printed[name] = (float(mae), float(rmse), float(r2), int(n))
    assert set(printed) == {FE, GAP}
    assert list((tmp_path / ".cache" / "sen").glob("*.npz"))

    # the same numbers computed independently: predictions through the Predictor, metrics by numpy
    rows = Predictor.load(model_path, device="cpu").predict([c.structure for c in items])
    for t in (FE, GAP):
        pred = np.array([r[t] for r in rows])
        true = np.array([getattr(c, t) for c in items])
        mae = np.mean(np.abs(pred - true))
        rmse = np.sqrt(np.mean((pred - true) ** 2))
        r2 = 1 - np.sum((pred - true) ** 2) / np.sum((true - true.mean()) ** 2)
        assert printed[t][:3] == pytest.approx((mae, rmse, r2), abs=1.5e-4), t
        assert printed[t][3] == 12
        saved = json.loads((out / "metrics.json").read_text())["metrics"][t]
        assert saved["mae"] == pytest.approx(mae, rel=1e-4) and saved["n"] == 12

        html = (out / f"parity_{t}.html").read_text()
        assert len(html) > 100_000 and "plotly" in html.lower()  # plotly.js is embedded: works offline
        assert f"{t}: MAE {printed[t][0]:.4f}" in html
        png = (out / f"parity_{t}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_evaluate_on_the_test_split_reproduces_the_training_summary(tmp_path):
    data, _ = write_dataset(tmp_path / "crystals.jsonl.gz", 40)
    bad = {"material_id": "bad", FE: -8.0, GAP: 1.0, "cif": jsonl_rows(crystals(1))[0]["cif"]}
    write_jsonl(data, jsonl_rows(crystals(40)) + [bad])
    cfg = TrainConfig.from_dict(dict(
        data=str(data), out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), width=16, n_capsules=4,
        capsule_dim=8, epochs=2, batch_size=8, seed=1, device="cpu", threads=1, progress=False,
    ))  # fmt: skip
    summary = train(cfg)
    result = evaluate(
        tmp_path / "run" / "best.pt",
        data,
        split="test",
        out_dir=tmp_path / "ev",
        device="cpu",
        cache_dir=tmp_path / "cache",
    )
    test_ids = json.loads((tmp_path / "run" / "split.json").read_text())["test"]
    for t in (FE, GAP):
        assert result["metrics"][t]["n"] == len(test_ids) == summary["test"][t]["n"]
        for k in ("mae", "rmse", "r2"):
            assert result["metrics"][t][k] == pytest.approx(summary["test"][t][k], rel=1e-5, abs=1e-7)
    assert result["data_report"]["skipped"] == {"unphysical formation energy (< -5.0 eV/atom)": 1}
    # a single target of a two-target model
    only_gap = evaluate(
        tmp_path / "run" / "best.pt", data, targets=(GAP,), split="val", out_dir=tmp_path / "ev_gap",
        device="cpu", cache_dir=tmp_path / "cache",
    )  # fmt: skip
    assert list(only_gap["metrics"]) == [GAP]
    assert sorted(p.name for p in (tmp_path / "ev_gap").iterdir()) == [
        "metrics.json", "parity_band_gap.html", "parity_band_gap.png",
    ]  # fmt: skip


def test_cli_evaluate_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model_path = toy_model(tmp_path)
    data, _ = write_dataset(tmp_path / "crystals.jsonl.gz", 3)
    assert main(["evaluate", "--model", str(tmp_path / "missing.pt"), "--data", str(data)]) == 1
    assert capsys.readouterr().err.startswith("error: no model weights at")
    assert main(["evaluate", "--model", str(model_path), "--data", str(data), "--targets", "bulk_modulus"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: the model does not predict bulk_modulus; it predicts {FE}, {GAP}"
    assert main(["evaluate", "--model", str(model_path), "--data", str(tmp_path / "none.jsonl")]) == 1
    assert capsys.readouterr().err.startswith("error: dataset not found")
