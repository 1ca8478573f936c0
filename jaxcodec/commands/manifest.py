"""`jaxcodec manifest DIR -o manifest.jsonl`: scan a corpus into a manifest (jaxcodec/data/manifest.py)."""

from __future__ import annotations

import argparse
import sys

from jaxcodec import atomic
from jaxcodec.data import manifest

HELP = "scan a directory of audio into manifest.jsonl (duration, rate, speaker, transcript, split)"


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `jaxcodec manifest`."""
    parser.add_argument("dir", metavar="DIR", help="corpus root, scanned recursively")
    parser.add_argument("-o", "--output", required=True, help="manifest to write (JSON lines), e.g. manifest.jsonl")
    parser.add_argument("--speaker-pattern", default=manifest.LIBRISPEECH_PATTERN,
                        help="regex with named group (?P<speaker>...) and optionally (?P<chapter>...), searched in "
                             "the path relative to DIR; default: LibriSpeech's numeric SPEAKER/CHAPTER/ directories; "
                             "no match: the parent directory is the speaker")
    parser.add_argument("--split-by", choices=manifest.SPLIT_BY, default="speaker",
                        help="speaker: unseen speakers in valid/test (default); utterance: hash of each id; "
                             "path: a directory named train*/dev*/valid*/test* (LibriSpeech's train-clean-100, ...)")
    parser.add_argument("--valid-fraction", type=float, default=0.05, help="share of keys hashed to valid")
    parser.add_argument("--test-fraction", type=float, default=0.05, help="share of keys hashed to test")
    parser.add_argument("--valid-speakers", type=_comma_list, default=(), metavar="S1,S2",
                        help="speakers put in valid regardless of the hash")
    parser.add_argument("--test-speakers", type=_comma_list, default=(), metavar="S1,S2",
                        help="speakers put in test regardless of the hash")
    parser.add_argument("--id-from", choices=manifest.ID_FROM, default="stem",
                        help="utterance id: the file name without extension (default) or the relative path")
    parser.add_argument("--workers", type=int, default=8, help="threads reading audio headers")


def main(args: argparse.Namespace) -> int:
    """`jaxcodec manifest`: scan, write, print a summary; 2 with a one-line error when nothing usable results."""
    try:
        entries, rejects = manifest.scan(
            args.dir, speaker_pattern=args.speaker_pattern, split_by=args.split_by,
            valid_fraction=args.valid_fraction, test_fraction=args.test_fraction,
            valid_speakers=args.valid_speakers, test_speakers=args.test_speakers, id_from=args.id_from,
            workers=args.workers, progress=sys.stderr.isatty())
        if not entries:  # an empty manifest would only fail later, in precompute or training
            rejected = manifest.rejects_path(args.output)
            atomic.write_jsonl(rejected, rejects)
            raise manifest.ManifestError(f"none of the {len(rejects)} audio files is readable, see {rejected}")
        rejected = manifest.write(entries, rejects, args.output)
    except manifest.ManifestError as err:
        print(f"jaxcodec manifest: error: {err}", file=sys.stderr)
        return 2
    for folder in (reject for reject in rejects if reject.get("kind") == "folder"):
        print(f"jaxcodec manifest: warning: {folder['path']}: {folder['reason']}", file=sys.stderr)
    print(f"wrote {args.output}")
    print(manifest.summary(entries))
    if rejected is not None:
        folders = sum(reject.get("kind") == "folder" for reject in rejects)
        print(f"{len(rejects) - folders} files{f' and {folders} unreadable folders' if folders else ''} "
              f"rejected, see {rejected}")
    return 0
