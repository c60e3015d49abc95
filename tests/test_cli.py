"""The ``sen`` command: predict and symmetry, on good and bad files, in every output format."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pymatgen.io.cif import CifWriter

from sen.checkpoint import save_model
from sen.cli import PREDICT_COLUMNS, main
from sen.model import SEN

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def files(tmp_path, crystals, small_config) -> dict[str, Path]:
    """Two good CIFs, one broken CIF, one molecule, and a tiny saved model."""
    out = {}
    for name in ("NaCl", "TiO2"):
        out[name] = tmp_path / f"{name.lower()}.cif"
        CifWriter(crystals[name]).write_file(out[name])
    out["broken"] = tmp_path / "broken.cif"
    out["broken"].write_text("data_broken\n_cell_length_a five\nnot a crystal\n")
    out["molecule"] = tmp_path / "water.xyz"
    out["molecule"].write_text("3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    torch.manual_seed(0)
    (tmp_path / "tiny").mkdir()
    out["model"] = tmp_path / "tiny" / "model.pt"
    save_model(out["model"], SEN(small_config).eval())
    return out


def predict(capsys, files, *names: str, fmt: str = "table") -> tuple[int, str, str]:
    argv = ["predict", *(str(files[n]) for n in names), "--model", str(files["model"]), "--device", "cpu"]
    code = main([*argv, "--format", fmt])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_table_all_good(capsys, files):
    code, out, err = predict(capsys, files, "NaCl", "TiO2")
    assert code == 0 and err == ""
    header, *rows = out.strip().splitlines()
    assert header.split() == list(PREDICT_COLUMNS[:-1])
    assert len(rows) == 2
    assert "NaCl" in rows[0] and "Fm-3m (225)" in rows[0]
    assert "TiO2" in rows[1] and "P4_2/mnm (136)" in rows[1]


def test_predict_bad_file_gets_one_error_row_and_the_rest_are_predicted(capsys, files):
    code, out, _ = predict(capsys, files, "NaCl", "broken", "TiO2", "molecule")
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 5  # header + one line per file, in order
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {files['broken']}: could not read")
    assert str(files["molecule"]) in errors[1] and "molecule" in errors[1]
    assert "Fm-3m" in lines[1] and "P4_2/mnm" in lines[3]
    assert "Traceback" not in out


def test_predict_csv(capsys, files):
    code, out, _ = predict(capsys, files, "TiO2", "broken", fmt="csv")
    assert code == 1
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["file"] for r in rows] == [str(files["TiO2"]), str(files["broken"])]
    good, bad = rows
    assert good["formula"] == "TiO2" and good["error"] == "" and float(good["band_gap_eV"]) >= 0
    float(good["formation_energy_eV_per_atom"])
    assert bad["error"].startswith("could not read") and bad["band_gap_eV"] == ""


def test_predict_json(capsys, files):
    code, out, _ = predict(capsys, files, "NaCl", fmt="json")
    assert code == 0
    (row,) = json.loads(out)
    assert set(row) == set(PREDICT_COLUMNS)
    assert row["formula"] == "NaCl" and row["space_group"] == "Fm-3m (225)" and row["error"] is None
    assert row["band_gap_eV"] >= 0 and 0 <= row["metal_probability"] <= 1


def test_predict_with_missing_model_is_one_error_line(capsys, files, tmp_path):
    code = main(["predict", str(files["NaCl"]), "--model", str(tmp_path / "none"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: no model weights") and err.count("\n") == 1


def test_predict_missing_input_file(capsys, files, tmp_path):
    code, out, _ = predict(capsys, {**files, "gone": tmp_path / "gone.cif"}, "gone", "NaCl")
    assert code == 1
    assert f"error: {tmp_path / 'gone.cif'}: file not found" in out and "Fm-3m" in out


def test_symmetry_text_and_json(capsys, files):
    assert main(["symmetry", str(files["TiO2"])]) == 0
    out = capsys.readouterr().out
    assert "Formula: TiO2 (6 atoms in the cell)" in out
    assert "P4_2/mnm (No. 136)" in out and "Ti 2a" in out and "O 4f" in out
    assert main(["symmetry", str(files["NaCl"]), "--symprec", "0.1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["space_group_number"] == 225 and report["symprec"] == 0.1
    assert [o["label"] for o in report["orbits"]] == ["Na 4a", "Cl 4b"]
    assert report["orbits"][0]["atom_indices"] == [0, 1, 2, 3]


def test_symmetry_tolerance_changes_the_answer(capsys, tmp_path):
    from pymatgen.core import Lattice, Structure

    path = tmp_path / "stretched.cif"
    CifWriter(Structure(Lattice.tetragonal(4.123, 4.127), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])).write_file(path)
    for symprec, number in (("0.01", 221), ("0.0001", 123)):
        assert main(["symmetry", str(path), "--symprec", symprec, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["space_group_number"] == number


def test_symmetry_errors_are_one_line(capsys, files):
    assert main(["symmetry", str(files["broken"])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not read") and err.count("\n") == 1
    assert main(["symmetry", str(files["NaCl"]), "--symprec", "5"]) == 1
    assert "tolerance must be between 0 and 1" in capsys.readouterr().err


def test_usage_error_exits_with_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict"])
    assert info.value.code == 2
    assert "usage: sen predict" in capsys.readouterr().err


def test_installed_command_runs_as_a_subprocess(files):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    argv = [sys.executable, "-m", "sen", "predict", str(files["NaCl"]), str(files["broken"]), "--format", "json",
            "--model", str(files["model"]), "--device", "cpu"]  # fmt: skip
    bad = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert bad.returncode == 1, bad.stderr
    rows = json.loads(bad.stdout)
    assert rows[0]["formula"] == "NaCl" and rows[1]["error"].startswith("could not read")
    good = subprocess.run(argv[:5] + argv[6:], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert good.returncode == 0, good.stderr
    assert len(json.loads(good.stdout)) == 1
