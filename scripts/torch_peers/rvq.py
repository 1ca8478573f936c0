"""The straight-through residual VQ with EMA codebooks of jaxcodec/models/quantizer.py, in torch, on the peer's own
codebook buffers."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from jaxcodec import config as config_lib  # pure Python + yaml: no jax
from scripts.torch_peers.peers import peer_codebooks


def nearest_code(x_nd: torch.Tensor, embed_kd: torch.Tensor) -> torch.Tensor:
    """Index of the closest code by |x|² − 2x·e + |e|² (first index on ties), after moving the origin to the
    codebook mean as quantizer.nearest_code does: same argmin, smaller float32 rounding for offset latents."""
    center_d = embed_kd.mean(0)
    x_nd, embed_kd = x_nd - center_d, embed_kd - center_d
    dist_nk = x_nd.pow(2).sum(-1, keepdim=True) - 2 * x_nd @ embed_kd.T + embed_kd.pow(2).sum(-1)
    return dist_nk.argmin(-1)


def ema_update(embed_qkd, embed_avg_qkd, cluster_size_qk, counts_qk, sums_qkd, *, decay: float, epsilon: float):
    """quantizer.ema_update: N ← γN + (1−γ)n, m ← γm + (1−γ)Σx, e = m / Ñ with Laplace-smoothed
    Ñ = (N+ε)/(ΣN+Kε)·ΣN; levels that saw no frame are left untouched. Returns (embed, embed_avg, cluster_size)."""
    k = cluster_size_qk.shape[-1]
    cluster_size = decay * cluster_size_qk + (1 - decay) * counts_qk
    embed_avg = decay * embed_avg_qkd + (1 - decay) * sums_qkd
    total = cluster_size.sum(-1, keepdim=True)
    embed = embed_avg / ((cluster_size + epsilon) / (total + k * epsilon) * total)[..., None]
    seen_q = counts_qk.sum(-1) > 0
    return (torch.where(seen_q[:, None, None], embed, embed_qkd),
            torch.where(seen_q[:, None, None], embed_avg, embed_avg_qkd),
            torch.where(seen_q[:, None], cluster_size, cluster_size_qk))


class RVQOutput(NamedTuple):
    quantized_btd: torch.Tensor  # decoder input z + sg(Σq − z)
    codes_qn: torch.Tensor  # code of each (level, frame), frames flattened over the batch
    residuals_qnd: torch.Tensor  # detached residual each level quantized (the EMA statistics' inputs)
    commitment: torch.Tensor  # mean over levels of mean((r_l − sg(q_l))²)


class StraightThroughRVQ(nn.Module):
    """Residual VQ with EMA codebooks, as jaxcodec's ResidualVectorQuantizer in training (without re-seeding and
    quantizer dropout). Codebooks are buffers [n_q, K, D]; `update_` applies the EMA step in place."""

    def __init__(self, embed_qkd: torch.Tensor, embed_avg_qkd: torch.Tensor, cluster_size_qk: torch.Tensor,
                 decay: float = 0.99, epsilon: float = 1e-5):
        super().__init__()
        self.decay, self.epsilon = decay, epsilon
        self.register_buffer("embed", embed_qkd)
        self.register_buffer("embed_avg", embed_avg_qkd)
        self.register_buffer("cluster_size", cluster_size_qk)

    @classmethod
    def from_peer(cls, model: nn.Module, rvq: config_lib.RVQConfig) -> StraightThroughRVQ:
        """Stacks the peer's codebook buffers and points the peer's buffers at views of the stack, so the peer
        (its `encode`, its state_dict) sees every EMA update."""
        codebooks = peer_codebooks(model)
        stacked = {name: torch.stack([getattr(c, name) for c in codebooks]).detach().clone()
                   for name in ("embed", "embed_avg", "cluster_size")}
        for q, codebook in enumerate(codebooks):
            for name, tensor in stacked.items():
                setattr(codebook, name, tensor[q])  # re-registers the buffer as a view
        return cls(stacked["embed"], stacked["embed_avg"], stacked["cluster_size"], rvq.decay, rvq.epsilon)

    def forward(self, z_btd: torch.Tensor) -> RVQOutput:
        z_nd = z_btd.reshape(-1, z_btd.shape[-1])
        residual, total = z_nd, torch.zeros_like(z_nd)
        codes, residuals, commitments = [], [], []
        for embed_kd in self.embed:  # buffers: codes carry no gradient, as sg(q) in jaxcodec
            detached = residual.detach()  # argmin has no gradient; keep its matmul out of the autograd graph
            idx_n = nearest_code(detached, embed_kd)
            quant = F.embedding(idx_n, embed_kd)
            commitments.append(F.mse_loss(residual, quant))
            codes.append(idx_n)
            residuals.append(detached)
            total = total + quant
            residual = residual - quant
        quantized = z_nd + (total - z_nd).detach()  # straight-through once, on the sum
        return RVQOutput(quantized.reshape(z_btd.shape), torch.stack(codes), torch.stack(residuals),
                         torch.stack(commitments).mean())

    @torch.no_grad()
    def statistics(self, codes_qn: torch.Tensor, residuals_qnd: torch.Tensor):
        """Per-level code counts [n_q, K] and sums of assigned residuals [n_q, K, D]: jaxcodec's one-hot sums,
        computed with torch's bincount / index_add_ rather than a [frames, K] one-hot matmul."""
        _, k, d = self.embed.shape
        counts = torch.stack([torch.bincount(c, minlength=k) for c in codes_qn]).to(self.embed.dtype)
        sums = torch.stack([self.embed.new_zeros(k, d).index_add_(0, c, r)
                            for c, r in zip(codes_qn, residuals_qnd, strict=True)])
        return counts, sums

    @torch.no_grad()
    def update_(self, codes_qn: torch.Tensor, residuals_qnd: torch.Tensor) -> None:
        counts, sums = self.statistics(codes_qn, residuals_qnd)
        new = ema_update(self.embed, self.embed_avg, self.cluster_size, counts, sums, decay=self.decay,
                         epsilon=self.epsilon)
        for buffer, value in zip((self.embed, self.embed_avg, self.cluster_size), new, strict=True):
            buffer.copy_(value)  # in place: the peer's codebooks are views of these buffers
