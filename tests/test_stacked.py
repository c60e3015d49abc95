"""sen.stacked.StackedSEN: an ensemble's networks run as one give each network's own numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sen.predict
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


def test_predictor_runs_an_ensemble_stacked_with_the_loops_numbers(crystals, small_config, monkeypatch):
    monkeypatch.setattr(sen.predict, "STACKED_MAX_EDGES", 10**9)  # the stacked path for every batch size
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


def test_shipped_ensemble_stacked_equals_its_networks_and_explains_every_network(monkeypatch):
    monkeypatch.setattr(sen.predict, "STACKED_MAX_EDGES", 10**9)
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
