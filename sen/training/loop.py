"""The training loop for SEN (and the CGCNN-style baseline): :class:`Trainer`.

``sen train`` calls :func:`train`; every epoch writes ``last.pt`` (everything needed to resume),
``best.pt`` when the validation score improves (what ships), a CSV log and the split.
``torchrun --nproc_per_node=G -m sen train ...`` trains data-parallel on G processes (NCCL on GPUs,
gloo on the CPU).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from sen.checkpoint import (
    CHECKPOINT_VERSION,
    _plain,
    build_network,
    load_model,
    pick_device,
    resolve_model_path,
    save_model,
)
from sen.graph import collate
from sen.model import Ensemble, SENConfig, count_parameters, is_gap_target
from sen.training.config import TrainConfig
from sen.training.data import load_dataset, split_ids
from sen.training.metrics import predict_packed, regression_metrics


def loss_fn(
    out: dict[str, torch.Tensor], y: torch.Tensor, config: SENConfig, weights: dict[str, float] | None = None
) -> torch.Tensor:
    """Weighted sum over targets of standardised L1 (plus BCE on 'is the gap > 0' for gap targets)."""
    total = y.new_zeros(())
    for j, t in enumerate(config.targets):
        std = config.target_stats[t][1]
        w = (weights or {}).get(t, 1.0)
        if is_gap_target(t):
            positive = (y[:, j] > 0).float()
            total = total + w * F.binary_cross_entropy_with_logits(out[f"{t}_logit"], positive)
            # mean amplitude error over the non-metals (none: no term), as a masked mean: no host-device sync
            amp_err = ((out[f"{t}_amplitude"] - y[:, j]).abs() * positive).sum() / positive.sum().clamp(min=1.0)
            total = total + w * amp_err / std
        else:
            total = total + w * (out[t] - y[:, j]).abs().mean() / std
    return total


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to 2 % of the peak; ``progress`` in [0, 1]."""
    if progress < warmup:
        return max(progress / warmup, 0.02)
    p = min((progress - warmup) / max(1.0 - warmup, 1e-9), 1.0)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * p))


def _np_state_to(st):
    return {"keys": torch.from_numpy(st[1].astype(np.int64)), "pos": st[2], "has_gauss": st[3], "gauss": st[4]}


def _np_state_from(d):
    return ("MT19937", d["keys"].numpy().astype(np.uint32), int(d["pos"]), int(d["has_gauss"]), float(d["gauss"]))


def check_same_shape(source: torch.nn.Module, cfg: TrainConfig) -> None:
    """``--init-from`` needs the same architecture, targets, network shape and featuriser as the run."""
    net = ("width", "n_conv", "n_capsules", "capsule_dim")
    mine = {"arch": cfg.arch, "targets": tuple(cfg.targets), **{k: getattr(cfg.network, k) for k in net},
            "graph": cfg.graph}  # fmt: skip
    theirs = {"arch": "cgcnn" if type(source).__name__ == "CGCNN" else "sen", "targets": tuple(source.config.targets),
              **{k: getattr(source.config, k) for k in net}, "graph": source.graph_config}  # fmt: skip
    differ = [f"{k} {mine[k]} vs {theirs[k]}" for k in mine if mine[k] != theirs[k]]
    if differ:
        raise ValueError(f"--init-from {cfg.init_from}: this run differs from those weights in " + "; ".join(differ))


class Trainer:
    """One training run: :meth:`fit` = load data, build the network, then epochs of
    :meth:`train_epoch`, :meth:`validate` and :meth:`checkpoint` until the epochs, the patience or the
    time limit run out; then :meth:`summarise` on the held-out splits."""

    def __init__(self, cfg: TrainConfig, resume: bool = False):
        self.cfg, self.resume = cfg, resume
        self.rank, self.world = self._distributed()
        self.main = self.rank == 0
        self.device = pick_device(cfg.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.out_dir = Path(cfg.out)
        self.last_path = self.out_dir / "last.pt"
        self.weights = {t: cfg.weight(t) for t in cfg.targets}
        self.state = {"epoch": 0, "step": 0, "elapsed": 0.0, "best": math.inf, "best_epoch": -1, "bad_epochs": 0}
        self.time_limit = cfg.time_limit_min * 60 if cfg.time_limit_min else None
        self.lr = cfg.lr

    @staticmethod
    def _distributed() -> tuple[int, int]:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def say(self, text: str) -> None:
        """Print on the main process only."""
        if self.main:
            print(text, flush=True)

    # ------------------------------------------------------------------ set-up

    def fit(self) -> dict:
        """Train; returns the final summary (also written to ``<out>/summary.json``)."""
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        source = self._source_weights()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.load_data()
        self.build(source)
        self._open_log()
        while self.state["epoch"] < cfg.epochs:
            stop = self.run_epoch()
            if self.world > 1:
                flag = torch.tensor([int(stop)], device=self.device)
                dist.broadcast(flag, 0)
                stop = bool(flag.item())
            if stop:
                break
        summary = self.summarise() if self.main else {}
        if dist.is_initialized():
            dist.destroy_process_group()
        return summary

    def _source_weights(self) -> torch.nn.Module | None:
        """The network ``--init-from`` names (an ensemble's first), checked against this run's shape."""
        if not self.cfg.init_from:
            return None
        source = load_model(resolve_model_path(self.cfg.init_from))
        if isinstance(source, Ensemble):
            source = source.members[0]
        check_same_shape(source, self.cfg)
        return source

    def load_data(self) -> None:
        """Featurise (or read from the cache) the dataset and split it; write the split and data report."""
        cfg = self.cfg
        if self.world > 1 and not self.main:
            dist.barrier()  # rank 0 featurises and fills the cache first; the other ranks then read it
        try:
            self.packed, self.report = load_dataset(
                cfg.data, cfg.targets, fmt=cfg.data_format, graph_config=cfg.graph, cache_dir=cfg.cache_dir,
                workers=cfg.workers, max_atoms=cfg.max_atoms, limit=cfg.limit, progress=cfg.progress and self.main,
            )  # fmt: skip
        finally:
            if self.world > 1 and self.main:
                dist.barrier()
        self.say(str(self.report))
        split = split_ids(self.packed.ids, seed=cfg.split_seed_used)
        index_of = {cid: i for i, cid in enumerate(self.packed.ids)}
        self.idx = {k: np.array([index_of[c] for c in v], dtype=np.int64) for k, v in split.items()}
        if len(self.idx["train"]) == 0 or len(self.idx["val"]) == 0:
            raise ValueError(f"dataset too small to split: {len(self.packed)} usable crystals")
        if self.main:
            (self.out_dir / "split.json").write_text(json.dumps({"seed": cfg.split_seed_used, **split}))
            (self.out_dir / "data_report.json").write_text(json.dumps(self.report.to_dict(), indent=1))
        self.fit_idx = np.concatenate([self.idx["train"], self.idx["val"]]) if cfg.train_on_val else self.idx["train"]

    def build(self, source: torch.nn.Module | None) -> None:
        """The network (from ``source``'s weights and target scaling, if given), optimiser and resumed state."""
        cfg = self.cfg
        y_train = self.packed.targets[self.idx["train"]]
        stats = {t: (float(y_train[:, j].mean()), float(y_train[:, j].std() or 1.0)) for j, t in enumerate(cfg.targets)}
        if source is not None:
            stats = dict(source.config.target_stats)  # continue on its output scale
        self.model_config = cfg.network_config(stats)
        self.model = build_network(cfg.arch, self.model_config, cfg.graph).to(self.device)
        resuming = self.resume and self.last_path.is_file()
        if source is not None and not resuming:
            self.model.load_state_dict(source.state_dict())
            self.say(f"starting from the weights of {cfg.init_from}")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if resuming:
            ckpt = torch.load(self.last_path, map_location=self.device, weights_only=True)
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.state.update(ckpt["state"])
            torch.set_rng_state(ckpt["torch_rng"])
            np.random.set_state(_np_state_from(ckpt["numpy_rng"]))
            self.say(f"resumed from {self.last_path} at epoch {self.state['epoch']}")
        self.train_model = self.model
        if self.world > 1:  # the last convolution's edge update feeds nothing: some parameters get no gradient
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, find_unused_parameters=True)
        self.steps_per_epoch = max(1, math.ceil(len(self.fit_idx) / (cfg.batch_size * self.world)))
        self.say(f"{cfg.arch}: {count_parameters(self.model):,} parameters on {self.device}; "
                 f"{len(self.idx['train'])} train / {len(self.idx['val'])} val / {len(self.idx['test'])} test crystals"
                 + (f"; training on train + val ({len(self.fit_idx)}), no validation" if cfg.train_on_val else ""))  # fmt: skip

    def _open_log(self) -> None:
        targets = self.cfg.targets
        self.log_path = self.out_dir / "log.csv"
        self.header = (["epoch", "elapsed_s", "lr", "train_loss"] + [f"train_mae_{t}" for t in targets]
                       + [f"val_mae_{t}" for t in targets] + ["val_score"])  # fmt: skip
        if not self.main:
            return
        if self.resume and self.log_path.is_file():
            with open(self.log_path, newline="") as fh:
                self.header = next(csv.reader(fh), self.header)  # keep the columns of the log being continued
        else:
            with open(self.log_path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.header)

    # ------------------------------------------------------------------ one epoch

    def run_epoch(self) -> bool:
        """Train, validate, log and checkpoint one epoch; True when training should stop."""
        t0 = time.time()
        train_loss, train_mae = self.train_epoch(t0)
        self.state["elapsed"] += time.time() - t0
        self.state["epoch"] += 1
        if self.main:
            maes, score, improved = self.validate()
            self.log(train_loss, train_mae, maes, score, improved)
            self.checkpoint()
        stop = self.state["bad_epochs"] >= self.cfg.patience
        return stop or (self.time_limit is not None and self.state["elapsed"] >= self.time_limit)

    def _learning_rate(self, seconds_in_epoch: float) -> float:
        """This step's learning rate: the schedule's position is the larger of steps and time used."""
        cfg = self.cfg
        progress = self.state["step"] / (self.steps_per_epoch * cfg.epochs)
        if self.time_limit:
            progress = max(progress, (self.state["elapsed"] + seconds_in_epoch) / self.time_limit)
        return cfg.lr * lr_factor(min(progress, 1.0), cfg.warmup_epochs / max(cfg.epochs, 1))

    def train_epoch(self, t0: float) -> tuple[float, list[float]]:
        """One pass over the training crystals; returns the mean loss and the training MAE per target.
        Nothing is read back from the device inside the epoch (losses and errors stay there)."""
        cfg, packed = self.cfg, self.packed
        self.train_model.train()
        order = np.random.default_rng(cfg.seed * 1000 + self.state["epoch"]).permutation(self.fit_idx)
        if self.world > 1:  # equal shards (wrap around, as DistributedSampler does): every rank runs the same steps
            order = np.resize(order, math.ceil(len(order) / self.world) * self.world)
        order = order[self.rank :: self.world]
        losses, n_seen = [], 0
        abs_err = torch.zeros(len(cfg.targets), dtype=torch.float64, device=self.device)
        bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {self.state['epoch'] + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and self.main), leave=False)  # fmt: skip
        for b in bar:
            sel = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            if len(sel) == 0:
                continue
            self.lr = self._learning_rate(time.time() - t0)
            for g in self.optimizer.param_groups:
                g["lr"] = self.lr
            y = torch.from_numpy(packed.targets[sel]).to(self.device)
            out = self.train_model(collate([packed.graph(i) for i in sel]).to(self.device))
            loss = loss_fn(out, y, self.model_config, self.weights)
            with torch.no_grad():
                abs_err += (torch.stack([out[t] for t in cfg.targets], dim=-1) - y).abs().sum(0).double()
            n_seen += len(sel)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            self.optimizer.step()
            self.state["step"] += 1
            losses.append(loss.detach())
            if b % 20 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{float(torch.stack(losses[-50:]).mean()):.3f}", lr=f"{self.lr:.1e}")
        train_loss = float(torch.stack(losses).mean()) if losses else float("nan")  # one read-back per epoch
        return train_loss, [float(a) / max(n_seen, 1) for a in abs_err.cpu()]

    def validate(self) -> tuple[list[float], float | None, bool]:
        """Validation MAE per target and the weighted score; saves ``best.pt`` when it improves.
        With ``train_on_val`` nothing is held out: the latest epoch is kept."""
        cfg, epoch = self.cfg, self.state["epoch"]
        if cfg.train_on_val:
            self.state.update(best_epoch=epoch)
            save_model(self.out_dir / "best.pt", self.model, extra={"epoch": epoch, "trained_on": "train+val"})
            return [], None, True
        pred = predict_packed(self.model, self.packed, self.idx["val"], self.device)
        true = self.packed.targets[self.idx["val"]]
        maes = [float(np.abs(pred[:, j] - true[:, j]).mean()) for j in range(len(cfg.targets))]
        stats = self.model_config.target_stats
        score = sum(self.weights[t] * m / stats[t][1] for m, t in zip(maes, cfg.targets, strict=True))
        score /= sum(self.weights.values())
        improved = score < self.state["best"]
        if improved:
            self.state.update(best=score, best_epoch=epoch, bad_epochs=0)
            save_model(self.out_dir / "best.pt", self.model,
                       extra={"epoch": epoch, "val_mae": dict(zip(cfg.targets, maes, strict=True))})  # fmt: skip
        else:
            self.state["bad_epochs"] += 1
        return maes, score, improved

    def log(self, train_loss: float, train_mae: list[float], maes: list[float], score, improved: bool) -> None:
        """One row of ``log.csv`` and one line on the terminal."""
        cfg, st = self.cfg, self.state
        row = {"epoch": st["epoch"], "elapsed_s": f"{st['elapsed']:.1f}", "lr": f"{self.lr:.3e}",
               "train_loss": f"{train_loss:.4f}", "val_score": "" if score is None else f"{score:.5f}"}  # fmt: skip
        for j, t in enumerate(cfg.targets):
            row[f"train_mae_{t}"] = f"{train_mae[j]:.5f}"
            row[f"val_mae_{t}"] = f"{maes[j]:.5f}" if maes else ""
        with open(self.log_path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.header, extrasaction="ignore", restval="").writerow(row)
        shown = ", ".join(f"{t} {m:.4f}" for t, m in zip(cfg.targets, maes or train_mae, strict=True))
        print(f"epoch {st['epoch']}: loss {train_loss:.4f} {'val' if maes else 'train (train + val)'} MAE {shown}"
              f" ({st['elapsed'] / 60:.1f} min){' *' if improved else ''}", flush=True)  # fmt: skip

    def checkpoint(self) -> None:
        """Write ``last.pt``: weights, optimiser, loop state, random states and settings (atomically)."""
        payload = {
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": self.state,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": _np_state_to(np.random.get_state()),
            "train_config": _plain(asdict(self.cfg)),
        }
        torch.save(payload, self.out_dir / "last.tmp")
        os.replace(self.out_dir / "last.tmp", self.last_path)

    # ------------------------------------------------------------------ the end

    def summarise(self) -> dict:
        """Scores of ``best.pt`` (and of the mean predictor) on the held-out splits; writes ``summary.json``."""
        cfg = self.cfg
        best = load_model(self.out_dir / "best.pt", self.device)
        summary = {"best_epoch": self.state["best_epoch"], "epochs_run": self.state["epoch"],
                   "train_time_s": self.state["elapsed"], "parameters": count_parameters(best),
                   "data_report": self.report.to_dict(), "trained_on": "train+val" if cfg.train_on_val else "train"}  # fmt: skip
        mean_pred = self.packed.targets[self.idx["train"]].mean(0)
        for part in ("test",) if cfg.train_on_val else ("val", "test"):
            pred = predict_packed(best, self.packed, self.idx[part], self.device)
            true = self.packed.targets[self.idx[part]]
            summary[part] = {t: regression_metrics(pred[:, j], true[:, j]) for j, t in enumerate(cfg.targets)}
            summary[part + "_mean_predictor"] = {
                t: regression_metrics(np.full(len(true), mean_pred[j]), true[:, j]) for j, t in enumerate(cfg.targets)
            }
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps({k: summary[k] for k in ("best_epoch", "epochs_run", "train_time_s", "test")}, indent=1))
        return summary


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Train a model with :class:`Trainer`; returns the final summary (also in ``<out>/summary.json``)."""
    return Trainer(cfg, resume).fit()
