"""sen.stacked.StackedSEN: an ensemble's networks run as one give each network's own numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import sen.stacked
from sen.graph import collate
from sen.io import read_structure
from sen.model import SEN, Ensemble
from sen.predict import Predictor
from sen.stacked import StackedSEN

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


def _networks(config, n: int = 3) -> list[SEN]:
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        net = SEN(config).eval()
        with torch.no_grad():  # give the heads other scales too, as trained networks have
            net.heads.target_mean += seed
            net.heads.target_std *= 1 + seed
        nets.append(net)
    return nets


def _assert_same(mine: dict, theirs: dict, atol: float = 1e-5) -> None:
    assert set(mine) == set(theirs)
    for key, value in theirs.items():
        torch.testing.assert_close(mine[key], value, atol=atol, rtol=1e-4, msg=key)


def test_stacked_networks_give_each_networks_outputs(crystals, small_config):
    nets = _networks(small_config)
    predictor = Predictor(nets[0], device="cpu")
    graphs, _ = predictor._graphs(list(crystals.values()))
    batch = collate(graphs)
    with torch.inference_mode():
        stacked = StackedSEN(nets)(batch, explain=True)
        for net, mine in zip(nets, stacked, strict=True):
            _assert_same(mine, net(batch, explain=True))


@pytest.mark.parametrize("max_edge_rows", [10**9, 1])  # all members together; one member at a time
def test_predictor_runs_an_ensemble_stacked_with_the_loops_numbers(crystals, small_config, monkeypatch, max_edge_rows):
    monkeypatch.setattr(sen.stacked, "MAX_EDGE_ROWS", max_edge_rows)
    ensemble = Ensemble(_networks(small_config))
    predictor = Predictor(ensemble, device="cpu")
    assert predictor.stacked is not None
    structures = list(crystals.values())
    fast = predictor.predict(structures)
    predictor.stacked = None  # the networks one after the other
    slow = predictor.predict(structures)
    for a, b in zip(fast, slow, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-5), key


def test_shipped_ensemble_stacked_equals_its_networks_and_explains_every_network():
    predictor = Predictor.load(device="cpu")
    assert predictor.stacked is not None and predictor.n_members == 6
    structures = [read_structure(EXAMPLES / f) for f in ("lifepo4_olivine.cif", "cu_fcc.cif", "al2sio5_kyanite.cif")]
    fast = predictor.predict(structures)
    explanation = predictor.explain(structures[0])
    predictor.stacked = None
    slow = predictor.predict(structures)
    for a, b in zip(fast, slow, strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    networks = explanation["networks"]
    assert len(networks) == 6
    assert (networks[0]["routing"] == explanation["routing"]).all()
    for member, routing in zip(predictor.model.members, networks, strict=True):
        single = Predictor(member, device="cpu").explain(structures[0])
        for key in ("routing", "orbit_routing", "capsule_attention", "capsule_activation", "output_routing"):
            assert routing[key] == pytest.approx(single[key], abs=1e-5), key
    assert len({float(n["orbit_capsule_mutual_information"]) for n in networks}) > 1  # six different networks


def test_networks_of_different_shapes_are_not_stacked(small_config):
    from dataclasses import replace

    with pytest.raises(ValueError, match="one shape"):
        StackedSEN([SEN(small_config), SEN(replace(small_config, width=8))])


def test_orbit_rows_give_every_atoms_numbers_with_the_shipped_weights():
    """Predictor.predict runs the shipped networks on one row per Wyckoff orbit: the numbers of every atom."""
    from sen.graph import orbit_graph

    predictor = Predictor.load(device="cpu")
    names = ("lifepo4_olivine.cif", "al2sio5_kyanite.cif", "nacl_rocksalt.cif", "srtio3_perovskite.cif")
    structures = [read_structure(EXAMPLES / f) for f in names]
    structures.append(structures[0] * (2, 1, 1))
    graphs, _ = predictor._graphs(structures)
    rows = [orbit_graph(g) for g in graphs]
    assert all(r is not None and r.n_atoms < g.n_atoms for r, g in zip(rows, graphs, strict=True))
    assert rows[0].n_atoms == rows[-1].n_atoms  # the supercell has the same orbits
    fast = predictor.predict(structures)
    embed = predictor.embed(structures)
    predictor.orbit_rows = False
    slow = predictor.predict(structures)
    assert np.allclose(predictor.embed(structures), embed, atol=1e-5)
    for a, b in zip(fast, slow, strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    with torch.inference_mode():  # one network alone on orbit rows, too
        net = predictor.model.members[0]
        _assert_same(net(collate(rows[:2])), net(collate(graphs[:2])))


def test_moving_the_stacked_networks_drops_their_cached_weight_views(crystals, small_config):
    nets = _networks(small_config, 2)
    stacked = StackedSEN(nets)
    graphs, _ = Predictor(nets[0], device="cpu")._graphs([crystals["NaCl"]])
    before = stacked(collate(graphs))
    assert stacked._lin_cache  # views of the weights, built on first use
    stacked.to(torch.float64)
    assert not stacked._lin_cache and stacked._buffers["Tfold__routing__weight"].dtype == torch.float64
    stacked.to(torch.float32)
    after = stacked(collate(graphs))
    for a, b in zip(before, after, strict=True):
        _assert_same(a, b)
