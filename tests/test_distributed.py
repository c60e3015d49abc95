"""``torchrun --nproc_per_node 2 -m sen train``: data-parallel training with gloo on the CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import torch
from _builders import crystals, write_dataset

from sen.checkpoint import load_model
from sen.predict import Predictor
from sen.training.data import split_ids


def test_torchrun_two_processes_on_cpu(tmp_path):
    data, items = write_dataset(tmp_path / "crystals.jsonl.gz", 40)
    n_train = len(split_ids([c.id for c in items], seed=0)["train"])
    # n_train = 2 * batch + 1: the two ranks' shares differ by one crystal, so unequal shards would
    # leave one rank a step without data while the other waits for its gradients
    assert n_train % 2 == 1
    batch = (n_train - 1) // 2
    config = tmp_path / "ddp.toml"
    config.write_text(
        f'data = "{data}"\ncache_dir = "{tmp_path / "cache"}"\nout = "{tmp_path / "run"}"\n'
        'width = 16\nn_capsules = 4\ncapsule_dim = 8\nthreads = 1\ndevice = "cpu"\n'
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "sen", "train", "--config", str(config), "--epochs", "2", "--batch-size", str(batch), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "epoch 2:" in proc.stdout
    assert proc.stdout.count("40 records read") == 1  # only rank 0 reports

    run = tmp_path / "run"
    last = torch.load(run / "last.pt", weights_only=True)
    # two processes share each step: ceil(n_train / (batch * 2)) = 2 optimiser steps per epoch, not 3
    assert last["state"]["epoch"] == 2
    assert last["state"]["step"] == 2 * math.ceil(n_train / (batch * 2)) == 4
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 2
    assert sorted(json.loads((run / "split.json").read_text())["train"]) == sorted(
        split_ids([c.id for c in items], seed=0)["train"]
    )
    # the checkpoint is a plain model (no DistributedDataParallel "module." prefixes) and predicts
    model = load_model(run / "best.pt")
    assert not any(k.startswith("module.") for k in model.state_dict())
    rows = Predictor(model, device="cpu").predict([c.structure for c in crystals(3)])
    assert all(np.isfinite(r["formation_energy_per_atom"]) and r["band_gap"] >= 0 for r in rows)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if "tmp" in p.name) == []
