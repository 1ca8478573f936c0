"""Discriminator mirrors: EnCodec's DiscriminatorSTFT (facebookresearch/encodec, encodec/msstftd.py) and HiFi-GAN's
DiscriminatorP / DiscriminatorS / MSD pooling (jik876/hifi-gan, models.py), in torch.nn only; tests/models/
test_discriminators.py checks jaxcodec's discriminators against them output by output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jaxcodec import config as config_lib  # pure Python + yaml: no jax


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
        if not disc.kinds or unknown:
            raise ValueError(f"disc.kinds must be a subset of msstft/mpd/msd: {disc.kinds}")
        self.msstft = TorchMultiScaleSTFTDiscriminator(disc) if "msstft" in disc.kinds else None
        self.mpd = nn.ModuleList([TorchDiscriminatorP(p) for p in disc.mpd_periods] if "mpd" in disc.kinds else [])
        self.msd = nn.ModuleList([TorchDiscriminatorS() for _ in range(disc.msd_scales)]
                                 if "msd" in disc.kinds else [])

    def forward(self, wav_b1n: torch.Tensor) -> tuple[Logits, FeatureMaps]:
        logits, fmaps = self.msstft(wav_b1n) if self.msstft is not None else ([], [])
        rest_logits, rest_fmaps = _unzip([d(wav_b1n) for d in self.mpd] + _torch_msd(list(self.msd), wav_b1n))
        return logits + rest_logits, fmaps + rest_fmaps
