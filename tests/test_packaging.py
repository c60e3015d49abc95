"""The package as a user installs it: a wheel, in a fresh virtual environment, run from another folder,
finds its shipped weights (package data) and predicts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools builds in the tree: no stale files in the wheel
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    (found,) = out.glob("sen_crystal_explorer-*.whl")
    return found


def test_wheel_carries_the_shipped_model(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for part in ("model.pt", "metrics.json", "split.json", "README.md"):
        assert f"sen/models/sen_mp/{part}" in names
    assert not any(n.startswith(("tests/", "app/", "benchmarks/")) for n in names)


def test_installed_wheel_predicts_from_another_folder(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    # the dependencies (torch, pymatgen, ...) come from this environment; sen itself only from the wheel
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=600)  # fmt: skip
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(ROOT / "assets" / "examples" / "nacl_rocksalt.cif", work / "NaCl.cif")
    where = subprocess.run([python, "-c", "import sen; print(sen.__file__)"], cwd=work, check=True,
                           capture_output=True, text=True).stdout  # fmt: skip
    assert where.startswith(str(env_dir)), where  # the installed copy, not this checkout
    done = subprocess.run([env_dir / "bin" / "sen", "predict", "NaCl.cif", "--format", "csv"], cwd=work,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.strip().splitlines()
    values = dict(zip(header.split(","), row.split(","), strict=True))
    assert values["formula"] == "NaCl" and values["space_group"] == "Fm-3m (225)"
    assert float(values["band_gap_eV"]) > 2.0 and float(values["formation_energy_eV_per_atom"]) < -1.0
