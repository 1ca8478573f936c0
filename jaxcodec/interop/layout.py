"""Where every tensor of a PyTorch peer's state dict lives in jaxcodec's codec, and how its layout changes.

Both peers build SEANet as one `nn.Sequential` (EnCodec `encodec/modules/seanet.py`, copied by transformers'
`EncodecEncoder/Decoder.layers` and SpeechTokenizer's `SEANetEncoder/Decoder.model`), so a layer's index follows
from the config: per resolution `n_residual_layers` residual blocks, an ELU, a strided conv (encoder); an ELU, a
transposed conv, residual blocks (decoder). Inside a residual block `block.1` and `block.3` are the two convs
(`block.0` and `block.2` are ELUs) and `shortcut` is the 1×1 conv. The two peers differ only in how they name the
wrappers around a conv (`Peer`).

Layouts (PyTorch → ours, channels-last; see models/conv.py and models/lstm.py):
  conv    Conv1d weight [out, in, k]          → [k, in, out]
  convtr  ConvTranspose1d weight [in, out, k] → [k, in, out]
  g       weight-norm magnitude [c, 1, 1]     → [c]  (c = out for Conv1d, in for ConvTranspose1d: dim=0)
  matrix  nn.Linear / nn.LSTM weight [out, in] → [in, out]
  flag    a codebook's `inited` buffer [1]    → scalar bool
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcodec.config import Config

Path = tuple  # an attribute path into the Codec module, e.g. ("encoder", "blocks", 0, "downsample", "bias")


class InteropError(ValueError):
    """A checkpoint that does not fit the codec described by the config (the message says which tensor)."""


@dataclasses.dataclass(frozen=True)
class Peer:
    """How one PyTorch implementation names SEANet's wrappers and its codebooks."""

    name: str
    sequence: str  # attribute of the encoder/decoder nn.Sequential
    conv: str  # suffix of a Conv1d inside its wrappers
    convtr: str  # suffix of a ConvTranspose1d inside its wrappers
    codebook: str  # prefix of level q's codebook buffers
    semantic: str | None  # the level-1 → HuBERT linear, if the peer has one
    weight_norm: tuple[str, str]  # (g, v) names its current code writes (either form is read)
    description: str


PEERS = {
    "encodec": Peer("encodec", "layers", ".conv", ".conv", "quantizer.layers.{q}.codebook", None,
                    ("parametrizations.weight.original0", "parametrizations.weight.original1"),
                    "transformers' EncodecModel (EnCodec, Défossez et al. 2022)"),
    "speechtokenizer": Peer("speechtokenizer", "model", ".conv.conv", ".convtr.convtr",
                            "quantizer.vq.layers.{q}._codebook", "transform", ("weight_g", "weight_v"),
                            "the speechtokenizer package's SpeechTokenizer (Zhang et al. 2024)"),
}
FORMATS = ("jaxcodec", *PEERS)  # what `jaxcodec export --format` writes: our names, or a peer's state dict
# Older transformers checkpoints (the released facebook/encodec_* files) and SpeechTokenizer use the
# `torch.nn.utils.weight_norm` names; current transformers writes parametrizations. Both are read.
_PARAMETRIZED = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}


@dataclasses.dataclass(frozen=True)
class Entry:
    ours: Path  # attribute path of the nnx Variable
    peer: str  # state-dict key, with weight-norm names in their canonical `weight_g` / `weight_v` form
    layout: str  # conv, convtr, g, matrix, flag or same (see the module docstring)
    level: int | None = None  # codebooks: the level of our stacked [n_q, ...] variable


def to_ours(layout: str, x: np.ndarray) -> np.ndarray:
    if layout == "conv":
        return np.transpose(x, (2, 1, 0))
    if layout == "convtr":
        return np.transpose(x, (2, 0, 1))
    if layout == "g":
        return x.reshape(-1)
    if layout == "matrix":
        return x.T
    if layout == "flag":
        return np.asarray(bool(np.asarray(x).reshape(-1)[0]))
    return x


def to_peer(layout: str, x: np.ndarray) -> np.ndarray:
    if layout == "conv":
        return np.transpose(x, (2, 1, 0))
    if layout == "convtr":
        return np.transpose(x, (1, 2, 0))
    if layout == "g":
        return x.reshape(-1, 1, 1)
    if layout == "matrix":
        return x.T
    if layout == "flag":
        return np.asarray([float(x)], np.float32)  # both peers register `inited` as a float tensor
    return x


def _conv(ours: Path, key: str, weight_norm: bool, transposed: bool = False) -> list[Entry]:
    layout = "convtr" if transposed else "conv"
    weights = ([Entry(ours + ("kernel", "weight_v"), key + ".weight_v", layout),
                Entry(ours + ("kernel", "weight_g"), key + ".weight_g", "g")] if weight_norm
               else [Entry(ours + ("kernel", "weight"), key + ".weight", layout)])
    return weights + [Entry(ours + ("bias",), key + ".bias", "same")]


def _lstm(ours: Path, key: str, layers: int, bidirectional: bool) -> list[Entry]:
    entries = []
    directions = [("forward_layers", "")] + ([("backward_layers", "_reverse")] if bidirectional else [])
    for i in range(layers):
        for ours_list, suffix in directions:
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                layout = "matrix" if name.startswith("weight") else "same"
                entries.append(Entry(ours + (ours_list, i, name), f"{key}.lstm.{name}_l{i}{suffix}", layout))
    return entries


def _residual(peer: Peer, ours: Path, key: str, config: Config) -> list[Entry]:
    wn = config.model.norm == "weight_norm"
    entries = (_conv(ours + ("conv_dilated",), f"{key}.block.1{peer.conv}", wn)
               + _conv(ours + ("conv_pointwise",), f"{key}.block.3{peer.conv}", wn))
    if not config.model.true_skip:
        entries += _conv(ours + ("shortcut",), f"{key}.shortcut{peer.conv}", wn)
    return entries


def entries(peer_name: str, config: Config) -> list[Entry]:
    """Every tensor the peer's state dict holds for a codec of `config`, with its place in ours."""
    peer = PEERS[peer_name]
    m = config.model
    wn = m.norm == "weight_norm"
    out: list[Entry] = []

    def at(part: str, index: int) -> str:
        return f"{part}.{peer.sequence}.{index}"

    # encoder: conv, [residuals, ELU, strided conv] per ratio (reversed), LSTM, ELU, conv
    out += _conv(("encoder", "conv_in"), at("encoder", 0) + peer.conv, wn)
    index = 1
    for b in range(len(m.ratios)):
        for j in range(m.n_residual_layers):
            out += _residual(peer, ("encoder", "blocks", b, "residuals", j), at("encoder", index + j), config)
        index += m.n_residual_layers + 1
        out += _conv(("encoder", "blocks", b, "downsample"), at("encoder", index) + peer.conv, wn)
        index += 1
    if m.lstm_layers:
        out += _lstm(("encoder", "lstm"), at("encoder", index), m.lstm_layers, m.encoder_bidirectional)
        index += 1
    out += _conv(("encoder", "conv_out"), at("encoder", index + 1) + peer.conv, wn)

    # decoder: conv, LSTM, [ELU, transposed conv, residuals] per ratio, ELU, conv
    out += _conv(("decoder", "conv_in"), at("decoder", 0) + peer.conv, wn)
    index = 1
    if m.lstm_layers:
        out += _lstm(("decoder", "lstm"), at("decoder", index), m.lstm_layers, False)
        index += 1
    for b in range(len(m.ratios)):
        out += _conv(("decoder", "blocks", b, "upsample"), at("decoder", index + 1) + peer.convtr, wn,
                     transposed=True)
        index += 2
        for j in range(m.n_residual_layers):
            out += _residual(peer, ("decoder", "blocks", b, "residuals", j), at("decoder", index + j), config)
        index += m.n_residual_layers
    out += _conv(("decoder", "conv_out"), at("decoder", index + 1) + peer.conv, wn)

    # RVQ codebooks (EMA buffers), level by level
    for q in range(config.rvq.n_q):
        prefix = peer.codebook.format(q=q)
        out += [Entry(("quantizer", "embed"), f"{prefix}.embed", "same", q),
                Entry(("quantizer", "embed_avg"), f"{prefix}.embed_avg", "same", q),
                Entry(("quantizer", "cluster_size"), f"{prefix}.cluster_size", "same", q),
                # one flag per level there, one for the whole RVQ here (the levels are initialised together)
                Entry(("quantizer", "initialized"), f"{prefix}.inited", "flag")]

    # SpeechTokenizer's semantic transform is our semantic head (absent when dimension == semantic_dim)
    if peer.semantic and m.dimension != m.semantic_dim:
        out += [Entry(("semantic_head", "proj", "kernel"), f"{peer.semantic}.weight", "matrix"),
                Entry(("semantic_head", "proj", "bias"), f"{peer.semantic}.bias", "same")]
    return out


def canonical_key(key: str) -> str:
    """A state-dict key with weight-norm parametrization names in the `weight_g` / `weight_v` form."""
    for long, short in _PARAMETRIZED.items():
        if key.endswith("." + long):
            return key[: -len(long)] + short
    return key


def peer_key(peer_name: str, key: str) -> str:
    """A canonical key spelled as the peer's current code writes it."""
    g, v = PEERS[peer_name].weight_norm
    if key.endswith(".weight_g"):
        return key[: -len("weight_g")] + g
    if key.endswith(".weight_v"):
        return key[: -len("weight_v")] + v
    return key
