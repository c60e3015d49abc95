"""The public API: ``Predictor.load()``, ``predict(structures)``, ``explain(structure)``.

Units: ``band_gap`` in eV (PBE/GGA+U level, never negative), ``formation_energy_per_atom``
in eV/atom. Runs on CUDA when present, otherwise on the CPU.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Structure

from sen.allocator import keep_freed_memory
from sen.checkpoint import DEFAULT_MODEL, load_model, pick_device, resolve_model_path
from sen.checkpoint import MODELS_DIR as MODELS_DIR  # re-exported: where shipped models live (SEN_MODELS_DIR)
from sen.errors import StructureError
from sen.graph import GraphConfig, build_graph, collate, merge_edges, orbit_graph
from sen.io import DEFAULT_MAX_ATOMS, validate_structure
from sen.model import SEN, Ensemble, SENConfig
from sen.stacked import StackedSEN
from sen.symmetry import SymmetryReport, analyze_symmetry

#: From this many crystals in one batch on a CPU, the process keeps freed memory for the next batch
#: (:func:`sen.allocator.keep_freed_memory`). The app's server predicts one or two crystals at a time,
#: where it gains nothing measurable, and a process-wide setting is best left to the processes that batch.
BATCH_MEMORY_KEPT = 16


class Predictor:
    """A trained SEN model ready to predict band gaps and formation energies."""

    def __init__(
        self,
        model: torch.nn.Module,
        graph_config: GraphConfig | None = None,
        card: dict | None = None,
        device: torch.device | str | None = None,
        name: str = "untrained",
        path: Path | None = None,
    ):
        self.device = pick_device("auto") if device is None else torch.device(device)
        self.model = model.to(self.device).eval()
        self.graph_config = graph_config or model.graph_config
        self.card = card or {}
        self.name = name
        self.path = path  # the model.pt this predictor was loaded from, if any
        self.max_atoms = DEFAULT_MAX_ATOMS  # bound the work one call can trigger
        # SEN networks can be given one row per Wyckoff orbit (sen.graph.orbit_graph: the same numbers);
        # other models (the CGCNN baseline) are given every atom
        members = model.members if isinstance(model, Ensemble) else [model]
        self.orbit_rows = all(type(m) is SEN for m in members)
        # an ensemble of SEN networks runs as one stacked network (the same numbers, a fraction of the time)
        self.stacked = None
        if isinstance(model, Ensemble) and all(type(m) is SEN for m in model.members):
            try:
                self.stacked = StackedSEN(list(model.members)).to(self.device)
            except ValueError:  # networks of different shapes: run them one after the other
                self.stacked = None

    @property
    def targets(self) -> tuple[str, ...]:
        """Names of the predicted properties."""
        return tuple(self.model.config.targets)

    @property
    def n_members(self) -> int:
        """Number of networks behind each prediction (more than 1 for an ensemble)."""
        return len(self.model.members) if isinstance(self.model, Ensemble) else 1

    def members_for(self, target: str) -> int:
        """Number of networks whose mean is the prediction of ``target`` (an ensemble may choose per target)."""
        return len(self.model.target_members[target]) if isinstance(self.model, Ensemble) else 1

    @classmethod
    def load(cls, name_or_path: str | Path = DEFAULT_MODEL, device: str | None = None) -> Predictor:
        """Load shipped weights (a name under ``sen/models/``) or a ``model.pt`` / folder path.

        Raises:
            FileNotFoundError: no weights there (the message says how to get them).
            sen.checkpoint.CheckpointError: the file is damaged, of another version or not SEN weights.
        """
        path = resolve_model_path(name_or_path)
        dev = pick_device(device or "auto")
        model = load_model(path, dev)
        card_path = path.parent / "metrics.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        return cls(model, model.graph_config, card, dev, name=path.parent.name, path=path)

    @classmethod
    def untrained(cls, config: SENConfig | None = None, seed: int = 0, device: str | None = None) -> Predictor:
        """A Predictor with freshly initialised weights (for tests and demos of the machinery)."""
        torch.manual_seed(seed)
        return cls(SEN(config), device=device or "cpu")

    # ------------------------------------------------------------------ prediction

    def _graphs(self, structures: Sequence[Structure], symprec: float | None = None):
        cfg = self.graph_config
        if symprec is not None:
            cfg = GraphConfig(cfg.cutoff, cfg.max_neighbors, cfg.tie_tolerance, symprec, cfg.angle_tolerance)
        graphs, reports = [], []
        for s in structures:
            if not isinstance(s, Structure):
                raise StructureError(f"expected a pymatgen Structure, got {type(s).__name__}")
            s = validate_structure(s, max_atoms=self.max_atoms)  # sites outside the cell: a wrapped copy
            report = analyze_symmetry(s, cfg.symprec, cfg.angle_tolerance)
            graphs.append(build_graph(s, cfg, report))
            reports.append(report)
        return graphs, reports

    def _batch(self, graphs: list):
        """One batch of ``graphs`` on the device, with one row per Wyckoff orbit and equal edges merged where that
        gives the same numbers (:func:`~sen.graph.orbit_graph`, :func:`~sen.graph.merge_edges`)."""
        if len(graphs) >= BATCH_MEMORY_KEPT and self.device.type == "cpu":
            keep_freed_memory()  # batches: a fifth less forward time (sen.allocator); not for a page's one crystal
        if self.orbit_rows:
            graphs = [merge_edges(orbit_graph(g) or g) for g in graphs]
        return collate(graphs).to(self.device)

    @torch.inference_mode()
    def predict(self, structures: Structure | Sequence[Structure], batch_size: int = 64) -> list[dict]:
        """Predict for one or many structures; one dict per structure.

        Each dict has ``band_gap`` (eV), ``formation_energy_per_atom`` (eV/atom),
        ``metal_probability`` (0-1, probability that the gap is 0), ``is_metal``, and the
        space group SEN was given (``space_group_symbol``, ``space_group_number``). An
        ensemble (``n_members > 1``) also gives ``band_gap_std`` and
        ``formation_energy_per_atom_std``: the spread of its networks' predictions.
        """
        if isinstance(structures, Structure):
            structures = [structures]
        structures = list(structures)
        results: list[dict] = []
        for start in range(0, len(structures), batch_size):
            graphs, reports = self._graphs(structures[start : start + batch_size])
            out = self._forward(self._batch(graphs))
            for row, report in zip(self._rows(out, len(graphs)), reports, strict=False):
                row.update(space_group_symbol=report.space_group_symbol, space_group_number=report.space_group_number)
                results.append(row)
        return results

    def _forward(self, batch, explain: bool = False, per_network: bool = False):
        """The model's outputs for ``batch`` (with ``per_network``: also each network's own outputs)."""
        if self.stacked is not None:  # the networks together (in groups of members for large batches on a CPU)
            outs = self.stacked(batch, explain=explain)
            out = self.model.combine(outs, batch.crystal_index if explain else None)
        elif per_network and isinstance(self.model, Ensemble):  # each network once, combined as the ensemble does
            outs = [m(batch, explain=explain) for m in self.model.members]
            out = self.model.combine(outs, batch.crystal_index if explain else None)
        else:
            out = self.model(batch, explain=explain)
            outs = [out]
        return (out, outs) if per_network else out

    def screen(self, items, *, workers: int = 0, batch_size: int = 64):
        """Screen many crystals: yield one result row per item, in order, as :mod:`sen.screen` writes them.

        ``items``: Structures, ``(id, structure)`` pairs, dicts with an id and a ``cif`` (or
        ``structure``), file paths or structure text. Each row has the columns of
        :data:`sen.screen.SCREEN_COLUMNS` (``band_gap_eV``, ``formation_energy_eV_per_atom``, their
        ``*_std`` spreads, ``metal_probability``, ...); an item that cannot be used gives a row with
        its one-line ``error`` and null predictions. ``workers > 0`` featurises and predicts in that
        many processes (each loads this predictor's weights file once); 0 runs here.
        """
        from sen.screen import iter_screen

        return iter_screen(self, items, workers=workers, batch_size=batch_size)

    @torch.inference_mode()
    def embed(self, structures: Structure | Sequence[Structure], batch_size: int = 64) -> np.ndarray:
        """The model's own representation of each crystal, for similarity: an (n, F) float32 array.

        Row i holds, for every network in turn, the output capsules its target heads read and its pooled
        atom features (F = networks x (targets + 1) x capsule width: 1,152 for ``sen_mp``). The crystal
        library (:mod:`sen.library`) reduces it with a PCA stored beside it: ``Library.nearest`` finds the
        known crystals closest to a structure in that space.
        """
        if isinstance(structures, Structure):
            structures = [structures]
        structures = list(structures)
        parts = []
        for start in range(0, len(structures), batch_size):
            graphs, _ = self._graphs(structures[start : start + batch_size])
            parts.append(crystal_features(self._forward(self._batch(graphs), per_network=True)[1]))
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def _rows(self, out: dict[str, torch.Tensor], n: int) -> list[dict]:
        keys = [*self.targets, *(f"{t}_std" for t in self.targets), "metal_probability"]
        # one copy from the device per output (not one per crystal and key): no per-crystal sync on a GPU
        values = {k: out[k][:n].float().cpu().tolist() for k in keys if k in out}
        rows = []
        for i in range(n):
            row = {k: v[i] for k, v in values.items()}
            if "metal_probability" in row:
                row["is_metal"] = bool(row.get("band_gap", 1.0) == 0.0)
            rows.append(row)
        return rows

    @torch.inference_mode()
    def explain(self, structure: Structure, symprec: float | None = None) -> dict:
        """Prediction plus the symmetry SEN was given and the capsule-routing matrices.

        Returns a dict with the keys of :meth:`predict` and:

        * ``symmetry`` (:class:`~sen.symmetry.SymmetryReport`), ``space_group_symbol``,
          ``space_group_number``, ``crystal_system``, ``point_group``;
        * ``orbit_index`` (N,) and ``wyckoff_labels`` (N,) such as ``"O 3c"``;
        * ``routing`` (N, K; rows sum to 1), ``orbit_routing`` (O, K, mean over each orbit),
          ``capsule_attention`` (K, K), ``capsule_activation`` (K,), ``output_routing``
          (T, K), ``atom_contributions`` (N, T; each prediction split over atoms by routing flow);
        * ``routing_spread``: largest deviation of a routing row from its orbit's mean
          (0 when the network routes symmetry-equivalent atoms identically);
        * ``orbit_capsule_mutual_information`` (bits) between each atom's orbit and its
          dominant capsule, and ``orbit_entropy`` (bits), its upper bound.

        * ``embedding`` (F,): the crystal's learned representation, as :meth:`embed` gives it;
        * ``networks``: for an ensemble, the routing keys above (``routing`` ... ``orbit_entropy``) of
          every network, in order (the first is the one at the top level), computed in the same pass.

        For an ensemble the predictions (and ``atom_contributions``) are the ensemble's, the top-level
        routing matrices the first network's: capsules of different networks do not correspond, so they
        are never averaged; compare networks through ``networks``.
        """
        graphs, reports = self._graphs([structure], symprec)
        batch = collate(graphs).to(self.device)
        out, per_network = self._forward(batch, explain=True, per_network=True)
        if "routing" not in out:
            raise ValueError(f"the {type(self.model).__name__} model has no capsule routing to explain")
        result = self._rows(out, 1)[0]
        report: SymmetryReport = reports[0]
        result.update(
            symmetry=report,
            space_group_symbol=report.space_group_symbol,
            space_group_number=report.space_group_number,
            crystal_system=report.crystal_system,
            point_group=report.point_group,
            orbit_index=report.orbit_index,
            wyckoff_labels=report.orbit_labels,
            atom_contributions=out["atom_contributions"].cpu().numpy(),
            embedding=crystal_features(per_network)[0],
            **_routing_of(out, report),
            networks=[_routing_of(o, report) for o in per_network],
        )
        return result


def crystal_features(per_network: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """(B, F) float32: every network's ``crystal_features``, flattened and side by side (:meth:`Predictor.embed`)."""
    if any("crystal_features" not in o for o in per_network):
        raise ValueError("crystal features need a SEN model (the CGCNN baseline has no capsules)")
    return torch.cat([o["crystal_features"].flatten(1) for o in per_network], dim=1).float().cpu().numpy()


def _routing_of(out: dict[str, torch.Tensor], report: SymmetryReport) -> dict:
    """One network's routing matrices for one crystal, with its orbit averages and agreement numbers."""
    routing = out["routing"].cpu().numpy()
    orbit = report.orbit_index
    orbit_routing = np.stack([routing[orbit == k].mean(0) for k in range(report.n_orbits)])
    dominant = routing.argmax(1)
    mi, h_orbit = mutual_information(orbit, dominant)
    return {
        "routing": routing,
        "orbit_routing": orbit_routing,
        "capsule_attention": out["capsule_attention"][0].cpu().numpy(),
        "capsule_activation": out["capsule_activation"][0].cpu().numpy(),
        "output_routing": out["output_routing"][0].cpu().numpy(),
        "dominant_capsule": dominant,
        "routing_spread": float(np.abs(routing - orbit_routing[orbit]).max()),
        "orbit_capsule_mutual_information": mi,
        "orbit_entropy": h_orbit,
    }


def mutual_information(labels_a: np.ndarray, labels_b: np.ndarray) -> tuple[float, float]:
    """Mutual information I(A; B) and entropy H(A), in bits, of two label arrays."""
    a = np.unique(labels_a, return_inverse=True)[1]
    b = np.unique(labels_b, return_inverse=True)[1]
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * np.log2(joint[nz] / (pa[:, None] * pb[None, :])[nz])).sum())
    h = float(-(pa[pa > 0] * np.log2(pa[pa > 0])).sum())
    return max(mi, 0.0), h
