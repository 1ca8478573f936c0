"""The `jaxcodec` command. Each subcommand lives in a small function; heavy imports happen inside it so
`jaxcodec --help` is instant."""

from __future__ import annotations

import argparse
import json
import sys


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (configs/base.yaml is the paper's model); defaults if absent")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set rvq.n_q=4 (repeatable)")


def _positive_minutes(text: str) -> float:
    minutes = float(text)
    if not minutes > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    return minutes


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


def cmd_info(args: argparse.Namespace) -> int:
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


def cmd_manifest(args: argparse.Namespace) -> int:
    from jaxcodec.data import manifest

    return manifest.run(args)


def cmd_precompute(args: argparse.Namespace) -> int:
    # The one subcommand that runs PyTorch (inside teachers.precompute), so jaxcodec itself and a training host
    # never need torch.
    import importlib.util

    from teachers import precompute

    missing = [name for name in ("torch", "transformers", "speechbrain") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"jaxcodec precompute: error: the teachers need {', '.join(missing)}; install the extra: "
              f"pip install 'jaxcodec[teachers]'", file=sys.stderr)
        return 2
    return precompute.main(args)


def cmd_train(args: argparse.Namespace) -> int:
    from jaxcodec.train import loop

    return loop.main(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from jaxcodec import demo

    return demo.main(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from jaxcodec.eval import cli as eval_cli

    return eval_cli.main(args)


def cmd_import(args: argparse.Namespace) -> int:
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


def cmd_export(args: argparse.Namespace) -> int:
    import jaxcodec
    from jaxcodec.interop import files

    step = args.step if args.step in (None, "best") else int(args.step)
    tokenizer = jaxcodec.load(args.checkpoint, step)
    summary = files.export_file(tokenizer.codec(), tokenizer.config, args.out, args.format,
                                source=f"{args.checkpoint}@{tokenizer.step}")
    print(f"wrote {summary['file']} ({summary['format']}: {summary['tensors']} tensors, "
          f"{summary['values'] / 1e6:.2f} M values, {summary['bytes'] / 1e6:.1f} MB)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from jaxcodec import bench

    return bench.main(args)


def cmd_shards_verify(args: argparse.Namespace) -> int:
    from jaxcodec.data import manifest, shards

    ids = [entry["id"] for entry in manifest.read(args.manifest)] if args.manifest else None
    problems, notes = shards.verify(args.shards, manifest_ids=ids, deep=not args.quick, progress=args.verbose)
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"FAIL: {problem}")
    if problems:
        print(f"{args.shards}: {len(problems)} problems")
        return 1
    index = shards.load_index(args.shards)
    print(f"{args.shards}: OK ({index['num_records']} utterances in {len(index['shards'])} shards"
          f"{', deep' if not args.quick else ''}{', manifest covered' if ids is not None else ''})")
    return 0


def cmd_shards_info(args: argparse.Namespace) -> int:
    from jaxcodec.data import shards

    index = shards.load_index(args.shards)
    if args.json:
        print(json.dumps({k: v for k, v in index.items() if k != "shards"}, indent=2))
        return 0
    prov = index["provenance"]
    print(f"{index['num_records']} utterances, {index['audio_seconds'] / 3600:.2f} h in {len(index['shards'])} shards; "
          f"splits {index['splits']}; {index['num_rejects']} rejected")
    for name in ("hubert", "ecapa"):
        teacher = prov.get(name) if isinstance(prov.get(name), dict) else {}  # absent, or an edited index
        extra = f", layer {teacher['layer']}" if "layer" in teacher else ""
        label = teacher.get("teacher") or teacher.get("random_init")  # e.g. "phones from PocketSphinx, not HuBERT"
        weights = f"weights sha256 {str(teacher['weights_sha256'])[:12]}…" if teacher.get("weights_sha256") else ""
        details = ", ".join(x for x in (f"dim {teacher.get('dim')}{extra}", weights, label) if x)
        print(f"  {name}: {teacher.get('model')} ({details})")
    for key, spec in index["fields"].items():
        print(f"  field {key}: {spec['dtype']} {spec['shape']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    import jaxcodec

    parser = argparse.ArgumentParser(prog="jaxcodec", description=jaxcodec.__doc__.strip())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="parameter counts per component, frame rate, tokens/s, bitrate")
    _add_config_args(info)
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(func=cmd_info)

    from jaxcodec.data import manifest

    man = sub.add_parser("manifest", help=manifest.HELP)
    manifest.add_arguments(man)
    man.set_defaults(func=cmd_manifest)

    from teachers import precompute  # torch-free at import time; torch loads when the command runs

    pre = sub.add_parser("precompute", help="run the HuBERT and ECAPA-TDNN teachers into shards (PyTorch)")
    precompute.add_arguments(pre)
    pre.set_defaults(func=cmd_precompute)

    train = sub.add_parser("train", help="train (or resume) the codec on precomputed shards over the device mesh")
    _add_config_args(train)
    train.add_argument("--data", required=True, help="shard directory from `jaxcodec precompute`")
    train.add_argument("--workdir", required=True,
                       help="run directory (checkpoints, metrics.jsonl, samples); resumed when it holds a checkpoint")
    train.add_argument("--minutes", type=_positive_minutes, default=None,
                       help="stop cleanly after this many minutes, at a validated checkpoint; the same command "
                            "continues the run (a multi-hour CPU run in several sittings)")
    train.add_argument("--allow-new-data", action="store_true",
                       help="resume on another shard set than the one the workdir was trained on (recorded in "
                            "WORKDIR/data.json); without it such a resume is refused")
    train.set_defaults(func=cmd_train)

    from jaxcodec import demo

    dem = sub.add_parser("demo", help="the whole pipeline on the bundled corpus, on CPU, in minutes: manifest → "
                                      "teachers → training → evaluation → tokens → report.md")
    demo.add_arguments(dem)
    dem.set_defaults(func=cmd_demo)

    from jaxcodec.eval import cli as eval_cli

    evaluation = sub.add_parser("eval", help=eval_cli.HELP)
    eval_cli.add_arguments(evaluation)
    evaluation.set_defaults(func=cmd_eval)

    from jaxcodec.interop import layout

    imp = sub.add_parser("import", help="a PyTorch EnCodec or SpeechTokenizer checkpoint → a jaxcodec workdir "
                                        "(encode, decode, eval, fine-tune)")
    imp.add_argument("source", help="weights: .safetensors, .pt/.bin (read with torch, weights only) or a folder "
                                    "holding one (its config.json, if any, is checked against --config)")
    imp.add_argument("--from", dest="peer", required=True, choices=list(layout.PEERS),
                     help="which implementation saved it: " + "; ".join(
                         f"{name} = {peer.description}" for name, peer in layout.PEERS.items()))
    _add_config_args(imp)
    imp.add_argument("-o", "--out", required=True, help="new workdir (a checkpoint at step 0 + config + import.json)")
    imp.set_defaults(func=cmd_import)
    exp = sub.add_parser("export", help="a workdir's codec → one safetensors file (config inside)")
    exp.add_argument("checkpoint", help="training or imported workdir, or an exported file")
    exp.add_argument("--step", help="checkpoint step: a number, 'best' or (default) the latest")
    exp.add_argument("-o", "--out", required=True, help="output .safetensors")
    exp.add_argument("--format", choices=list(layout.FORMATS), default="jaxcodec",
                     help="jaxcodec (every variable, for jaxcodec.load) or a peer's state-dict names (for "
                          "load_state_dict in PyTorch; its config.json is written beside)")
    exp.set_defaults(func=cmd_export)

    from jaxcodec import inference

    helps = {"encode": "audio → RVQ codes (.npy int16 [n_q, T]): a file, a folder or a manifest",
             "decode": "codes (.npy) → 16 kHz WAV: a file or a folder",
             "resynth": "audio → codes → audio (WAV), to listen to the codec at a bitrate"}
    for mode, text in helps.items():
        command = sub.add_parser(mode, help=text)
        inference.add_arguments(command, mode)
        command.set_defaults(func=lambda args, mode=mode: inference.main(args, mode))

    from jaxcodec import tokenize

    tok = sub.add_parser("tokenize", help="a manifest → token shards (ArrayRecord, int16 codes) for language-model "
                                          "training; resumable, splittable over hosts")
    tokenize.add_arguments(tok)
    tok.set_defaults(func=lambda args: tokenize.main(args))

    from jaxcodec import bench

    ben = sub.add_parser("bench", help=bench.HELP)
    bench.add_arguments(ben)
    ben.set_defaults(func=cmd_bench)

    shard_cmd = sub.add_parser("shards", help="inspect or verify a shard set").add_subparsers(
        dest="shards_command", required=True, metavar="ACTION")
    verify = shard_cmd.add_parser("verify", help="check checksums, counts, dims, provenance; non-zero exit on failure")
    verify.add_argument("shards", help="shard directory")
    verify.add_argument("--manifest", help="also check every manifest utterance is in one shard or rejected")
    verify.add_argument("--quick", action="store_true", help="checksums and counts only (do not decode records)")
    verify.add_argument("--verbose", action="store_true", help="print each shard as it is checked")
    verify.set_defaults(func=cmd_shards_verify)
    show = shard_cmd.add_parser("info", help="what a shard set holds and which teachers made it")
    show.add_argument("shards", help="shard directory")
    show.add_argument("--json", action="store_true", help="print index.json without per-shard lists")
    show.set_defaults(func=cmd_shards_info)
    return parser


# Commands that compile XLA programs: they keep them in the persistent compilation cache (jaxcodec/compile_cache.py).
# `bench` does not: it measures compilation.
COMPILING_COMMANDS = ("train", "demo", "eval", "encode", "decode", "resynth", "tokenize")


def main(argv: list[str] | None = None) -> int:
    from jaxcodec.config import ConfigError
    from jaxcodec.data.manifest import ManifestError
    from jaxcodec.data.shards import ShardError
    from jaxcodec.interop.layout import InteropError
    from jaxcodec.output_lock import OutputLockError

    args = build_parser().parse_args(argv)
    if args.command in COMPILING_COMMANDS:
        from jaxcodec import compile_cache

        compile_cache.enable()
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"jaxcodec: config error: {err}", file=sys.stderr)
        return 2
    except (ShardError, ManifestError, InteropError, OutputLockError) as err:
        print(f"jaxcodec {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a file-size limit, a folder we may not write: the system says which
        print(f"jaxcodec {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
