"""The settings of a training run, in one place.

:class:`TrainConfig` holds the training settings and two parts that are defined where they belong:
``network`` (a :class:`~sen.model.SENConfig`: width, capsules, dropout, ...) and ``graph`` (a
:class:`~sen.graph.GraphConfig`: cutoff, neighbours, symmetry tolerance). A TOML file may give any of
them as flat keys (``width = 96``, ``cutoff = 8.0``) or in ``[network]`` / ``[graph]`` tables, and
``sen train`` has one option per field, generated from these dataclasses (:func:`override_options`):
a new setting is one new field.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from sen.graph import GraphConfig
from sen.model import SENConfig
from sen.training.data import DEFAULT_DATA

ARCHITECTURES = ("sen", "cgcnn")
DATA_FORMATS = ("jsonl", "matbench", "cgcnn", "csv")
#: Network settings that come from the data, not from the user.
_DERIVED_NETWORK_FIELDS = ("targets", "target_stats")


def _help(text: str, **more) -> dict:
    return {"help": text, **more}


@dataclass
class TrainConfig:
    """Everything that defines a training run. Load from TOML with :meth:`from_file`."""

    data: str = field(default=str(DEFAULT_DATA), metadata=_help("dataset: folder of .jsonl(.gz), Matbench "
                                                                 ".json(.gz), CGCNN folder, or CSV"))  # fmt: skip
    data_format: str | None = field(default=None, metadata=_help("format of --data", choices=DATA_FORMATS))
    targets: tuple[str, ...] = field(
        default=("formation_energy_per_atom", "band_gap"),
        metadata=_help("comma-separated target columns (default formation_energy_per_atom,band_gap)"),
    )
    arch: str = field(default="sen", metadata=_help("network architecture", choices=ARCHITECTURES))
    out: str = field(default="runs/sen", metadata=_help("output folder for checkpoints, logs and the split"))
    cache_dir: str = field(default=".cache/sen", metadata=_help("where featurised datasets are cached"))
    network: SENConfig = field(default_factory=SENConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    epochs: int = field(default=60, metadata=_help("epochs (the cosine learning-rate schedule spans them)"))
    batch_size: int = field(default=64, metadata=_help("crystals per step"))
    lr: float = field(default=2e-3, metadata=_help("peak learning rate"))
    weight_decay: float = field(default=1e-5, metadata=_help("AdamW weight decay"))
    init_from: str | None = field(default=None, metadata=_help(
        "start from trained weights (model.pt, its folder or a shipped model's name)"))  # fmt: skip
    warmup_epochs: float = field(default=1.0, metadata=_help("linear learning-rate warm-up, in epochs"))
    patience: int = field(default=15, metadata=_help("early stopping: epochs without validation improvement"))
    seed: int = field(default=0, metadata=_help("weights and data order (and the split, unless --split-seed)"))
    split_seed: int | None = field(default=None, metadata=_help("seed of the train/val/test split (default: --seed)"))
    loss_weights: dict = field(default_factory=dict)  # {target: weight} in the loss and validation score; default 1
    train_on_val: bool = field(default=False, metadata=_help(
        "final refit: train on train + validation crystals (no early stopping; test stays held out)"))  # fmt: skip
    device: str = field(default="auto", metadata=_help("auto, cpu or cuda"))
    time_limit_min: float | None = field(default=None, metadata=_help("stop after this many minutes of training"))
    threads: int | None = field(default=None, metadata=_help("torch CPU threads"))
    workers: int | None = field(default=None, metadata=_help("featurisation processes"))
    limit: int | None = field(default=None, metadata=_help("use only the first N records"))
    max_atoms: int = field(default=500, metadata=_help("skip crystals with more atoms than this"))
    progress: bool = True  # progress bars (``--no-progress`` turns them off)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TrainConfig:
        """Read a TOML file, then apply keyword overrides (flat names, as on the command line) that are not None."""
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from flat or nested settings, rejecting unknown names with a clear message."""
        own = {f.name for f in fields(cls)} - {"network", "graph"}
        network_names = {f.name for f in fields(SENConfig)} - set(_DERIVED_NETWORK_FIELDS)
        graph_names = {f.name for f in fields(GraphConfig)}
        values = dict(values)
        network = dict(values.pop("network", {}))
        graph = dict(values.pop("graph", {}))
        unknown = set(network) - network_names | set(graph) - graph_names
        mine = {}
        for key, value in values.items():
            if key in own:
                mine[key] = value
            elif key in network_names:
                network[key] = value
            elif key in graph_names:
                graph[key] = value
            else:
                unknown.add(key)
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        if "targets" in mine:
            t = mine["targets"]
            mine["targets"] = tuple(t.split(",")) if isinstance(t, str) else tuple(t)
        cfg = cls(**mine, network=SENConfig(**network), graph=GraphConfig(**graph))
        cfg.check()
        return cfg

    def check(self) -> None:
        """Raise ValueError (one line) for settings that cannot work together."""
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        if not 0.0 <= self.network.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.network.dropout}")
        for t, w in self.loss_weights.items():
            if t not in self.targets:
                raise ValueError(f"loss_weights names {t!r}, which is not a target ({', '.join(self.targets)})")
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
                raise ValueError(f"loss weight of {t} must be a positive number, got {w!r}")

    def weight(self, target: str) -> float:
        """This target's weight in the loss and in the validation score."""
        return float(self.loss_weights.get(target, 1.0))

    def network_config(self, target_stats: dict[str, tuple[float, float]]) -> SENConfig:
        """The network's settings for this run's targets, standardised with ``target_stats``."""
        return replace(self.network, targets=tuple(self.targets), target_stats=dict(target_stats))

    @property
    def split_seed_used(self) -> int:
        """The seed that draws the train/val/test split."""
        return self.seed if self.split_seed is None else self.split_seed


def override_options() -> list[tuple[str, object, dict]]:
    """``(name, type, argparse keywords)`` for every setting ``sen train`` can override, in field order:
    the training settings, then the network's and the featuriser's."""
    rows = []
    skipped = {TrainConfig: {"network", "graph", "loss_weights", "extra", "progress"},
               SENConfig: set(_DERIVED_NETWORK_FIELDS), GraphConfig: set()}  # fmt: skip
    for owner in (TrainConfig, SENConfig, GraphConfig):
        for f in fields(owner):
            if f.name in skipped[owner]:
                continue
            kind = str(f.type)
            meta = dict(f.metadata)
            help_text = meta.pop("help", None) or f"{owner.__name__}.{f.name} (default {f.default})"
            if kind.startswith("bool"):
                rows.append((f.name, bool, {"action": "store_true", "default": None, "help": help_text, **meta}))
                continue
            parse = int if kind.startswith("int") else float if kind.startswith("float") else str
            rows.append((f.name, parse, {"type": parse, "help": help_text, **meta}))
    return rows
