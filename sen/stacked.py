"""Several trained SEN networks run as one: :class:`StackedSEN`.

An ensemble of M networks run one after the other launches every small kernel M times, and for the
crystals people look at one by one (tens of atoms) the launches are the cost, not the arithmetic. Here
the networks' weights are stacked along a leading member axis and every layer runs once for all of them
as a batched matrix product (``torch.baddbmm``); everything that does not depend on the weights (the
graph, the distance expansion, the orbit counts, the gather and scatter indices) is computed once. The
numbers are those of :meth:`sen.model.SEN.forward` for each network (tested to 1e-5); this file mirrors
that forward, layer by layer, in inference mode only (no dropout, no gradients), with three exact
rearrangements of its arithmetic, measured to matter on a CPU:

* gathers and scatters over rows run on (members x rows, features) matrices with one flat index
  (``F.embedding`` / ``index_add_`` along the first axis), not along the second axis of a 3-D tensor,
  which is a slow path in PyTorch on CPUs; a convolution's two per-node terms are gathered and added
  in one ``F.embedding_bag`` call;
* the edge features' biases (the distance embedding's and every edge update's) are constant over edges,
  so their image under each convolution's edge map is folded into that convolution's per-node bias,
  and the edge updates become in-place ``baddbmm_``; the last convolution's edge update, which nothing
  reads, is skipped;
* when the members' edge activations would not fit the CPU's caches together (more than
  :data:`MAX_EDGE_ROWS` edge rows), the members run in groups, each group through the same code.

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

#: On a CPU, members run together while members x edges stays below this many edge rows, and in groups
#: above it (the stacked edge activations then no longer fit the caches). On CUDA all run together.
MAX_EDGE_ROWS = 2400


class _Rows:
    """Flat gather / scatter indices for one batch and one group of ``m`` members.

    A tensor with a member axis (m, R, ...) is treated as the matrix (m * R, ...); member i's row r is
    row i * R + r. Indices are built once per forward and shared by every layer and every member.
    """

    def __init__(self, m: int, batch: GraphBatch):
        self.m, self.batch, self._cache = m, batch, {}

    def flat(self, name: str, index: torch.Tensor, size: int) -> torch.Tensor:
        """(m * len(index),): ``index`` into rows of ``size``, offset for each member."""
        key = (name, size)
        if key not in self._cache:
            offsets = torch.arange(self.m, device=index.device)[:, None] * size
            self._cache[key] = (offsets + index[None, :]).reshape(-1)
        return self._cache[key]

    def gather(self, x: torch.Tensor, name: str, index: torch.Tensor) -> torch.Tensor:
        """``x.index_select(1, index)`` for x (m, R, ...)."""
        m, r, rest = x.shape[0], x.shape[1], x.shape[2:]
        out = F.embedding(self.flat(name, index, r), x.reshape(m * r, -1))
        return out.view(m, index.shape[0], *rest)

    def sum_rows(self, src: torch.Tensor, name: str, index: torch.Tensor, size: int) -> torch.Tensor:
        """Sum src (m, S, ...) over its rows into ``size`` buckets given by ``index`` (S,): (m, size, ...)."""
        m, rest = src.shape[0], src.shape[2:]
        flat = src.reshape(m * src.shape[1], -1)
        out = flat.new_zeros((m * size, flat.shape[1])).index_add_(0, self.flat(name, index, size), flat)
        return out.view(m, size, *rest)

    def edge_pairs(self, n_atoms: int) -> torch.Tensor:
        """(m * E, 2) rows of the per-node term table (m, N, 2, 2W) flattened: (dst, 0) and (src, 1)."""
        key = ("pairs", n_atoms)
        if key not in self._cache:
            dst = self.flat("dst", self.batch.edge_dst, n_atoms) * 2
            src = self.flat("src", self.batch.edge_src, n_atoms) * 2 + 1
            self._cache[key] = torch.stack([dst, src], dim=1)
        return self._cache[key]


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
        self._lin_cache: dict = {}  # Linear weights and biases per member group, views (see _lin_params)
        self.config, self.graph_config, self.n_members = first.config, first.graph_config, len(members)
        self.distances = first.distances  # the same expansion in every network (Ensemble checks it)
        self.heads_count = first.config.attention_heads
        states = [m.state_dict() for m in members]
        for key in states[0]:  # buffers, not parameters: moved by .to(), left out of any state_dict
            self._add(key, torch.stack([s[key] for s in states]).detach())
        self.register_buffer("descriptors", first.atoms.descriptors.clone(), persistent=False)
        self._fold_edge_biases()
        for name in [n for n, w in self._buffers.items() if w.dim() == 3 and n.endswith("weight")]:
            # Linear weights (M, out, in) also as (M, in, out), the layout the batched products read
            self.register_buffer("T" + name, self._buffers[name].transpose(1, 2).contiguous(), persistent=False)

    def _add(self, name: str, value: torch.Tensor) -> None:
        self.register_buffer(name.replace(".", "__"), value.contiguous(), persistent=False)

    def _fold_edge_biases(self) -> None:
        """Per-node weights of each convolution with the edge features' (constant) biases folded in.

        Edge features are e_k = e'_k + c_k with c_0 the distance embedding's bias and c_{k+1} = c_k + the
        k-th edge update's bias; ``edge_k(e_k) = edge_k(e'_k) + edge_k(c_k)``, and the second term, the same
        for every edge, joins the destination node's bias. ``fold.convs.k.nodes`` maps h to both per-node
        terms at once: [destination (with bias) | source], (M, 4W, W).
        """
        c = self._w("edge_embed.bias")  # (M, W)
        for k in range(self.config.n_conv):
            p = f"convs.{k}."
            dst_bias = self._w(p + "dst.bias") + torch.einsum("moi,mi->mo", self._w(p + "edge.weight"), c)
            self._add(f"fold.{p}nodes.weight", torch.cat([self._w(p + "dst.weight"), self._w(p + "src.weight")], 1))
            self._add(f"fold.{p}nodes.bias", torch.cat([dst_bias, torch.zeros_like(dst_bias)], 1))
            c = c + self._w(p + "edge_out.bias")
        # every element's starting features (embedding + projected descriptors) as one table, (M, Z, W)
        table = torch.baddbmm(self._w("atoms.project.bias")[:, None, :],
                              self.descriptors.expand(self.n_members, *self.descriptors.shape),
                              self._w("atoms.project.weight").transpose(1, 2))  # fmt: skip
        self._add("fold.atoms.weight", self._w("atoms.embed.weight") + table)
        # the three maps routing reads from h, and the two output-capsule maps of x, as one product each
        parts = ("routing.pose", "routing.activation", "routing.prior")
        self._add("fold.routing.weight", torch.cat([self._w(n + ".weight") for n in parts], 1))
        self._add("fold.routing.bias", torch.cat([self._w(n + ".bias") for n in parts], 1))
        self._add("fold.outputs.weight", torch.cat([self._w("outputs.key.weight"), self._w("outputs.value.weight")], 1))
        self._add("fold.outputs.bias", torch.cat([self._w("outputs.key.bias"), self._w("outputs.value.bias")], 1))

    def _w(self, name: str, members: slice | None = None) -> torch.Tensor:
        """Stacked weights by their name in one network's state_dict, e.g. ``convs.0.dst.weight`` (M, 2W, W)."""
        w = self._buffers[name.replace(".", "__")]
        return w if members is None else w[members]

    # ------------------------------------------------------------------ layers with stacked weights

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), ...: the cached views below point at the old tensors
        self._lin_cache = {}
        return super()._apply(fn, recurse)

    def _lin_params(self, name: str, sl: slice, bias: bool, weight: str):
        """(weights (m, in, out), bias (m, 1, out) or None) of Linear ``name`` for members ``sl``, cached."""
        key = (name, sl.start, sl.stop, bias, weight)
        if key not in self._lin_cache:
            w = self._buffers["T" + (name + weight).replace(".", "__")][sl]
            b = self._w(name + weight.replace("weight", "bias"), sl)[:, None, :] if bias else None
            self._lin_cache[key] = (w, b)
        return self._lin_cache[key]

    def lin(self, x: torch.Tensor, name: str, sl: slice, bias: bool = True, weight: str = ".weight") -> torch.Tensor:
        """Each network's Linear ``name``: x (m, ..., in), or rows shared by every network (R, in) -> (m, ..., out)."""
        w, b = self._lin_params(name, sl, bias, weight)  # (m, in, out), (m, 1, out)
        m = w.shape[0]
        if x.dim() == 2:  # the same rows for every network (element descriptors, distances, site orders)
            x = x.expand(m, *x.shape)
        flat = x.reshape(m, -1, x.shape[-1])
        out = torch.bmm(flat, w) if b is None else torch.baddbmm(b, flat, w)
        return out.reshape(*x.shape[:-1], w.shape[-1])

    def norm(self, x: torch.Tensor, name: str, sl: slice) -> torch.Tensor:
        """Each network's LayerNorm ``name`` (eps 1e-5, as nn.LayerNorm)."""
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        y = F.layer_norm(x, x.shape[-1:])
        return y * self._w(name + ".weight", sl).view(shape) + self._w(name + ".bias", sl).view(shape)

    def embed(self, index: torch.Tensor, name: str, sl: slice) -> torch.Tensor:
        """Each network's Embedding ``name``: (R,) -> (m, R, W)."""
        return self._w(name + ".weight", sl).index_select(1, index)

    # ------------------------------------------------------------------ blocks (as in sen.model)

    def conv(self, k: int, h: torch.Tensor, e: torch.Tensor, rows: _Rows, sl: slice, last: bool):
        """One gated edge convolution; ``e`` (the edge features less their folded biases) is updated in place."""
        p, batch = f"convs.{k}.", rows.batch
        m, n, width = h.shape
        nodes = self.lin(h, f"fold.{p}nodes", sl)  # (m, N, 4W): destination and source terms
        z = F.embedding_bag(rows.edge_pairs(n), nodes.view(m * n * 2, 2 * width), mode="sum")  # (m * E, 2W)
        z = z.view(m, -1, 2 * width).baddbmm_(e, self._buffers[f"Tconvs__{k}__edge__weight"][sl])
        gate, core = z.chunk(2, dim=-1)
        msg = torch.sigmoid(gate) * F.silu(core)  # (m, E, W)
        weighted = msg if batch.edge_count is None else msg * batch.edge_count[:, None]  # merged edges count n times
        agg = rows.sum_rows(weighted, "dst", batch.edge_dst, n)
        h = h + self.lin(F.silu(self.norm(agg, p + "node_norm", sl)), p + "node_out", sl)
        if not last:  # the bias of the edge update is folded into the next convolutions' node terms
            e = e.baddbmm_(msg, self._buffers[f"Tconvs__{k}__edge_out__weight"][sl])
        return h, e

    def symmetry(self, h: torch.Tensor, rows: _Rows, sl: slice) -> torch.Tensor:
        batch = rows.batch
        orbit_count = torch.bincount(batch.orbit_index, minlength=batch.n_orbits).clamp_min(1).to(h.dtype)
        site = self.embed(batch.site_point_group, "symmetry.site_group", sl) + self.lin(
            torch.log(batch.site_symmetry_order.to(h.dtype))[:, None], "symmetry.site_order", sl
        )
        orbit_h = rows.sum_rows(h, "orbit", batch.orbit_index, batch.n_orbits) / orbit_count[:, None]
        orbit_site = rows.sum_rows(site, "orbit", batch.orbit_index, batch.n_orbits) / orbit_count[:, None]
        crystal = self.embed(batch.crystal_system, "symmetry.crystal_system", sl) + self.embed(
            batch.point_group, "symmetry.point_group", sl
        )
        x = torch.cat([orbit_h, orbit_site, rows.gather(crystal, "orbit_crystal", batch.orbit_crystal)], dim=-1)
        x = self.norm(self.lin(F.silu(self.lin(x, "symmetry.orbit_mlp.0", sl)), "symmetry.orbit_mlp.2", sl),
                      "symmetry.orbit_mlp.3", sl)  # fmt: skip
        return h + rows.gather(self.lin(x, "symmetry.to_atoms", sl), "orbit_index", batch.orbit_index)

    def routing(self, h: torch.Tensor, rows: _Rows, sl: slice):
        batch = rows.batch
        crystal, b = batch.crystal_index, batch.n_crystals
        eps = (CapsuleRouting.EPS * batch.cells().to(h.dtype))[None, :, None]  # (1, B, 1)
        d = self.config.capsule_dim
        pose_act_prior = self.lin(h, "fold.routing", sl)  # (m, N, D + 1 + K): pose, activation, prior
        u = squash(pose_act_prior[..., :d])  # (m, N, D)
        a = torch.sigmoid(pose_act_prior[..., d])  # (m, N)
        votes = torch.einsum("mnd,mkde->mnke", u, self._w("routing.votes", sl))  # (m, N, K, D)
        prior = logits = pose_act_prior[..., d + 1 :]  # (m, N, K)
        weight = a if batch.multiplicity is None else a * batch.multiplicity  # (m, N): the atoms a row stands for
        for it in range(self.config.routing_iterations):
            r = torch.softmax(logits, dim=-1)
            w = r * a[..., None]
            ws = w if batch.multiplicity is None else r * weight[..., None]
            mass = rows.sum_rows(ws, "crystal", crystal, b)  # (m, B, K)
            pose = rows.sum_rows(ws[..., None] * votes, "crystal", crystal, b) / (mass + eps)[..., None]
            pose = squash(pose)  # (m, B, K, D)
            if it < self.config.routing_iterations - 1:
                logits = prior + (votes * rows.gather(pose, "crystal_index", crystal)).sum(-1)
        total = torch.maximum(rows.sum_rows(weight[..., None], "crystal", crystal, b)[..., 0], eps[..., 0])  # (m, B)
        share = w / rows.gather(mass + eps, "crystal_index", crystal)
        return pose, mass / total[..., None], r, share

    def capsules(self, pose: torch.Tensor, activation: torch.Tensor, sl: slice):
        x = self.lin(torch.cat([pose, activation[..., None]], dim=-1), "capsules.inp", sl)
        x = x + self._w("capsules.identity", sl)[:, None]  # (m, B, K, C)
        y = self.norm(x, "capsules.norm1", sl)
        m, b, k, c = y.shape
        heads, dh = self.heads_count, c // self.heads_count
        q, key, v = self.lin(y, "capsules.attn", sl, weight=".in_proj_weight").chunk(3, dim=-1)
        q, key, v = (t.reshape(m, b, k, heads, dh).transpose(2, 3) for t in (q, key, v))  # (m, B, H, K, dh)
        attention = torch.softmax(q @ key.transpose(-1, -2) / math.sqrt(dh), dim=-1)  # (m, B, H, K, K)
        y = (attention @ v).transpose(2, 3).reshape(m, b, k, c)
        x = x + self.lin(y, "capsules.attn.out_proj", sl)
        x = x + self.lin(F.silu(self.lin(self.norm(x, "capsules.norm2", sl), "capsules.mlp.0", sl)),
                         "capsules.mlp.2", sl)  # fmt: skip
        return x, attention.mean(2)

    def outputs(self, x: torch.Tensor, activation: torch.Tensor, sl: slice):
        c = x.shape[-1]
        scale = 1.0 / math.sqrt(c)
        key, value = self.lin(x, "fold.outputs", sl).split(c, dim=-1)  # one product for both maps
        logits = torch.einsum("mtc,mbkc->mbtk", self._w("outputs.queries", sl), key)
        coupling = torch.softmax(logits * scale + torch.log(activation + 1e-6)[:, :, None, :], dim=-1)  # (m, B, T, K)
        return torch.einsum("mbtk,mbkc->mbtc", coupling, value), coupling

    def heads(self, features: torch.Tensor, sl: slice) -> list[dict[str, torch.Tensor]]:
        out: dict[str, torch.Tensor] = {}
        mean, std = self._w("heads.target_mean", sl), self._w("heads.target_std", sl)  # (m, T)
        for j, t in enumerate(self.config.targets):
            p = f"heads.heads.{t}."
            raw = self.lin(F.silu(self.lin(features[:, :, j], p + "0", sl)), p + "2", sl)  # (m, B, 1 or 2)
            if is_gap_target(t):
                logit, amplitude = raw[..., 0], F.softplus(raw[..., 1] + 1.0) * std[:, j, None]
                out[f"{t}_logit"], out[f"{t}_amplitude"] = logit, amplitude
                if t == "band_gap":
                    out["metal_probability"] = torch.sigmoid(-logit)
                out[t] = torch.where(logit >= 0, amplitude, torch.zeros_like(amplitude))
            else:
                out[t] = raw[..., 0] * std[:, j, None] + mean[:, j, None]
        return [{k: v[i] for k, v in out.items()} for i in range(features.shape[0])]

    # ------------------------------------------------------------------ the whole network

    def groups(self, n_edges: int, device: torch.device) -> list[slice]:
        """The member groups a batch of ``n_edges`` edges runs in (all members at once on CUDA)."""
        size = self.n_members if device.type == "cuda" else max(1, min(self.n_members, MAX_EDGE_ROWS // max(n_edges, 1)))
        return [slice(i, min(i + size, self.n_members)) for i in range(0, self.n_members, size)]

    @torch.inference_mode()
    def forward(self, batch: GraphBatch, explain: bool = False) -> list[dict[str, torch.Tensor]]:
        """Every network's outputs for ``batch``: a list of M dicts, as :meth:`sen.model.SEN.forward` gives."""
        rbf = self.distances(batch.edge_length)  # the expansion once, for all networks
        outs: list[dict[str, torch.Tensor]] = []
        for sl in self.groups(batch.edge_src.numel(), batch.edge_src.device):
            outs.extend(self._run(batch, rbf, sl, explain))
        return outs

    def _run(self, batch: GraphBatch, rbf: torch.Tensor, sl: slice, explain: bool) -> list[dict[str, torch.Tensor]]:
        rows = _Rows(sl.stop - sl.start, batch)
        z = batch.atomic_numbers
        h = self.embed(z, "fold.atoms", sl)  # embedding + projected element descriptors
        e = self.lin(rbf, "edge_embed", sl, bias=False)  # its bias is folded into the convolutions
        for k in range(self.config.n_conv):
            h, e = self.conv(k, h, e, rows, sl, last=k == self.config.n_conv - 1)
        h = self.symmetry(h, rows, sl)
        pose, activation, routing, share = self.routing(h, rows, sl)
        x, attention = self.capsules(pose, activation, sl)
        out_caps, coupling = self.outputs(x, activation, sl)
        if batch.multiplicity is None:
            counts = torch.bincount(batch.crystal_index, minlength=batch.n_crystals).clamp_min(1).to(h.dtype)
            pooled = rows.sum_rows(h, "crystal", batch.crystal_index, batch.n_crystals) / counts[:, None]
        else:  # rows of orbit graphs stand for several atoms each
            mult = batch.multiplicity.to(h.dtype)
            counts = torch.zeros(batch.n_crystals, dtype=h.dtype, device=h.device).index_add_(0, batch.crystal_index, mult)
            pooled = rows.sum_rows(h * mult[:, None], "crystal", batch.crystal_index, batch.n_crystals)
            pooled = pooled / counts.clamp_min(1)[:, None]
        pooled = self.lin(pooled, "atom_readout", sl)
        outs = self.heads(torch.cat([out_caps, pooled[:, :, None, :].expand_as(out_caps)], dim=-1), sl)
        crystal_features = torch.cat([out_caps, pooled[:, :, None, :]], dim=2)  # (m, B, T + 1, C)
        for i, out in enumerate(outs):
            out["crystal_features"] = crystal_features[i]
        if explain:
            flow = torch.einsum("mnk,mntk->mnt", share, rows.gather(coupling, "crystal_index", batch.crystal_index))
            for i, out in enumerate(outs):
                preds = torch.stack([out[t] for t in self.config.targets], dim=-1)
                out.update(routing=routing[i], capsule_attention=attention[i], capsule_activation=activation[i],
                           output_routing=coupling[i], atom_flow=flow[i],
                           atom_contributions=flow[i] * preds[batch.crystal_index])  # fmt: skip
        return outs
