"""sen.predict: the public Predictor API on real crystals, with tiny untrained or saved models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sen.checkpoint import load_model, save_ensemble, save_model
from sen.errors import StructureError
from sen.graph import GraphConfig
from sen.model import SEN, Ensemble
from sen.predict import Predictor, mutual_information


@pytest.fixture(scope="module")
def predictor(small_config) -> Predictor:
    return Predictor.untrained(small_config, seed=1)


@pytest.fixture()
def saved_model(tmp_path, small_config):
    """A tiny SEN saved with sen.checkpoint.save_model, plus a model card, in tmp_path/tiny/."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    torch.manual_seed(4)
    model = SEN(small_config).eval()
    save_model(folder / "model.pt", model)
    (folder / "metrics.json").write_text(json.dumps({"targets": {"band_gap": {"test_mae": 0.5}}}))
    return folder, model


def test_predict_one_structure(predictor, crystals):
    (result,) = predictor.predict(crystals["NaCl"])
    assert {"band_gap", "formation_energy_per_atom", "metal_probability", "is_metal", "space_group_symbol",
            "space_group_number"} <= set(result)  # fmt: skip
    assert result["space_group_symbol"] == "Fm-3m" and result["space_group_number"] == 225
    assert math.isfinite(result["formation_energy_per_atom"])
    assert result["band_gap"] >= 0 and 0 <= result["metal_probability"] <= 1
    assert result["is_metal"] == (result["band_gap"] == 0.0)
    assert predictor.targets == ("formation_energy_per_atom", "band_gap")


def test_predict_many_keeps_order_and_matches_single_calls(predictor, crystals):
    names = list(crystals)
    many = predictor.predict([crystals[n] for n in names], batch_size=3)  # several batches
    assert [r["space_group_number"] for r in many] == [227, 225, 225, 221, 221, 186, 136, 167]
    for name, r in zip(names, many, strict=True):
        (single,) = predictor.predict(crystals[name])
        assert r["formation_energy_per_atom"] == pytest.approx(single["formation_energy_per_atom"], abs=1e-5)
        assert r["band_gap"] == pytest.approx(single["band_gap"], abs=1e-5)
    assert predictor.predict([]) == []


def test_explain_contents_and_shapes(predictor, crystals, small_config):
    corundum = crystals["Al2O3"]
    ex = predictor.explain(corundum)
    n, k, t = len(corundum), small_config.n_capsules, len(small_config.targets)
    assert ex["space_group_symbol"] == "R-3c" and ex["space_group_number"] == 167
    assert ex["crystal_system"] == "trigonal" and ex["point_group"] == "-3m"
    assert ex["symmetry"].n_orbits == 2
    assert ex["wyckoff_labels"] == ["Al 12c"] * 12 + ["O 18e"] * 18
    assert ex["orbit_index"].tolist() == [0] * 12 + [1] * 18
    assert ex["routing"].shape == (n, k)
    np.testing.assert_allclose(ex["routing"].sum(1), 1.0, atol=1e-5)
    assert ex["orbit_routing"].shape == (2, k)
    np.testing.assert_allclose(ex["orbit_routing"][1], ex["routing"][12:].mean(0), atol=1e-6)
    assert ex["capsule_attention"].shape == (k, k)
    assert ex["capsule_activation"].shape == (k,)
    assert ex["output_routing"].shape == (t, k)
    assert ex["atom_contributions"].shape == (n, t)
    assert ex["dominant_capsule"].shape == (n,) and ex["dominant_capsule"].max() < k
    assert 0 <= ex["routing_spread"] < 1e-5  # equivalent atoms route identically
    assert 0 <= ex["orbit_capsule_mutual_information"] <= ex["orbit_entropy"] + 1e-9
    assert ex["orbit_entropy"] == pytest.approx(-(0.4 * math.log2(0.4) + 0.6 * math.log2(0.6)))
    (plain,) = predictor.predict(corundum)
    assert ex["band_gap"] == pytest.approx(plain["band_gap"], abs=1e-6)


def test_explain_labels_like_international_tables(predictor, crystals):
    ex = predictor.explain(crystals["SrTiO3"])
    assert ex["wyckoff_labels"] == ["Sr 1a", "Ti 1b", "O 3c", "O 3c", "O 3c"]


def test_explain_at_a_given_tolerance(predictor):
    from pymatgen.core import Lattice, Structure

    stretched = Structure(Lattice.tetragonal(4.123, 4.127), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert predictor.explain(stretched, symprec=1e-4)["space_group_number"] == 123
    assert predictor.explain(stretched, symprec=0.01)["space_group_number"] == 221


def test_mutual_information():
    a = np.array([0, 0, 1, 1])
    assert mutual_information(a, np.array([5, 5, 7, 7])) == pytest.approx((1.0, 1.0))
    assert mutual_information(a, np.array([3, 3, 3, 3])) == pytest.approx((0.0, 1.0))


def test_load_saved_model_round_trips_predictions(saved_model, crystals, small_config):
    folder, model = saved_model
    structures = [crystals["TiO2"], crystals["Cu"]]
    expected = Predictor(model, GraphConfig(), device="cpu").predict(structures)
    for where in (folder, folder / "model.pt", str(folder / "model.pt")):
        loaded = Predictor.load(where, device="cpu")
        assert loaded.name == "tiny" and loaded.path == folder / "model.pt"
        assert loaded.card["targets"]["band_gap"]["test_mae"] == 0.5
        assert loaded.graph_config == GraphConfig()
        assert not loaded.model.training
        for got, want in zip(loaded.predict(structures), expected, strict=True):
            assert got["formation_energy_per_atom"] == pytest.approx(want["formation_energy_per_atom"], abs=1e-6)
            assert got["band_gap"] == pytest.approx(want["band_gap"], abs=1e-6)


def test_load_by_name_from_models_dir(saved_model, monkeypatch):
    import sen.checkpoint

    folder, _ = saved_model
    monkeypatch.setattr(sen.checkpoint, "MODELS_DIR", folder.parent)
    assert Predictor.load("tiny", device="cpu").path == folder / "model.pt"


def test_load_missing_model_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model weights at .*sen train"):
        Predictor.load(tmp_path / "nothing-here")
    with pytest.raises(FileNotFoundError, match="model.pt"):
        Predictor.load(tmp_path)  # a folder without model.pt


def test_too_many_atoms_and_wrong_types_are_refused(predictor, crystals):
    big = crystals["NaCl"] * (4, 4, 4)  # 512 atoms > 500
    with pytest.raises(StructureError, match="512 atoms.*limit of 500"):
        predictor.predict(big)
    with pytest.raises(StructureError, match="512 atoms"):
        predictor.explain(big)
    with pytest.raises(StructureError, match="expected a pymatgen Structure"):
        predictor.predict(["NaCl.cif"])


def test_saved_ensemble_loads_safely_and_reports_its_spread(tmp_path, small_config, crystals):
    nets = []
    for seed in (4, 5, 6):
        torch.manual_seed(seed)
        nets.append(SEN(small_config).eval())
    folder = tmp_path / "trio"
    folder.mkdir()
    save_ensemble(folder / "model.pt", nets, extra={"members": ["a", "b", "c"]})
    assert torch.load(folder / "model.pt", weights_only=True)["arch"] == "ensemble"
    assert isinstance(load_model(folder / "model.pt"), Ensemble)

    loaded = Predictor.load(folder, device="cpu")
    assert loaded.n_members == 3 and Predictor.untrained(small_config).n_members == 1
    structures = [crystals["NaCl"], crystals["TiO2"]]
    results = loaded.predict(structures)
    singles = [
        Predictor(net, GraphConfig(), device="cpu").predict(structures) for net in nets
    ]
    for i, r in enumerate(results):
        fe = np.array([s[i]["formation_energy_per_atom"] for s in singles])
        assert r["formation_energy_per_atom"] == pytest.approx(fe.mean(), abs=1e-5)
        assert r["formation_energy_per_atom_std"] == pytest.approx(fe.std(), abs=1e-5)
        assert r["band_gap_std"] >= 0 and r["is_metal"] == (r["band_gap"] == 0.0)
    explained = loaded.explain(crystals["TiO2"])
    assert explained["formation_energy_per_atom"] == pytest.approx(results[1]["formation_energy_per_atom"], abs=1e-5)
    assert explained["routing"].shape == (len(crystals["TiO2"]), small_config.n_capsules)
    # a single network's results carry no spread
    assert "band_gap_std" not in singles[0][0]

    # networks chosen per target survive saving and loading
    save_ensemble(folder / "model.pt", nets, target_members={"formation_energy_per_atom": [0, 2]})
    chosen = Predictor.load(folder, device="cpu")
    assert chosen.model.target_members == {"formation_energy_per_atom": [0, 2], "band_gap": [0, 1, 2]}
    assert chosen.members_for("formation_energy_per_atom") == 2 and chosen.members_for("band_gap") == 3
    fe = np.array([singles[k][1]["formation_energy_per_atom"] for k in (0, 2)])
    assert chosen.predict(structures)[1]["formation_energy_per_atom"] == pytest.approx(fe.mean(), abs=1e-5)


def test_ensemble_of_networks_with_other_featurisers_is_refused(small_config):
    a, b = SEN(small_config), SEN(small_config)
    a.graph_config, b.graph_config = (
        GraphConfig(),
        GraphConfig(max_neighbors=8),
    )
    with pytest.raises(ValueError, match="different featuriser settings"):
        save_ensemble(Path("unused.pt"), [a, b])


def test_sites_outside_the_cell_are_predicted_as_the_same_crystal_and_left_as_given(crystals, small_config):
    from pymatgen.core import Structure

    nacl = crystals["NaCl"]
    moved = Structure(nacl.lattice, nacl.species, nacl.frac_coords + [[40, -3, 7]] * len(nacl), to_unit_cell=False)
    given = moved.frac_coords.copy()
    predictor = Predictor.untrained(small_config)
    (far,), (near,) = predictor.predict(moved), predictor.predict(nacl)
    assert far["formation_energy_per_atom"] == pytest.approx(near["formation_energy_per_atom"], abs=1e-5)
    assert np.array_equal(moved.frac_coords, given)  # the caller's structure is not changed
