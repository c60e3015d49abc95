"""sen.model: the properties DESIGN.md asks of SEN, checked on a small random-weight network in eval mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Structure
from pymatgen.core.operations import SymmOp

from sen.checkpoint import pick_device
from sen.graph import CrystalGraph, build_graph, collate
from sen.model import SEN, CapsuleRouting, Ensemble, SENConfig, count_parameters
from sen.predict import Predictor
from sen.symmetry import (
    analyze_symmetry,
    conventional_standard_structure,
    primitive_standard_structure,
)

TOLERANCE = 1e-4
OUTPUTS = ("formation_energy_per_atom", "band_gap_amplitude", "band_gap_logit", "metal_probability")


@pytest.fixture(scope="module")
def model(small_config: SENConfig) -> SEN:
    torch.manual_seed(0)
    return SEN(small_config).eval()


def rotated(s: Structure, seed: int = 0, translation=(0.0, 0.0, 0.0)) -> Structure:
    """``s`` turned by 37° about a random axis, then shifted by ``translation`` (Å)."""
    axis = np.random.default_rng(seed).normal(size=3)
    out = s.copy()
    out.apply_operation(SymmOp.from_axis_angle_and_translation(axis, 37.0, translation_vec=translation))
    return out


def permuted(s: Structure, seed: int = 0) -> Structure:
    order = np.random.default_rng(seed).permutation(len(s))
    return Structure.from_sites([s[i] for i in order])


@torch.no_grad()
def run(model: SEN, graphs: list[CrystalGraph], explain: bool = False) -> dict[str, torch.Tensor]:
    return model(collate(graphs), explain=explain)


def outputs(out: dict[str, torch.Tensor], i: int = 0) -> np.ndarray:
    return np.array([float(out[k][i]) for k in OUTPUTS])


def cell_choices(s: Structure) -> dict[str, Structure]:
    return {
        "rotated+translated": rotated(s, 1, translation=(0.3, -1.2, 2.0)),
        "permuted": permuted(s),
        "primitive": primitive_standard_structure(s),
        "conventional": conventional_standard_structure(s),
        "2x2x2": s * (2, 2, 2),
        "1x1x2": s * (1, 1, 2),
    }


@pytest.mark.parametrize("name", ["Si", "NaCl", "Cu", "SrTiO3", "ZnO", "TiO2", "Al2O3"])
def test_network_is_invariant_to_frame_atom_order_and_cell(model, crystals, name):
    s = crystals[name]
    reference = analyze_symmetry(s)
    expected = outputs(run(model, [build_graph(s, symmetry=reference)]))
    for label, other in cell_choices(s).items():
        got = outputs(run(model, [build_graph(other)]))
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, err_msg=f"{name} {label}")


@pytest.mark.parametrize("name", ["NaCl", "Cu", "Si", "ZnO", "Al2O3", "TiO2"])
def test_predictor_is_invariant_end_to_end(small_config, crystals, name):
    predictor = Predictor.untrained(small_config, seed=3)
    s = crystals[name]
    variants = [s, rotated(s, 2, translation=(1.0, 0.4, -0.7)), permuted(s, 5), s * (2, 2, 2), s * (1, 3, 1)]
    variants.append(primitive_standard_structure(s))
    results = predictor.predict(variants)
    for r in results[1:]:
        for key in ("formation_energy_per_atom", "band_gap", "metal_probability"):
            assert r[key] == pytest.approx(results[0][key], abs=TOLERANCE)
        assert r["space_group_number"] == results[0]["space_group_number"]


@pytest.mark.parametrize("name", ["NaCl", "Cu", "SrTiO3", "TiO2"])
def test_pure_rotation_keeps_predictions(small_config, crystals, name):
    predictor = Predictor.untrained(small_config, seed=3)
    s = crystals[name]
    base, *others = predictor.predict([s] + [rotated(s, seed) for seed in range(3)])
    for r in others:
        assert r["formation_energy_per_atom"] == pytest.approx(base["formation_energy_per_atom"], abs=TOLERANCE)


@pytest.mark.parametrize("name", ["NaCl", "Cu", "Si", "CsCl", "SrTiO3", "TiO2"])
def test_translation_keeps_predictions(small_config, crystals, name):
    """spglib may name an orbit differently after a shift of origin (NaCl: Na 4a or 4b); the network
    takes the site's point group instead of the letter, so a translation changes nothing."""
    predictor = Predictor.untrained(small_config, seed=3)
    s = crystals[name]
    shifts = [(0.3, -1.2, 2.0), (0.5 * s.lattice.a, 0.0, 0.0), tuple(0.5 * s.lattice.matrix.sum(0))]
    base, *moved = predictor.predict([s] + [rotated(s, 2, translation=t) for t in shifts])
    for r in moved:
        for key in ("formation_energy_per_atom", "band_gap", "metal_probability"):
            assert r[key] == pytest.approx(base[key], abs=TOLERANCE)


def test_same_output_alone_and_in_any_batch(model, crystals):
    names = ["NaCl", "Al2O3", "Cu", "TiO2", "SrTiO3"]
    graphs = [build_graph(crystals[n]) for n in names]
    alone = [outputs(run(model, [g])) for g in graphs]
    together = run(model, graphs)
    reversed_batch = run(model, graphs[::-1])
    for i in range(len(names)):
        np.testing.assert_allclose(outputs(together, i), alone[i], atol=1e-5, err_msg=names[i])
        np.testing.assert_allclose(outputs(reversed_batch, len(names) - 1 - i), alone[i], atol=1e-5)


def test_repeated_calls_are_identical(model, crystals):
    graphs = [build_graph(crystals["ZnO"]), build_graph(crystals["TiO2"])]
    first = run(model, graphs, explain=True)
    second = run(model, graphs, explain=True)
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


@pytest.mark.parametrize("name", ["Si", "NaCl", "SrTiO3", "ZnO", "TiO2", "Al2O3"])
def test_symmetry_equivalent_atoms_route_identically(model, crystals, name):
    for s in (crystals[name], crystals[name] * (1, 1, 2)):
        report = analyze_symmetry(s)
        routing = run(model, [build_graph(s, symmetry=report)], explain=True)["routing"].numpy()
        for orbit in report.orbits:
            rows = routing[list(orbit.atom_indices)]
            assert np.abs(rows - rows[0]).max() < 1e-5, orbit.label


def test_explanation_shapes_and_normalisation(model, small_config, crystals):
    names = ["SrTiO3", "TiO2", "Cu"]
    graphs = [build_graph(crystals[n]) for n in names]
    out = run(model, graphs, explain=True)
    n, b, k, t = sum(g.n_atoms for g in graphs), len(graphs), small_config.n_capsules, len(small_config.targets)
    assert out["routing"].shape == (n, k)
    assert out["capsule_attention"].shape == (b, k, k)
    assert out["capsule_activation"].shape == (b, k)
    assert out["output_routing"].shape == (b, t, k)
    assert out["atom_contributions"].shape == (n, t)
    ones = torch.ones
    torch.testing.assert_close(out["routing"].sum(-1), ones(n))
    torch.testing.assert_close(out["capsule_attention"].sum(-1), ones(b, k))
    torch.testing.assert_close(out["capsule_activation"].sum(-1), ones(b))
    torch.testing.assert_close(out["output_routing"].sum(-1), ones(b, t))
    assert (out["routing"] >= 0).all() and (out["capsule_activation"] >= 0).all()
    # the per-atom contributions of a crystal add up to its prediction
    crystal = collate(graphs).crystal_index
    for j, target in enumerate(small_config.targets):
        per_crystal = torch.zeros(b).index_add_(0, crystal, out["atom_contributions"][:, j])
        torch.testing.assert_close(per_crystal, out[target], atol=1e-3, rtol=1e-3)


def test_band_gap_is_never_negative_and_gated(crystals):
    graphs = [build_graph(s) for s in crystals.values()]
    for seed in range(4):  # several random networks: the gate and softplus guarantee it, not luck
        torch.manual_seed(seed)
        cfg = SENConfig(width=16, n_rbf=8, n_capsules=4, capsule_dim=4, capsule_width=16, attention_heads=2)
        out = run(SEN(cfg).eval(), graphs)
        gap, logit, p_metal = out["band_gap"], out["band_gap_logit"], out["metal_probability"]
        assert (gap >= 0).all() and (out["band_gap_amplitude"] > 0).all()
        assert torch.equal(gap == 0, logit < 0)
        assert ((p_metal >= 0) & (p_metal <= 1)).all()
        torch.testing.assert_close(p_metal, torch.sigmoid(-logit))


def test_gradients_reach_every_parameter(small_config, crystals):
    torch.manual_seed(0)
    net = SEN(small_config).train()
    out = net(collate([build_graph(crystals["TiO2"]), build_graph(crystals["NaCl"])]))
    loss = out["formation_energy_per_atom"].sum() + out["band_gap_amplitude"].sum() + out["band_gap_logit"].sum()
    loss.backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    # the last convolution's edge update feeds nothing (edges are not read after the last convolution)
    last = f"convs.{small_config.n_conv - 1}.edge_out"
    assert missing == [f"{last}.weight", f"{last}.bias"]


def test_config_round_trip_and_default_size():
    cfg = SENConfig(width=24, targets=("band_gap",), target_stats={"band_gap": (1.0, 2.0)})
    again = SENConfig.from_dict(cfg.to_dict() | {"unknown_key": 1})
    assert again == cfg
    assert 100_000 < count_parameters(SEN()) < 1_000_000  # DESIGN: under about 1 M parameters


def test_predictor_puts_the_model_on_the_picked_device(small_config):
    predictor = Predictor(SEN(small_config))
    expected = pick_device("auto")
    assert predictor.device == expected
    assert all(p.device.type == expected.type for p in predictor.model.parameters())
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(small_config, crystals):
    torch.manual_seed(0)
    cpu = SEN(small_config).eval()
    gpu = SEN(small_config).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.to("cuda")
    batch = collate([build_graph(s) for s in crystals.values()])
    with torch.no_grad():
        a = cpu(batch, explain=True)
        b = gpu(batch.to("cuda"), explain=True)
    assert b["band_gap"].device.type == "cuda"
    for key in (*OUTPUTS, "routing"):
        torch.testing.assert_close(b[key].cpu(), a[key], atol=1e-4, rtol=1e-4)


def test_dropout_acts_only_while_training(small_config, crystals):
    torch.manual_seed(0)
    net = SEN(SENConfig.from_dict(small_config.to_dict() | {"dropout": 0.3}))
    graphs = [build_graph(crystals["TiO2"]), build_graph(crystals["NaCl"])]
    net.train()
    first, second = run(net, graphs), run(net, graphs)
    assert not torch.equal(first["formation_energy_per_atom"], second["formation_energy_per_atom"])
    net.eval()
    first, second = run(net, graphs), run(net, graphs)
    assert torch.equal(first["formation_energy_per_atom"], second["formation_energy_per_atom"])
    # dropout adds no parameters: weights trained with it load into a network without it, and agree in eval mode
    plain = SEN(small_config).eval()
    plain.load_state_dict(net.state_dict())
    torch.testing.assert_close(run(plain, graphs)["band_gap_logit"], first["band_gap_logit"])


# ----------------------------------------------------------------------------- ensembles

FE = "formation_energy_per_atom"


def random_networks(config: SENConfig, seeds=(0, 1, 2)) -> list[SEN]:
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        nets.append(SEN(config).eval())
    return nets


def test_ensemble_predicts_the_mean_of_its_networks_and_their_spread(small_config, crystals):
    graphs = [build_graph(s) for s in crystals.values()]
    nets = random_networks(small_config)
    out = run(Ensemble(nets).eval(), graphs)
    each = [run(net, graphs) for net in nets]

    fe = torch.stack([o[FE] for o in each])
    torch.testing.assert_close(out[FE], fe.mean(0))
    torch.testing.assert_close(out[f"{FE}_std"], fe.std(0, unbiased=False))
    assert (out[f"{FE}_std"] > 1e-4).all()  # three different networks do disagree
    torch.testing.assert_close(out["band_gap_std"], torch.stack([o["band_gap"] for o in each]).std(0, unbiased=False))
    # one metal gate for the ensemble, on the mean metal probability, as in a single network
    p_metal = torch.stack([o["metal_probability"] for o in each]).mean(0)
    amplitude = torch.stack([o["band_gap_amplitude"] for o in each]).mean(0)
    torch.testing.assert_close(out["metal_probability"], p_metal)
    torch.testing.assert_close(out["band_gap"], torch.where(p_metal <= 0.5, amplitude, torch.zeros_like(amplitude)))
    assert torch.equal(out["band_gap"] == 0, out["metal_probability"] > 0.5)

    # an ensemble of one network is that network, with no spread
    alone = run(Ensemble(nets[:1]).eval(), graphs)
    for key in (FE, "band_gap", "metal_probability"):
        torch.testing.assert_close(alone[key], each[0][key])
    assert (alone[f"{FE}_std"] == 0).all() and (alone["band_gap_std"] == 0).all()


def test_ensemble_explanation_is_the_first_networks_routing_and_adds_up(small_config, crystals):
    names = ["SrTiO3", "TiO2", "Cu"]
    graphs = [build_graph(crystals[n]) for n in names]
    nets = random_networks(small_config)
    out = run(Ensemble(nets).eval(), graphs, explain=True)
    first = run(nets[0], graphs, explain=True)
    for key in ("routing", "capsule_attention", "capsule_activation", "output_routing"):
        torch.testing.assert_close(out[key], first[key])
    crystal = collate(graphs).crystal_index
    for j, target in enumerate(small_config.targets):  # contributions add up to the ensemble's prediction
        per_crystal = torch.zeros(len(graphs)).index_add_(0, crystal, out["atom_contributions"][:, j])
        torch.testing.assert_close(per_crystal, out[target], atol=1e-3, rtol=1e-3)


def test_ensemble_can_choose_its_networks_per_target(small_config, crystals):
    names = ["SrTiO3", "TiO2", "Cu"]
    graphs = [build_graph(crystals[n]) for n in names]
    nets = random_networks(small_config)
    ensemble = Ensemble(nets, target_members={FE: [0, 2], "band_gap": [0, 1]}).eval()
    out = run(ensemble, graphs, explain=True)
    each = [run(net, graphs, explain=True) for net in nets]

    fe = torch.stack([each[0][FE], each[2][FE]])
    torch.testing.assert_close(out[FE], fe.mean(0))
    torch.testing.assert_close(out[f"{FE}_std"], fe.std(0, unbiased=False))
    p_metal = (each[0]["metal_probability"] + each[1]["metal_probability"]) / 2  # the gap's networks only
    amplitude = (each[0]["band_gap_amplitude"] + each[1]["band_gap_amplitude"]) / 2
    torch.testing.assert_close(out["metal_probability"], p_metal)
    torch.testing.assert_close(out["band_gap"], torch.where(p_metal <= 0.5, amplitude, torch.zeros_like(amplitude)))
    crystal = collate(graphs).crystal_index
    for j, target in enumerate(small_config.targets):  # contributions still add up, per target
        per_crystal = torch.zeros(len(graphs)).index_add_(0, crystal, out["atom_contributions"][:, j])
        torch.testing.assert_close(per_crystal, out[target], atol=1e-3, rtol=1e-3)
    assert Ensemble(nets).target_members == {t: [0, 1, 2] for t in small_config.targets}  # default: all

    with pytest.raises(ValueError, match="serve no target"):
        Ensemble(nets, target_members={FE: [0], "band_gap": [0, 1]})
    with pytest.raises(ValueError, match="networks 0..2"):
        Ensemble(nets, target_members={FE: [0, 3]})
    with pytest.raises(ValueError, match="networks 0..2"):
        Ensemble(nets, target_members={FE: []})
    with pytest.raises(ValueError, match="do not predict"):
        Ensemble(nets, target_members={"volume": [0]})


def test_ensemble_expands_distances_once_only_for_identical_expansions(small_config, crystals):
    graphs = [build_graph(crystals[n]) for n in ("NaCl", "TiO2")]
    nets = random_networks(small_config)
    assert Ensemble(nets).shared_distances  # same cutoff and basis: computed once, used by all
    torch.manual_seed(5)
    other = SEN(SENConfig(**{**small_config.__dict__, "n_rbf": small_config.n_rbf + 4})).eval()
    mixed = Ensemble([nets[0], other]).eval()
    assert not mixed.shared_distances  # each network expands distances its own way
    torch.testing.assert_close(run(mixed, graphs)[FE], (run(nets[0], graphs)[FE] + run(other, graphs)[FE]) / 2)


def test_ensemble_members_must_predict_the_same_targets(small_config):
    gap_only = SENConfig(**{**small_config.__dict__, "targets": ("band_gap",)})
    with pytest.raises(ValueError, match="different targets"):
        Ensemble([SEN(small_config), SEN(gap_only)])
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])


def nearly_empty_capsules(config: SENConfig, seed: int = 0) -> SEN:
    """A random network whose capsules 0 and 1 receive almost nothing (masses near the routing's epsilon),
    as trained networks often do: the case where a fixed epsilon made supercells differ."""
    torch.manual_seed(seed)
    net = SEN(config).eval()
    with torch.no_grad():
        net.routing.prior.weight[:2] = 0.0
        net.routing.prior.bias[:2] = torch.tensor([-13.0, -15.0])
    return net


@pytest.mark.parametrize("name", ["NaCl", "TiO2", "Al2O3", "Cu"])
def test_near_empty_capsules_are_supercell_invariant(small_config, crystals, name):
    net = nearly_empty_capsules(small_config)
    s = crystals[name]
    graphs = [build_graph(x) for x in (s, primitive_standard_structure(s), s * (2, 1, 1), s * (1, 2, 3))]
    batch = collate(graphs)
    out = run(net, graphs, explain=True)
    assert (out["capsule_activation"][:, :2] < 1e-5).all()  # the capsules are nearly empty
    for i in range(1, len(graphs)):
        np.testing.assert_allclose(outputs(out, i), outputs(out, 0), atol=1e-5, err_msg=f"{name} cell {i}")
    # without the cell count (a fixed epsilon, the bug) the same network does tell the cells apart
    batch.n_cells = None
    with torch.no_grad():
        legacy = net(batch)
    spread = max(np.abs(outputs(legacy, i) - outputs(legacy, 0)).max() for i in range(len(graphs)))
    assert spread > TOLERANCE, spread


def test_primitive_cells_compute_exactly_the_fixed_epsilon_network(small_config, crystals):
    """n_cells = 1 (most Materials Project cells) gives bit-identical numbers to a batch without the count."""
    net = nearly_empty_capsules(small_config, seed=1)
    graphs = [build_graph(crystals[n]) for n in ("TiO2", "ZnO", "SrTiO3")]
    batch = collate(graphs)
    assert batch.n_cells.tolist() == [1.0, 1.0, 1.0]
    with torch.no_grad():
        new = net(batch, explain=True)
        batch.n_cells = None
        old = net(batch, explain=True)
    for key, value in new.items():
        assert torch.equal(value, old[key]), key


def test_capsule_routing_scales_its_epsilon_with_the_cell_count():
    """Routing a crystal's atoms twice over with n_cells = 2 gives the capsules of the atoms once."""
    torch.manual_seed(0)
    routing = CapsuleRouting(8, 4, 4, 3).eval()
    with torch.no_grad():
        routing.prior.bias[:] = torch.tensor([-14.0, -13.0, 0.0, 1.0])
        h = torch.randn(5, 8)
        one = routing(h, torch.zeros(5, dtype=torch.long), 1, torch.tensor([1.0]))
        two = routing(h.repeat(2, 1), torch.zeros(10, dtype=torch.long), 1, torch.tensor([2.0]))
        fixed = routing(h.repeat(2, 1), torch.zeros(10, dtype=torch.long), 1)  # no count: epsilon per cell of 5 atoms
    torch.testing.assert_close(two[0], one[0], atol=1e-6, rtol=1e-5)  # poses
    torch.testing.assert_close(two[1], one[1], atol=1e-7, rtol=1e-5)  # capsule activations
    torch.testing.assert_close(two[3], one[3].repeat(2, 1) / 2, atol=1e-7, rtol=1e-5)  # each atom's share halves
    assert (fixed[0] - one[0]).abs().max() > 1e-3  # a fixed epsilon moves the near-empty capsules' poses
