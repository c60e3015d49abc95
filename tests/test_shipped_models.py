"""The weights in models/ load safely and make physically sensible predictions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pymatgen.core import Lattice, Structure

from sen import Predictor
from sen.predict import MODELS_DIR

MODEL = MODELS_DIR / "sen_mp"


def rock_salt_nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def fcc_copper() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.615), ["Cu"], [[0, 0, 0]])


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.set_num_threads(1)
    return Predictor.load()


def test_weights_load_with_weights_only():
    payload = torch.load(MODEL / "model.pt", map_location="cpu", weights_only=True)
    networks = payload["members"] if payload["arch"] == "ensemble" else [payload]
    for network in networks:
        assert network["arch"] == "sen"
        assert set(network["model_config"]["targets"]) == {"band_gap", "formation_energy_per_atom"}
    card = json.loads((MODEL / "metrics.json").read_text())
    assert card["n_members"] == len(networks) == Predictor.load().n_members


def test_model_card_and_metrics_are_shipped():
    assert (MODEL / "README.md").is_file()
    card = json.loads((MODEL / "metrics.json").read_text())
    for target in ("band_gap", "formation_energy_per_atom"):
        assert card["targets"][target]["test_mae"] > 0
    assert "Na" in card["training_elements"] and card["max_atoms_in_training"] >= 100


def test_known_insulator_and_metal(predictor):
    nacl, cu = predictor.predict([rock_salt_nacl(), fcc_copper()])
    assert nacl["band_gap"] > 2.0, nacl  # PBE gap of NaCl is about 5 eV
    assert cu["band_gap"] < 0.5, cu
    assert nacl["formation_energy_per_atom"] < -1.0  # strongly bound ionic solid (MP: about -2 eV/atom)
    assert abs(cu["formation_energy_per_atom"]) < 0.3  # an element: about 0 eV/atom


def test_gallery_examples_predict_finite(predictor):
    from sen.io import read_structure

    files = sorted((Path(__file__).resolve().parent.parent / "assets" / "examples").glob("*.cif"))
    assert len(files) >= 15
    results = predictor.predict([read_structure(f) for f in files])
    for f, r in zip(files, results, strict=False):
        assert math.isfinite(r["band_gap"]) and r["band_gap"] >= 0, f.name
        assert math.isfinite(r["formation_energy_per_atom"]), f.name


def test_an_ensemble_reports_the_spread_of_its_networks(predictor):
    if predictor.n_members == 1:
        pytest.skip("the shipped model is a single network")
    nacl, cu = predictor.predict([rock_salt_nacl(), fcc_copper()])
    for r in (nacl, cu):
        assert 0 <= r["formation_energy_per_atom_std"] < 0.5 and 0 <= r["band_gap_std"] < 2.0
    card = json.loads((MODEL / "metrics.json").read_text())
    for target in ("band_gap", "formation_energy_per_atom"):
        assert card["targets"][target]["spread"]["high_spread_threshold"] > 0
