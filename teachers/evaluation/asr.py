"""Transcripts of a list of audio files by a transformers ASR model (a hub id or a local directory), for
`jaxcodec eval --asr MODEL` (jaxcodec never imports torch itself).

    python -m teachers.evaluation.asr --model ID_OR_DIR --list files.txt --out transcripts.json [--device cpu]

The output JSON holds `model`, `transcripts` (one string per listed file, in order; "" for a file that failed)
and `errors` ({path: reason}). It is written to a temporary name and renamed.
"""

from __future__ import annotations

import sys

from jaxcodec import atomic, audio
from teachers.evaluation.file_list import file_list_tool


def load_pipeline(model: str, device: str = "cpu"):
    from transformers import pipeline

    return pipeline("automatic-speech-recognition", model=model, device=device)


def transcribe_files(recogniser, paths: list[str]) -> tuple[list[str], dict[str, str]]:
    transcripts, errors = [], {}
    for path in paths:
        try:
            wav, _ = audio.read(path)
            result = recogniser({"raw": wav, "sampling_rate": audio.SAMPLE_RATE})
            transcripts.append(str(result["text"]))
        except (audio.AudioError, ValueError, RuntimeError) as err:
            errors[path] = " ".join(str(err).split())
            transcripts.append("")
    return transcripts, errors


def main(argv: list[str] | None = None) -> int:
    args, paths = file_list_tool(
        "python -m teachers.evaluation.asr", __doc__.splitlines()[0], ".json", argv,
        lambda p: p.add_argument("--model", required=True, help="transformers ASR model: hub id or local directory"))
    try:
        recogniser = load_pipeline(args.model, args.device)
    except Exception as err:  # a model that cannot load (offline hub, wrong directory): one line for the caller
        print(f"ASR model {args.model}: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    transcripts, errors = transcribe_files(recogniser, paths)
    atomic.write_json(args.out, {"model": args.model, "transcripts": transcripts, "errors": errors})
    return 0


if __name__ == "__main__":
    sys.exit(main())
