"""sen screen / Predictor.screen: rows out = records in, the numbers of Predictor.predict, bad records
with their reasons, every input format, kill-and-resume without duplicates or gaps, the Ray engine."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _builders import GARBAGE_CIF, cif_text, crystals, disordered_cif, rock_salt, write_jsonl

import sen.screen
from sen.cli import main
from sen.predict import Predictor
from sen.screen import SCREEN_COLUMNS, screen

ROOT = Path(__file__).resolve().parent.parent
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

PAIRS = {  # prediction key -> output column
    "band_gap": "band_gap_eV",
    "band_gap_std": "band_gap_std_eV",
    "formation_energy_per_atom": "formation_energy_eV_per_atom",
    "formation_energy_per_atom_std": "formation_energy_std_eV_per_atom",
    "metal_probability": "metal_probability",
}


def good_crystals(n: int = 200) -> list[tuple[str, object]]:
    """``n`` distinct small crystals: the 56 of _builders, and copies with 3 %, 6 %, ... larger lattices."""
    base = crystals(60)
    out = []
    for k in range(n):
        s = base[k % len(base)].structure.copy()
        s.scale_lattice(s.volume * (1 + 0.03 * (k // len(base))) ** 3)
        out.append((f"c{k:03d}", s))
    return out


def bad_rows() -> list[dict | str]:
    """One record of every kind that cannot be used, with the reason each must get."""
    big = rock_salt("Na", "Cl", 5.64)
    big.make_supercell([7, 7, 6])  # 588 atoms, over the 500 limit
    return [
        {"material_id": "bad-garbage", "cif": GARBAGE_CIF},
        {"material_id": "bad-disorder", "cif": disordered_cif()},
        {"material_id": "bad-too-many", "cif": cif_text(big)},
        {"material_id": "bad-empty", "cif": ""},
        '{"material_id": "bad-json", "cif": ',  # a line cut short: not JSON
    ]


BAD_REASONS = {
    "bad-garbage": "could not read",
    "bad-disorder": "partial occupancies",
    "bad-too-many": "atoms per cell",
    "bad-empty": "no structure",
}


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(device="cpu")


@pytest.fixture(scope="module")
def good() -> list[tuple[str, object]]:
    return good_crystals(200)


@pytest.fixture(scope="module")
def expected(predictor, good) -> dict[str, dict]:
    """Predictor.predict for the 200 good crystals, by id."""
    preds = predictor.predict([s for _, s in good])
    return {cid: p for (cid, _), p in zip(good, preds, strict=True)}


def check_rows(rows: list[dict], expected: dict[str, dict], n_good: int) -> None:
    """Every good row equals Predictor.predict to float32 precision (1e-6 relative: crystals batched with
    other crystals sum in another order); every bad row has its reason and no numbers."""
    good_rows = [r for r in rows if not r["error"]]
    assert len(good_rows) == n_good
    for r in good_rows:
        p = expected[r["id"]]
        for key, col in PAIRS.items():
            assert r[col] == pytest.approx(p[key], rel=1e-6, abs=1e-6), (r["id"], col)
        assert r["space_group"] == p["space_group_symbol"] and r["space_group_number"] == p["space_group_number"]
        assert r["is_metal"] == p["is_metal"] and r["model"] == "sen_mp" and r["model_version"].startswith("sha256:")
    for r in rows:
        if r["error"]:
            assert r["band_gap_eV"] is None and r["formation_energy_eV_per_atom"] is None
            if r["id"] in BAD_REASONS:
                assert BAD_REASONS[r["id"]] in r["error"], r
            assert "\n" not in r["error"]


def read_parquet(path: Path) -> list[dict]:
    table = pq.read_table(path)
    assert tuple(table.column_names) == SCREEN_COLUMNS
    return table.to_pylist()


def run_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "SEN_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "sen", "screen", *args, "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for_part(parts: Path, proc: subprocess.Popen, at_least: int = 1, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while len(list(parts.glob("part-*.parquet"))) < at_least:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "no part written in time"
        time.sleep(0.02)


def _descendants(pid: int) -> list:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the test requirements' streamlit
        return []
    return psutil.Process(pid).children(recursive=True)


def _assert_gone(processes: list, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    alive = processes
    while alive and time.monotonic() < end:
        alive = [p for p in alive if p.is_running() and p.status() != "zombie"]
        time.sleep(0.2)
    assert not alive, [p.cmdline()[:3] for p in alive]


def test_cli_200_crystals_killed_and_resumed_equal_predict(tmp_path, good, expected, capsys):
    """200 crystals and every kind of bad record in gzip JSON Lines: a process-pool run killed (SIGKILL)
    after its first part, then the same command again: one row per record, no duplicate, no gap,
    Predictor.predict's numbers, reasons for the bad ones."""
    rows_in = [{"material_id": cid, "cif": cif_text(s)} for cid, s in good]
    rows_in[50:50] = bad_rows()  # bad records among the good ones
    data = write_jsonl(tmp_path / "crystals.jsonl.gz", rows_in)
    out = tmp_path / "results.parquet"
    parts = tmp_path / "results.parquet.parts"
    proc = run_cli(str(data), "--out", str(out), "--workers", "1", "--part-rows", "10")
    wait_for_part(parts, proc)
    helpers = _descendants(proc.pid)  # the pool's worker (and the forkserver it came from)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not out.exists()  # killed part-way: only whole parts are left
    _assert_gone(helpers)  # the workers notice their parent is gone and exit
    first = sum(pq.read_metadata(p).num_rows for p in parts.glob("part-*.parquet"))
    assert 0 < first < len(rows_in)

    code = main(["screen", str(data), "--out", str(out), "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1  # some records failed
    assert f"resuming: {first:,} records" in err and "failed 1: partial occupancies / disorder" in err
    assert not parts.exists()
    rows = read_parquet(out)
    assert len(rows) == len(rows_in) == 205
    assert len({r["id"] for r in rows}) == 205  # no duplicates
    assert sorted(r["row"] for r in rows) == list(range(205))  # no gaps
    assert {r["source"] for r in rows} == {str(data)}
    check_rows(rows, expected, 200)
    assert {r["id"] for r in rows if r["error"]} == {*BAD_REASONS, "crystals.jsonl.gz:55"}  # file:line


def test_sigterm_commits_rows_so_far_and_resume_completes(tmp_path, good, expected, capsys):
    """SIGTERM (as Ctrl-C) commits what was received, says how to resume, exits 130; the re-run completes."""
    data = write_jsonl(tmp_path / "c.jsonl", [{"id": cid, "cif": cif_text(s)} for cid, s in good[:120]])
    out = tmp_path / "r.parquet"
    proc = run_cli(str(data), "--out", str(out), "--workers", "0", "--part-rows", "10")
    wait_for_part(out.with_name("r.parquet.parts"), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "re-run the same command to resume" in err and "Traceback" not in err
    assert main(["screen", str(data), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    rows = read_parquet(out)
    assert sorted(r["row"] for r in rows) == list(range(120)) and len({r["id"] for r in rows}) == 120
    check_rows(rows, expected, 120)


def test_every_input_format(tmp_path, good, expected, predictor):
    """A folder of CIF, POSCAR, extended XYZ and pymatgen JSON files; CSV; Parquet; ASE db; plain JSON Lines:
    each record keeps its id (file name, id column, row number, database id) and Predictor.predict's numbers."""
    from ase.db import connect
    from pymatgen.io.ase import AseAtomsAdaptor

    folder = tmp_path / "structures"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.cif").write_text(cif_text(good[0][1]))
    good[1][1].to(filename=str(folder / "POSCAR_b"), fmt="poscar")
    from ase.io import write as ase_write

    ase_write(folder / "sub" / "c.xyz", AseAtomsAdaptor.get_atoms(good[2][1]), format="extxyz")
    (folder / "d.json").write_text(json.dumps(good[3][1].as_dict()))
    (folder / "broken.cif").write_text(GARBAGE_CIF)
    (folder / "notes.txt").write_text("not a structure")  # ignored: not a structure file name

    with open(tmp_path / "c.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["name", "cif"])
        w.writeheader()
        w.writerows([{"name": good[4][0], "cif": cif_text(good[4][1])}, {"name": "", "cif": cif_text(good[5][1])},
                     {"name": "csv-empty", "cif": ""}])  # fmt: skip
    pq.write_table(pa.table({"material_id": [good[6][0], good[7][0], "pq-bad"],
                             "cif": [cif_text(good[6][1]), cif_text(good[7][1]), disordered_cif()]}),
                   tmp_path / "c.parquet", row_group_size=2)  # fmt: skip
    db = connect(str(tmp_path / "c.db"))
    db.write(AseAtomsAdaptor.get_atoms(good[8][1]), material_id=good[8][0])
    db.write(AseAtomsAdaptor.get_atoms(good[9][1]))  # no id: the database row id
    write_jsonl(tmp_path / "c.jsonl", [{"id": good[10][0], "cif": cif_text(good[10][1])}, {"cif": GARBAGE_CIF}])

    inputs = [folder, tmp_path / "c.csv", tmp_path / "c.parquet", tmp_path / "c.db", tmp_path / "c.jsonl"]
    for out in (tmp_path / "all.parquet", tmp_path / "all.csv"):
        summary = screen(inputs, out, workers=0, progress=False, log=lambda _: None)
        assert summary.processed == 15 and summary.predicted == 11
        if out.suffix == ".csv":
            with open(out, newline="") as fh:
                rows = list(csv.DictReader(fh))
            assert tuple(rows[0]) == SCREEN_COLUMNS
            for r in rows:
                for c in (*PAIRS.values(), "space_group_number", "n_atoms", "row"):
                    r[c] = None if r[c] == "" else float(r[c])
                r["is_metal"] = None if r["is_metal"] == "" else r["is_metal"] == "True"
                r["error"] = r["error"] or None
        else:
            rows = read_parquet(out)
        assert [r["id"] for r in rows] == [
            "POSCAR_b", "a.cif", "broken.cif", "d.json", "sub/c.xyz",  # the folder, files in sorted order
            good[4][0], "c.csv:row1", "csv-empty",  # CSV: the name column, else the row number
            good[6][0], good[7][0], "pq-bad",  # Parquet
            good[8][0], "2",  # ASE db: material_id, else the database row id
            good[10][0], "c.jsonl:2",  # JSON Lines: id, else file:line
        ]  # fmt: skip
        by_id = {r["id"]: r for r in rows}
        assert len(rows) == 15
        renamed = {"a.cif": 0, "POSCAR_b": 1, "sub/c.xyz": 2, "d.json": 3, "c.csv:row1": 5, "2": 9}
        expect = {**{k: expected[good[i][0]] for k, i in renamed.items()},
                  **{good[i][0]: expected[good[i][0]] for i in (4, 6, 7, 8, 10)}}  # fmt: skip
        check_rows(rows, expect, 11)
        assert "could not read" in by_id["broken.cif"]["error"] and "no structure" in by_id["csv-empty"]["error"]
        assert "partial occupancies" in by_id["pq-bad"]["error"]


def test_python_api_yields_rows_in_order(predictor, good, expected):
    """Predictor.screen: Structures, (id, structure) pairs, records and text; a bad item gets its reason."""
    items = [good[0][1], (good[1][0], good[1][1]), {"material_id": good[2][0], "cif": cif_text(good[2][1])},
             GARBAGE_CIF, 42]  # fmt: skip
    rows = list(predictor.screen(items))
    assert [r["row"] for r in rows] == [0, 1, 2, 3, 4] and tuple(rows[0]) == SCREEN_COLUMNS
    assert [r["id"] for r in rows] == ["0", good[1][0], good[2][0], "3", "4"]
    rows[0]["id"] = good[0][0]
    check_rows(rows[:3], expected, 3)
    assert "could not read" in rows[3]["error"] and "cannot screen a int" in rows[4]["error"]


def test_existing_output_other_input_and_locks_are_refused(tmp_path, good, capsys):
    data = write_jsonl(tmp_path / "a.jsonl", [{"id": cid, "cif": cif_text(s)} for cid, s in good[:3]])
    out = tmp_path / "r.csv"
    assert main(["screen", str(data), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["screen", str(data), "--out", str(out), "--workers", "0", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and "--overwrite" in err and err.count("\n") == 1
    assert main(["screen", str(data), "--out", str(out), "--workers", "0", "--no-progress", "--overwrite"]) == 0
    # parts left by an interrupted run over other input are not mixed in
    parts = tmp_path / "x.parquet.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text(json.dumps({"inputs": [], "model": "other"}))
    assert main(["screen", str(data), "--out", str(tmp_path / "x.parquet"), "--workers", "0", "--no-progress"]) == 1
    assert "written for other input" in capsys.readouterr().err
    assert main(["screen", str(tmp_path / "missing.jsonl"), "--out", str(out), "--no-progress"]) == 1
    assert "input not found" in capsys.readouterr().err


def test_ray_engine_missing_says_how_to_install(tmp_path, good, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "cif": cif_text(good[0][1])}])
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    code = main(["screen", str(data), "--out", str(tmp_path / "r.parquet"), "--engine", "ray", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert 'pip install "sen-crystal-explorer[screen]"' in err
    assert sen.screen.resolve_engine("auto", "ray://head:10001") == "local"  # auto without Ray: the local pool


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # e.g. its raylet timing out on a machine loaded far beyond its cores
        ray.shutdown()
        pytest.skip(f"Ray did not start on this machine: {str(exc).splitlines()[0][:120]}")
    yield ray
    ray.shutdown()


def test_ray_engine_resumes_a_local_run_and_equals_predict(tmp_path, good, expected, ray_local, monkeypatch):
    """Ray Data read -> featurise tasks -> predicting actors: after a local run interrupted after its first
    chunk, the Ray engine writes the rest; one row per record, Predictor.predict's numbers."""
    rows_in = [{"material_id": cid, "cif": cif_text(s)} for cid, s in good[:40]] + bad_rows()
    data = write_jsonl(tmp_path / "c.jsonl.gz", rows_in)
    out = tmp_path / "r.parquet"
    real = sen.screen.iter_local

    def interrupted(*args, **kwargs):
        gen = real(*args, **kwargs)
        yield next(gen)
        raise KeyboardInterrupt

    monkeypatch.setattr(sen.screen, "iter_local", interrupted)
    with pytest.raises(KeyboardInterrupt):
        screen([data], out, workers=0, part_rows=5, progress=False, log=lambda _: None)
    monkeypatch.setattr(sen.screen, "iter_local", real)
    summary = screen([data], out, engine="ray", actors=1, progress=False, log=lambda _: None)
    assert summary.skipped_done == 32 and summary.processed == len(rows_in) - 32
    assert ray_local.is_initialized()  # a Ray the caller started is left running
    rows = read_parquet(out)
    assert sorted(r["row"] for r in rows) == list(range(len(rows_in))) and len({r["id"] for r in rows}) == 45
    check_rows(rows, expected, 40)
