"""The recogniser's own phone error rate on the original clips of a LibriSpeech-layout corpus (the bundled one by
default): the floor under every PER `jaxcodec eval` reports, per voice engine, split and speaker, with the
phone-loop decoding time per clip.

    .venv/bin/python -m scripts.phone_error_floor [--corpus jaxcodec/data/corpus] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def transcripts(corpus: Path) -> dict[Path, str]:
    """{clip path: transcript} from every SPEAKER-CHAPTER.trans.txt."""
    found = {}
    for listing in sorted(corpus.glob("*/*/*.trans.txt")):
        for line in listing.read_text().splitlines():
            utterance, text = line.split(" ", 1)
            found[listing.parent / f"{utterance}.flac"] = text
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "jaxcodec" / "data" / "corpus")
    parser.add_argument("--json", type=Path, help="also write every clip's phones and edits here")
    args = parser.parse_args(argv)

    from jaxcodec import audio
    from jaxcodec.eval import asr, phone_error_rate

    speakers = {str(s["speaker"]): s for s in json.loads((args.corpus / "speakers.json").read_text())}
    recogniser, pronunciations = asr.PocketSphinx(), phone_error_rate.Pronunciations()
    clips = []
    for path, text in transcripts(args.corpus).items():
        wav, _ = audio.read(path, asr.ASR_SAMPLE_RATE)
        started = time.perf_counter()
        hypothesis = phone_error_rate.hypothesis_phones(recogniser.decode_phones(wav))
        seconds = time.perf_counter() - started
        reference, why = pronunciations.reference(text)
        speaker = speakers[path.name.split("-")[0]]
        clips.append({"id": path.stem, "speaker": str(speaker["speaker"]), "engine": speaker["engine"],
                      "split": speaker["split"], "audio_seconds": len(wav) / asr.ASR_SAMPLE_RATE,
                      "decode_seconds": seconds, "unscorable": why, "reference": reference, "hypothesis": hypothesis,
                      "edits": None if reference is None else phone_error_rate.edit_distance(reference, hypothesis)})

    def row(name: str, group: list[dict]) -> str:
        errors = phone_error_rate.corpus_errors([(c["reference"], c["hypothesis"]) for c in group])
        decode = sum(c["decode_seconds"] for c in group)
        spoken = sum(c["audio_seconds"] for c in group)
        return (f"| {name} | {len(group)} | {errors.utterances} | {errors.edits} / {errors.reference_phones} | "
                f"{errors.rate:.3f} | {decode / len(group):.2f} | {decode / spoken:.2f} |")

    print("| clips | n | scored | edits / reference phones | PER | decode s/clip | real-time factor |")
    print("|---|---|---|---|---|---|---|")
    print(row("all", clips))
    for engine in sorted({c["engine"] for c in clips}):
        print(row(engine, [c for c in clips if c["engine"] == engine]))
    for split in ("train", "valid", "test"):
        for engine in sorted({c["engine"] for c in clips}):
            group = [c for c in clips if c["split"] == split and c["engine"] == engine]
            if group:
                print(row(f"{split}, {engine}", group))
    for speaker in sorted(speakers):
        group = [c for c in clips if c["speaker"] == speaker]
        if group:
            voice = speakers[speaker]
            print(row(f"{speaker} ({voice['engine']} {voice['voice']}, {voice['split']})", group))
    unscorable = [c["id"] for c in clips if c["unscorable"]]
    print(f"unscorable: {len(unscorable)} {unscorable}")
    if args.json:
        args.json.write_text(json.dumps(clips, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
