"""The `jaxcodec` command: the parser and the dispatch. Each subcommand is a module of this package (its HELP,
add_arguments and main); heavy imports happen inside main, so `jaxcodec --help` is instant. The library
(jaxcodec outside this package) never imports a command."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    import jaxcodec
    from jaxcodec.commands import bench, demo, encode, info, interop, manifest, precompute, shards, tokenize, train
    from jaxcodec.commands import eval as evaluation

    parser = argparse.ArgumentParser(prog="jaxcodec", description=jaxcodec.__doc__.strip())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in (("info", info), ("manifest", manifest), ("precompute", precompute), ("train", train),
                         ("demo", demo), ("eval", evaluation)):
        command = sub.add_parser(name, help=module.HELP)
        module.add_arguments(command)
        command.set_defaults(func=module.main)
    imp = sub.add_parser("import", help=interop.IMPORT_HELP)
    interop.add_import_arguments(imp)
    imp.set_defaults(func=interop.import_main)
    exp = sub.add_parser("export", help=interop.EXPORT_HELP)
    interop.add_export_arguments(exp)
    exp.set_defaults(func=interop.export_main)
    for mode, text in encode.HELPS.items():
        command = sub.add_parser(mode, help=text)
        encode.add_arguments(command, mode)
        command.set_defaults(func=lambda args, mode=mode: encode.main(args, mode))
    for name, module in (("tokenize", tokenize), ("bench", bench), ("shards", shards)):
        command = sub.add_parser(name, help=module.HELP)
        module.add_arguments(command)
        if name != "shards":  # shards' actions set their own func
            command.set_defaults(func=module.main)
    return parser


# Commands that compile XLA programs: they keep them in the persistent compilation cache (jaxcodec/compile_cache.py).
# `bench` does not: it measures compilation.
COMPILING_COMMANDS = ("train", "demo", "eval", "encode", "decode", "resynth", "tokenize")


# What running a stopped command again does (README: Failure behaviour).
RERUN = "nothing was left half-written; run the same command again"
STOP_RERUN = {
    "precompute": "the finished shards are kept; run the same command to continue with the rest",
    "tokenize": "the finished shards are kept; run the same command to continue with the rest",
    "train": "run the same command to continue from the last checkpoint",
    "demo": "run the same command to continue (finished stages are kept; training resumes from its checkpoint)",
    "eval": "its report is written only at the end; run the same command to evaluate again",
}


def main(argv: list[str] | None = None) -> int:
    from jaxcodec import stopping
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
        # A stop signal ends any command with one line and STOPPED_EXIT_STATUS; training handles them itself, at a
        # step boundary with a checkpoint (jaxcodec/stopping.py), and the others unwind through their cleanup.
        with stopping.raising_on_stop_signals():
            return args.func(args)
    except stopping.Stopped as stop:
        print(f"jaxcodec {args.command}: stopped by {stop.signal_name}; {STOP_RERUN.get(args.command, RERUN)}",
              file=sys.stderr)
        return stopping.STOPPED_EXIT_STATUS
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
