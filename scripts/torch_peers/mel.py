"""The multi-scale mel losses of jaxcodec/spectral.py (both `mel_form`s), in torch: the recipes are restated here
because spectral.py imports jax; tests/test_torch_peers.py checks that both forms give jaxcodec's numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
