"""sen.training.data: the four dataset formats, bad records counted by reason, the on-disk cache, the split."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch
from _builders import (
    GARBAGE_CIF,
    cif_text,
    crystals,
    disordered_cif,
    jsonl_rows,
    too_close_cif,
    write_cgcnn,
    write_csv,
    write_jsonl,
    write_matbench,
)
from pymatgen.core import Lattice, Structure

import sen.training.data
from sen.graph import GraphConfig
from sen.training.data import DatasetError, detect_dataset_format, iter_raw_records, load_dataset, split_ids

FE, GAP = "formation_energy_per_atom", "band_gap"
DISORDER = "partial occupancies / disorder"
UNPARSEABLE = "unparseable structure"
LOW_FE = "unphysical formation energy (< -5.0 eV/atom)"
NO_STRUCTURE = "no structure (empty or missing CIF)"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def assert_kept(packed, good) -> None:
    """The packed dataset holds exactly the good crystals, in file order, with their targets and atoms."""
    assert list(packed.ids) == [c.id for c in good]
    for i, c in enumerate(good):
        want = [getattr(c, t) for t in packed.target_names]
        np.testing.assert_allclose(packed.targets[i], want, rtol=1e-6, atol=1e-6)
        g = packed.graph(i)
        assert g.n_atoms == len(c.structure)
        assert sorted(g.atomic_numbers.tolist()) == sorted(site.specie.Z for site in c.structure)
        assert len(g.edge_src) > 0


# ----------------------------------------------------------------------------- the formats


def test_jsonl_gz_keeps_good_records_and_counts_every_bad_one(tmp_path):
    good = crystals(6)
    rows = jsonl_rows(good)
    salt = cif_text(good[0].structure)
    bad = [
        {"material_id": "bad-garbage", FE: -1.0, GAP: 1.0, "cif": GARBAGE_CIF},
        {"material_id": "bad-disorder", FE: -1.0, GAP: 0.0, "cif": disordered_cif()},
        {"material_id": "bad-close", FE: -1.0, GAP: 0.0, "cif": too_close_cif()},
        {"material_id": "bad-nan-gap", FE: -1.0, GAP: math.nan, "cif": salt},
        {"material_id": "bad-inf-fe", FE: math.inf, GAP: 1.0, "cif": salt},
        {"material_id": "bad-null-fe", FE: None, GAP: 1.0, "cif": salt},
        {"material_id": "bad-low-fe", FE: -7.5, GAP: 1.0, "cif": salt},
        {"material_id": "bad-no-cif", FE: -1.0, GAP: 1.0, "cif": ""},
        '{"material_id": "bad-json", "cif": ',  # a truncated line
        rows[0],  # duplicate id
    ]
    # good and bad records interleaved; blank lines are not records
    path = write_jsonl(tmp_path / "part-00.jsonl.gz", rows[:3] + bad[:5] + [""] + rows[3:] + bad[5:])
    assert detect_dataset_format(path) == "jsonl"
    packed, report = load_dataset(path, (FE, GAP), cache_dir=None, progress=False)
    assert_kept(packed, good)
    assert packed.target_names == (FE, GAP)
    assert report.total == len(good) + len(bad)
    assert report.kept == len(good)
    assert dict(report.skipped) == {
        UNPARSEABLE: 1,
        DISORDER: 1,
        "atoms closer than 0.5 Å": 1,
        "missing or non-finite band_gap": 1,
        "missing or non-finite formation_energy_per_atom": 2,
        LOW_FE: 1,
        NO_STRUCTURE: 1,
        "line is not valid JSON": 1,
        "duplicate id": 1,
    }
    text = str(report)
    assert f"{report.total} records read, {len(good)} kept, {len(bad)} skipped" in text
    assert "skipped 2: missing or non-finite formation_energy_per_atom" in text


def test_jsonl_folder_reads_parts_in_name_order(tmp_path):
    good = crystals(5)
    folder = tmp_path / "mp"
    folder.mkdir()
    write_jsonl(folder / "part-01.jsonl.gz", jsonl_rows(good[3:]))
    write_jsonl(folder / "part-00.jsonl", jsonl_rows(good[:3]))
    (folder / "README.md").write_text("not data")
    assert detect_dataset_format(folder) == "jsonl"
    packed, report = load_dataset(folder, (GAP,), cache_dir=None, progress=False)
    assert_kept(packed, good)
    assert report.to_dict() == {"total": 5, "kept": 5, "skipped": {}}


def test_matbench_json_gz(tmp_path):
    good = crystals(5)
    disordered = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    structures = [c.structure for c in good] + [disordered, good[0].structure, good[1].structure, {"lattice": {}}, None]
    targets = [c.formation_energy_per_atom for c in good] + [-1.0, math.nan, -6.0, -1.0, -1.0]
    index = [c.id for c in good] + ["mb-disorder", "mb-nan", "mb-low", "mb-malformed", "mb-none"]
    path = write_matbench(tmp_path / "matbench_mp_e_form.json.gz", structures, targets, index)
    assert detect_dataset_format(path) == "matbench"
    # the single Matbench target column (e_form) is read as the one requested target
    packed, report = load_dataset(path, (FE,), cache_dir=None, progress=False)
    assert_kept(packed, good)
    assert report.to_dict() == {
        "total": 10,
        "kept": 5,
        "skipped": {
            DISORDER: 1,
            "missing or non-finite formation_energy_per_atom": 1,
            LOW_FE: 1,
            UNPARSEABLE: 1,
            NO_STRUCTURE: 1,
        },
    }


def test_matbench_file_without_structure_column_is_rejected(tmp_path):
    path = tmp_path / "table.json"
    path.write_text('{"columns": ["formula", "e_form"], "index": [0], "data": [["NaCl", -2.0]]}')
    with pytest.raises(DatasetError, match="no 'structure' column"):
        load_dataset(path, (FE,), cache_dir=None, progress=False)


def test_cgcnn_folder_with_id_prop(tmp_path):
    good = crystals(5)
    salt = cif_text(good[0].structure)
    entries = [(c.id, cif_text(c.structure), f"{c.formation_energy_per_atom:.6f}") for c in good]
    entries += [
        ("cg-missing-file", None, "-1.0"),
        ("cg-garbage", GARBAGE_CIF, "-1.0"),
        ("cg-disorder", disordered_cif(), "-1.0"),
        ("cg-nan", salt, "nan"),
        ("cg-empty-target", salt, ""),
        ("cg-low", salt, "-5.5"),
    ]
    folder = write_cgcnn(tmp_path / "cgcnn", entries)
    assert detect_dataset_format(folder) == "cgcnn"
    packed, report = load_dataset(folder, (FE,), cache_dir=None, progress=False)
    assert_kept(packed, good)
    assert report.to_dict() == {
        "total": 11,
        "kept": 5,
        "skipped": {
            NO_STRUCTURE: 1,
            UNPARSEABLE: 1,
            DISORDER: 1,
            "missing or non-finite formation_energy_per_atom": 2,
            LOW_FE: 1,
        },
    }


def test_csv_with_cif_column(tmp_path):
    good = crystals(5)
    columns = ["id", FE, GAP, "CIF"]  # the cif column is found whatever its case
    rows = [{"id": c.id, FE: c.formation_energy_per_atom, GAP: c.band_gap, "CIF": cif_text(c.structure)} for c in good]
    salt = rows[0]["CIF"]
    rows += [
        {"id": "csv-garbage", FE: -1.0, GAP: 0.5, "CIF": GARBAGE_CIF},
        {"id": "csv-disorder", FE: -1.0, GAP: 0.0, "CIF": disordered_cif()},
        {"id": "csv-inf", FE: -1.0, GAP: "inf", "CIF": salt},
        {"id": "csv-text", FE: "n/a", GAP: 1.0, "CIF": salt},
        {"id": "csv-low", FE: -9.0, GAP: 1.0, "CIF": salt},
    ]
    path = write_csv(tmp_path / "crystals.csv", rows, columns)
    assert detect_dataset_format(path) == "csv"
    packed, report = load_dataset(path, (FE, GAP), cache_dir=None, progress=False)
    assert_kept(packed, good)
    assert report.to_dict() == {
        "total": 10,
        "kept": 5,
        "skipped": {
            UNPARSEABLE: 1,
            DISORDER: 1,
            "missing or non-finite band_gap": 1,
            "missing or non-finite formation_energy_per_atom": 1,
            LOW_FE: 1,
        },
    }


def test_csv_without_cif_column_is_rejected(tmp_path):
    path = write_csv(tmp_path / "x.csv", [{"id": "a", FE: -1.0}], ["id", FE])
    with pytest.raises(DatasetError, match="no 'cif' column"):
        list(iter_raw_records(path, (FE,)))


def test_unusable_paths_give_a_clear_error(tmp_path):
    for cache in (None, tmp_path / "cache"):
        with pytest.raises(DatasetError, match="dataset not found"):
            load_dataset(tmp_path / "nowhere.jsonl.gz", (FE,), cache_dir=cache)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="without id_prop.csv"):
        load_dataset(tmp_path / "empty", (FE,), cache_dir=None)
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DatasetError, match="cannot tell the format"):
        load_dataset(tmp_path / "data.xlsx", (FE,), cache_dir=None)
    only_bad = write_jsonl(tmp_path / "bad.jsonl", [{"material_id": "x", FE: -1.0, "cif": GARBAGE_CIF}])
    with pytest.raises(DatasetError, match="no usable records") as err:
        load_dataset(only_bad, (FE,), cache_dir=None, progress=False)
    assert UNPARSEABLE in str(err.value)


def test_limit_reads_only_the_first_records(tmp_path):
    good = crystals(6)
    path = write_jsonl(tmp_path / "d.jsonl.gz", jsonl_rows(good))
    packed, report = load_dataset(path, (FE,), cache_dir=None, limit=4, progress=False)
    assert_kept(packed, good[:4])
    assert report.total == 4


# ----------------------------------------------------------------------------- the cache


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    good = crystals(8)
    rows = jsonl_rows(good) + [{"material_id": "bad", FE: -1.0, GAP: 0.0, "cif": disordered_cif()}]
    path = write_jsonl(tmp_path / "d.jsonl.gz", rows)
    cache = tmp_path / "cache"
    first, report1 = load_dataset(path, (FE, GAP), cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.npz"))) == 1 and len(list(cache.glob("*.report.json"))) == 1

    # the featuriser must not run again: the cache holds the arrays and the report
    def featuriser_called(job):
        raise AssertionError("featurised again although the cache was valid")

    monkeypatch.setattr(sen.training.data, "_featurise_one", featuriser_called)
    second, report2 = load_dataset(path, (FE, GAP), cache_dir=cache, progress=False)
    assert report2.to_dict() == report1.to_dict() == {"total": 9, "kept": 8, "skipped": {DISORDER: 1}}
    assert second.target_names == first.target_names
    for name, value in first.__dict__.items():
        if isinstance(value, np.ndarray) and not name.startswith("_"):
            np.testing.assert_array_equal(getattr(second, name), value, err_msg=name)

    # the same bytes copied elsewhere with new file times (a fresh checkout of the data) keep the cache
    copy = tmp_path / "elsewhere" / "d.jsonl.gz"
    copy.parent.mkdir()
    shutil.copyfile(path, copy)
    os.utime(copy, (1_000_000, 1_000_000))
    third, _ = load_dataset(copy, (FE, GAP), cache_dir=cache, progress=False)
    np.testing.assert_array_equal(third.targets, first.targets)
    monkeypatch.undo()

    # other featuriser settings, other targets or a changed file mean a fresh featurisation
    calls = []
    real = sen.training.data._featurise_one

    def counting(job):
        calls.append(job[0].id)
        return real(job)

    monkeypatch.setattr(sen.training.data, "_featurise_one", counting)
    load_dataset(path, (FE, GAP), graph_config=GraphConfig(cutoff=6.0), cache_dir=cache, progress=False)
    assert len(calls) == 9
    load_dataset(path, (FE,), cache_dir=cache, progress=False)
    assert len(calls) == 18
    write_jsonl(path, rows + jsonl_rows(crystals(9)[8:]))
    grown, _ = load_dataset(path, (FE, GAP), cache_dir=cache, progress=False)
    assert len(calls) == 28 and len(grown) == 9
    assert len(list(cache.glob("*.npz"))) == 4
    assert not list(cache.glob("*.tmp*"))


# ----------------------------------------------------------------------------- the split


IDS = [f"mp-{i}" for i in range(5000)]


def test_split_is_deterministic_disjoint_and_covering():
    a = split_ids(IDS, seed=0)
    assert a == split_ids(IDS, seed=0)
    assert a == split_ids(np.array(IDS), seed=0)
    parts = [set(a[k]) for k in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(IDS)
    assert set().union(*parts) == set(IDS)
    for frac, part in zip((0.8, 0.1, 0.1), parts, strict=True):
        assert abs(len(part) / len(IDS) - frac) < 0.02
    b = split_ids(IDS, seed=1)
    assert a != b
    assert len(set(a["test"]) & set(b["test"])) < 0.3 * len(a["test"])  # roughly independent draws


def test_split_does_not_depend_on_order_and_is_stable_when_records_are_added():
    base = split_ids(IDS[:1000], seed=7)
    shuffled = split_ids(list(reversed(IDS[:1000])), seed=7)
    grown = split_ids(IDS, seed=7)
    for k in ("train", "val", "test"):
        assert set(shuffled[k]) == set(base[k])
        assert set(base[k]) <= set(grown[k])  # an id keeps its split when others are added


def test_split_honours_other_fractions():
    s = split_ids(IDS, seed=0, fractions=(0.6, 0.2))
    assert [round(len(s[k]) / len(IDS), 1) for k in ("train", "val", "test")] == [0.6, 0.2, 0.2]
