"""The command line shared by the evaluation tools: a list of audio files in, one output file out."""

from __future__ import annotations

from pathlib import Path


def file_list_tool(prog: str, description: str, out_kind: str, argv: list[str] | None, add_model_argument
                   ) -> tuple[object, list[str]]:
    """The command line of an evaluation tool that jaxcodec runs in a subprocess (teachers.evaluation.speaker,
    teachers.evaluation.asr): --list FILES (one audio path per line), --out, --device, plus the tool's model
    argument. Returns (args, paths)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_model_argument(parser)
    parser.add_argument("--list", required=True, type=Path, help="text file, one audio path per line")
    parser.add_argument("--out", required=True, type=Path, help=f"output {out_kind}")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    return args, [line.strip() for line in args.list.read_text().splitlines() if line.strip()]
