"""A CGCNN-style baseline (Xie & Grossman, PRL 2018) on SEN's featuriser, for honest comparisons.

Same inputs (graph, distance expansion, element features) and the same target heads as
SEN, but no symmetry input, no capsules: 3 gated graph convolutions with batch
normalisation, mean pooling over atoms, an MLP. Trained by the same loop (``--arch cgcnn``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sen.graph import GraphBatch, GraphConfig
from sen.model import AtomEmbedding, DistanceExpansion, SENConfig, TargetHeads, scatter_mean, scatter_sum


class CGCNNConv(nn.Module):
    """CGCNN convolution: h_i += sum_j sigmoid(W_f z_ij) * softplus(W_s z_ij), z_ij = [h_i, h_j, e_ij]."""

    def __init__(self, width: int, edge_dim: int):
        super().__init__()
        self.lin = nn.Linear(2 * width + edge_dim, 2 * width)
        self.bn1 = nn.BatchNorm1d(2 * width)
        self.bn2 = nn.BatchNorm1d(width)

    def forward(self, h, e, src, dst):
        z = self.bn1(self.lin(torch.cat([h[dst], h[src], e], dim=-1)))
        gate, core = z.chunk(2, dim=-1)
        agg = scatter_sum(torch.sigmoid(gate) * F.softplus(core), dst, h.shape[0])
        # BatchNorm cannot take batch statistics of a lone atom (a batch of one elemental crystal)
        return F.softplus(h + (self.bn2(agg) if agg.shape[0] > 1 or not self.training else agg))


@dataclass
class CGCNNConfig(SENConfig):
    """CGCNN uses SEN's config fields it needs (width, n_conv, n_rbf, targets, target_stats)."""

    width: int = 64


class CGCNN(nn.Module):
    """CGCNN-style crystal graph network with SEN's target heads."""

    def __init__(self, config: SENConfig | None = None, graph_config: GraphConfig | None = None):
        super().__init__()
        self.config = config = config or CGCNNConfig()
        self.graph_config = graph_config or GraphConfig()
        w = config.width
        self.atoms = AtomEmbedding(w)
        self.distances = DistanceExpansion(config.n_rbf, self.graph_config.cutoff)
        self.convs = nn.ModuleList([CGCNNConv(w, config.n_rbf) for _ in range(config.n_conv)])
        self.pool_mlp = nn.Sequential(nn.Linear(w, 2 * w), nn.Softplus())
        self.heads = TargetHeads(2 * w, config.targets, config.target_stats, config.dropout)

    def forward(self, batch: GraphBatch, explain: bool = False) -> dict[str, torch.Tensor]:
        """Predictions per crystal (same keys and units as :class:`sen.model.SEN`; no explanation)."""
        h = self.atoms(batch.atomic_numbers)
        e = self.distances(batch.edge_length)
        for conv in self.convs:
            h = conv(h, e, batch.edge_src, batch.edge_dst)
        pooled = self.pool_mlp(scatter_mean(h, batch.crystal_index, batch.n_crystals))  # (B, 2W)
        features = pooled[:, None, :].expand(-1, len(self.config.targets), -1)
        return self.heads(features)
