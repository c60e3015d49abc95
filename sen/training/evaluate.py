"""``sen evaluate``: metrics and parity plots for a trained model on a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sen.model import TARGET_UNITS
from sen.predict import Predictor
from sen.training.data import PackedGraphs, load_dataset, split_ids
from sen.training.metrics import predict_packed, regression_metrics


def evaluate(
    model: str | Path,
    data: str | Path,
    *,
    targets: tuple[str, ...] | None = None,
    fmt: str | None = None,
    split: str = "all",
    out_dir: str | Path = "evaluation",
    device: str | None = None,
    cache_dir: str | Path | None = ".cache/sen",
) -> dict:
    """Evaluate ``model`` on ``data``; write ``metrics.json`` and parity plots (HTML and PNG) to ``out_dir``.

    ``split`` selects ``train``/``val``/``test`` ids from the ``split.json`` stored beside the
    model (the split it was trained with), or ``all`` records.
    """
    predictor = Predictor.load(model, device=device)
    targets = targets or predictor.targets
    missing = [t for t in targets if t not in predictor.targets]
    if missing:
        raise ValueError(f"the model does not predict {', '.join(missing)}; it predicts {', '.join(predictor.targets)}")
    packed, report = load_dataset(data, targets, fmt=fmt, graph_config=predictor.graph_config, cache_dir=cache_dir)
    indices = split_indices(predictor, packed, split)
    if len(indices) == 0:
        raise ValueError(f"no crystals of the {split!r} split are in {data}")
    pred_all = predict_packed(predictor.model, packed, indices, predictor.device)
    order = [predictor.targets.index(t) for t in targets]
    col = {t: packed.target_names.index(t) for t in targets}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {}
    for t, j in zip(targets, order, strict=False):
        pred, true = pred_all[:, j], packed.targets[indices, col[t]]
        metrics[t] = regression_metrics(pred, true)
        parity_plot(true, pred, t, out_dir / f"parity_{t}", metrics[t])
    result = {
        "model": str(model),
        "data": str(data),
        "split": split,
        "metrics": metrics,
        "data_report": report.to_dict(),
    }
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    return result


def split_indices(predictor: Predictor, packed: PackedGraphs, split: str) -> np.ndarray:
    """Indices of the crystals of ``packed`` in one part (``train``/``val``/``test``) of the model's split.

    The ids come from the ``split.json`` stored beside the model (the split it was trained
    with); ``all`` selects every crystal.
    """
    if split == "all":
        return np.arange(len(packed))
    split_file = predictor.path.parent / "split.json"
    if split_file.is_file():
        wanted = set(json.loads(split_file.read_text())[split])
    else:  # the split is a pure function of (seed, id): recompute it
        wanted = set(split_ids(packed.ids, seed=int(predictor.card.get("seed", 0)))[split])
    return np.array([i for i, cid in enumerate(packed.ids) if cid in wanted], dtype=np.int64)


def parity_plot(true: np.ndarray, pred: np.ndarray, target: str, stem: Path, metrics: dict) -> None:
    """Predicted vs true: interactive plotly HTML (``stem.html``) and a static PNG (``stem.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    unit = TARGET_UNITS.get(target, "")
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    title = f"{target}: MAE {metrics['mae']:.4f} {unit}, R² {metrics['r2']:.3f} (n = {metrics['n']})"
    fig = go.Figure(
        [
            go.Scattergl(x=true, y=pred, mode="markers", marker={"size": 4, "opacity": 0.5}, name="crystals"),
            go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dash", "color": "black"}, name="y = x"),
        ]
    )
    fig.update_layout(title=title, xaxis_title=f"DFT {target} ({unit})", yaxis_title=f"SEN {target} ({unit})")
    fig.write_html(str(stem) + ".html", include_plotlyjs=True)
    plt.figure(figsize=(5, 5))
    plt.scatter(true, pred, s=3, alpha=0.4)
    plt.plot([lo, hi], [lo, hi], "k--", lw=1)
    plt.xlabel(f"DFT {target} ({unit})")
    plt.ylabel(f"SEN {target} ({unit})")
    plt.title(title, fontsize=8)
    plt.tight_layout()
    plt.savefig(str(stem) + ".png", dpi=120)
    plt.close()
