"""The PyTorch side of the JAX-vs-PyTorch throughput benchmark: the peers (transformers' `EncodecModel`, the
`speechtokenizer` package's `SpeechTokenizer`) built with a jaxcodec config's hyper-parameters, and a training
harness that does the same computation as jaxcodec's generator/GAN step around the peer's encoder and decoder.

Why a harness: both peers ship inference code only. Their quantizers pass no gradient to the encoder, and
neither package holds the losses, discriminators or optimizers of its training recipe. To compare "same
architecture, same weights, same batch", this module mirrors, in plain torch:
- the straight-through residual VQ with EMA codebooks of `jaxcodec/models/quantizer.py` (nearest code by
  squared distance, z + sg(Σq − z) into the decoder, commitment loss, `ema_update`), on the peer's own codebook
  buffers. Dead-code re-seeding and k-means initialisation are left out: they are data-dependent events, not
  per-step cost, and the benchmark starts from random codebooks;
- the multi-scale mel losses of `jaxcodec/spectral.py` (both `mel_form`s) and L1 on the waveform;
- the discriminators of `jaxcodec/models/discriminators.py` (EnCodec's MS-STFT; HiFi-GAN's MPD/MSD when the
  config's `disc.kinds` lists them) and the adversarial / relative feature-matching losses of `jaxcodec/losses.py`;
- the step order of `jaxcodec/train/step.py`: one generator forward, generator update (global-norm clipping,
  AdamW), EMA codebook update, then the discriminator update on the detached reconstruction.
Not mirrored: the teacher heads and their semantic/acoustic losses (the peers' codecs have no acoustic aligner),
the learning-rate schedule (a constant LR costs the same), non-finite-step skipping, padding masks (the
benchmark's batches are whole), the discriminator warm-up (adversarial terms are always on here).
`tests/test_torch_peers.py` checks every mirrored loss and the quantizer against jaxcodec and numpy.

This file imports torch, numpy, safetensors, transformers and `jaxcodec.config` (pure Python + yaml) only, never
jax: it runs in its own process next to jaxcodec's, and must not pay for (or be slowed by) a second framework.
It is one file, over the usual ~400 lines, so the benchmark driver can run it as a script.

    python scripts/torch_peers.py save --peer encodec --config configs/base.yaml --seed 0 -o W.safetensors
    python scripts/torch_peers.py run --peer encodec --config configs/base.yaml --weights W.safetensors \\
        --case encode|generator_step|gan_step --batch 8 --seconds 1 --mode eager|compile --iters 5 [--threads 2]

Each prints one JSON line (the last line of stdout). A failing `torch.compile` is reported in that line's
"error" field, with exit status 0, rather than as a crash.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import resource
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout where jaxcodec is not installed
    sys.path.insert(0, str(ROOT))
from jaxcodec import config as config_lib  # noqa: E402  (pure Python + yaml: no jax)

PEERS = ("encodec", "speechtokenizer")
CASES = ("encode", "generator_step", "warmup_step", "gan_step")
CODEBOOK_SCALE = 0.1  # random codebooks: randn · 0.1, so codes are non-trivial without k-means on data


# ------------------------------------------------------------------------------------------------------ peers


def speechtokenizer_class() -> type[nn.Module]:
    """`speechtokenizer.model.SpeechTokenizer`, loaded under an empty package: the package's `__init__` imports
    its trainer (accelerate, tensorboard), which its model does not need. Raises ModuleNotFoundError when the
    package is not installed."""
    if "speechtokenizer" not in sys.modules:  # find_spec fails on the stand-in package once it is there
        spec = importlib.util.find_spec("speechtokenizer")
        if spec is None:
            raise ModuleNotFoundError("speechtokenizer is not installed (make install adds it)",
                                      name="speechtokenizer")
        package = types.ModuleType("speechtokenizer")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["speechtokenizer"] = package
    from speechtokenizer.model import SpeechTokenizer

    return SpeechTokenizer


def peer_bandwidth(config: config_lib.Config) -> float:
    """kbps of all n_q levels, the `bandwidth` EncodecModel.encode takes: n_q · log2(K) · frame rate / 1000."""
    return config.rvq.n_q * math.log2(config.rvq.codebook_size) * config.model.frame_rate / 1000.0


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _build_encodec(config: config_lib.Config) -> nn.Module:
    from transformers import EncodecConfig, EncodecModel  # imported here: slow, and only this peer needs it

    m = config.model
    _require(not m.encoder_bidirectional, "transformers' EncodecModel has no bidirectional encoder LSTM")
    _require(m.norm == "weight_norm", f"EncodecModel supports norm weight_norm, config has {m.norm!r}")
    model = EncodecModel(EncodecConfig(
        sampling_rate=m.sample_rate, audio_channels=m.channels, upsampling_ratios=list(m.ratios),
        num_filters=m.n_filters, hidden_size=m.dimension, num_lstm_layers=m.lstm_layers,
        num_residual_layers=m.n_residual_layers, residual_kernel_size=m.residual_kernel_size,
        dilation_growth_rate=m.dilation_base, kernel_size=m.kernel_size, last_kernel_size=m.last_kernel_size,
        compress=m.compress, pad_mode=m.pad_mode, use_conv_shortcut=not m.true_skip, use_causal_conv=m.causal,
        codebook_size=config.rvq.codebook_size, target_bandwidths=[peer_bandwidth(config)]))
    n_q = model.quantizer.get_num_quantizers_for_bandwidth(peer_bandwidth(config))
    _require(n_q == config.rvq.n_q, f"EncodecModel would use {n_q} levels for {config.rvq.n_q}")
    return model


def _build_speechtokenizer(config: config_lib.Config) -> nn.Module:
    m = config.model
    _require(not m.causal and m.norm == "weight_norm" and not m.true_skip and m.pad_mode == "reflect",
             "SpeechTokenizer is non-causal, weight-normalised, with conv shortcuts and reflect padding")
    return speechtokenizer_class()(dict(
        n_filters=m.n_filters, strides=list(m.ratios), dimension=m.dimension, semantic_dimension=m.semantic_dim,
        bidirectional=m.encoder_bidirectional, dilation_base=m.dilation_base,
        residual_kernel_size=m.residual_kernel_size, n_residual_layers=m.n_residual_layers,
        lstm_layers=m.lstm_layers, activation="ELU", codebook_size=config.rvq.codebook_size, n_q=config.rvq.n_q,
        sample_rate=m.sample_rate))


def peer_codebooks(model: nn.Module) -> list[nn.Module]:
    """The per-level codebook modules (buffers `embed` [K, D], `embed_avg`, `cluster_size`, `inited`)."""
    if hasattr(model.quantizer, "vq"):  # SpeechTokenizer: quantizer.vq.layers[l]._codebook
        return [layer._codebook for layer in model.quantizer.vq.layers]
    return [layer.codebook for layer in model.quantizer.layers]  # EncodecModel: quantizer.layers[l].codebook


@torch.no_grad()
def randomize_codebooks(model: nn.Module) -> None:
    """The peers start with zero (or uniform, un-`inited`) codebooks meant for k-means on data: fill them with
    randn · CODEBOOK_SCALE from torch's global RNG, with embed_avg = embed and counts of 1."""
    for codebook in peer_codebooks(model):
        codebook.embed.copy_(torch.randn_like(codebook.embed) * CODEBOOK_SCALE)
        codebook.embed_avg.copy_(codebook.embed)
        codebook.cluster_size.fill_(1.0)
        codebook.inited.fill_(1.0)


def build_peer(peer: str, config_path: str | Path, seed: int, overrides: Sequence[str] = ()) -> nn.Module:
    """The PyTorch peer with the hyper-parameters of a jaxcodec YAML config, seeded weights and random codebooks."""
    config = config_lib.load(config_path, list(overrides))
    builders = {"encodec": _build_encodec, "speechtokenizer": _build_speechtokenizer}
    if peer not in builders:
        raise ValueError(f"peer must be one of {list(builders)}, got {peer!r}")
    torch.manual_seed(seed)
    model = builders[peer](config)
    randomize_codebooks(model)
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # codebooks are buffers: not counted


def save_weights(model: nn.Module, path: str | Path) -> None:
    """`model.state_dict()` as safetensors, keys unchanged (weight norm gives `...parametrizations.weight.
    original0/1` or `weight_g/weight_v`). Cloned: safetensors refuses tensors that share storage, which the
    training harness's tied codebooks do."""
    state = {name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()}
    safetensors.torch.save_file(state, str(path))


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    model.load_state_dict(safetensors.torch.load_file(str(path)), strict=True)
    return model


def encode_function(peer: str, model: nn.Module, config: config_lib.Config) -> Callable[[torch.Tensor], torch.Tensor]:
    """wav [B, 1, N] → codes [B, n_q, T] with the peer's own `encode`."""
    if peer == "encodec":
        bandwidth = peer_bandwidth(config)
        return lambda wav: model.encode(wav, bandwidth=bandwidth, return_dict=False)[0][0]  # [chunks=1, B, q, T]
    return lambda wav: model.encode(wav).transpose(0, 1)  # SpeechTokenizer: [n_q, B, T]


# ------------------------------------------------------------------------------------- multi-scale mel losses
# The recipes of jaxcodec/spectral.py (which imports jax, so its constants and numpy filterbank are restated
# here); tests/test_torch_peers.py checks that both forms give jaxcodec's numbers.

ENCODEC_SCALE_EXPONENTS = tuple(range(5, 12))  # EnCodec paper §3.4: windows 2^5 .. 2^11, hop window / 4
ENCODEC_N_MELS, ENCODEC_F_MIN, ENCODEC_LOG_FLOOR, ENCODEC_MSE_ALPHA = 64, 64.0, 1e-5, 1.0
SPEECHTOKENIZER_N_FFT, SPEECHTOKENIZER_HOP, SPEECHTOKENIZER_N_MELS = 1024, 240, 80
SPEECHTOKENIZER_SCALE_WEIGHTS = (45.0, 1.0, 1.0, 1.0)
SPEECHTOKENIZER_LOG_CLAMP, SPEECHTOKENIZER_MAGNITUDE_OFFSET = 1e-5, 1e-9


def hz_to_mel_htk(freq_hz):
    return 2595.0 * np.log10(1.0 + np.asarray(freq_hz, np.float64) / 700.0)


def mel_to_hz_htk(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float, slaney_norm: bool) -> np.ndarray:
    """Triangular HTK-scale filters [n_freqs, n_mels] up to sample_rate // 2, torchaudio's `melscale_fbanks`
    (spectral.mel_filterbank with mel_scale="htk"); slaney_norm scales each to unit area (2 / bandwidth)."""
    f_max = float(sample_rate // 2)
    bin_hz = np.linspace(0.0, sample_rate // 2, n_freqs)
    edges_hz = mel_to_hz_htk(np.linspace(hz_to_mel_htk(f_min), hz_to_mel_htk(f_max), n_mels + 2))
    widths_hz = np.diff(edges_hz)
    offsets = edges_hz[None, :] - bin_hz[:, None]
    fb = np.maximum(0.0, np.minimum(-offsets[:, :-2] / widths_hz[:-1], offsets[:, 2:] / widths_hz[1:]))
    if slaney_norm:
        fb = fb * (2.0 / (edges_hz[2:] - edges_hz[:-2]))[None, :]
    return fb.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class MelScale:
    """One scale of a recipe: reflect pre-padding, optional zero padding to whole frames, STFT with a periodic
    Hann window and `center=False`, |X|^power (+ offset), mel projection (spectral.MelSpectrogram's order)."""

    n_fft: int
    hop_length: int
    n_mels: int
    f_min: float
    power: float  # 2: power spectrum (EnCodec) or 1: magnitude (SpeechTokenizer); no other recipe uses others
    window_normalized: bool  # divide the STFT by sqrt(Σ window²) (torchaudio's normalized=True)
    slaney_norm: bool
    magnitude_offset: float
    pad_to_full_frames: bool

    @property
    def edge_padding(self) -> int:
        return (self.n_fft - self.hop_length) // 2


def encodec_mel_scales() -> tuple[MelScale, ...]:
    return tuple(MelScale(2**e, 2**e // 4, ENCODEC_N_MELS, ENCODEC_F_MIN, 2.0, True, False, 0.0, True)
                 for e in ENCODEC_SCALE_EXPONENTS)


def speechtokenizer_mel_scales() -> tuple[MelScale, ...]:
    return tuple(MelScale(SPEECHTOKENIZER_N_FFT // 2**i, SPEECHTOKENIZER_HOP // 2**i, SPEECHTOKENIZER_N_MELS, 0.0,
                          1.0, False, True, SPEECHTOKENIZER_MAGNITUDE_OFFSET, False)
                 for i in range(len(SPEECHTOKENIZER_SCALE_WEIGHTS)))


def _safe_sqrt(power: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (not NaN) gradient at 0, as spectral._safe_sqrt."""
    positive = power > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, power, 1.0)), 0.0)


class MultiScaleMelLoss(nn.Module):
    """spectral.multiscale_mel_loss(x, y, form) for unpadded batches x_bn, y_bn [B, N]; filterbanks and windows
    are buffers, computed once."""

    def __init__(self, form: str = "encodec", sample_rate: int = 16_000):
        super().__init__()
        scales = {"encodec": encodec_mel_scales, "speechtokenizer": speechtokenizer_mel_scales}
        if form not in scales:
            raise ValueError(f"mel form must be one of {list(scales)}, got {form!r}")
        self.form, self.scales = form, scales[form]()
        for i, s in enumerate(self.scales):
            fb = mel_filterbank(s.n_fft // 2 + 1, s.n_mels, sample_rate, s.f_min, s.slaney_norm)
            self.register_buffer(f"fb_mk_{i}", torch.from_numpy(np.ascontiguousarray(fb.T)), persistent=False)
            self.register_buffer(f"window_{i}", torch.hann_window(s.n_fft), persistent=False)

    def mel(self, i: int, wav_bn: torch.Tensor) -> torch.Tensor:
        """Linear mel spectrogram [B, n_mels, frames] at scale i."""
        s, window = self.scales[i], getattr(self, f"window_{i}")
        x = F.pad(wav_bn, (s.edge_padding, s.edge_padding), mode="reflect")
        if s.pad_to_full_frames:  # audiocraft's pad_for_conv1d: zeros so the last frame is whole
            length = x.shape[-1]
            whole_frames = -(-(length - s.n_fft) // s.hop_length) + 1
            x = F.pad(x, (0, (whole_frames - 1) * s.hop_length + s.n_fft - length))
        spec = torch.stft(x, s.n_fft, s.hop_length, s.n_fft, window, center=False, return_complex=True)
        power = torch.view_as_real(spec).pow(2).sum(-1)
        if s.window_normalized:
            power = power / window.pow(2).sum()  # |X / sqrt(Σw²)|² without a pass over the complex STFT
        amplitude = power if s.power == 2.0 else _safe_sqrt(power)
        return getattr(self, f"fb_mk_{i}") @ (amplitude + s.magnitude_offset)

    def _paired(self, i: int, x_bn: torch.Tensor, y_bn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both spectrograms from one call on the stacked batch, as spectral._paired."""
        mel = self.mel(i, torch.cat([x_bn, y_bn]))
        return mel[: x_bn.shape[0]], mel[x_bn.shape[0]:]

    def forward(self, x_bn: torch.Tensor, y_bn: torch.Tensor) -> torch.Tensor:
        loss = x_bn.new_zeros(())
        if self.form == "encodec":  # mean over scales of (L1 on mel + α · MSE on log10(1e-5 + mel)) / (1 + α)
            for i in range(len(self.scales)):
                mel_x, mel_y = self._paired(i, x_bn, y_bn)
                log_x, log_y = torch.log10(mel_x + ENCODEC_LOG_FLOOR), torch.log10(mel_y + ENCODEC_LOG_FLOOR)
                loss = loss + F.l1_loss(mel_x, mel_y) + ENCODEC_MSE_ALPHA * F.mse_loss(log_x, log_y)
            return loss / (len(self.scales) * (1.0 + ENCODEC_MSE_ALPHA))
        for i, weight in enumerate(SPEECHTOKENIZER_SCALE_WEIGHTS):  # Σ w_i · L1(log(clamp(mel, 1e-5)))
            mel_x, mel_y = self._paired(i, x_bn, y_bn)
            log_x = torch.log(torch.clamp(mel_x, min=SPEECHTOKENIZER_LOG_CLAMP))
            log_y = torch.log(torch.clamp(mel_y, min=SPEECHTOKENIZER_LOG_CLAMP))
            loss = loss + weight * F.l1_loss(log_x, log_y)
        return loss


# ------------------------------------------------------------------------------- straight-through residual VQ


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


# ------------------------------------------------------------------------------------ discriminator mirrors
# EnCodec's DiscriminatorSTFT (facebookresearch/encodec, encodec/msstftd.py) and HiFi-GAN's DiscriminatorP /
# DiscriminatorS / MSD pooling (jik876/hifi-gan, models.py), in torch.nn only; tests/models/
# test_discriminators.py checks jaxcodec's discriminators against them output by output.


def _wn(conv: nn.Module) -> nn.Module:
    return torch.nn.utils.parametrizations.weight_norm(conv)


def _pad2d(kernel_size, dilation=(1, 1)):
    return ((kernel_size[0] - 1) * dilation[0]) // 2, ((kernel_size[1] - 1) * dilation[1]) // 2


class TorchDiscriminatorSTFT(nn.Module):
    """encodec/msstftd.py DiscriminatorSTFT with its defaults (kernel (3, 9), stride (1, 2), dilations 1, 2, 4,
    LeakyReLU 0.2, norm='weight_norm' on every conv but the first, which EnCodec builds without `norm`).

    torchaudio has no build for this torch, so EnCodec's `torchaudio.transforms.Spectrogram(normalized=True,
    center=False, power=None)` is `torch.stft(normalized=False)` divided by sqrt(sum(window²)), which is what
    torchaudio's `spectrogram(normalized=True)` does."""

    def __init__(self, filters: int, n_fft: int, max_filters: int = 1024, filters_scale: int = 1):
        super().__init__()
        kernel_size, stride, dilations = (3, 9), (1, 2), (1, 2, 4)
        self.n_fft, self.hop_length = n_fft, n_fft // 4
        self.convs = nn.ModuleList([nn.Conv2d(2, filters, kernel_size, padding=_pad2d(kernel_size))])
        in_chs = min(filters_scale * filters, max_filters)
        for i, dilation in enumerate(dilations):
            out_chs = min((filters_scale ** (i + 1)) * filters, max_filters)
            self.convs.append(_wn(nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, dilation=(dilation, 1),
                                            padding=_pad2d(kernel_size, (dilation, 1)))))
            in_chs = out_chs
        out_chs = min((filters_scale ** (len(dilations) + 1)) * filters, max_filters)
        square = (kernel_size[0], kernel_size[0])
        self.convs.append(_wn(nn.Conv2d(in_chs, out_chs, square, padding=_pad2d(square))))
        self.conv_post = _wn(nn.Conv2d(out_chs, 1, square, padding=_pad2d(square)))

    def forward(self, x):  # x [B, 1, T]
        window = torch.hann_window(self.n_fft)
        z = torch.stft(x[:, 0], self.n_fft, self.hop_length, self.n_fft, window, center=False, normalized=False,
                       return_complex=True)
        z = (z / window.pow(2.0).sum().sqrt()).unsqueeze(1)  # torchaudio spectrogram(normalized=True)
        z = torch.cat([z.real, z.imag], dim=1).permute(0, 1, 3, 2)  # rearrange 'b c w t -> b c t w'
        fmap = []
        for layer in self.convs:
            z = F.leaky_relu(layer(z), 0.2)
            fmap.append(z)
        return self.conv_post(z), fmap


class TorchDiscriminatorP(nn.Module):
    """hifi-gan/models.py DiscriminatorP (use_spectral_norm=False)."""

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        self.convs = nn.ModuleList([
            _wn(nn.Conv2d(1, 32, (kernel_size, 1), (stride, 1), padding=(2, 0))),
            _wn(nn.Conv2d(32, 128, (kernel_size, 1), (stride, 1), padding=(2, 0))),
            _wn(nn.Conv2d(128, 512, (kernel_size, 1), (stride, 1), padding=(2, 0))),
            _wn(nn.Conv2d(512, 1024, (kernel_size, 1), (stride, 1), padding=(2, 0))),
            _wn(nn.Conv2d(1024, 1024, (kernel_size, 1), 1, padding=(2, 0))),
        ])
        self.conv_post = _wn(nn.Conv2d(1024, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x):
        fmap = []
        b, c, t = x.shape
        if t % self.period != 0:
            n_pad = self.period - (t % self.period)
            x = F.pad(x, (0, n_pad), "reflect")
            t = t + n_pad
        x = x.view(b, c, t // self.period, self.period)
        return _torch_hifigan_body(self.convs, self.conv_post, x, fmap)


def _torch_hifigan_body(convs, conv_post, x, fmap):
    """The shared tail of hifi-gan/models.py DiscriminatorP.forward and DiscriminatorS.forward."""
    for layer in convs:
        x = F.leaky_relu(layer(x), 0.1)
        fmap.append(x)
    x = conv_post(x)
    fmap.append(x)
    return torch.flatten(x, 1, -1), fmap


class TorchDiscriminatorS(nn.Module):
    """hifi-gan/models.py DiscriminatorS with weight norm (its first MSD scale uses spectral norm; ours doesn't)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([
            _wn(nn.Conv1d(1, 128, 15, 1, padding=7)),
            _wn(nn.Conv1d(128, 128, 41, 2, groups=4, padding=20)),
            _wn(nn.Conv1d(128, 256, 41, 2, groups=16, padding=20)),
            _wn(nn.Conv1d(256, 512, 41, 4, groups=16, padding=20)),
            _wn(nn.Conv1d(512, 1024, 41, 4, groups=16, padding=20)),
            _wn(nn.Conv1d(1024, 1024, 41, 1, groups=16, padding=20)),
            _wn(nn.Conv1d(1024, 1024, 5, 1, padding=2)),
        ])
        self.conv_post = _wn(nn.Conv1d(1024, 1, 3, 1, padding=1))

    def forward(self, x):
        return _torch_hifigan_body(self.convs, self.conv_post, x, [])


def _torch_msd(discs: list[nn.Module], x):
    """hifi-gan/models.py MultiScaleDiscriminator.forward for one signal: AvgPool1d(4, 2, padding=2) between scales."""
    pool = nn.AvgPool1d(4, 2, padding=2)
    outputs = []
    for i, disc in enumerate(discs):
        if i != 0:
            x = pool(x)
        outputs.append(disc(x))
    return outputs


Logits = list[torch.Tensor]
FeatureMaps = list[list[torch.Tensor]]


def _unzip(outputs: list[tuple[torch.Tensor, list[torch.Tensor]]]) -> tuple[Logits, FeatureMaps]:
    return [logit for logit, _ in outputs], [fmap for _, fmap in outputs]


class TorchMultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's MS-STFT discriminator: one DiscriminatorSTFT per `disc.msstft_n_ffts` entry."""

    def __init__(self, disc: config_lib.DiscriminatorConfig):
        super().__init__()
        self.discriminators = nn.ModuleList([
            TorchDiscriminatorSTFT(disc.msstft_filters, n_fft, disc.msstft_max_filters, disc.msstft_filters_scale)
            for n_fft in disc.msstft_n_ffts])

    def forward(self, wav_b1n: torch.Tensor) -> tuple[Logits, FeatureMaps]:
        return _unzip([d(wav_b1n) for d in self.discriminators])


class TorchDiscriminators(nn.Module):
    """The families of `disc.kinds`, outputs in jaxcodec's fixed order: MS-STFT scales, MPD periods, MSD scales."""

    def __init__(self, disc: config_lib.DiscriminatorConfig):
        super().__init__()
        unknown = set(disc.kinds) - {"msstft", "mpd", "msd"}
        _require(bool(disc.kinds) and not unknown, f"disc.kinds must be a subset of msstft/mpd/msd: {disc.kinds}")
        self.msstft = TorchMultiScaleSTFTDiscriminator(disc) if "msstft" in disc.kinds else None
        self.mpd = nn.ModuleList([TorchDiscriminatorP(p) for p in disc.mpd_periods] if "mpd" in disc.kinds else [])
        self.msd = nn.ModuleList([TorchDiscriminatorS() for _ in range(disc.msd_scales)]
                                 if "msd" in disc.kinds else [])

    def forward(self, wav_b1n: torch.Tensor) -> tuple[Logits, FeatureMaps]:
        logits, fmaps = self.msstft(wav_b1n) if self.msstft is not None else ([], [])
        rest_logits, rest_fmaps = _unzip([d(wav_b1n) for d in self.mpd] + _torch_msd(list(self.msd), wav_b1n))
        return logits + rest_logits, fmaps + rest_fmaps


# ------------------------------------------------------------------------------------------ adversarial losses
# jaxcodec/losses.py with its defaults: per sub-discriminator means, averaged over the K sub-discriminators.


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


# ---------------------------------------------------------------------------------------------- train steps


def _adamw(params, optim: config_lib.OptimConfig, lr: float) -> torch.optim.Optimizer:
    # torch's default implementation for the device, as a PyTorch user would get it; a constant LR (jaxcodec's
    # warm-up + cosine schedule costs the same per step).
    return torch.optim.AdamW(params, lr=lr, betas=(optim.b1, optim.b2), eps=optim.eps,
                             weight_decay=optim.weight_decay)


def _apply(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], loss: torch.Tensor, clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:  # optax.clip_by_global_norm (torch adds 1e-6 to the norm in the divisor)
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()


class GeneratorStep:
    """One generator step: peer encoder → straight-through RVQ → peer decoder, λt·L1 + λmel·mel + λw·commit,
    backward, global-norm clipping, AdamW, then the EMA codebook update. `compile=True` wraps the loss function
    (forward and losses) in `torch.compile`; its backward is compiled by AOTAutograd with it. The optimizer,
    clipping and the EMA update stay eager."""

    def __init__(self, model: nn.Module, config: config_lib.Config, compile: bool = False,
                 autocast: torch.dtype | None = None):
        self.model, self.config = model.train(), config
        self.device = next(model.parameters()).device
        self.autocast = autocast  # e.g. torch.bfloat16: the forward and losses under torch.autocast, as AMP trains
        self.rvq = StraightThroughRVQ.from_peer(model, config.rvq)
        self.mel = MultiScaleMelLoss(config.loss.mel_form, config.model.sample_rate).to(self.device)
        # The peer's encoder and decoder; SpeechTokenizer's semantic `transform` gets no loss here.
        self.params = [*model.encoder.parameters(), *model.decoder.parameters()]
        self.optimizer = _adamw(self.params, config.optim, config.optim.learning_rate)
        self.loss_fn = torch.compile(self.generator_loss) if compile else self.generator_loss

    def reconstruct(self, wav_b1n: torch.Tensor) -> tuple[torch.Tensor, RVQOutput]:
        z_btd = self.model.encoder(wav_b1n).transpose(1, 2)
        rvq = self.rvq(z_btd)
        fake_b1n = self.model.decoder(rvq.quantized_btd.transpose(1, 2))
        return fake_b1n[..., : wav_b1n.shape[-1]], rvq

    def generator_loss(self, wav_b1n: torch.Tensor):
        """(weighted total, {term: value}, RVQ output, reconstruction)."""
        lc = self.config.loss
        fake_b1n, rvq = self.reconstruct(wav_b1n)
        terms = {"l1": F.l1_loss(fake_b1n, wav_b1n), "mel": self.mel(wav_b1n[:, 0], fake_b1n[:, 0]),
                 "commit": rvq.commitment}
        total = lc.lambda_time * terms["l1"] + lc.lambda_mel * terms["mel"] + lc.lambda_commit * terms["commit"]
        return total, terms, rvq, fake_b1n

    def forward_context(self):
        """torch.autocast around forward passes and losses when a compute dtype is set (backward runs outside)."""
        return torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None)

    def _generator_update(self, wav_b1n: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        with self.forward_context():
            total, terms, rvq, fake_b1n = self.loss_fn(wav_b1n)
        _apply(self.optimizer, self.params, total, self.config.optim.grad_clip)
        self.rvq.update_(rvq.codes_qn, rvq.residuals_qnd)
        metrics = {"loss/total": total.item(), **{f"loss/{k}": v.item() for k, v in terms.items()}}
        return metrics, fake_b1n.detach()

    def __call__(self, wav_b1n: torch.Tensor) -> dict[str, float]:
        return self._generator_update(wav_b1n)[0]


class GANStep(GeneratorStep):
    """The generator step plus λadv·adversarial + λfeat·feature matching against the discriminators as they are
    at the start of the step, then the discriminator update on the real batch and the detached reconstruction
    (jaxcodec/train/step.py's order). With `compile=True` the discriminator loss is compiled too."""

    def __init__(self, model: nn.Module, config: config_lib.Config, compile: bool = False,
                 autocast: torch.dtype | None = None):
        super().__init__(model, config, compile, autocast)
        self.disc = TorchDiscriminators(config.disc).train().to(self.device)
        self.disc_params = list(self.disc.parameters())
        self.disc_optimizer = _adamw(self.disc_params, config.optim, config.optim.disc_learning_rate)
        self.disc_loss_fn = torch.compile(self.discriminator_loss) if compile else self.discriminator_loss

    def generator_loss(self, wav_b1n: torch.Tensor):
        lc = self.config.loss
        total, terms, rvq, fake_b1n = super().generator_loss(wav_b1n)
        fake_logits, fake_fmaps = self.disc(fake_b1n)
        with torch.no_grad():  # real feature maps are constants (jaxcodec: stop_gradient)
            _, real_fmaps = self.disc(wav_b1n)
        terms["adv"] = generator_adversarial_loss(fake_logits, lc.adversarial)
        terms["feat"] = feature_matching_loss(real_fmaps, fake_fmaps)
        return total + lc.lambda_adv * terms["adv"] + lc.lambda_feat * terms["feat"], terms, rvq, fake_b1n

    def discriminator_loss(self, wav_b1n: torch.Tensor, fake_b1n: torch.Tensor) -> torch.Tensor:
        real_logits, _ = self.disc(wav_b1n)
        fake_logits, _ = self.disc(fake_b1n)
        return discriminator_loss(real_logits, fake_logits, self.config.loss.adversarial)

    def __call__(self, wav_b1n: torch.Tensor) -> dict[str, float]:
        # Frozen during the generator update: jaxcodec differentiates the generator loss w.r.t. the codec only,
        # and torch would otherwise compute (and discard) the discriminators' weight gradients.
        self.disc.requires_grad_(False)
        metrics, fake_b1n = self._generator_update(wav_b1n)
        self.disc.requires_grad_(True)
        with self.forward_context():
            d_loss = self.disc_loss_fn(wav_b1n, fake_b1n)
        _apply(self.disc_optimizer, self.disc_params, d_loss, self.config.optim.grad_clip)
        return {**metrics, "loss/disc": d_loss.item()}


# ------------------------------------------------------------------------------------------------ command line


def synthetic_batch(batch: int, seconds: float, sample_rate: int, seed: int) -> torch.Tensor:
    """0.1 · N(0, 1) float32 [B, 1, seconds · sample_rate]: the step's cost does not depend on the audio."""
    wav = 0.1 * np.random.default_rng(seed).standard_normal((batch, 1, round(seconds * sample_rate)))
    return torch.from_numpy(wav.astype(np.float32))


def configure_dynamo() -> None:
    """Lets torch.compile compile every layer, with static shapes, in the warm-up call.

    transformers' EncodecConv1d keeps its stride and kernel size as tensor buffers, so its padding is
    data-dependent: dynamo breaks the graph in every conv and recompiles the same resume function for each conv
    (weight norm makes each a class of its own) and each input length. With the defaults it gives up after 8
    and runs the rest eagerly, and automatic dynamic shapes recompiles again during the timed calls."""
    torch._dynamo.config.recompile_limit = 1024
    torch._dynamo.config.accumulated_recompile_limit = 8192
    torch._dynamo.config.automatic_dynamic_shapes = False


# jaxcodec's warm-up step is its generator step (no discriminator); the PyTorch peer has no other.
STEP_OF_CASE = {"generator_step": GeneratorStep, "warmup_step": GeneratorStep, "gan_step": GANStep}


def make_case(case: str, peer: str, model: nn.Module, config: config_lib.Config, compile: bool,
              wav: torch.Tensor, autocast: torch.dtype | None = None) -> tuple[Callable[[], object], object]:
    """(a no-argument callable doing one unit of work, the object holding the case's state). The callable returns
    only when the work is done: CPU calls are synchronous, the steps read their losses back with `.item()`, and
    on a GPU the encode case synchronises."""
    if compile:
        configure_dynamo()
    if case == "encode":
        encode = encode_function(peer, model, config)
        encode = torch.compile(encode) if compile else encode

        def call():
            with torch.inference_mode(), torch.autocast(wav.device.type, dtype=autocast, enabled=autocast is not None):
                codes = encode(wav)
            if wav.device.type == "cuda":
                torch.cuda.synchronize()
            return codes

        return call, model
    step = STEP_OF_CASE[case](model, config, compile=compile, autocast=autocast)
    return (lambda: step(wav)), step


def tensors_bytes(*holders) -> int:
    """Bytes of every distinct tensor a step keeps between calls: parameters (and their gradients), buffers and
    optimizer states of the modules and optimizers found on `holders`."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen and t.numel():
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()

    for holder in holders:
        modules = [v for v in vars(holder).values() if isinstance(v, nn.Module)] if not isinstance(
            holder, nn.Module) else [holder]
        for module in modules:
            for p in module.parameters():
                add(p)
                add(p.grad)
            for b in module.buffers():
                add(b)
        for opt in [v for v in vars(holder).values() if isinstance(v, torch.optim.Optimizer)]:
            for state in opt.state.values():
                for t in state.values():
                    add(t)
    return total


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class RunningMemory:
    """Memory a CPU step uses while it runs: peak RSS during the timed calls minus RSS just before them (Linux:
    the peak is reset through /proc/self/clear_refs, so compilation and warm-up peaks do not count); on a GPU,
    torch's peak allocated bytes over the timed calls minus those allocated before them."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        import gc

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            try:  # return freed heap pages to the OS first, so "before" is what is live
                import ctypes

                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
            self.before = _proc_status_kb("VmRSS") * 1024
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = _proc_status_kb("VmHWM") * 1024
        self.transient = max(self.peak - self.before, 0)
        return False


def _save(args: argparse.Namespace) -> dict:
    model = build_peer(args.peer, args.config, args.seed, args.set)
    save_weights(model, args.output)
    return {"peer": args.peer, "config": str(args.config), "seed": args.seed, "params": count_parameters(model),
            "file": str(args.output)}


AUTOCAST_DTYPES = {"none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = config_lib.load(args.config, args.set)
    model = load_weights(build_peer(args.peer, args.config, args.seed, args.set), args.weights).to(device)
    result = {"peer": args.peer, "case": args.case, "mode": args.mode, "batch": args.batch,
              "seconds": args.seconds, "params": count_parameters(model), "device": str(device),
              "autocast": args.autocast}
    wav = synthetic_batch(args.batch, args.seconds, config.model.sample_rate, args.seed).to(device)
    try:
        call, holder = make_case(args.case, args.peer, model, config, args.mode == "compile", wav,
                                 AUTOCAST_DTYPES[args.autocast])
        start = time.perf_counter()
        call()  # warm-up; in compile mode this is where torch.compile compiles
        result["warmup_seconds"] = time.perf_counter() - start
    except Exception as error:  # a failed compile is a result to report, not a crash
        if args.mode != "compile":
            raise
        result.update(error=f"{type(error).__name__}: {error}", warmup_seconds=None, times=[], median=None)
    else:
        times = []
        with RunningMemory(device) as memory:
            for _ in range(args.iters):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
        # Running memory = what the step keeps between calls + what it adds while it runs (jaxcodec's side:
        # the compiled step's arguments + temporaries), so both sides count the same things.
        result.update(times=times, median=statistics.median(times) if times else None,
                      state_mb=(tensors_bytes(holder) + wav.numel() * wav.element_size()) / 2**20,
                      transient_mb=memory.transient / 2**20)
        result["running_mb"] = result["state_mb"] + result["transient_mb"]
    # The load average (this process included) says whether something else shared the cores: with all cores
    # given to torch, one other busy process slowed a tiny GAN step 40-fold here (OpenMP threads wait on each
    # other), so a median means little without it.
    return {**result, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "load_average": list(os.getloadavg())}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--peer", choices=PEERS, required=True)
        sub.add_argument("--config", required=True, help="jaxcodec YAML config (configs/base.yaml ↔ encodec, "
                                                          "configs/speechtokenizer.yaml ↔ speechtokenizer)")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
        sub.add_argument("--seed", type=int, default=0, help="torch seed of the weights; numpy seed of the input")

    save = commands.add_parser("save", help="build the peer with random weights and save them as safetensors")
    common(save)
    save.add_argument("-o", "--output", required=True)
    run = commands.add_parser("run", help="time one case; prints one JSON line")
    common(run)
    run.add_argument("--weights", required=True, help="safetensors file written by `save`")
    run.add_argument("--case", choices=CASES, required=True)
    run.add_argument("--batch", type=int, required=True)
    run.add_argument("--seconds", type=float, required=True, help="audio seconds per example")
    run.add_argument("--mode", choices=("eager", "compile"), default="eager")
    run.add_argument("--iters", type=int, default=5, help="timed calls after the warm-up")
    run.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    run.add_argument("--device", default="cpu", help="torch device: cpu or cuda (cuda:N)")
    run.add_argument("--autocast", choices=list(AUTOCAST_DTYPES), default="none",
                     help="torch.autocast compute dtype for forward passes and losses (AMP)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = _save(args) if args.command == "save" else _run(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
