"""sen.graph: periodic neighbour graphs (cap with tie rule), distance expansion, features, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from sen.graph import (
    ELEMENT_DESCRIPTORS,
    MAX_Z,
    GraphConfig,
    build_graph,
    collate,
    element_descriptor_table,
    neighbor_edges,
    primitive_cell_count,
)
from sen.model import DistanceExpansion
from sen.symmetry import (
    analyze_symmetry,
    conventional_standard_structure,
    crystal_system_index,
    point_group_index,
    primitive_standard_structure,
)


def neighbours_per_atom(structure: Structure, **kwargs) -> np.ndarray:
    src, dst, _ = neighbor_edges(structure, **kwargs)
    return np.bincount(dst, minlength=len(structure))


def sorted_distances(structure: Structure, atom: int, **kwargs) -> np.ndarray:
    return distance_lists(structure, **kwargs)[atom]


def distance_lists(structure: Structure, **kwargs) -> list[np.ndarray]:
    """Sorted neighbour distances (Å) of every atom."""
    _, dst, length = neighbor_edges(structure, **kwargs)
    return [np.sort(length[dst == atom]) for atom in range(len(structure))]


@pytest.mark.parametrize(
    ("k", "expected"),
    [(1, 12), (8, 12), (12, 12), (13, 18), (18, 18), (19, 42)],  # fcc shells: 12 at a/√2, 6 at a, 24 at a√1.5
)
def test_fcc_shells_are_kept_or_dropped_whole(crystals, k, expected):
    counts = neighbours_per_atom(crystals["Cu"], max_neighbors=k)
    assert counts.tolist() == [expected] * 4


def test_cap_applies_when_there_are_no_ties(crystals):
    # rutile Ti: 2 apical O at 1.98 Å and 4 equatorial at 1.95 Å, then Ti at 2.96 Å (c)
    rutile = crystals["TiO2"]
    distances = sorted_distances(rutile, 0, max_neighbors=4)
    assert len(distances) == 4 and distances.max() < 1.96
    assert len(sorted_distances(rutile, 0, max_neighbors=6)) == 6
    assert len(sorted_distances(rutile, 0, max_neighbors=5)) == 6  # the 5th and 6th are a tie


def test_tie_tolerance_is_what_decides_near_ties():
    # two neighbours at 2.000 and 2.005 Å: one tie with a 0.01 Å tolerance, two shells with 0.001 Å
    s = Structure(Lattice.orthorhombic(4.0, 4.01, 12.0), ["Cu"], [[0, 0, 0]])
    assert len(sorted_distances(s, 0, max_neighbors=2, tie_tolerance=1e-2)) == 4
    assert len(sorted_distances(s, 0, max_neighbors=2, tie_tolerance=1e-3)) == 2


def test_cutoff_bounds_neighbours(crystals):
    nacl = crystals["NaCl"]
    _, _, length = neighbor_edges(nacl, cutoff=3.0, max_neighbors=100)
    assert len(length) == 8 * 6 and np.allclose(length, 2.82, atol=1e-3)
    src, dst, length = neighbor_edges(nacl, cutoff=2.0)
    assert len(src) == len(dst) == len(length) == 0
    assert src.dtype == np.int64 and length.dtype == np.float32


def test_edges_are_sorted_nearest_first_and_have_periodic_images(crystals):
    # one-atom cell: every neighbour is a periodic image of the atom itself
    cu = Structure(Lattice([[0, 1.8075, 1.8075], [1.8075, 0, 1.8075], [1.8075, 1.8075, 0]]), ["Cu"], [[0, 0, 0]])
    src, dst, length = neighbor_edges(cu)
    assert len(src) == 12 and set(src) == set(dst) == {0}
    assert np.allclose(length, 3.615 / np.sqrt(2), atol=1e-4)


@pytest.mark.parametrize("name", ["NaCl", "ZnO", "TiO2", "Al2O3"])
@pytest.mark.parametrize("repeat", [(2, 2, 2), (1, 1, 3)])
def test_supercell_atoms_see_the_same_neighbour_distances(crystals, name, repeat):
    s = crystals[name]
    supercell = s * repeat  # pymatgen keeps the order: atom i of s becomes atoms i*n .. i*n+n-1
    n = int(np.prod(repeat))
    reference, repeated = distance_lists(s), distance_lists(supercell)
    for i in range(len(s)):
        for j in range(i * n, (i + 1) * n):
            assert supercell[j].specie == s[i].specie
            assert np.allclose(repeated[j], reference[i], atol=1e-4), (i, j)


def test_symmetry_equivalent_atoms_see_the_same_neighbourhood(crystals):
    for name in ("Si", "ZnO", "TiO2", "Al2O3"):
        s = crystals[name]
        report, distances = analyze_symmetry(s), distance_lists(s)
        for orbit in report.orbits:
            first = distances[orbit.atom_indices[0]]
            for atom in orbit.atom_indices[1:]:
                assert np.allclose(distances[atom], first, atol=1e-4), (name, orbit.label)


def test_distance_expansion_has_a_smooth_cutoff():
    expansion = DistanceExpansion(n_rbf=16, cutoff=6.0)
    d = torch.linspace(0.5, 8.0, 301)
    features = expansion(d)
    assert features.shape == (301, 16)
    assert torch.all(features[d >= 6.0] == 0)  # nothing beyond the cutoff
    near = expansion(torch.tensor([5.99, 5.999]))
    assert near.abs().max() < 1e-4  # goes to 0 continuously
    norms = features.norm(dim=1)
    assert torch.all(norms[d < 6.0] > 0)
    step = (norms[1:] - norms[:-1]).abs().max()
    assert step < 0.05  # no jumps
    assert torch.isfinite(features).all()
    # the Gaussians times the cosine envelope (tails held at exp(-60), far below float32 precision)
    gaussian = torch.exp(-expansion.gamma * (d[:, None].double() - expansion.centers.double()) ** 2)
    envelope = 0.5 * (torch.cos(torch.pi * d.double().clamp(max=6.0) / 6.0) + 1.0)
    torch.testing.assert_close(features.double(), gaussian * envelope[:, None], atol=1e-7, rtol=1e-5)


def test_build_graph_carries_symmetry_labels(crystals):
    rutile = crystals["TiO2"]
    report = analyze_symmetry(rutile)
    g = build_graph(rutile)
    assert g.n_atoms == 6
    assert g.atomic_numbers.tolist() == [22, 22, 8, 8, 8, 8]
    assert g.orbit_index.tolist() == report.orbit_index.tolist() == [0, 0, 1, 1, 1, 1]
    # the site's point group (origin-free), not the Wyckoff letter: Ti 2a m.mm -> mmm, O 4f m.2m -> mm2
    assert g.site_point_group.tolist() == [point_group_index("mmm")] * 2 + [point_group_index("mm2")] * 4
    assert g.site_symmetry_order.tolist() == [8, 8, 4, 4, 4, 4]  # mmm, mm2
    assert g.crystal_system == crystal_system_index("tetragonal")
    assert g.point_group == point_group_index("4/mmm")
    assert len(g.edge_src) == len(g.edge_dst) == len(g.edge_length) > 0
    # a symmetry report passed in is used as given (the app analyses once, at the user's tolerance)
    loose = analyze_symmetry(rutile, symprec=0.1)
    assert build_graph(rutile, symmetry=loose).orbit_index.tolist() == loose.orbit_index.tolist()


def test_graph_config_key_changes_with_every_setting():
    keys = {
        GraphConfig().key(),
        GraphConfig(cutoff=6.0).key(),
        GraphConfig(max_neighbors=16).key(),
        GraphConfig(tie_tolerance=1e-3).key(),
        GraphConfig(symprec=0.1).key(),
        GraphConfig(angle_tolerance=3.0).key(),
    }
    assert len(keys) == 6


def test_collate_offsets_atoms_edges_and_orbits(crystals):
    names = ["Cu", "TiO2", "SrTiO3"]
    graphs = [build_graph(crystals[n]) for n in names]
    batch = collate(graphs)
    n_atoms = [g.n_atoms for g in graphs]
    n_orbits = [int(g.orbit_index.max()) + 1 for g in graphs]
    assert batch.n_crystals == 3 and batch.n_orbits == sum(n_orbits) == 1 + 2 + 3
    assert batch.crystal_index.tolist() == [0] * 4 + [1] * 6 + [2] * 5
    assert batch.orbit_crystal.tolist() == [0, 1, 1, 2, 2, 2]
    assert batch.orbit_index.tolist() == [0] * 4 + [1, 1, 2, 2, 2, 2] + [3, 4, 5, 5, 5]
    assert batch.crystal_system.tolist() == [g.crystal_system for g in graphs]
    # every edge stays inside its crystal, shifted by that crystal's atom offset
    offsets = np.cumsum([0] + n_atoms[:-1])
    start = 0
    for g, offset in zip(graphs, offsets, strict=True):
        stop = start + len(g.edge_src)
        assert batch.edge_src[start:stop].tolist() == (g.edge_src + offset).tolist()
        assert batch.edge_dst[start:stop].tolist() == (g.edge_dst + offset).tolist()
        start = stop
    assert start == len(batch.edge_src)
    assert batch.crystal_index[batch.edge_src].tolist() == batch.crystal_index[batch.edge_dst].tolist()
    assert batch.edge_length.dtype == torch.float32 and batch.atomic_numbers.dtype == torch.long
    moved = batch.to("cpu")
    assert torch.equal(moved.edge_src, batch.edge_src) and moved.n_orbits == batch.n_orbits


def test_element_descriptor_table():
    table = element_descriptor_table()
    assert table.shape == (MAX_Z + 1, len(ELEMENT_DESCRIPTORS)) and table.dtype == np.float32
    assert np.isfinite(table).all()
    assert not table[0].any()  # row 0 is padding
    real = table[1:]
    assert np.allclose(real.mean(0), 0, atol=0.1)  # standardised (missing values filled with the mean)
    assert not np.allclose(table[11], table[17])  # Na and Cl differ


@pytest.mark.parametrize(
    ("name", "conventional"), [("Cu", 4), ("NaCl", 4), ("Si", 4), ("TiO2", 1), ("Al2O3", 3), ("ZnO", 1)]
)
def test_graph_counts_the_primitive_cells_of_every_cell_choice(crystals, name, conventional):
    s = crystals[name]  # the conventional cell: F-centred 4 primitive cells, R (hexagonal axes) 3, P 1
    assert build_graph(s).n_cells == primitive_cell_count(s) == analyze_symmetry(s).n_cells == conventional
    assert build_graph(primitive_standard_structure(s)).n_cells == 1.0
    assert build_graph(conventional_standard_structure(s)).n_cells == conventional
    assert build_graph(s * (2, 1, 3)).n_cells == 6 * conventional


def test_n_cells_travels_through_collate_and_the_cache(crystals, tmp_path):
    from sen.training.data import PackedGraphs

    graphs = [build_graph(crystals["Cu"]), build_graph(crystals["TiO2"] * (1, 1, 2))]
    batch = collate(graphs)
    assert batch.n_cells.dtype == torch.float32 and batch.n_cells.tolist() == [4.0, 2.0]
    assert batch.to("cpu").n_cells.tolist() == [4.0, 2.0]
    assert collate(graphs).cells().tolist() == [4.0, 2.0]
    batch.n_cells = None  # a batch made without the count reads as primitive cells
    assert batch.cells().tolist() == [1.0, 1.0]
    packed = PackedGraphs.pack(["a", "b"], graphs, [{"band_gap": 0.0}, {"band_gap": 1.0}], ("band_gap",))
    packed.save(tmp_path / "p.npz")
    again = PackedGraphs.load(tmp_path / "p.npz")
    assert [again.graph(i).n_cells for i in range(2)] == [4.0, 2.0]
    older = {k: v for k, v in again.__dict__.items() if not k.startswith("_") and k != "n_cells"}
    assert PackedGraphs(**older).graph(1).n_cells == 1.0  # a cache from before the field: primitive cells
    assert GraphConfig().key().endswith("-v3")  # features changed: caches of v2 are not reused


# ----------------------------------------------------------------------------- one row per Wyckoff orbit


def test_orbit_graph_has_a_row_per_orbit_and_the_edges_into_it(crystals):
    from sen.graph import orbit_graph

    for name in ("NaCl", "TiO2", "Al2O3"):
        s = crystals[name]
        graph = build_graph(s)
        rows = orbit_graph(graph)
        n_orbits = int(graph.orbit_index.max()) + 1
        assert rows is not None and rows.n_atoms == n_orbits, name
        assert rows.multiplicity.sum() == len(s) and (rows.orbit_index == np.arange(n_orbits)).all()
        first = np.unique(graph.orbit_index, return_index=True)[1]
        assert (rows.atomic_numbers == graph.atomic_numbers[first]).all()
        # each row keeps its first atom's edges: as many, from the same orbits, at the same lengths
        for k, atom in enumerate(first):
            theirs = graph.edge_dst == atom
            mine = rows.edge_dst == k
            assert mine.sum() == theirs.sum()
            assert sorted(rows.edge_src[mine]) == sorted(graph.orbit_index[graph.edge_src[theirs]])
            np.testing.assert_allclose(np.sort(rows.edge_length[mine]), np.sort(graph.edge_length[theirs]), atol=1e-6)


def test_orbit_graph_of_a_supercell_is_the_primitive_cells(crystals):
    from sen.graph import orbit_graph

    s = crystals["TiO2"]
    small, big = orbit_graph(build_graph(s)), orbit_graph(build_graph(s * (2, 1, 3)))
    assert big.n_atoms == small.n_atoms and (big.multiplicity == 6 * small.multiplicity).all()
    np.testing.assert_allclose(np.sort(big.edge_length), np.sort(small.edge_length), atol=1e-5)


def test_orbit_graph_refuses_what_would_change_the_numbers(crystals):
    from sen.graph import orbit_graph

    assert orbit_graph(build_graph(crystals["CsCl"])) is None  # every orbit has one atom: nothing to merge
    s = crystals["NaCl"].copy()
    s.translate_sites([0], [0.003, 0.0, 0.0], frac_coords=False)  # still Fm-3m at 0.01 Å, edges now differ
    graph = build_graph(s)
    assert analyze_symmetry(s).space_group_number == 225
    assert orbit_graph(graph) is None
    assert orbit_graph(graph, tolerance=0.01) is not None  # within a looser tolerance it would merge


def test_orbit_graphs_collate_with_full_graphs(crystals):
    from sen.graph import orbit_graph

    rows = orbit_graph(build_graph(crystals["NaCl"]))
    full = build_graph(crystals["CsCl"])
    batch = collate([rows, full])
    assert batch.multiplicity.tolist() == [*rows.multiplicity.tolist(), 1.0, 1.0]
    assert collate([full]).multiplicity is None


def test_merge_edges_computes_equal_edges_once(crystals):
    from sen.graph import merge_edges, orbit_graph

    cu = build_graph(crystals["Cu"].get_primitive_structure())  # one atom: its 12 nearest images are one edge
    merged = merge_edges(cu)
    assert len(cu.edge_src) == 12 and len(merged.edge_src) == 1 and merged.edge_count.tolist() == [12.0]
    assert merged.edge_length[0] == pytest.approx(float(cu.edge_length.mean()), abs=1e-6)
    for name in ("TiO2", "Al2O3"):
        rows = orbit_graph(build_graph(crystals[name]))
        merged = merge_edges(rows)
        assert merged.edge_count.sum() == len(rows.edge_src) and len(merged.edge_src) < len(rows.edge_src)
        for k in range(rows.n_atoms):  # every row keeps its multiset of (source, length)
            theirs = rows.edge_dst == k
            a = sorted((int(s), round(float(x), 4)) for s, x in zip(rows.edge_src[theirs], rows.edge_length[theirs], strict=True))
            mine = merged.edge_dst == k
            b = sorted(
                (int(s), round(float(x), 4))
                for s, x, c in zip(merged.edge_src[mine], merged.edge_length[mine], merged.edge_count[mine], strict=True)
                for _ in range(int(c))
            )
            assert a == b
    unequal = build_graph(crystals["CsCl"])  # every edge differs in source or length from the others of its row
    assert merge_edges(unequal, tolerance=0.0) is not None
    assert collate([merge_edges(cu), unequal]).edge_count.tolist() == [12.0] + [1.0] * len(unequal.edge_src)


@pytest.mark.parametrize("cell", [3.0, 6.0, 9.0])  # dense, none within the first radius, none at all
def test_first_neighbour_search_gives_the_cutoffs_edges(crystals, monkeypatch, cell):
    import sen.graph

    structures = [*crystals.values(), Structure(Lattice.cubic(cell), ["Ar"], [[0, 0, 0]])]
    quick = [neighbor_edges(s) for s in structures]
    monkeypatch.setattr(sen.graph, "FIRST_SEARCH_RADIUS", 100.0)  # one search, at the cutoff
    for s, mine in zip(structures, quick, strict=True):
        theirs = neighbor_edges(s)
        key = [np.lexsort((e[0], e[2], e[1])) for e in (mine, theirs)]
        for a, b in zip(mine, theirs, strict=True):
            assert np.array_equal(a[key[0]], b[key[1]]), s.composition
