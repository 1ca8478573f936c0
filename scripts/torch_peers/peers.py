"""The PyTorch peers (transformers' `EncodecModel`, the `speechtokenizer` package's `SpeechTokenizer`) built with a
jaxcodec config's hyper-parameters, seeded weights and random codebooks; their weights as safetensors; their own
`encode`."""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from jaxcodec import config as config_lib  # pure Python + yaml: no jax

PEERS = ("encodec", "speechtokenizer")
CODEBOOK_SCALE = 0.1  # random codebooks: randn · 0.1, so codes are non-trivial without k-means on data



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
