"""Several trained SEN networks run as one: :class:`StackedSEN`.

An ensemble of M networks run one after the other launches every small kernel M times, and for the
crystals people look at one by one (tens of atoms) the launches are the cost, not the arithmetic. Here
the networks' weights are stacked along a leading member axis and every layer runs once for all of them
as a batched matrix product (``torch.baddbmm``); everything that does not depend on the weights (the
graph, the distance expansion, the orbit counts) is computed once. The numbers are those of
:meth:`sen.model.SEN.forward` for each network (tested to 1e-5); this file mirrors that forward, layer by
layer, in inference mode only (no dropout, no gradients).

Shapes: member axis first, then the rows of :class:`~sen.graph.GraphBatch`: atoms (M, N, W), edges
(M, E, W), orbits (M, O, W), crystals (M, B, ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sen.graph import GraphBatch
from sen.model import SEN, CapsuleRouting, is_gap_target, squash


def _sum_rows(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum ``src`` (M, R, ...) over rows into ``size`` buckets given by ``index`` (R,)."""
    return src.new_zeros((src.shape[0], size, *src.shape[2:])).index_add_(1, index, src)


class StackedSEN(nn.Module):
    """M :class:`~sen.model.SEN` networks of one shape, evaluated together.

    ``forward(batch, explain)`` returns one output dict per network, each exactly what that network's
    own forward returns (same keys, units and shapes), ready for :meth:`sen.model.Ensemble.combine`.
    """

    def __init__(self, members: list[SEN]):
        super().__init__()
        if not members or not all(type(m) is SEN for m in members):
            raise ValueError("StackedSEN runs SEN networks only")
        configs = {(m.config.width, m.config.n_conv, m.config.n_rbf, m.config.n_capsules, m.config.capsule_dim,
                    m.config.capsule_width, m.config.attention_heads, m.config.routing_iterations,
                    tuple(m.config.targets)) for m in members}  # fmt: skip
        if len(configs) != 1:
            raise ValueError("StackedSEN needs networks of one shape (width, capsules, heads, targets)")
        first = members[0]
        self.config, self.graph_config, self.n_members = first.config, first.graph_config, len(members)
        self.distances = first.distances  # the same expansion in every network (Ensemble checks it)
        self.heads_count = first.config.attention_heads
        states = [m.state_dict() for m in members]
        for key in states[0]:  # buffers, not parameters: moved by .to(), left out of any state_dict
            self.register_buffer(key.replace(".", "__"), torch.stack([s[key] for s in states]).detach(), persistent=False)
        self.register_buffer("descriptors", first.atoms.descriptors.clone(), persistent=False)

    def _w(self, name: str) -> torch.Tensor:
        """Stacked weights by their name in one network's state_dict, e.g. ``convs.0.dst.weight`` (M, 2W, W)."""
        return self._buffers[name.replace(".", "__")]

    # ------------------------------------------------------------------ layers with stacked weights

    def lin(self, x: torch.Tensor, name: str, bias: bool = True, weight: str = ".weight") -> torch.Tensor:
        """Each network's Linear ``name``: x (M, ..., in), or rows shared by every network (R, in) -> (M, ..., out)."""
        w = self._w(name + weight).transpose(1, 2)  # (M, in, out)
        if x.dim() == 2:  # the same rows for every network (element descriptors, distances, site orders)
            x = x.expand(self.n_members, *x.shape)
        flat = x.reshape(self.n_members, -1, x.shape[-1])
        if bias:
            out = torch.baddbmm(self._w(name + weight.replace("weight", "bias"))[:, None, :], flat, w)
        else:
            out = torch.bmm(flat, w)
        return out.reshape(*x.shape[:-1], w.shape[-1])

    def norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Each network's LayerNorm ``name`` (eps 1e-5, as nn.LayerNorm)."""
        shape = (self.n_members,) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        y = F.layer_norm(x, x.shape[-1:])
        return y * self._w(name + ".weight").view(shape) + self._w(name + ".bias").view(shape)

    def embed(self, index: torch.Tensor, name: str) -> torch.Tensor:
        """Each network's Embedding ``name``: (R,) -> (M, R, W)."""
        return self._w(name + ".weight").index_select(1, index)

    # ------------------------------------------------------------------ blocks (as in sen.model)

    def conv(self, k: int, h: torch.Tensor, e: torch.Tensor, batch: GraphBatch):
        p = f"convs.{k}."
        z = (self.lin(h, p + "dst").index_select(1, batch.edge_dst)
             + self.lin(h, p + "src", bias=False).index_select(1, batch.edge_src)
             + self.lin(e, p + "edge", bias=False))  # fmt: skip  # (M, E, 2W)
        gate, core = z.chunk(2, dim=-1)
        msg = torch.sigmoid(gate) * F.silu(core)
        agg = _sum_rows(msg, batch.edge_dst, h.shape[1])
        h = h + self.lin(F.silu(self.norm(agg, p + "node_norm")), p + "node_out")
        return h, e + self.lin(msg, p + "edge_out")

    def symmetry(self, h: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        orbit_count = torch.bincount(batch.orbit_index, minlength=batch.n_orbits).clamp_min(1).to(h.dtype)
        site = self.embed(batch.site_point_group, "symmetry.site_group") + self.lin(
            torch.log(batch.site_symmetry_order.to(h.dtype))[:, None], "symmetry.site_order"
        )
        orbit_h = _sum_rows(h, batch.orbit_index, batch.n_orbits) / orbit_count[:, None]
        orbit_site = _sum_rows(site, batch.orbit_index, batch.n_orbits) / orbit_count[:, None]
        crystal = self.embed(batch.crystal_system, "symmetry.crystal_system") + self.embed(
            batch.point_group, "symmetry.point_group"
        )
        x = torch.cat([orbit_h, orbit_site, crystal.index_select(1, batch.orbit_crystal)], dim=-1)
        x = self.norm(self.lin(F.silu(self.lin(x, "symmetry.orbit_mlp.0")), "symmetry.orbit_mlp.2"),
                      "symmetry.orbit_mlp.3")  # fmt: skip
        return h + self.lin(x, "symmetry.to_atoms").index_select(1, batch.orbit_index)

    def routing(self, h: torch.Tensor, batch: GraphBatch):
        crystal, b = batch.crystal_index, batch.n_crystals
        eps = (CapsuleRouting.EPS * batch.cells().to(h.dtype))[None, :, None]  # (1, B, 1)
        u = squash(self.lin(h, "routing.pose"))  # (M, N, D)
        a = torch.sigmoid(self.lin(h, "routing.activation")).squeeze(-1)  # (M, N)
        votes = torch.einsum("mnd,mkde->mnke", u, self._w("routing.votes"))  # (M, N, K, D)
        prior = logits = self.lin(h, "routing.prior")  # (M, N, K)
        for it in range(self.config.routing_iterations):
            r = torch.softmax(logits, dim=-1)
            w = r * a[..., None]
            mass = _sum_rows(w, crystal, b)  # (M, B, K)
            pose = squash(_sum_rows(w[..., None] * votes, crystal, b) / (mass + eps)[..., None])  # (M, B, K, D)
            if it < self.config.routing_iterations - 1:
                logits = prior + (votes * pose.index_select(1, crystal)).sum(-1)
        total = torch.maximum(_sum_rows(a, crystal, b), eps[..., 0])  # (M, B)
        share = w / (mass + eps).index_select(1, crystal)
        return pose, mass / total[..., None], r, share

    def capsules(self, pose: torch.Tensor, activation: torch.Tensor):
        x = self.lin(torch.cat([pose, activation[..., None]], dim=-1), "capsules.inp")
        x = x + self._w("capsules.identity")[:, None]  # (M, B, K, C)
        y = self.norm(x, "capsules.norm1")
        m, b, k, c = y.shape
        heads, dh = self.heads_count, c // self.heads_count
        q, key, v = self.lin(y, "capsules.attn", weight=".in_proj_weight").chunk(3, dim=-1)
        q, key, v = (t.reshape(m, b, k, heads, dh).transpose(2, 3) for t in (q, key, v))  # (M, B, H, K, dh)
        attention = torch.softmax(q @ key.transpose(-1, -2) / math.sqrt(dh), dim=-1)  # (M, B, H, K, K)
        y = (attention @ v).transpose(2, 3).reshape(m, b, k, c)
        x = x + self.lin(y, "capsules.attn.out_proj")
        x = x + self.lin(F.silu(self.lin(self.norm(x, "capsules.norm2"), "capsules.mlp.0")), "capsules.mlp.2")
        return x, attention.mean(2)

    def outputs(self, x: torch.Tensor, activation: torch.Tensor):
        scale = 1.0 / math.sqrt(x.shape[-1])
        logits = torch.einsum("mtc,mbkc->mbtk", self._w("outputs.queries"), self.lin(x, "outputs.key")) * scale
        coupling = torch.softmax(logits + torch.log(activation + 1e-6)[:, :, None, :], dim=-1)  # (M, B, T, K)
        return torch.einsum("mbtk,mbkc->mbtc", coupling, self.lin(x, "outputs.value")), coupling

    def heads(self, features: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out: dict[str, torch.Tensor] = {}
        mean, std = self._w("heads.target_mean"), self._w("heads.target_std")  # (M, T)
        for j, t in enumerate(self.config.targets):
            p = f"heads.heads.{t}."
            raw = self.lin(F.silu(self.lin(features[:, :, j], p + "0")), p + "2")  # (M, B, 1 or 2)
            if is_gap_target(t):
                logit, amplitude = raw[..., 0], F.softplus(raw[..., 1] + 1.0) * std[:, j, None]
                out[f"{t}_logit"], out[f"{t}_amplitude"] = logit, amplitude
                if t == "band_gap":
                    out["metal_probability"] = torch.sigmoid(-logit)
                out[t] = torch.where(logit >= 0, amplitude, torch.zeros_like(amplitude))
            else:
                out[t] = raw[..., 0] * std[:, j, None] + mean[:, j, None]
        return [{k: v[i] for k, v in out.items()} for i in range(self.n_members)]

    # ------------------------------------------------------------------ the whole network

    @torch.inference_mode()
    def forward(self, batch: GraphBatch, explain: bool = False) -> list[dict[str, torch.Tensor]]:
        """Every network's outputs for ``batch``: a list of M dicts, as :meth:`sen.model.SEN.forward` gives."""
        z = batch.atomic_numbers
        h = self.embed(z, "atoms.embed") + self.lin(self.descriptors.index_select(0, z), "atoms.project")
        e = self.lin(self.distances(batch.edge_length), "edge_embed")  # the expansion once, for all networks
        for k in range(self.config.n_conv):
            h, e = self.conv(k, h, e, batch)
        h = self.symmetry(h, batch)
        pose, activation, routing, share = self.routing(h, batch)
        x, attention = self.capsules(pose, activation)
        out_caps, coupling = self.outputs(x, activation)
        counts = torch.bincount(batch.crystal_index, minlength=batch.n_crystals).clamp_min(1).to(h.dtype)
        pooled = self.lin(_sum_rows(h, batch.crystal_index, batch.n_crystals) / counts[:, None], "atom_readout")
        outs = self.heads(torch.cat([out_caps, pooled[:, :, None, :].expand_as(out_caps)], dim=-1))
        crystal_features = torch.cat([out_caps, pooled[:, :, None, :]], dim=2)  # (M, B, T + 1, C)
        for i, out in enumerate(outs):
            out["crystal_features"] = crystal_features[i]
        if explain:
            flow = torch.einsum("mnk,mntk->mnt", share, coupling.index_select(1, batch.crystal_index))
            for i, out in enumerate(outs):
                preds = torch.stack([out[t] for t in self.config.targets], dim=-1)
                out.update(routing=routing[i], capsule_attention=attention[i], capsule_activation=activation[i],
                           output_routing=coupling[i], atom_flow=flow[i],
                           atom_contributions=flow[i] * preds[batch.crystal_index])  # fmt: skip
        return outs
