"""SEN: the symmetry-enhanced equivariance network, top to bottom in one file.

Data flow (shapes: N atoms, E edges, O Wyckoff orbits, B crystals, K capsules, T targets):

    atoms + edges --3 gated edge convolutions-->        h (N, W)   joint structure-chemistry
    h + orbits + site/crystal symmetry --orbit pool-->  h (N, W)   symmetry perception
    h --primary capsules-->                             u (N, D), a (N,)
    scale 1: atoms -> K pattern capsules (routing by agreement)     routing (N, K)
    scale 2: self-attention among the K pattern capsules            attention (B, K, K)
    scale 3: pattern capsules -> one output capsule per target      output routing (B, T, K)
    heads: formation energy (eV/atom); band gap (eV, >= 0, metal gate)

Every crystal-level quantity is a mean or a normalised weighted mean over atoms, and the
one small constant added to sums over atoms (capsule routing) is scaled by the crystal's
number of primitive cells (``GraphBatch.n_cells``), so predictions do not change with the
choice of cell (primitive, conventional, supercell); there is no batch normalisation, so no
crystal depends on its batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sen.graph import ELEMENT_DESCRIPTORS, MAX_Z, GraphBatch, GraphConfig, element_descriptor_table
from sen.symmetry import CRYSTAL_SYSTEMS, POINT_GROUPS
from sen.targets import TARGET_TITLES, TARGET_UNITS, TARGETS, is_gap_target  # noqa: F401 (also used from here)


@dataclass
class SENConfig:
    """Hyper-parameters of the network (stored with every checkpoint). The featuriser's settings,
    the distance cutoff among them, are not here: the network reads them from its
    :class:`~sen.graph.GraphConfig`."""

    width: int = 96
    n_conv: int = 3
    n_rbf: int = 40
    n_capsules: int = 8
    capsule_dim: int = 16
    capsule_width: int = 64
    attention_heads: int = 4
    routing_iterations: int = 3
    dropout: float = 0.0  # on residual updates and head inputs while training; 0 = off (inference is unaffected)
    targets: tuple[str, ...] = TARGETS
    # standardisation of targets, set from the training data: {target: (mean, std)}
    target_stats: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"formation_energy_per_atom": (-1.4, 1.2), "band_gap": (1.3, 1.6)}
    )

    def to_dict(self) -> dict:
        """Plain-Python form for checkpoints (``torch.load(weights_only=True)`` safe)."""
        d = asdict(self)
        d["targets"] = list(self.targets)
        d["target_stats"] = {k: [float(v[0]), float(v[1])] for k, v in self.target_stats.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SENConfig:
        """Inverse of :meth:`to_dict`; ignores unknown keys."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["targets"] = tuple(known.get("targets", TARGETS))
        if "target_stats" in known:
            known["target_stats"] = {k: (float(v[0]), float(v[1])) for k, v in known["target_stats"].items()}
        return cls(**known)


# ----------------------------------------------------------------------------- helpers


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index``."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Mean of rows of ``src`` per bucket (empty buckets give 0)."""
    total = scatter_sum(src, index, dim_size)
    count = scatter_sum(torch.ones_like(index, dtype=src.dtype), index, dim_size).clamp_min(1)
    return total / count.view(-1, *([1] * (src.dim() - 1)))


def crystal_mean(x: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
    """Mean of per-row ``x`` (N, ...) over each crystal's atoms (rows weighted by ``batch.multiplicity``)."""
    if batch.multiplicity is None:
        return scatter_mean(x, batch.crystal_index, batch.n_crystals)
    m = batch.multiplicity.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    total = scatter_sum(x * m, batch.crystal_index, batch.n_crystals)
    return total / scatter_sum(m, batch.crystal_index, batch.n_crystals).clamp_min(1)


def squash(s: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """Capsule non-linearity: keeps direction, maps length into [0, 1)."""
    sq = (s * s).sum(dim, keepdim=True)
    return s * (sq / (1.0 + sq)) / torch.sqrt(sq + eps)


class DistanceExpansion(nn.Module):
    """Gaussian basis of interatomic distances times a smooth cosine cutoff (goes to 0 at the cutoff)."""

    def __init__(self, n_rbf: int, cutoff: float):
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("centers", torch.linspace(0.0, cutoff, n_rbf))
        self.gamma = (n_rbf / cutoff) ** 2 / 2.0

    def forward(self, d: torch.Tensor) -> torch.Tensor:  # (E,) -> (E, n_rbf)
        envelope = 0.5 * (torch.cos(math.pi * d.clamp(max=self.cutoff) / self.cutoff) + 1.0)
        # Gaussians below exp(-60) ~ 1e-26 are held there: exp of very negative numbers (float32
        # underflow) takes a slow path on CPUs, and the change to any output is far below float32 precision
        exponent = (-self.gamma * (d[:, None] - self.centers).square()).clamp_min(-60.0)
        return torch.exp(exponent) * envelope[:, None]


class AtomEmbedding(nn.Module):
    """Learned per-element embedding plus projected fixed element descriptors."""

    def __init__(self, width: int):
        super().__init__()
        self.embed = nn.Embedding(MAX_Z + 1, width)
        self.register_buffer("descriptors", torch.from_numpy(element_descriptor_table()))
        self.project = nn.Linear(len(ELEMENT_DESCRIPTORS), width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, W)
        return self.embed(z) + self.project(self.descriptors.index_select(0, z))


# ----------------------------------------------------------------------------- blocks


class EdgeGatedConv(nn.Module):
    """Gated edge-conditioned convolution with an edge update and residuals.

    message(j -> i) = sigmoid(gate) * silu(core), [gate, core] = A h_i + B h_j + C e_ij
    """

    def __init__(self, width: int, dropout: float = 0.0):
        super().__init__()
        self.dst = nn.Linear(width, 2 * width)
        self.src = nn.Linear(width, 2 * width, bias=False)
        self.edge = nn.Linear(width, 2 * width, bias=False)
        self.node_norm = nn.LayerNorm(width)
        self.node_out = nn.Linear(width, width)
        self.edge_out = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, h, e, src, dst, count=None):  # h (N, W), e (E, W); count (E,): edges each stands for
        # Linear maps of node features are done per node, then gathered (cheaper than per edge);
        # index_select, not h[idx]: the same gather, several times faster on CPUs
        z = self.dst(h).index_select(0, dst) + self.src(h).index_select(0, src) + self.edge(e)  # (E, 2W)
        gate, core = z.chunk(2, dim=-1)
        msg = torch.sigmoid(gate) * F.silu(core)  # (E, W)
        agg = scatter_sum(msg if count is None else msg * count[:, None], dst, h.shape[0])  # (N, W)
        h = h + self.drop(self.node_out(F.silu(self.node_norm(agg))))
        e = e + self.edge_out(msg)
        return h, e


class SymmetryPerception(nn.Module):
    """Pool atoms over each Wyckoff orbit, add site and crystal symmetry, feed the orbit back to its atoms."""

    def __init__(self, width: int):
        super().__init__()
        # the site's point group, not its Wyckoff letter: letters depend on the choice of origin
        self.site_group = nn.Embedding(len(POINT_GROUPS) + 1, width)
        self.site_order = nn.Linear(1, width)
        self.crystal_system = nn.Embedding(len(CRYSTAL_SYSTEMS), width)
        self.point_group = nn.Embedding(len(POINT_GROUPS), width)
        self.orbit_mlp = nn.Sequential(
            nn.Linear(3 * width, width), nn.SiLU(), nn.Linear(width, width), nn.LayerNorm(width)
        )
        self.to_atoms = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        site = self.site_group(batch.site_point_group) + self.site_order(
            torch.log(batch.site_symmetry_order.to(h.dtype))[:, None]
        )  # (N, W), identical inside an orbit
        orbit_h = scatter_mean(h, batch.orbit_index, batch.n_orbits)  # (O, W)
        orbit_site = scatter_mean(site, batch.orbit_index, batch.n_orbits)  # (O, W)
        crystal = self.crystal_system(batch.crystal_system) + self.point_group(batch.point_group)  # (B, W)
        orbit = self.orbit_mlp(torch.cat([orbit_h, orbit_site, crystal.index_select(0, batch.orbit_crystal)], dim=-1))
        return h + self.to_atoms(orbit).index_select(0, batch.orbit_index)


class CapsuleRouting(nn.Module):
    """Scale 1: atoms -> K pattern capsules by iterative routing-by-agreement.

    Each atom i emits a pose u_i (squashed) and an activation a_i; capsule k receives
    vote W_k u_i. Routing coefficients r_ik are a softmax over capsules (rows sum to 1)
    of a learned prior plus the agreement <vote, capsule pose>. Capsule poses are
    activation-weighted means of votes over the atoms of each crystal.

    The routing masses are sums over a crystal's atoms, so they grow with the number of cells;
    the small constant that keeps a nearly empty capsule's division finite (:attr:`EPS`) is
    therefore scaled by ``n_cells``, the number of primitive cells in the crystal's cell. A
    primitive cell (``n_cells`` = 1) computes exactly what the shipped networks were trained on,
    and a supercell or conventional cell computes the same numbers as its primitive cell (a fixed
    constant would treat capsules of near-zero mass differently in every cell).
    """

    #: per primitive cell: mass + EPS * n_cells, total activation >= EPS * n_cells
    EPS = 1e-6

    def __init__(self, width: int, n_capsules: int, capsule_dim: int, iterations: int):
        super().__init__()
        self.iterations = iterations
        self.pose = nn.Linear(width, capsule_dim)
        self.activation = nn.Linear(width, 1)
        self.prior = nn.Linear(width, n_capsules)
        self.votes = nn.Parameter(torch.randn(n_capsules, capsule_dim, capsule_dim) / math.sqrt(capsule_dim))

    def forward(
        self,
        h: torch.Tensor,
        crystal: torch.Tensor,
        n_crystals: int,
        n_cells: torch.Tensor | None = None,
        multiplicity: torch.Tensor | None = None,
    ):
        """Route atoms into capsules. ``n_cells`` (B,): primitive cells per crystal (default: ones);
        ``multiplicity`` (N,): atoms each row stands for (:func:`sen.graph.orbit_graph`; default: ones).

        Returns ``pose`` (B, K, D), ``capsule_activation`` (B, K; sums to 1 over capsules),
        ``routing`` (N, K; rows sum to 1) and ``share`` (N, K; atom i's share of capsule k's pose,
        sums to 1 over a crystal's atoms).
        """
        if n_cells is None:
            n_cells = h.new_ones(n_crystals)
        eps = (self.EPS * n_cells.to(h.dtype))[:, None]  # (B, 1): the same constant per primitive cell
        u = squash(self.pose(h))  # (N, D)
        a = torch.sigmoid(self.activation(h)).squeeze(-1)  # (N,)
        votes = torch.einsum("nd,kde->nke", u, self.votes)  # (N, K, D)
        prior = self.prior(h)  # (N, K)
        logits = prior
        weight = a if multiplicity is None else a * multiplicity  # (N,): the atoms a row stands for
        for it in range(self.iterations):
            r = torch.softmax(logits, dim=-1)  # (N, K)
            w = r * a[:, None]  # (N, K)
            ws = w if multiplicity is None else r * weight[:, None]
            mass = scatter_sum(ws, crystal, n_crystals)  # (B, K)
            pose = scatter_sum(ws[..., None] * votes, crystal, n_crystals) / (mass + eps)[..., None]
            pose = squash(pose)  # (B, K, D)
            if it < self.iterations - 1:
                logits = prior + (votes * pose.index_select(0, crystal)).sum(-1)  # agreement
        total = torch.maximum(scatter_sum(weight, crystal, n_crystals)[:, None], eps)  # (B, 1)
        capsule_activation = mass / total  # (B, K), sums to 1 over capsules
        # share of capsule k's pose that comes from atom i (sums to 1 over a crystal's atoms)
        share = w / (mass + eps).index_select(0, crystal)  # (N, K)
        return pose, capsule_activation, r, share


class CapsuleTransformer(nn.Module):
    """Scale 2: self-attention among the K pattern capsules of each crystal."""

    def __init__(self, n_capsules: int, capsule_dim: int, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.inp = nn.Linear(capsule_dim + 1, width)
        self.identity = nn.Parameter(torch.randn(n_capsules, width) * 0.02)
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, pose: torch.Tensor, activation: torch.Tensor):  # (B, K, D), (B, K)
        x = self.inp(torch.cat([pose, activation[..., None]], dim=-1)) + self.identity  # (B, K, C)
        y = self.norm1(x)
        y, attention = self.attn(y, y, y, need_weights=True, average_attn_weights=True)  # attention (B, K, K)
        x = x + y
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, attention


class OutputCapsules(nn.Module):
    """Scale 3: pattern capsules -> one output capsule per target (activation-weighted attention)."""

    def __init__(self, width: int, n_targets: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_targets, width) * 0.02)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.scale = 1.0 / math.sqrt(width)

    def forward(self, x: torch.Tensor, activation: torch.Tensor):  # (B, K, C), (B, K)
        logits = torch.einsum("tc,bkc->btk", self.queries, self.key(x)) * self.scale
        logits = logits + torch.log(activation + 1e-6)[:, None, :]
        coupling = torch.softmax(logits, dim=-1)  # (B, T, K)
        return torch.einsum("btk,bkc->btc", coupling, self.value(x)), coupling


class TargetHeads(nn.Module):
    """Per-target MLP heads returning physical units.

    Most targets (``formation_energy_per_atom``) are de-standardised; every gap target
    (:func:`is_gap_target`: ``band_gap``, ``optical_gap``, ...) has a metal / non-metal gate: the
    network predicts P(gap > 0) (``<t>_logit``) and a positive amplitude (``<t>_amplitude``); the
    reported gap is the amplitude when P(gap > 0) >= 0.5 and exactly 0 otherwise. For ``band_gap``
    the probability of no gap is also given as ``metal_probability``.
    """

    def __init__(
        self,
        in_dim: int,
        targets: tuple[str, ...],
        target_stats: dict[str, tuple[float, float]],
        dropout: float = 0.0,
    ):
        super().__init__()
        self.targets = targets
        self.drop = nn.Dropout(dropout)
        self.heads = nn.ModuleDict(
            {
                t: nn.Sequential(nn.Linear(in_dim, in_dim), nn.SiLU(), nn.Linear(in_dim, 2 if is_gap_target(t) else 1))
                for t in targets
            }
        )
        stats = torch.tensor([target_stats.get(t, (0.0, 1.0)) for t in targets], dtype=torch.float32)
        self.register_buffer("target_mean", stats[:, 0].clone())
        self.register_buffer("target_std", stats[:, 1].clone())

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:  # (B, T, F) -> {name: (B,)}
        out: dict[str, torch.Tensor] = {}
        for j, t in enumerate(self.targets):
            raw = self.heads[t](self.drop(features[:, j]))
            if is_gap_target(t):
                logit, amp = raw[:, 0], raw[:, 1]
                amplitude = F.softplus(amp + 1.0) * self.target_std[j]  # eV, > 0
                out[f"{t}_logit"] = logit
                out[f"{t}_amplitude"] = amplitude
                if t == "band_gap":
                    out["metal_probability"] = torch.sigmoid(-logit)
                out[t] = torch.where(logit >= 0, amplitude, torch.zeros_like(amplitude))
            else:
                out[t] = raw[:, 0] * self.target_std[j] + self.target_mean[j]
        return out


# ----------------------------------------------------------------------------- the network


class SEN(nn.Module):
    """The symmetry-enhanced equivariance network."""

    def __init__(self, config: SENConfig | None = None, graph_config: GraphConfig | None = None):
        super().__init__()
        self.config = config = config or SENConfig()
        self.graph_config = graph_config or GraphConfig()  # the featuriser this network reads (its cutoff)
        w = config.width
        self.atoms = AtomEmbedding(w)
        self.distances = DistanceExpansion(config.n_rbf, self.graph_config.cutoff)
        self.edge_embed = nn.Linear(config.n_rbf, w)
        self.convs = nn.ModuleList([EdgeGatedConv(w, config.dropout) for _ in range(config.n_conv)])
        self.symmetry = SymmetryPerception(w)
        self.routing = CapsuleRouting(w, config.n_capsules, config.capsule_dim, config.routing_iterations)
        self.capsules = CapsuleTransformer(
            config.n_capsules, config.capsule_dim, config.capsule_width, config.attention_heads, config.dropout
        )
        self.outputs = OutputCapsules(config.capsule_width, len(config.targets))
        self.atom_readout = nn.Linear(w, config.capsule_width)
        self.heads = TargetHeads(2 * config.capsule_width, config.targets, config.target_stats, config.dropout)

    def forward(
        self, batch: GraphBatch, explain: bool = False, expanded_distances: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Predict every target for every crystal in ``batch``.

        Returns a dict of (B,) tensors: ``formation_energy_per_atom`` (eV/atom),
        ``band_gap`` (eV), ``metal_probability``; ``crystal_features`` (B, T + 1, C): the output
        capsules the heads read and the pooled atom features (the crystal's learned representation,
        used for similarity by :mod:`sen.library`); with ``explain=True`` also
        ``routing`` (N, K, rows sum to 1), ``capsule_attention`` (B, K, K),
        ``capsule_activation`` (B, K), ``output_routing`` (B, T, K) and
        ``atom_contributions`` (N, T): each prediction split over atoms by routing flow.
        ``expanded_distances``: ``self.distances(batch.edge_length)`` when the caller already has it
        (an ensemble computes it once for all its networks).
        """
        if expanded_distances is None:
            expanded_distances = self.distances(batch.edge_length)
        h = self.atoms(batch.atomic_numbers)  # (N, W)
        e = self.edge_embed(expanded_distances)  # (E, W)
        for conv in self.convs:
            h, e = conv(h, e, batch.edge_src, batch.edge_dst, batch.edge_count)
        h = self.symmetry(h, batch)
        pose, activation, routing, share = self.routing(
            h, batch.crystal_index, batch.n_crystals, batch.cells(), batch.multiplicity
        )
        x, attention = self.capsules(pose, activation)  # (B, K, C), (B, K, K)
        out_caps, coupling = self.outputs(x, activation)  # (B, T, C), (B, T, K)
        pooled = self.atom_readout(crystal_mean(h, batch))  # (B, C)
        features = torch.cat([out_caps, pooled[:, None, :].expand_as(out_caps)], dim=-1)  # (B, T, 2C)
        out = self.heads(features)
        out["crystal_features"] = torch.cat([out_caps, pooled[:, None, :]], dim=1)  # (B, T + 1, C)
        if explain:
            flow = torch.einsum("nk,ntk->nt", share, coupling[batch.crystal_index])  # (N, T)
            preds = torch.stack([out[t] for t in self.config.targets], dim=-1)  # (B, T)
            out.update(
                routing=routing,
                capsule_attention=attention,
                capsule_activation=activation,
                output_routing=coupling,
                atom_flow=flow,
                atom_contributions=flow * preds[batch.crystal_index],
            )
        return out


class Ensemble(nn.Module):
    """Several trained networks with the same targets and featuriser, predicting as one.

    Each target is the mean of its members' predictions and ``<target>_std`` their spread
    (standard deviation over those members): where they disagree, trust the number less. By
    default every network is a member for every target; ``target_members`` ({target: [network
    indices]}) narrows a target to the networks chosen for it (on validation data), e.g. networks
    fine-tuned for formation energy that are left out of the band gap. The band gap is gated as in
    one network, on its members' mean ``metal_probability``: 0 when it is above 0.5, else the mean
    of their gap amplitudes, so that, as for one network, the gap is 0 exactly when the reported
    metal probability is above 0.5. With ``explain=True`` the routing, attention and activations
    are the first network's (capsule k of one network is not capsule k of another, so they cannot
    be averaged); ``atom_contributions`` split each prediction over atoms by its members' mean
    routing flow.
    """

    def __init__(self, members: list[nn.Module], target_members: dict[str, list[int]] | None = None):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        targets = {tuple(m.config.targets) for m in members}
        if len(targets) != 1:
            raise ValueError(f"ensemble members predict different targets: {sorted(targets)}")
        if any(m.graph_config != members[0].graph_config for m in members):
            raise ValueError("ensemble members read graphs made with different featuriser settings")
        self.members = nn.ModuleList(members)
        self.config = members[0].config
        self.graph_config = members[0].graph_config
        self.target_members = {t: list(range(len(members))) for t in self.config.targets}
        for t, chosen in (target_members or {}).items():
            if t not in self.target_members:
                raise ValueError(f"target_members names {t!r}, which the networks do not predict")
            chosen = sorted({int(i) for i in chosen})
            if not chosen or chosen[0] < 0 or chosen[-1] >= len(members):
                raise ValueError(f"target_members[{t!r}] must list some of the networks 0..{len(members) - 1}")
            self.target_members[t] = chosen
        unused = set(range(len(members))) - {i for chosen in self.target_members.values() for i in chosen}
        if unused:
            raise ValueError(f"network(s) {sorted(unused)} serve no target; leave them out of the ensemble")
        self.shared_distances = all(isinstance(m, SEN) for m in members) and all(
            m.distances.gamma == members[0].distances.gamma
            and torch.equal(m.distances.centers, members[0].distances.centers)
            for m in members
        )

    def forward(self, batch: GraphBatch, explain: bool = False) -> dict[str, torch.Tensor]:
        """Same keys and units as :meth:`SEN.forward`, plus ``<target>_std`` for every target."""
        if self.shared_distances:  # the same distance expansion in every network: computed once
            rbf = self.members[0].distances(batch.edge_length)
            outs = [m(batch, explain=explain, expanded_distances=rbf) for m in self.members]
        else:
            outs = [m(batch, explain=explain) for m in self.members]
        return self.combine(outs, batch.crystal_index if explain else None)

    def combine(self, outs: list[dict[str, torch.Tensor]], crystal_index: torch.Tensor | None = None) -> dict:
        """The ensemble's outputs from its members' outputs (``crystal_index`` given: with the explanation)."""
        explain = crystal_index is not None
        out = dict(outs[0]) if explain else {}

        def mean_over(key: str, target: str) -> torch.Tensor:
            return torch.stack([outs[i][key] for i in self.target_members[target]]).mean(0)

        for t in self.config.targets:
            stacked = torch.stack([outs[i][t] for i in self.target_members[t]])  # (M_t, B)
            out[t] = stacked.mean(0)
            out[f"{t}_std"] = stacked.std(0, unbiased=False)
        if "metal_probability" in outs[0]:  # one gate for the ensemble, as for one network: metal when p > 0.5
            p_metal, amplitude = mean_over("metal_probability", "band_gap"), mean_over("band_gap_amplitude", "band_gap")
            out.update(
                metal_probability=p_metal, band_gap_amplitude=amplitude, band_gap_logit=torch.logit(1.0 - p_metal)
            )
            out["band_gap"] = torch.where(p_metal <= 0.5, amplitude, torch.zeros_like(amplitude))
        if explain and "atom_flow" in out:
            flow = torch.stack(
                [torch.stack([outs[i]["atom_flow"][:, j] for i in self.target_members[t]]).mean(0)
                 for j, t in enumerate(self.config.targets)], dim=-1,
            )  # fmt: skip  # (N, T)
            preds = torch.stack([out[t] for t in self.config.targets], dim=-1)  # (B, T)
            out.update(atom_flow=flow, atom_contributions=flow * preds[crystal_index])
        return out


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
