"""`jaxcodec import` (a PyTorch EnCodec or SpeechTokenizer checkpoint → a workdir) and `jaxcodec export` (a
workdir's codec → one safetensors file)."""

from __future__ import annotations

import argparse

from jaxcodec.commands.options import add_config_args

IMPORT_HELP = "a PyTorch EnCodec or SpeechTokenizer checkpoint → a jaxcodec workdir (encode, decode, eval, fine-tune)"
EXPORT_HELP = "a workdir's codec → one safetensors file (config inside)"


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxcodec.interop import layout

    parser.add_argument("source", help="weights: .safetensors, .pt/.bin (read with torch, weights only) or a folder "
                                       "holding one (its config.json, if any, is checked against --config)")
    parser.add_argument("--from", dest="peer", required=True, choices=list(layout.PEERS),
                        help="which implementation saved it: " + "; ".join(
                            f"{name} = {peer.description}" for name, peer in layout.PEERS.items()))
    add_config_args(parser)
    parser.add_argument("-o", "--out", required=True,
                        help="new workdir (a checkpoint at step 0 + config + import.json)")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxcodec.interop import layout

    parser.add_argument("checkpoint", help="training or imported workdir, or an exported file")
    parser.add_argument("--step", help="checkpoint step: a number, 'best' or (default) the latest")
    parser.add_argument("-o", "--out", required=True, help="output .safetensors")
    parser.add_argument("--format", choices=list(layout.FORMATS), default="jaxcodec",
                        help="jaxcodec (every variable, for jaxcodec.load) or a peer's state-dict names (for "
                             "load_state_dict in PyTorch; its config.json is written beside)")


def import_main(args: argparse.Namespace) -> int:
    from jaxcodec import config as config_lib
    from jaxcodec import output_lock
    from jaxcodec.interop import files
    from jaxcodec.train import from_codec

    config = config_lib.load(args.config, args.overrides)
    with output_lock.held(args.out):  # a workdir: never shared with a training run or another import
        codec, report, provenance = files.import_codec(args.peer, args.source, config)
        from_codec.write_workdir(codec, config, args.out, provenance)
    print(f"imported {args.peer} weights from {provenance['weights_file']} into {args.out} (checkpoint step 0)")
    if report.fresh:
        print(f"  not in the {args.peer} model, initialised from train.seed: {', '.join(report.fresh)}")
    if report.dropped_levels:
        print(f"  the checkpoint's last {report.dropped_levels} RVQ levels were left out (rvq.n_q = {config.rvq.n_q})")
    if report.reparameterised:
        print(f"  {report.reparameterised} convs saved without weight norm were re-parameterised as (g, v)")
    return 0


def export_main(args: argparse.Namespace) -> int:
    import jaxcodec
    from jaxcodec.interop import files

    step = args.step if args.step in (None, "best") else int(args.step)
    tokenizer = jaxcodec.load(args.checkpoint, step)
    summary = files.export_file(tokenizer.codec(), tokenizer.config, args.out, args.format,
                                source=f"{args.checkpoint}@{tokenizer.step}")
    print(f"wrote {summary['file']} ({summary['format']}: {summary['tensors']} tensors, "
          f"{summary['values'] / 1e6:.2f} M values, {summary['bytes'] / 1e6:.1f} MB)")
    return 0
