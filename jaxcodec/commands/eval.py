"""`jaxcodec eval`: argument parsing and error reporting around evaluate.py and report.py (imports stay light
until the command runs)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

HELP = ("measure a checkpoint: reconstruction at every bitrate, WER, PER, speaker similarity/EER, voice conversion, "
        "probes, codebook health → report.md + PNGs; or --compare two report folders")


def _step(text: str) -> int | str:
    return text if text == "best" else int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, help="training workdir (or its checkpoints/ folder)")
    parser.add_argument("--step", type=_step, help="checkpoint step: a number or 'best' (default: latest)")
    parser.add_argument("--manifest", type=Path, help="manifest.jsonl with the utterances (and transcripts)")
    parser.add_argument("-o", "--out", type=Path, help="report folder")
    parser.add_argument("--split", default="test", help="manifest split to evaluate, or 'all' (default: %(default)s)")
    parser.add_argument("--n-q", dest="n_q", help="bitrates as RVQ levels: 'A..B' or '1,2,4,8' (default: all)")
    parser.add_argument("--max-utterances", type=int, help="evaluate at most this many utterances of the split")
    parser.add_argument("--speaker-encoder", default="resemblyzer",
                        help="resemblyzer (offline), ecapa, ecapa:DIR_OR_ID (a DIR is read weights only, its "
                             "hyperparams.yaml not run), or none (default: %(default)s)")
    parser.add_argument("--asr", default="pocketsphinx",
                        help="WER recogniser: pocketsphinx (offline; also PER, by its phone decoding), a "
                             "transformers ASR model id or directory (run by teachers.evaluation.asr, PyTorch; no "
                             "PER), or none (default: %(default)s)")
    parser.add_argument("--no-vc", action="store_true", help="skip voice conversion by token swap")
    parser.add_argument("--no-probes", action="store_true", help="skip the probes on frozen tokens")
    parser.add_argument("--probe-split", default="all", help="manifest split the probes use (default: %(default)s)")
    parser.add_argument("--labels", type=Path, help="JSON list of per-speaker ({'speaker': ...}) or per-utterance "
                                                   "({'id': ...}) labels for the probes (e.g. a corpus' speakers.json)")
    parser.add_argument("--samples", type=int, default=3, help="utterances kept as WAV in OUT/samples "
                                                                "(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes scoring clips (PESQ, STOI, WORLD, PocketSphinx) (default: %(default)s, the "
                             "CPU count)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="DIR",
                        help="instead of evaluating: a side-by-side table of these report folders' metrics.json "
                             "(written to OUT/compare.md with overlaid curves when -o is given)")


def main(args: argparse.Namespace) -> int:
    from jaxcodec import output_lock
    from jaxcodec.data.manifest import ManifestError
    from jaxcodec.eval import evaluate, report

    try:
        if args.compare:
            if len(args.compare) < 2:
                raise evaluate.EvalError("--compare needs two or more report folders")
            with output_lock.held(args.out) if args.out else contextlib.nullcontext():
                print(report.compare(args.compare, args.out), end="")
            return 0
        missing = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--manifest", args.manifest),
                                            ("-o", args.out)) if value is None]
        if missing:
            raise evaluate.EvalError(f"{', '.join(missing)} required (or --compare DIR DIR)")
        options = evaluate.Options(
            checkpoint=args.checkpoint, manifest=args.manifest, out=args.out, step=args.step, split=args.split,
            n_q=args.n_q, max_utterances=args.max_utterances,
            speaker_encoder=None if args.speaker_encoder == "none" else args.speaker_encoder,
            asr=None if args.asr == "none" else args.asr, voice_conversion=not args.no_vc, probes=not args.no_probes,
            probe_split=args.probe_split, labels=args.labels, samples=args.samples,
            workers=max(args.workers, 1))
        with output_lock.held(args.out):  # one evaluation writes a report folder at a time
            result = evaluate.evaluate(options)
            path = report.render(args.out, result)
        print(f"report: {path}")
        return 0
    except (evaluate.EvalError, ManifestError, FileNotFoundError, ValueError) as err:
        print(f"jaxcodec eval: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
