"""The example gallery in assets/examples: every file reads, has the symmetry it claims, and is documented."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sen.io import read_structure
from sen.symmetry import CRYSTAL_SYSTEMS, analyze_symmetry

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
SOURCES = json.loads((EXAMPLES / "sources.json").read_text(encoding="utf-8"))
KINDS = {"metal", "insulator", "semiconductor", "semimetal"}


def test_sources_list_exactly_the_files_present():
    listed = [entry["file"] for entry in SOURCES]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(p.name for p in EXAMPLES.glob("*.cif"))
    assert len(listed) >= 15


def test_every_entry_is_documented():
    for entry in SOURCES:
        assert set(entry) >= {"file", "name", "formula", "space_group", "space_group_number", "crystal_system",
                              "kind", "source", "n_atoms"}, entry  # fmt: skip
        assert entry["file"] == entry["file"].lower() and entry["file"].endswith(".cif")
        assert len(entry["source"]) > 20, entry["file"]
        assert entry["kind"] in KINDS, entry["file"]
        assert entry["crystal_system"] in CRYSTAL_SYSTEMS


def test_all_seven_crystal_systems_and_the_required_crystals_are_covered():
    assert {e["crystal_system"] for e in SOURCES} == set(CRYSTAL_SYSTEMS)
    formulas = {e["formula"] for e in SOURCES}
    for required in ("Si", "NaCl", "Cu", "SrTiO3", "TiO2", "ZnO", "C", "LiFePO4", "CsCl", "Al2O3", "GaAs", "MoS2",
                     "SiO2", "Al", "Fe", "Mg"):  # fmt: skip
        assert required in formulas, required
    assert {e["space_group_number"] for e in SOURCES if e["formula"] == "TiO2"} == {136, 141}  # rutile, anatase
    assert any(e["kind"] == "metal" for e in SOURCES) and any(e["kind"] == "insulator" for e in SOURCES)


@pytest.mark.parametrize("entry", SOURCES, ids=[e["file"] for e in SOURCES])
def test_example_reads_and_has_its_space_group(entry):
    structure = read_structure(EXAMPLES / entry["file"])
    assert len(structure) == entry["n_atoms"] <= 32  # small enough for the app's interactive use
    assert structure.composition.reduced_formula == entry["formula"]
    report = analyze_symmetry(structure, symprec=0.01)
    assert report.space_group_number == entry["space_group_number"]
    assert report.space_group_symbol == entry["space_group"]
    assert report.crystal_system == entry["crystal_system"]


def test_build_script_reproduces_the_files(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_examples", EXAMPLES.parent / "build_examples.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "build_examples", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "EXAMPLES_DIR", tmp_path)
    module.main()
    for path in [*EXAMPLES.glob("*.cif"), EXAMPLES / "sources.json"]:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
