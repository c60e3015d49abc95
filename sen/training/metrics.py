"""Scores and batch prediction over a packed dataset (used by training, evaluation and packaging)."""

from __future__ import annotations

import numpy as np
import torch

from sen.graph import collate
from sen.training.data import PackedGraphs


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
