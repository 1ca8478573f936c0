"""`jaxcodec info`: parameter counts per component, frame rate, tokens/s, bitrate."""

from __future__ import annotations

import argparse
import json

from jaxcodec.commands.options import add_config_args

HELP = "parameter counts per component, frame rate, tokens/s, bitrate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def count(tree) -> int:
    """Number of values in a pytree of arrays or abstract arrays (e.g. `nnx.state(module, nnx.Param)`)."""
    import jax
    import numpy as np

    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def model_info(config) -> dict:
    """Parameter counts per component (computed abstractly: nothing is allocated) and the token rates."""
    from flax import nnx

    from jaxcodec.models.codec import Codec
    from jaxcodec.models.discriminators import Discriminators

    codec = nnx.eval_shape(lambda: Codec(config, rngs=nnx.Rngs(0)))
    discs = nnx.eval_shape(lambda: Discriminators(config.disc, rngs=nnx.Rngs(0)))
    params: dict[str, int] = {}
    for part in ("encoder", "quantizer", "decoder", "semantic_head", "acoustic_aligner"):
        params[part] = count(nnx.state(getattr(codec, part), nnx.Param))
    # EnCodec/SpeechTokenizer count encoder + decoder (+ SpeechTokenizer's semantic transform) as the model.
    params["encoder_decoder"] = params["encoder"] + params["decoder"]
    params["generator"] = count(nnx.state(codec, nnx.Param))
    # `Discriminators.names` lists the sub-discriminators family by family, in this order.
    for name, sub in zip(discs.names, [*discs.msstft, *discs.mpd, *discs.msd], strict=True):
        params[name] = count(nnx.state(sub, nnx.Param))
    params["discriminators"] = count(nnx.state(discs, nnx.Param))
    params["total"] = params["generator"] + params["discriminators"]
    return {
        "params": params,
        # Codebooks are EMA state (buffers in the PyTorch peers), not parameters: reported apart.
        "codebook_values": count(codec.quantizer.embed),
        "sample_rate": config.model.sample_rate,
        "hop_length": config.model.hop_length,
        "frame_rate": config.model.frame_rate,
        "n_q": config.rvq.n_q,
        "codebook_size": config.rvq.codebook_size,
        "tokens_per_second": config.tokens_per_second,
        "kbps": config.kbps,
    }


def main(args: argparse.Namespace) -> int:
    from jaxcodec import config as config_lib

    config = config_lib.load(args.config, args.overrides)
    info = model_info(config)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{config.model.sample_rate} Hz, hop {info['hop_length']} → {info['frame_rate']:g} frames/s; "
          f"{info['n_q']} × {info['codebook_size']} codes → {info['tokens_per_second']:g} tokens/s, "
          f"{info['kbps']:g} kbps")
    width = max(len(name) for name in info["params"])
    for name, value in info["params"].items():
        print(f"  {name:<{width}}  {value:>13,d}  ({value / 1e6:.2f} M)")
    print(f"  codebooks (EMA state, not parameters): {info['codebook_values']:,d} values")
    return 0
