"""Weights on disk: save and load networks and ensembles, check their format version, find shipped models.

A checkpoint is a plain dict of tensors and Python values (safe for ``torch.load(..., weights_only=True)``):
``version``, ``arch`` (``"sen"``, ``"cgcnn"`` or ``"ensemble"``), each network's ``model_config`` and
``state_dict``, the featuriser's ``graph_config`` and free-form ``extra`` (epoch, validation MAE, ...).

Shipped models are package data: ``sen/models/<name>/model.pt`` beside its model card, found the same
way in a source checkout and in an installed wheel; ``SEN_MODELS_DIR`` points elsewhere.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path

import torch

from sen.errors import first_line
from sen.graph import GraphConfig
from sen.model import SEN, Ensemble, SENConfig

#: Format of the files written here; :func:`load_model` refuses other versions.
CHECKPOINT_VERSION = 1
#: Where shipped models live: inside the package, unless ``SEN_MODELS_DIR`` says otherwise.
MODELS_DIR = Path(os.environ.get("SEN_MODELS_DIR", Path(__file__).resolve().parent / "models"))
DEFAULT_MODEL = "sen_mp"


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message names the file and what is wrong with it."""


def pick_device(name: str | None = "auto") -> torch.device:
    """CUDA when present (or asked for), otherwise the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_network(arch: str, config: SENConfig, graph_config: GraphConfig | None = None) -> torch.nn.Module:
    """An untrained network of architecture ``arch`` (``"sen"`` or the ``"cgcnn"`` baseline) that reads
    graphs made with ``graph_config``."""
    if arch == "sen":
        return SEN(config, graph_config)
    if arch == "cgcnn":  # the baseline is a training-side comparison, imported only when asked for
        from sen.training.baseline import CGCNN

        return CGCNN(config, graph_config)
    raise ValueError(f"unknown architecture {arch!r}")


def _plain(obj):
    """Make a value JSON / ``weights_only`` friendly (tuples -> lists)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


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


def save_model(path: Path, model: torch.nn.Module, extra: dict | None = None) -> None:
    """Save one network with the featuriser settings it reads (``model.graph_config``)."""
    payload = {"version": CHECKPOINT_VERSION, **_network(model), "graph_config": asdict(model.graph_config),
               "extra": _plain(extra or {})}  # fmt: skip
    _save(payload, Path(path))


def save_ensemble(
    path: Path,
    members: list[torch.nn.Module],
    extra: dict | None = None,
    target_members: dict[str, list[int]] | None = None,
) -> None:
    """Save trained networks (same targets and featuriser) as one :class:`~sen.model.Ensemble` file;
    ``target_members`` as in :class:`~sen.model.Ensemble` (default: every network for every target)."""
    graphs = [m.graph_config for m in members]
    if any(g != graphs[0] for g in graphs):
        raise ValueError("ensemble members were trained with different featuriser settings")
    ensemble = Ensemble(members, target_members)  # checks the targets and the choice of members
    payload = {"version": CHECKPOINT_VERSION, "arch": "ensemble", "members": [_network(m) for m in members],
               "target_members": ensemble.target_members, "graph_config": asdict(graphs[0]),
               "extra": _plain(extra or {})}  # fmt: skip
    _save(payload, Path(path))


def resolve_model_path(name_or_path: str | Path) -> Path:
    """The weights file for a file path, a shipped model's name, or a folder holding ``model.pt``
    (a shipped model) or ``best.pt`` (a ``sen train`` run).

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


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """The payload of a weights file (``weights_only=True``), checked for its format and version.

    Raises:
        CheckpointError: the file is not a SEN weights file of this version (one line naming it).
    """
    name = Path(path).name
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError,
            AttributeError, TypeError, IndexError, KeyError) as exc:  # fmt: skip
        reason = "it is empty" if Path(path).stat().st_size == 0 else "it is damaged or not a torch weights file"
        if isinstance(exc, pickle.UnpicklingError):
            reason = "it holds objects other than tensors and plain values (refused for safety)"
        raise CheckpointError(f"{name} is not a usable SEN weights file: {reason}") from None
    if not isinstance(payload, dict) or "arch" not in payload:
        raise CheckpointError(f"{name} is not a SEN weights file: it has no architecture record")
    version = payload.get("version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{name} is a version {version} weights file; this sen reads version {CHECKPOINT_VERSION} "
            "(use the sen release that wrote it, or retrain)"
        )
    return payload


def load_model(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Load a model saved by :func:`save_model` or :func:`save_ensemble`, in eval mode.

    Raises:
        CheckpointError: the file is damaged, of another version, or not a SEN weights file.
    """
    payload = read_checkpoint(path, device)
    name = Path(path).name

    def build(entry: dict) -> torch.nn.Module:
        try:
            graph = GraphConfig(**payload["graph_config"])
            net = build_network(entry["arch"], SENConfig.from_dict(entry["model_config"]), graph)
            net.load_state_dict(entry["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{name}: its weights do not fit the network it describes ({first_line(exc, 120)})") from None
        return net

    try:
        if payload["arch"] == "ensemble":
            model = Ensemble([build(m) for m in payload["members"]], payload.get("target_members"))
        else:
            model = build(payload)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{name}: incomplete SEN weights file (missing or wrong {exc})") from None
    model.extra = payload.get("extra", {})
    return model.to(device).eval()
