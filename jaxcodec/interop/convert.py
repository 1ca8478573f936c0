"""Moving weights between a `Codec` and flat name → numpy dictionaries: a PyTorch peer's state dict (import and
export through `layout.entries`) or jaxcodec's own flat names (the exported file `jaxcodec.load` reads).

Import is strict: every tensor the config needs must be present with the right shape, and a tensor of the peer's
model that finds no place is an error (it means --config describes another model). Two exceptions, each reported:
RVQ levels beyond `rvq.n_q` are dropped (the first levels alone are a lower bitrate of the same codec), and a conv
saved with its weight norm removed (`weight` instead of `weight_g`/`weight_v`) is re-parameterised.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
from flax import nnx

from jaxcodec.config import Config
from jaxcodec.interop import layout
from jaxcodec.interop.layout import InteropError
from jaxcodec.models.codec import Codec


@dataclasses.dataclass(frozen=True)
class ImportReport:
    fresh: tuple[str, ...]  # top-level parts of our codec the peer has no weights for (left as initialised)
    dropped_levels: int  # peer RVQ levels beyond rvq.n_q
    reparameterised: int  # plain conv weights turned into weight-norm (g, v)


def _variable(codec: Codec, path: tuple) -> nnx.Variable:
    node = codec
    for key in path:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _weight_norm_from_plain(tensors: dict[str, np.ndarray], key: str) -> np.ndarray | None:
    """(v or g) for a conv stored without weight norm: v = w, g = ‖w‖ over all axes but 0 (PyTorch's dim=0)."""
    plain = tensors.get(key.rsplit(".", 1)[0] + ".weight")
    if plain is None:
        return None
    if key.endswith(".weight_v"):
        return plain
    return np.sqrt(np.sum(np.square(plain), axis=tuple(range(1, plain.ndim)), keepdims=True))


def import_peer(codec: Codec, peer: str, tensors: dict[str, np.ndarray]) -> ImportReport:
    """Copies a peer's state dict into `codec` in place."""
    tensors = {layout.canonical_key(k): np.asarray(v) for k, v in tensors.items()}
    table = layout.entries(peer, codec.config)
    values = {}  # our path → the new numpy value (codebooks are assembled level by level)
    used, reparameterised = set(), 0
    for entry in table:
        source = tensors.get(entry.peer)
        if source is None and entry.peer.endswith((".weight_v", ".weight_g")):
            source = _weight_norm_from_plain(tensors, entry.peer)
            if source is not None:
                used.add(entry.peer.rsplit(".", 1)[0] + ".weight")
                reparameterised += entry.peer.endswith(".weight_v")
        if source is None:
            raise InteropError(f"the {peer} checkpoint has no '{entry.peer}' (for {_dotted(entry.ours)}): was it "
                               f"saved from a model of another shape than --config describes?")
        used.add(entry.peer)
        value = layout.to_ours(entry.layout, source)
        if entry.ours not in values:
            values[entry.ours] = np.array(_variable(codec, entry.ours)[...])
        target = values[entry.ours] if entry.level is None else values[entry.ours][entry.level]
        if value.shape != target.shape:
            raise InteropError(f"'{entry.peer}' has shape {tuple(source.shape)}, which is {value.shape} in jaxcodec, "
                               f"but --config gives {_dotted(entry.ours)} the shape {target.shape}")
        if entry.level is None:
            values[entry.ours] = value.astype(target.dtype)
        else:
            target[...] = value
    unused = sorted(set(tensors) - used)
    level = re.compile(re.escape(layout.PEERS[peer].codebook).replace(r"\{q\}", r"(\d+)") + r"\.")
    extra_levels = {int(m.group(1)) for k in unused if (m := level.match(k))}
    unused = [k for k in unused if not level.match(k)]
    if unused:
        raise InteropError(f"the {peer} checkpoint has {len(unused)} tensors the config's codec has no place for, "
                           f"e.g. '{unused[0]}': does --config describe this model?")
    for path, value in values.items():
        _variable(codec, path)[...] = value
    covered = {entry.ours[0] for entry in table}
    fresh = tuple(name for name in ("semantic_head", "acoustic_aligner")
                  if name not in covered and nnx.state(getattr(codec, name), nnx.Param))
    return ImportReport(fresh, len(extra_levels), reparameterised)


def export_peer(codec: Codec, peer: str) -> dict[str, np.ndarray]:
    """The peer's state dict (keys as its current code writes them) for `codec`'s weights."""
    out = {}
    for entry in layout.entries(peer, codec.config):
        value = np.asarray(_variable(codec, entry.ours)[...])
        if entry.level is not None:
            value = value[entry.level]
        out[layout.peer_key(peer, entry.peer)] = np.ascontiguousarray(layout.to_peer(entry.layout, value))
    return out


def export_native(codec: Codec) -> dict[str, np.ndarray]:
    """Every variable of the codec (parameters and codebook state) under its dotted attribute path."""
    return {_dotted(path): np.asarray(variable.get_value())
            for path, variable in nnx.to_flat_state(nnx.state(codec))}


def codec_from_native(config: Config, tensors: dict[str, np.ndarray]) -> Codec:
    """A codec of `config` holding exactly the variables of `export_native` (nothing initialised at random)."""
    abstract = nnx.eval_shape(lambda: Codec(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    filled, wanted = [], set()
    for path, variable in nnx.to_flat_state(state):
        name = _dotted(path)
        wanted.add(name)
        if name not in tensors:
            raise InteropError(f"the file has no '{name}': it was exported from a codec of another config")
        value = tensors[name]
        if variable.shape == () and value.shape == (1,):  # safetensors stores a scalar as [1]
            value = value.reshape(())
        if value.shape != variable.shape:
            raise InteropError(f"'{name}' has shape {value.shape} in the file but {variable.shape} in the config")
        filled.append((path, variable.replace(np.asarray(value, variable.dtype))))
    if extra := sorted(set(tensors) - wanted):
        raise InteropError(f"the file has '{extra[0]}' (and {len(extra) - 1} more) that the config's codec lacks")
    return nnx.merge(graphdef, nnx.from_flat_state(filled))


# ------------------------------------------------------------------------------------- the peers' own configs

def _frame_rate(sample_rate: float, ratios) -> float:
    return sample_rate / float(np.prod(ratios))


# The peer config.json values jaxcodec computes with (a frame rate, a level count, an order), not only compares:
# each is checked first so a malformed file gets a line naming the key instead of a traceback from the arithmetic.
PEER_POSITIVE_INTEGERS = {"encodec": ("sampling_rate", "codebook_size"), "speechtokenizer": ("n_q",)}
PEER_POSITIVE_INTEGER_LISTS = {"encodec": ("upsampling_ratios",), "speechtokenizer": ()}
PEER_POSITIVE_NUMBER_LISTS = {"encodec": ("target_bandwidths",), "speechtokenizer": ()}


def _is_positive_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_peer_config(peer: str, c) -> None:
    """InteropError naming the first key of the peer's config.json that cannot be computed with."""
    if not isinstance(c, dict):
        raise InteropError(f"must hold a JSON object, got a {type(c).__name__}")
    for key in PEER_POSITIVE_INTEGERS[peer]:
        if key in c and not _is_positive_integer(c[key]):
            raise InteropError(f"'{key}' must be a positive integer, got {c[key]!r}")
    for key in PEER_POSITIVE_INTEGER_LISTS[peer]:
        if key in c and not (isinstance(c[key], list) and c[key] and all(map(_is_positive_integer, c[key]))):
            raise InteropError(f"'{key}' must be a non-empty list of positive integers, got {c[key]!r}")
    for key in PEER_POSITIVE_NUMBER_LISTS[peer]:
        value = c.get(key)
        if key in c and not (isinstance(value, list) and value and all(
                isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < math.inf for x in value)):
            raise InteropError(f"'{key}' must be a non-empty list of positive numbers, got {value!r}")


def _encodec_facts(c: dict) -> dict:
    """transformers' EncodecConfig (config.json) in jaxcodec's terms; n_q from the largest target bandwidth."""
    bits = np.log2(c.get("codebook_size", 1024))
    frame_rate = _frame_rate(c.get("sampling_rate", 24_000), c.get("upsampling_ratios", [8, 5, 4, 2]))
    n_q = round(max(c.get("target_bandwidths", [24.0])) * 1000 / (frame_rate * bits))
    return {"model.sample_rate": c.get("sampling_rate"), "model.channels": c.get("audio_channels"),
            "model.n_filters": c.get("num_filters"), "model.ratios": c.get("upsampling_ratios"),
            "model.dimension": c.get("hidden_size"), "model.n_residual_layers": c.get("num_residual_layers"),
            "model.residual_kernel_size": c.get("residual_kernel_size"), "model.kernel_size": c.get("kernel_size"),
            "model.last_kernel_size": c.get("last_kernel_size"), "model.dilation_base": c.get("dilation_growth_rate"),
            "model.compress": c.get("compress"), "model.lstm_layers": c.get("num_lstm_layers"),
            "model.causal": c.get("use_causal_conv"), "model.pad_mode": c.get("pad_mode"),
            "model.true_skip": None if "use_conv_shortcut" not in c else not c["use_conv_shortcut"],
            "model.norm": c.get("norm_type"), "rvq.codebook_size": c.get("codebook_size"),
            "rvq.n_q (at most)": n_q, "model.encoder_bidirectional": False}


def _speechtokenizer_facts(c: dict) -> dict:
    """SpeechTokenizer's config.json (spt_base_cfg.json) in jaxcodec's terms."""
    return {"model.sample_rate": c.get("sample_rate"), "model.n_filters": c.get("n_filters"),
            "model.ratios": c.get("strides"), "model.dimension": c.get("dimension"),
            "model.semantic_dim": c.get("semantic_dimension"), "model.encoder_bidirectional": c.get("bidirectional"),
            "model.dilation_base": c.get("dilation_base"), "model.residual_kernel_size": c.get("residual_kernel_size"),
            "model.n_residual_layers": c.get("n_residual_layers"), "model.lstm_layers": c.get("lstm_layers"),
            "rvq.codebook_size": c.get("codebook_size"), "rvq.n_q (at most)": c.get("n_q")}


def config_mismatches(peer: str, peer_config: dict, config: Config) -> list[str]:
    """Where the peer's own config.json disagrees with --config ('key: peer X, config Y'); unknown keys pass.
    InteropError when a value it computes with is malformed."""
    _check_peer_config(peer, peer_config)
    facts = _encodec_facts(peer_config) if peer == "encodec" else _speechtokenizer_facts(peer_config)
    problems = []
    for key, theirs in facts.items():
        if theirs is None:
            continue
        section, name = key.split(" ")[0].split(".")
        ours = getattr(config.model if section == "model" else config.rvq, name)
        if isinstance(theirs, list):
            theirs = tuple(theirs)
        if key.endswith("(at most)"):
            if ours > theirs:
                problems.append(f"rvq.n_q: the checkpoint has {theirs} levels, the config asks for {ours}")
        elif ours != theirs:
            problems.append(f"{key}: checkpoint {theirs!r}, config {ours!r}")
    return problems


def peer_config(peer: str, config: Config) -> dict:
    """The peer's config.json for a codec of `config` (written beside an exported state dict)."""
    m, q = config.model, config.rvq
    if peer == "encodec":
        kbps = q.n_q * np.log2(q.codebook_size) * m.frame_rate / 1000
        return {"model_type": "encodec", "sampling_rate": m.sample_rate, "audio_channels": m.channels,
                "num_filters": m.n_filters, "upsampling_ratios": list(m.ratios), "hidden_size": m.dimension,
                "num_residual_layers": m.n_residual_layers, "residual_kernel_size": m.residual_kernel_size,
                "kernel_size": m.kernel_size, "last_kernel_size": m.last_kernel_size,
                "dilation_growth_rate": m.dilation_base, "compress": m.compress, "num_lstm_layers": m.lstm_layers,
                "use_causal_conv": m.causal, "pad_mode": m.pad_mode, "use_conv_shortcut": not m.true_skip,
                "norm_type": m.norm, "codebook_size": q.codebook_size, "target_bandwidths": [float(kbps)],
                "normalize": False}
    return {"n_filters": m.n_filters, "strides": list(m.ratios), "dimension": m.dimension,
            "semantic_dimension": m.semantic_dim, "bidirectional": m.encoder_bidirectional,
            "dilation_base": m.dilation_base, "residual_kernel_size": m.residual_kernel_size,
            "n_residual_layers": m.n_residual_layers, "lstm_layers": m.lstm_layers, "activation": "ELU",
            "codebook_size": q.codebook_size, "n_q": q.n_q, "sample_rate": m.sample_rate}


def check_model_supported(peer: str, config: Config) -> None:
    """Configs a peer cannot express at all: refused before any tensor is read."""
    model = config.model
    if peer not in layout.PEERS:
        raise InteropError(f"unknown peer {peer!r}: one of {', '.join(layout.PEERS)}")
    if peer == "encodec" and model.encoder_bidirectional:
        raise InteropError("EnCodec has no bidirectional encoder LSTM: use a config with "
                           "model.encoder_bidirectional=false (configs/base.yaml)")
    if model.channels != 1 and peer == "speechtokenizer":
        raise InteropError("SpeechTokenizer is mono: model.channels must be 1")
