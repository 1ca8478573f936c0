"""The adversarial losses of jaxcodec/losses/adversarial.py with its defaults, in torch: per sub-discriminator
means, averaged over the K sub-discriminators; relative feature matching."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scripts.torch_peers.discriminators import FeatureMaps, Logits


def _mean_over(terms: list[torch.Tensor]) -> torch.Tensor:
    if not terms:
        raise ValueError("no discriminator outputs given")
    return torch.stack(terms).mean()


def discriminator_loss(real_logits: Logits, fake_logits: Logits, kind: str = "hinge") -> torch.Tensor:
    """hinge: mean(relu(1 − D(x))) + mean(relu(1 + D(x̂))); lsgan: mean((1 − D(x))²) + mean(D(x̂)²)."""
    if kind == "hinge":
        terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits, strict=True)]
    elif kind == "lsgan":
        terms = [(1 - r).pow(2).mean() + f.pow(2).mean() for r, f in zip(real_logits, fake_logits, strict=True)]
    else:
        raise ValueError(f"adversarial kind must be 'hinge' or 'lsgan', got {kind!r}")
    return _mean_over(terms)


def generator_adversarial_loss(fake_logits: Logits, kind: str = "hinge") -> torch.Tensor:
    """hinge: mean(relu(1 − D(x̂))) (EnCodec paper); lsgan: mean((1 − D(x̂))²)."""
    if kind == "hinge":
        return _mean_over([F.relu(1 - f).mean() for f in fake_logits])
    if kind == "lsgan":
        return _mean_over([(1 - f).pow(2).mean() for f in fake_logits])
    raise ValueError(f"adversarial kind must be 'hinge' or 'lsgan', got {kind!r}")


def feature_matching_loss(real_fmaps: FeatureMaps, fake_fmaps: FeatureMaps) -> torch.Tensor:
    """EnCodec eq. 3, relative: 1/K Σ_k 1/L_k Σ_l mean|D_k^l(x) − D_k^l(x̂)| / mean|D_k^l(x)|, real maps constant."""
    per_discriminator = []
    for real_layers, fake_layers in zip(real_fmaps, fake_fmaps, strict=True):
        layer_terms = [(r.detach() - f).abs().mean() / r.detach().abs().mean().clamp_min(1e-12)
                       for r, f in zip(real_layers, fake_layers, strict=True)]
        per_discriminator.append(_mean_over(layer_terms))
    return _mean_over(per_discriminator)
