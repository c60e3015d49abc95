"""Structure -> crystal graph: periodic neighbours, element descriptors and symmetry labels.

A :class:`CrystalGraph` holds plain numpy arrays (cheap to cache on disk and to send
between processes). :func:`collate` concatenates graphs into one batch with offset
indices, so there is never any padding and one crystal's result cannot depend on
which other crystals share its batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch
from pymatgen.core import Element, Structure

from sen.symmetry import (
    DEFAULT_ANGLE_TOLERANCE,
    DEFAULT_SYMPREC,
    SymmetryReport,
    analyze_symmetry,
    crystal_system_index,
    point_group_index,
    site_point_group_index,
)

DEFAULT_CUTOFF = 8.0  # Å
DEFAULT_MAX_NEIGHBORS = 12
#: Neighbours within this distance (Å) of the k-th nearest are all kept, so that
#: symmetry-equivalent atoms always see the same neighbourhood.
NEIGHBOR_TIE_TOLERANCE = 1e-2
MAX_Z = 118


@dataclass(frozen=True)
class GraphConfig:
    """Featuriser settings; part of every cache key and stored with every model."""

    cutoff: float = DEFAULT_CUTOFF
    max_neighbors: int = DEFAULT_MAX_NEIGHBORS
    tie_tolerance: float = NEIGHBOR_TIE_TOLERANCE
    symprec: float = DEFAULT_SYMPREC
    angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE

    def key(self) -> str:
        """A short string that changes whenever the features would change."""
        return (
            f"c{self.cutoff:g}-k{self.max_neighbors}-t{self.tie_tolerance:g}"
            f"-s{self.symprec:g}-a{self.angle_tolerance:g}-v3"  # v3: n_cells per crystal
        )


@dataclass
class CrystalGraph:
    """One crystal as arrays. N atoms, E directed edges (src -> dst means src is a neighbour of dst)."""

    atomic_numbers: np.ndarray  # (N,) int
    edge_src: np.ndarray  # (E,) int
    edge_dst: np.ndarray  # (E,) int
    edge_length: np.ndarray  # (E,) float32, Å
    orbit_index: np.ndarray  # (N,) int, Wyckoff orbit of each atom within this crystal
    site_point_group: np.ndarray  # (N,) int, point group of each atom's site (index into POINT_GROUPS)
    site_symmetry_order: np.ndarray  # (N,) int, order of each atom's site-symmetry group
    crystal_system: int  # index into sen.symmetry.CRYSTAL_SYSTEMS
    point_group: int  # index into sen.symmetry.POINT_GROUPS
    #: primitive cells in this cell (N / atoms of spglib's primitive cell at the featuriser's symprec);
    #: the network scales its small constants by it so that every choice of cell gives the numbers of
    #: the primitive cell. 1.0 (a primitive cell) for graphs made before this field existed.
    n_cells: float = 1.0
    #: (N,) float32 atoms of the cell each row stands for: None for a graph of every atom (all 1); set in
    #: the graph :func:`orbit_graph` makes, whose rows are the Wyckoff orbits of a symmetric graph
    multiplicity: np.ndarray | None = None
    #: (E,) float32 edges each edge stands for: None for a graph of every edge (all 1); set by :func:`merge_edges`
    edge_count: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        """Number of rows (atoms; orbits in an :func:`orbit_graph`)."""
        return int(self.atomic_numbers.shape[0])


def neighbor_edges(
    structure: Structure,
    cutoff: float = DEFAULT_CUTOFF,
    max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
    tie_tolerance: float = NEIGHBOR_TIE_TOLERANCE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Periodic neighbours of every atom: the ``max_neighbors`` nearest within ``cutoff`` Å.

    Every neighbour within ``tie_tolerance`` Å of the k-th distance is kept too, so the
    cap never breaks a tie arbitrarily. Returns ``(src, dst, length)``.

    The neighbours are first searched within :data:`FIRST_SEARCH_RADIUS` (a few times fewer pairs than
    the cutoff's sphere); that search is kept only when it already holds every edge the cutoff would give
    (each atom has ``max_neighbors`` neighbours in it, and its k-th distance plus the tie tolerance stays
    inside it), else the search is repeated at the cutoff.
    """
    if FIRST_SEARCH_RADIUS < cutoff:
        found = _kept_neighbors(structure, FIRST_SEARCH_RADIUS, max_neighbors, tie_tolerance)
        if found is not None and found[1].max() + tie_tolerance < FIRST_SEARCH_RADIUS:
            return found[0]
    found = _kept_neighbors(structure, cutoff, max_neighbors, tie_tolerance)
    if found is None:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    return found[0]


#: Radius (Å) of the first neighbour search of :func:`neighbor_edges` (exact either way).
FIRST_SEARCH_RADIUS = 5.0


def _kept_neighbors(structure: Structure, radius: float, max_neighbors: int, tie_tolerance: float):
    """``((src, dst, length), kth)``: the kept edges among the neighbours within ``radius`` and each atom's
    k-th distance (inf if it has fewer); None when there is no neighbour at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        centers, neighbors, _, dists = structure.get_neighbor_list(radius)
    if len(dists) == 0:
        return None
    # Sort by (center, distance) so each atom's neighbours are contiguous and ordered.
    order = np.lexsort((dists, centers))
    centers, neighbors, dists = centers[order], neighbors[order], dists[order]
    starts = np.searchsorted(centers, np.arange(len(structure)))
    counts = np.bincount(centers, minlength=len(structure))
    rank = np.arange(len(centers)) - np.repeat(starts, counts)
    # Distance of the k-th neighbour for each centre (or +inf if it has fewer).
    kth = np.full(len(structure), np.inf)
    has_k = counts >= max_neighbors
    kth[has_k] = dists[starts[has_k] + max_neighbors - 1]
    keep = (rank < max_neighbors) | (dists <= kth[centers] + tie_tolerance)
    edges = (neighbors[keep].astype(np.int64), centers[keep].astype(np.int64), dists[keep].astype(np.float32))
    return edges, kth


def build_graph(
    structure: Structure,
    config: GraphConfig | None = None,
    symmetry: SymmetryReport | None = None,
) -> CrystalGraph:
    """Featurise a validated structure for SEN (see :func:`sen.io.read_structure`)."""
    config = config or GraphConfig()
    if symmetry is None:
        symmetry = analyze_symmetry(structure, config.symprec, config.angle_tolerance)
    src, dst, length = neighbor_edges(structure, config.cutoff, config.max_neighbors, config.tie_tolerance)
    return CrystalGraph(
        atomic_numbers=np.asarray(structure.atomic_numbers, dtype=np.int64),
        edge_src=src,
        edge_dst=dst,
        edge_length=length,
        orbit_index=symmetry.orbit_index.astype(np.int64),
        site_point_group=np.array([site_point_group_index(s) for s in symmetry.site_symmetry_symbols], dtype=np.int64),
        site_symmetry_order=symmetry.site_symmetry_order.astype(np.int64),
        crystal_system=crystal_system_index(symmetry.crystal_system),
        point_group=point_group_index(symmetry.point_group),
        n_cells=float(symmetry.n_cells),
    )


#: Largest difference (Å) between an edge and its image under symmetry for :func:`orbit_graph` to merge them.
ORBIT_LENGTH_TOLERANCE = 1e-4


def orbit_graph(graph: CrystalGraph, tolerance: float = ORBIT_LENGTH_TOLERANCE) -> CrystalGraph | None:
    """The same crystal with one row per Wyckoff orbit, or None where that would change the numbers.

    SEN is equivariant: atoms that symmetry maps onto each other start with the same features, and if
    each of them also receives the same edges (the same neighbours' orbits at the same distances), they
    keep the same features through every layer. Their rows are then computed once, for the orbit's first
    atom, and :attr:`CrystalGraph.multiplicity` counts the atoms each row stands for in sums over the
    crystal; each edge's length is the mean over its images. Returns None when that condition fails for
    any atom (a structure only nearly symmetric at the analysis tolerance, neighbour lists cut
    differently) or when every orbit has one atom.
    """
    orbit = graph.orbit_index
    n, n_orbits = graph.n_atoms, int(orbit.max()) + 1 if graph.n_atoms else 0
    if n_orbits == n or graph.multiplicity is not None:
        return None
    reps = np.unique(orbit, return_index=True)[1]  # first atom of each orbit (orbits are numbered by it)
    rep_of = reps[orbit]  # (N,)
    if (graph.atomic_numbers[rep_of] != graph.atomic_numbers).any():
        return None
    src_orbit = orbit[graph.edge_src]
    order = np.lexsort((graph.edge_length, src_orbit, graph.edge_dst))  # each atom's edges, in one order
    dst, src, length = graph.edge_dst[order], src_orbit[order], graph.edge_length[order]
    counts = np.bincount(dst, minlength=n)
    if (counts != counts[rep_of]).any():
        return None
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(dst)) - starts[dst]
    partner = starts[rep_of[dst]] + rank  # the same edge of the orbit's first atom
    if (src != src[partner]).any() or (np.abs(length - length[partner]) > tolerance).any():
        return None
    keep = rep_of[dst] == dst
    # each edge's length averaged over its images in every atom of the orbit (they differ by at most
    # ``tolerance``): the same whichever atom comes first, so the numbers do not depend on the atom order
    mean_length = np.bincount(partner, weights=length, minlength=len(dst)) / np.maximum(
        np.bincount(partner, minlength=len(dst)), 1
    )
    return CrystalGraph(
        atomic_numbers=graph.atomic_numbers[reps],
        edge_src=src[keep].astype(np.int64),
        edge_dst=orbit[dst[keep]].astype(np.int64),
        edge_length=mean_length[keep].astype(np.float32),
        orbit_index=np.arange(n_orbits, dtype=np.int64),
        site_point_group=graph.site_point_group[reps],
        site_symmetry_order=graph.site_symmetry_order[reps],
        crystal_system=graph.crystal_system,
        point_group=graph.point_group,
        n_cells=graph.n_cells,
        multiplicity=np.bincount(orbit, minlength=n_orbits).astype(np.float32),
    )


#: Largest difference (Å) between the lengths of two edges that :func:`merge_edges` computes once.
EDGE_MERGE_TOLERANCE = 1e-5


def merge_edges(graph: CrystalGraph, tolerance: float = EDGE_MERGE_TOLERANCE) -> CrystalGraph:
    """The same graph with each set of equal edges computed once: ``edge_count`` says how many it stands for.

    Edges into the same row from the same row (periodic images, or, in an :func:`orbit_graph`, atoms of one
    orbit) at the same length carry the same features through every layer, so one of them, counted that many
    times in each row's sum of messages, gives the same numbers. Lengths within ``tolerance`` of each other
    (in a chain of sorted lengths) are merged at their mean. Returns ``graph`` itself when nothing merges.
    """
    if graph.edge_count is not None or len(graph.edge_src) < 2:
        return graph
    length = graph.edge_length.astype(np.float64)
    order = np.lexsort((length, graph.edge_src, graph.edge_dst))
    dst, src, length = graph.edge_dst[order], graph.edge_src[order], length[order]
    start = np.ones(len(dst), dtype=bool)
    start[1:] = (dst[1:] != dst[:-1]) | (src[1:] != src[:-1]) | (np.diff(length) > tolerance)
    if start.all():
        return graph
    group = np.cumsum(start) - 1
    count = np.bincount(group)
    return replace(
        graph,
        edge_src=src[start],
        edge_dst=dst[start],
        edge_length=(np.bincount(group, weights=length) / count).astype(np.float32),
        edge_count=count.astype(np.float32),
    )


def primitive_cell_count(
    structure: Structure, symprec: float = DEFAULT_SYMPREC, angle_tolerance: float = DEFAULT_ANGLE_TOLERANCE
) -> float:
    """Number of primitive cells in ``structure`` (atoms / atoms of spglib's primitive cell), as
    :func:`build_graph` stores it in :attr:`CrystalGraph.n_cells`."""
    return float(analyze_symmetry(structure, symprec, angle_tolerance).n_cells)


@dataclass
class GraphBatch:
    """Several crystal graphs concatenated, as torch tensors (indices offset per crystal)."""

    atomic_numbers: torch.Tensor  # (N,)
    edge_src: torch.Tensor  # (E,)
    edge_dst: torch.Tensor  # (E,)
    edge_length: torch.Tensor  # (E,)
    orbit_index: torch.Tensor  # (N,) global orbit id across the batch
    site_point_group: torch.Tensor  # (N,)
    site_symmetry_order: torch.Tensor  # (N,)
    crystal_index: torch.Tensor  # (N,) which crystal each atom belongs to
    orbit_crystal: torch.Tensor  # (O,) which crystal each orbit belongs to
    crystal_system: torch.Tensor  # (B,)
    point_group: torch.Tensor  # (B,)
    n_crystals: int
    n_orbits: int
    n_cells: torch.Tensor | None = None  # (B,) float, primitive cells per crystal; None: all 1
    multiplicity: torch.Tensor | None = None  # (N,) float, atoms each row stands for (orbit graphs); None: all 1
    edge_count: torch.Tensor | None = None  # (E,) float, edges each edge stands for (merge_edges); None: all 1

    def cells(self) -> torch.Tensor:
        """(B,) float32 primitive cells per crystal (ones when the batch has no such record)."""
        if self.n_cells is None:
            return torch.ones(self.n_crystals, dtype=torch.float32, device=self.crystal_index.device)
        return self.n_cells

    def to(self, device: torch.device | str) -> GraphBatch:
        """Move every tensor to ``device``."""
        moved = {
            k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()
        }
        return GraphBatch(**moved)


def collate(graphs: list[CrystalGraph]) -> GraphBatch:
    """Concatenate graphs into one batch with offset atom and orbit indices."""
    n_atoms = np.array([g.n_atoms for g in graphs])
    n_orbits = np.array([int(g.orbit_index.max()) + 1 for g in graphs])
    atom_offset = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    orbit_offset = np.concatenate([[0], np.cumsum(n_orbits)[:-1]])
    n_edges = np.array([len(g.edge_src) for g in graphs])
    edge_offset = np.repeat(atom_offset, n_edges)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(g, name) for g in graphs])

    def t(a: np.ndarray, dtype: torch.dtype = torch.long) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    def counts(name: str, sizes: np.ndarray) -> torch.Tensor | None:  # multiplicity / edge_count, ones where unset
        if all(getattr(g, name) is None for g in graphs):
            return None
        parts = [np.ones(k, np.float32) if getattr(g, name) is None else getattr(g, name) for g, k in zip(graphs, sizes, strict=True)]
        return t(np.concatenate(parts), torch.float32)

    return GraphBatch(
        atomic_numbers=t(cat("atomic_numbers")),
        edge_src=t(cat("edge_src") + edge_offset),
        edge_dst=t(cat("edge_dst") + edge_offset),
        edge_length=t(cat("edge_length"), torch.float32),
        orbit_index=t(cat("orbit_index") + np.repeat(orbit_offset, n_atoms)),
        site_point_group=t(cat("site_point_group")),
        site_symmetry_order=t(cat("site_symmetry_order")),
        crystal_index=t(np.repeat(np.arange(len(graphs)), n_atoms)),
        orbit_crystal=t(np.repeat(np.arange(len(graphs)), n_orbits)),
        crystal_system=t(np.array([g.crystal_system for g in graphs])),
        point_group=t(np.array([g.point_group for g in graphs])),
        n_crystals=len(graphs),
        n_orbits=int(n_orbits.sum()),
        n_cells=t(np.array([float(getattr(g, "n_cells", 1.0)) for g in graphs]), torch.float32),
        multiplicity=counts("multiplicity", n_atoms),
        edge_count=counts("edge_count", n_edges),
    )


#: Fixed element descriptors, from pymatgen's element data (then standardised).
ELEMENT_DESCRIPTORS = (
    "X",
    "row",
    "group",
    "atomic_radius",
    "atomic_mass",
    "mendeleev_no",
    "ionization_energy",
    "electron_affinity",
    "block_s",
    "block_p",
    "block_d",
    "block_f",
    "valence_s",
    "valence_p",
    "valence_d",
    "valence_f",
)


@lru_cache(maxsize=1)
def element_descriptor_table() -> np.ndarray:
    """(MAX_Z + 1, D) float32 table of standardised element descriptors; row 0 is unused.

    Missing values (e.g. no electronegativity for noble gases) are filled with the
    column mean, i.e. 0 after standardisation.
    """
    table = np.full((MAX_Z + 1, len(ELEMENT_DESCRIPTORS)), np.nan, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z in range(1, MAX_Z + 1):
            el = Element.from_Z(z)
            row = [
                _safe(lambda el=el: el.X),
                float(el.row),
                float(el.group),
                _safe(lambda el=el: el.atomic_radius),
                _safe(lambda el=el: el.atomic_mass),
                _safe(lambda el=el: el.mendeleev_no),
                _safe(lambda el=el: el.ionization_energy),
                _safe(lambda el=el: el.electron_affinity),
                *[float(el.block == b) for b in "spdf"],
                *_valence_counts(el),
            ]
            table[z] = row
    mean = np.nanmean(table[1:], axis=0)
    std = np.nanstd(table[1:], axis=0)
    std[std == 0] = 1.0
    table = (table - mean) / std
    table[np.isnan(table)] = 0.0
    table[0] = 0.0
    return table.astype(np.float32)


def _safe(get) -> float:
    try:
        v = get()
        v = float(v) if v is not None else np.nan
        return v if np.isfinite(v) else np.nan
    except Exception:
        return np.nan


def _valence_counts(el: Element) -> list[float]:
    """Electrons in the outermost s, p, d, f sub-shells (by the element's ground-state configuration)."""
    counts = {"s": 0.0, "p": 0.0, "d": 0.0, "f": 0.0}
    try:
        shells = el.full_electronic_structure
    except Exception:
        return [np.nan] * 4
    max_n = max(n for n, _, _ in shells)
    for n, orb, e in shells:
        # outer s/p shell; d and f from the shells that are still filling
        if (orb in "sp" and n == max_n) or (orb == "d" and n >= max_n - 1) or (orb == "f" and n >= max_n - 2):
            counts[orb] += e
    return [counts[k] for k in "spdf"]
