"""Training and evaluation loops for SEN (and the CGCNN-style baseline).

``sen train`` calls :func:`train`; every epoch it writes ``last.pt`` (everything needed
to resume), ``best.pt`` when validation MAE improves (what ships), a CSV log, and the
split. ``torchrun --nproc_per_node=G -m sen train ...`` trains data-parallel on G
processes (NCCL on GPUs, gloo on the CPU).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from sen.data import DEFAULT_DATA, PackedGraphs, load_dataset, split_ids
from sen.graph import GraphConfig, collate
from sen.model import SEN, Ensemble, SENConfig, count_parameters

ARCHITECTURES = ("sen", "cgcnn")
MODELS_DIR = Path(os.environ.get("SEN_MODELS_DIR", Path(__file__).resolve().parent.parent / "models"))
CHECKPOINT_VERSION = 1


@dataclass
class TrainConfig:
    """Everything that defines a training run. Load from TOML with :meth:`from_file`."""

    data: str = str(DEFAULT_DATA)
    data_format: str | None = None
    targets: tuple[str, ...] = ("formation_energy_per_atom", "band_gap")
    arch: str = "sen"
    out: str = "runs/sen"
    cache_dir: str = ".cache/sen"
    width: int = 96
    n_conv: int = 3
    n_capsules: int = 8
    capsule_dim: int = 16
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-5
    dropout: float = 0.0
    init_from: str | None = None  # start from these weights (model.pt, its folder or a name under models/)
    warmup_epochs: float = 1.0
    patience: int = 15
    seed: int = 0  # weights and data order (and the split, unless split_seed is given)
    split_seed: int | None = None  # the train/val/test split's seed; keep it to train more networks on one split
    loss_weights: dict = field(default_factory=dict)  # {target: weight} in the loss and validation score; default 1
    # Final refit: train on the training and validation crystals together, once the recipe (and, for an
    # ensemble, its networks) has been chosen on validation. Nothing is left to validate on, so there is no
    # early stopping, best.pt is the last epoch and the log's validation columns stay empty; test stays held out.
    train_on_val: bool = False
    device: str = "auto"
    time_limit_min: float | None = None  # stop (and finish the LR schedule) within this many minutes
    threads: int | None = None
    workers: int | None = None  # featurisation processes
    limit: int | None = None  # use only the first N records (quick experiments)
    max_atoms: int = 500
    cutoff: float = 8.0
    max_neighbors: int = 12
    symprec: float = 0.01
    progress: bool = True
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TrainConfig:
        """Read a TOML file, then apply keyword overrides that are not None."""
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict, rejecting unknown keys with a clear message."""
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        if "targets" in values:
            t = values["targets"]
            values["targets"] = tuple(t.split(",")) if isinstance(t, str) else tuple(t)
        cfg = cls(**values)
        if cfg.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {cfg.arch!r}")
        if not 0.0 <= cfg.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")
        for t, w in cfg.loss_weights.items():
            if t not in cfg.targets:
                raise ValueError(f"loss_weights names {t!r}, which is not a target ({', '.join(cfg.targets)})")
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
                raise ValueError(f"loss weight of {t} must be a positive number, got {w!r}")
        return cfg

    def weight(self, target: str) -> float:
        """This target's weight in the loss and in the validation score."""
        return float(self.loss_weights.get(target, 1.0))

    @property
    def graph_config(self) -> GraphConfig:
        """Featuriser settings for this run."""
        return GraphConfig(cutoff=self.cutoff, max_neighbors=self.max_neighbors, symprec=self.symprec)

    @property
    def split_seed_used(self) -> int:
        """The seed that draws the train/val/test split."""
        return self.seed if self.split_seed is None else self.split_seed


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present (or asked for), otherwise the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(arch: str, config: SENConfig) -> torch.nn.Module:
    """Instantiate an architecture by name."""
    if arch == "sen":
        return SEN(config)
    if arch == "cgcnn":
        from sen.baseline import CGCNN

        return CGCNN(config)
    raise ValueError(f"unknown architecture {arch!r}")


# ----------------------------------------------------------------------------- loss and metrics


def is_gap_target(name: str) -> bool:
    """Targets whose name mentions a gap get the metal / non-metal gate."""
    return "gap" in name


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
            total = total + w * F.binary_cross_entropy_with_logits(out["band_gap_logit"], positive)
            # mean amplitude error over the non-metals (none: no term), as a masked mean: no host-device sync
            amp_err = ((out["band_gap_amplitude"] - y[:, j]).abs() * positive).sum() / positive.sum().clamp(min=1.0)
            total = total + w * amp_err / std
        else:
            total = total + w * (out[t] - y[:, j]).abs().mean() / std
    return total


def regression_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² (coefficient of determination)."""
    err = pred - true
    ss_tot = float(((true - true.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": float(1.0 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        "n": int(len(true)),
    }


@torch.no_grad()
def predict_outputs(
    model, packed: PackedGraphs, indices: np.ndarray, device="cpu", batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Everything ``model`` returns (targets, metal probability, gap amplitude, ensemble spreads), one
    value per crystal of ``indices`` of a packed dataset, on the CPU."""
    model.eval()
    parts = [
        model(collate([packed.graph(i) for i in indices[start : start + batch_size]]).to(device))
        for start in range(0, len(indices), batch_size)
    ]
    if not parts:
        return {t: torch.zeros(0) for t in model.config.targets}
    return {k: torch.cat([p[k].cpu() for p in parts]) for k in parts[0]}


def predict_packed(model, packed: PackedGraphs, indices: np.ndarray, device, batch_size: int = 256) -> np.ndarray:
    """Predictions (C, T) in physical units for the crystals ``indices`` of a packed dataset."""
    out = predict_outputs(model, packed, indices, device, batch_size)
    return torch.stack([out[t] for t in model.config.targets], dim=-1).numpy()


# ----------------------------------------------------------------------------- the loop


def _distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then cosine decay to 2 % of the peak; ``progress`` in [0, 1]."""
    if progress < warmup:
        return max(progress / warmup, 0.02)
    p = min((progress - warmup) / max(1.0 - warmup, 1e-9), 1.0)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * p))


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Train a model; returns the final summary (also written to ``<out>/summary.json``)."""
    rank, world = _distributed()
    main = rank == 0
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    out_dir = Path(cfg.out)
    last_path = out_dir / "last.pt"
    source = None  # weights to start from; their target scaling stays for the whole run, resumes included
    if cfg.init_from:
        source = load_model(resolve_model_path(cfg.init_from))
        if isinstance(source, Ensemble):  # start from its first network
            source = source.members[0]
        _check_same_shape(source, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)

    if world > 1 and not main:
        dist.barrier()  # rank 0 featurises and fills the cache first; the other ranks then read it
    try:
        packed, report = load_dataset(
            cfg.data, cfg.targets, fmt=cfg.data_format, graph_config=cfg.graph_config, cache_dir=cfg.cache_dir,
            workers=cfg.workers, max_atoms=cfg.max_atoms, limit=cfg.limit, progress=cfg.progress and main,
        )  # fmt: skip
    finally:
        if world > 1 and main:
            dist.barrier()
    if main:
        print(report)
    split = split_ids(packed.ids, seed=cfg.split_seed_used)
    index_of = {cid: i for i, cid in enumerate(packed.ids)}
    idx = {k: np.array([index_of[c] for c in v], dtype=np.int64) for k, v in split.items()}
    if len(idx["train"]) == 0 or len(idx["val"]) == 0:
        raise ValueError(f"dataset too small to split: {len(packed)} usable crystals")
    if main:
        (out_dir / "split.json").write_text(json.dumps({"seed": cfg.split_seed_used, **split}))
        (out_dir / "data_report.json").write_text(json.dumps(report.to_dict(), indent=1))

    fit = np.concatenate([idx["train"], idx["val"]]) if cfg.train_on_val else idx["train"]
    y_train = packed.targets[idx["train"]]
    stats = {}
    for j, t in enumerate(cfg.targets):
        col = y_train[:, j]
        stats[t] = (float(col.mean()), float(col.std() or 1.0))
    model_config = SENConfig(
        width=cfg.width, n_conv=cfg.n_conv, cutoff=cfg.cutoff, n_capsules=cfg.n_capsules,
        capsule_dim=cfg.capsule_dim, dropout=cfg.dropout, targets=tuple(cfg.targets), target_stats=stats,
    )  # fmt: skip
    if source is not None:
        model_config.target_stats = dict(source.config.target_stats)  # continue on its output scale
    model = build_model(cfg.arch, model_config).to(device)
    if source is not None and not (resume and last_path.is_file()):
        model.load_state_dict(source.state_dict())
        if main:
            print(f"starting from the weights of {cfg.init_from}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "step": 0, "elapsed": 0.0, "best": math.inf, "best_epoch": -1, "bad_epochs": 0}
    if resume and last_path.is_file():
        ckpt = torch.load(last_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])
        torch.set_rng_state(ckpt["torch_rng"])
        np.random.set_state(_np_state_from(ckpt["numpy_rng"]))
        if main:
            print(f"resumed from {last_path} at epoch {state['epoch']}")
    train_model = model
    if world > 1:
        # the last convolution's edge update feeds nothing, so some parameters get no gradient
        train_model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)

    weights = {t: cfg.weight(t) for t in cfg.targets}
    n_train = len(fit)
    steps_per_epoch = max(1, math.ceil(n_train / (cfg.batch_size * world)))
    total_steps = steps_per_epoch * cfg.epochs
    warmup = cfg.warmup_epochs / max(cfg.epochs, 1)
    time_limit = cfg.time_limit_min * 60 if cfg.time_limit_min else None
    if main:
        print(f"{cfg.arch}: {count_parameters(model):,} parameters on {device}; "
              f"{len(idx['train'])} train / {len(idx['val'])} val / {len(idx['test'])} test crystals"
              + (f"; training on train + val ({n_train}), no validation" if cfg.train_on_val else ""))  # fmt: skip
    log_path = out_dir / "log.csv"
    header = (["epoch", "elapsed_s", "lr", "train_loss"] + [f"train_mae_{t}" for t in cfg.targets]
              + [f"val_mae_{t}" for t in cfg.targets] + ["val_score"])  # fmt: skip
    if main and resume and log_path.is_file():
        with open(log_path, newline="") as fh:
            header = next(csv.reader(fh), header)  # keep the columns of the log being continued
    elif main:
        with open(log_path, "w", newline="") as fh:
            csv.writer(fh).writerow(header)

    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        t0 = time.time()
        train_model.train()
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)
        order = rng.permutation(fit)
        if world > 1:  # equal shards (wrap around, as DistributedSampler does): every rank runs the same steps
            order = np.resize(order, math.ceil(len(order) / world) * world)
        order = order[rank::world]
        losses = []  # per-step losses, kept on the device (no sync per step) until the epoch ends
        abs_err = torch.zeros(len(cfg.targets), dtype=torch.float64, device=device)  # running train MAE
        n_seen = 0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not (cfg.progress and main),
            leave=False,
        )
        for b in bar:
            sel = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            if len(sel) == 0:
                continue
            progress = state["step"] / total_steps
            if time_limit:
                progress = max(progress, (state["elapsed"] + time.time() - t0) / time_limit)
            lr = cfg.lr * _lr_factor(min(progress, 1.0), warmup)
            for g in optimizer.param_groups:
                g["lr"] = lr
            batch = collate([packed.graph(i) for i in sel]).to(device)
            y = torch.from_numpy(packed.targets[sel]).to(device)
            out = train_model(batch)
            loss = loss_fn(out, y, model_config, weights)
            with torch.no_grad():
                pred = torch.stack([out[t] for t in cfg.targets], dim=-1)
                abs_err += (pred - y).abs().sum(0).double()
                n_seen += len(sel)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            state["step"] += 1
            losses.append(loss.detach())
            if b % 20 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{float(torch.stack(losses[-50:]).mean()):.3f}", lr=f"{lr:.1e}")
        train_loss = float(torch.stack(losses).mean()) if losses else float("nan")  # one read-back per epoch
        abs_err = abs_err.cpu()
        state["elapsed"] += time.time() - t0
        state["epoch"] = epoch + 1

        if main and cfg.train_on_val:  # nothing held out to choose by: keep the latest epoch
            state.update(best_epoch=epoch + 1)
            save_model(out_dir / "best.pt", model, cfg, extra={"epoch": epoch + 1, "trained_on": "train+val"})
            maes, score, improved = [], None, True
        elif main:
            pred = predict_packed(model, packed, idx["val"], device)
            true = packed.targets[idx["val"]]
            maes = [float(np.abs(pred[:, j] - true[:, j]).mean()) for j in range(len(cfg.targets))]
            score = sum(weights[t] * m / stats[t][1] for m, t in zip(maes, cfg.targets, strict=True)) / sum(
                weights.values()
            )
            improved = score < state["best"]
            if improved:
                state.update(best=score, best_epoch=epoch + 1, bad_epochs=0)
                save_model(
                    out_dir / "best.pt",
                    model,
                    cfg,
                    extra={"epoch": epoch + 1, "val_mae": dict(zip(cfg.targets, maes, strict=False))},
                )
            else:
                state["bad_epochs"] += 1
        if main:
            row = {"epoch": epoch + 1, "elapsed_s": f"{state['elapsed']:.1f}", "lr": f"{lr:.3e}",
                   "train_loss": f"{train_loss:.4f}", "val_score": "" if score is None else f"{score:.5f}"}  # fmt: skip
            for j, t in enumerate(cfg.targets):
                row[f"train_mae_{t}"] = f"{float(abs_err[j]) / max(n_seen, 1):.5f}"
                row[f"val_mae_{t}"] = f"{maes[j]:.5f}" if maes else ""
            with open(log_path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=header, extrasaction="ignore", restval="").writerow(row)
            shown = maes or [float(a) / max(n_seen, 1) for a in abs_err]
            print(f"epoch {epoch + 1}: loss {train_loss:.4f} {'val' if maes else 'train (train + val)'} MAE "
                  + ", ".join(f"{t} {m:.4f}" for t, m in zip(cfg.targets, shown, strict=False))
                  + f" ({state['elapsed'] / 60:.1f} min){' *' if improved else ''}", flush=True)  # fmt: skip
            torch.save(
                {
                    "version": CHECKPOINT_VERSION,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "state": state,
                    "torch_rng": torch.get_rng_state(),
                    "numpy_rng": _np_state_to(np.random.get_state()),
                    "train_config": _plain(asdict(cfg)),
                },
                out_dir / "last.tmp",
            )
            os.replace(out_dir / "last.tmp", last_path)
        stop = state["bad_epochs"] >= cfg.patience or (time_limit is not None and state["elapsed"] >= time_limit)
        if world > 1:
            flag = torch.tensor([int(stop)], device=device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            break

    summary = {}
    if main:
        best = load_model(out_dir / "best.pt", device)
        summary = {"best_epoch": state["best_epoch"], "epochs_run": state["epoch"], "train_time_s": state["elapsed"],
                   "parameters": count_parameters(best), "data_report": report.to_dict(),
                   "trained_on": "train+val" if cfg.train_on_val else "train"}  # fmt: skip
        for part in ("test",) if cfg.train_on_val else ("val", "test"):
            pred = predict_packed(best, packed, idx[part], device)
            true = packed.targets[idx[part]]
            summary[part] = {t: regression_metrics(pred[:, j], true[:, j]) for j, t in enumerate(cfg.targets)}
            mean_pred = y_train.mean(0)
            summary[part + "_mean_predictor"] = {
                t: regression_metrics(np.full(len(true), mean_pred[j]), true[:, j]) for j, t in enumerate(cfg.targets)
            }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps({k: summary[k] for k in ("best_epoch", "epochs_run", "train_time_s", "test")}, indent=1))
    if dist.is_initialized():
        dist.destroy_process_group()
    return summary


def _plain(obj):
    """Make a config JSON/weights_only friendly (tuples -> lists)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _np_state_to(st):
    return {"keys": torch.from_numpy(st[1].astype(np.int64)), "pos": st[2], "has_gauss": st[3], "gauss": st[4]}


def _np_state_from(d):
    return ("MT19937", d["keys"].numpy().astype(np.uint32), int(d["pos"]), int(d["has_gauss"]), float(d["gauss"]))


# ----------------------------------------------------------------------------- saving and loading models


def save_model(path: Path, model: torch.nn.Module, cfg: TrainConfig | None = None, extra: dict | None = None) -> None:
    """Save weights plus everything needed to rebuild the model (safe for ``weights_only=True``)."""
    graph = cfg.graph_config if cfg else GraphConfig(cutoff=model.config.cutoff)
    _save({"version": CHECKPOINT_VERSION, **_network(model), "graph_config": asdict(graph), "extra": _plain(extra or {})},
          path)  # fmt: skip


def _arch(model: torch.nn.Module) -> str:
    return "cgcnn" if type(model).__name__ == "CGCNN" else "sen"


def _network(model: torch.nn.Module) -> dict:
    """One network's architecture, hyper-parameters and weights (plain tensors and values only)."""
    return {
        "arch": _arch(model),
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def _save(payload: dict, path: Path) -> None:
    tmp = Path(str(path) + ".tmp")  # written whole, then renamed: a reader never sees half a file
    torch.save(payload, tmp)
    os.replace(tmp, path)


def resolve_model_path(name_or_path: str | Path) -> Path:
    """The weights file for a file path, a model name under ``models/``, or a folder holding
    ``model.pt`` (a shipped model) or ``best.pt`` (a ``sen train`` run).

    Raises:
        FileNotFoundError: no weights there (the message says how to get them).
    """
    path = Path(name_or_path)
    if not path.exists():
        path = MODELS_DIR / str(name_or_path)
    if path.is_dir():
        path = next((path / f for f in ("model.pt", "best.pt") if (path / f).is_file()), path / "model.pt")
    if not path.is_file():
        raise FileNotFoundError(
            f"no model weights at {path}; train some with `sen train` or pass the path of a model.pt"
        )
    return path


def _check_same_shape(source: torch.nn.Module, cfg: TrainConfig) -> None:
    """``--init-from`` needs the same architecture, targets and featuriser as the run it continues."""
    src = source.config
    mine = {"arch": cfg.arch, "targets": tuple(cfg.targets), "width": cfg.width, "n_conv": cfg.n_conv,
            "n_capsules": cfg.n_capsules, "capsule_dim": cfg.capsule_dim, "cutoff": cfg.cutoff,
            "max_neighbors": cfg.max_neighbors, "symprec": cfg.symprec}  # fmt: skip
    theirs = {"arch": _arch(source), "targets": tuple(src.targets), "width": src.width, "n_conv": src.n_conv,
              "n_capsules": src.n_capsules, "capsule_dim": src.capsule_dim, "cutoff": source.graph_config.cutoff,
              "max_neighbors": source.graph_config.max_neighbors, "symprec": source.graph_config.symprec}  # fmt: skip
    differ = [f"{k} {mine[k]} vs {theirs[k]}" for k in mine if mine[k] != theirs[k]]
    if differ:
        raise ValueError(f"--init-from {cfg.init_from}: this run differs from those weights in " + "; ".join(differ))


def save_ensemble(
    path: Path,
    members: list[torch.nn.Module],
    extra: dict | None = None,
    target_members: dict[str, list[int]] | None = None,
) -> None:
    """Save trained networks (same targets and featuriser) as one :class:`~sen.model.Ensemble` file;
    ``target_members`` as in :class:`~sen.model.Ensemble` (default: every network for every target)."""
    graphs = [getattr(m, "graph_config", None) or GraphConfig(cutoff=m.config.cutoff) for m in members]
    if any(g != graphs[0] for g in graphs):
        raise ValueError("ensemble members were trained with different featuriser settings")
    ensemble = Ensemble(members, target_members)  # checks the targets and the choice of members
    payload = {"version": CHECKPOINT_VERSION, "arch": "ensemble", "members": [_network(m) for m in members],
               "target_members": ensemble.target_members, "graph_config": asdict(graphs[0]),
               "extra": _plain(extra or {})}  # fmt: skip
    _save(payload, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Load a model saved by :func:`save_model` or :func:`save_ensemble` (``weights_only=True``), in eval mode."""
    payload = torch.load(path, map_location=device, weights_only=True)

    def build(entry: dict) -> torch.nn.Module:
        net = build_model(entry["arch"], SENConfig.from_dict(entry["model_config"]))
        net.load_state_dict(entry["state_dict"])
        return net

    if payload["arch"] == "ensemble":
        model = Ensemble([build(m) for m in payload["members"]], payload.get("target_members"))
    else:
        model = build(payload)
    model.graph_config = GraphConfig(**payload["graph_config"])
    for member in getattr(model, "members", ()):  # each network knows its featuriser, as a single one does
        member.graph_config = model.graph_config
    model.extra = payload.get("extra", {})
    return model.to(device).eval()
