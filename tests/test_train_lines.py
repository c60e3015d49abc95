"""scripts/train_lines.sh: independent lines (pretrain -> fine-tune -> refit) trained side by side."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from _builders import write_dataset

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "train_lines.sh"


def run_script(cwd: Path, *seeds: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *seeds], cwd=cwd, env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def log_rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_each_seed_gets_its_own_line_of_three_stages_on_the_shipped_split(tmp_path):
    data, _ = write_dataset(tmp_path / "crystals.jsonl.gz", 40)
    shutil.copytree(REPO / "configs", tmp_path / "configs")  # the script reads configs/ where it runs
    done = run_script(
        tmp_path, "5", "6", DATA=str(data), RUNS="runs", PRE_EPOCHS="2", FE_EPOCHS="1", REFIT_EPOCHS="1",
        EXTRA="--width 16 --batch-size 8 --device cpu --threads 1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for seed in (5, 6):
        pre, fe, refit = (tmp_path / "runs" / f"sen_mp_g{seed}{suffix}" for suffix in ("", "_fe", "_refit"))
        assert [len(log_rows(r)) for r in (pre, fe, refit)] == [2, 1, 1]
        configs = [torch.load(r / "last.pt", weights_only=True)["train_config"] for r in (pre, fe, refit)]
        assert [c["seed"] for c in configs] == [seed, seed + 100, seed + 200]
        fe_weight = {"formation_energy_per_atom": 3.0}
        assert [c["loss_weights"] for c in configs] == [{}, fe_weight, fe_weight]
        assert [c["init_from"] for c in configs] == [None, f"runs/sen_mp_g{seed}", f"runs/sen_mp_g{seed}_fe"]
        assert configs[2]["train_on_val"] and configs[2]["lr"] == 2e-4 and not configs[1]["train_on_val"]
        splits = [json.loads((r / "split.json").read_text()) for r in (pre, fe, refit)]
        assert all(s == splits[0] for s in splits) and splits[0]["seed"] == 0  # one split for every line
        assert "starting from the weights of" in (tmp_path / "runs" / f"line_{seed}.log").read_text()
    pre5 = torch.load(tmp_path / "runs" / "sen_mp_g5" / "best.pt", weights_only=True)["state_dict"]
    pre6 = torch.load(tmp_path / "runs" / "sen_mp_g6" / "best.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(pre5[k], pre6[k]) for k in pre5)  # independent networks, not copies


def test_a_seed_that_is_not_a_number_is_refused_in_one_line(tmp_path):
    done = run_script(tmp_path, "21", "x1")
    assert done.returncode == 2
    assert done.stderr.strip() == f"{SCRIPT}: seeds must be whole numbers, got 'x1'"
    assert not (tmp_path / "runs").exists()
