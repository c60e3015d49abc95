"""sen.baseline.CGCNN: output shapes and units, invariances, and training through the same loop as SEN."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from _builders import crystals, write_dataset
from pymatgen.core import Lattice, Structure

from sen.checkpoint import load_model
from sen.graph import GraphConfig, build_graph, collate
from sen.model import SENConfig
from sen.predict import Predictor
from sen.training.baseline import CGCNN
from sen.training.config import TrainConfig
from sen.training.loop import train

FE, GAP = "formation_energy_per_atom", "band_gap"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> CGCNN:
    torch.manual_seed(0)
    return CGCNN(SENConfig(width=16, targets=(FE, GAP))).eval()


def distorted_perovskite() -> Structure:
    """SrTiO3 with Ti and one O shifted off their ideal sites (5 atoms, low symmetry)."""
    return Structure(
        Lattice.from_parameters(3.91, 3.95, 3.99, 89.0, 90.5, 91.0),
        ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.52, 0.49, 0.51], [0.5, 0.5, 0.03], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]],
    )


def predict(model, structures) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(collate([build_graph(s, GraphConfig()) for s in structures]))
    return {k: v.numpy() for k, v in out.items()}


def test_forward_shapes_and_units(model):
    structures = [c.structure for c in crystals(3)] + [distorted_perovskite()]
    out = predict(model, structures)
    assert set(out) == {FE, GAP, "band_gap_logit", "band_gap_amplitude", "metal_probability"}
    assert all(v.shape == (4,) and np.isfinite(v).all() for v in out.values())
    assert (out[GAP] >= 0).all() and ((out["metal_probability"] >= 0) & (out["metal_probability"] <= 1)).all()
    # the gate: the gap is the amplitude where the network says "not a metal", exactly 0 elsewhere
    np.testing.assert_array_equal(out[GAP], np.where(out["band_gap_logit"] >= 0, out["band_gap_amplitude"], 0.0))
    # no capsules, so nothing to explain
    assert "routing" not in model(collate([build_graph(structures[0], GraphConfig())]), explain=True)
    with pytest.raises(ValueError, match="no capsule routing"):
        Predictor(model, device="cpu").explain(structures[0])


def test_invariant_to_atom_order_supercell_and_batch(model):
    s = distorted_perovskite()
    permuted = Structure.from_sites([s[i] for i in (3, 0, 4, 2, 1)])
    supercell = s.copy()
    supercell.make_supercell([2, 1, 2])
    others = [c.structure for c in crystals(2)]
    base = predict(model, [s])
    for variant in (permuted, supercell):
        out = predict(model, [variant])
        for k in (FE, "band_gap_amplitude", "band_gap_logit"):
            np.testing.assert_allclose(out[k], base[k], rtol=1e-5, atol=1e-5, err_msg=k)
    batched = predict(model, [others[0], s, others[1]])  # eval mode: batch norm uses running statistics
    assert abs(batched[FE][0] - base[FE][0]) > 1e-2  # other crystals do give other predictions
    for k in (FE, "band_gap_amplitude", "band_gap_logit"):
        np.testing.assert_allclose(batched[k][1], base[k][0], rtol=1e-5, atol=1e-6, err_msg=k)


def test_trains_with_arch_cgcnn(tmp_path):
    data, _ = write_dataset(tmp_path / "crystals.jsonl.gz", 40)
    cfg = TrainConfig.from_dict(dict(
        data=str(data), out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), arch="cgcnn", width=16,
        epochs=2, batch_size=8, device="cpu", threads=1, progress=False,
    ))  # fmt: skip
    summary = train(cfg)
    best = load_model(tmp_path / "run" / "best.pt")
    assert isinstance(best, CGCNN) and best.config.width == 16
    with open(tmp_path / "run" / "log.csv", newline="") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]
    assert summary["epochs_run"] == 2
    assert all(np.isfinite(summary["test"][t]["mae"]) for t in (FE, GAP))
    rows = Predictor.load(tmp_path / "run" / "best.pt", device="cpu").predict([c.structure for c in crystals(2)])
    assert all(np.isfinite(r[FE]) and r[GAP] >= 0 for r in rows)


def test_cgcnn_trains_on_a_batch_of_one_single_atom_crystal():
    """BatchNorm needs two values per channel: a lone one-atom crystal in a training batch must not crash."""
    from pymatgen.core import Lattice, Structure

    from sen.graph import GraphConfig, build_graph, collate

    torch.manual_seed(0)
    model = CGCNN(SENConfig(width=16, targets=("formation_energy_per_atom",))).train()
    cu = Structure(Lattice([[0, 1.8, 1.8], [1.8, 0, 1.8], [1.8, 1.8, 0]]), ["Cu"], [[0, 0, 0]])
    out = model(collate([build_graph(cu, GraphConfig())]))
    out["formation_energy_per_atom"].sum().backward()
    assert torch.isfinite(out["formation_energy_per_atom"]).all()
