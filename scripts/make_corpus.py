"""Synthesise a small multi-speaker English corpus with transcripts, in LibriSpeech's layout, from the Debian
text-to-speech engines flite and espeak-ng (no network, no model hub).

    .venv/bin/python scripts/make_corpus.py --out jaxcodec/data/corpus [--sentences-per-speaker 10]

Each "speaker" is an engine voice with its own speaking rate and pitch (recorded as labels in SPEAKERS.txt and
speakers.json). Sentences are the Harvard sentences (IEEE 1969, public domain; lists 1-10 in
scripts/harvard_sentences.txt), dealt to speakers round-robin so every speaker reads different sentences. Output:

    OUT/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac    16 kHz mono 16-bit FLAC, silence trimmed to 0.1 s
    OUT/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt   "SPEAKER-CHAPTER-UTT TRANSCRIPT" (upper case, no punctuation)
    OUT/SPEAKERS.txt, OUT/speakers.json             engine, voice, gender, rate, pitch, split per speaker

`jaxcodec manifest OUT --test-speakers ... --valid-speakers ...` reads it like LibriSpeech; the split each
speaker belongs to (test speakers unseen in training) is in speakers.json. Files are written to a temporary
name and renamed; a rerun skips finished utterances.

Real speech instead of synthesis:

    .venv/bin/python scripts/make_corpus.py --source asterisk --out /data/real_corpus [--cache DEB_FOLDER]

builds the real-speech corpus of jaxcodec/data/real_corpus.py: three Debian Asterisk voice packages (fr-CA, it-IT,
ru-RU; ~70 min of read speech in all), fetched with `apt-get download` into the cache folder (default
$XDG_CACHE_HOME/jaxcodec/debian) unless their .deb files are already there, decoded from G.722 to FLAC in the same
layout (speakers 601-603), non-speech left out with its reason, a fixed split by utterance; OUT/README.md says
what is in it. Needs the `corpus` extra (pip install -e ".[corpus]"). The corpus appears whole or not at all; a
rerun on a finished corpus does nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = Path(__file__).with_name("harvard_sentences.txt")
SAMPLE_RATE = 16_000
CHAPTER = 1  # one "chapter" per speaker
TRIM_DB = -45.0  # frames quieter than this (re the utterance's peak) at both ends are silence
KEEP_SILENCE_S = 0.1  # silence kept at each end after trimming
INSTALL_HINT = "install the engines with: sudo apt-get install flite espeak-ng"


@dataclasses.dataclass(frozen=True)
class Voice:
    speaker: int  # LibriSpeech-style numeric speaker id
    engine: str  # flite | espeak-ng
    voice: str  # the engine's voice name (espeak-ng: language+variant)
    gender: str  # F | M, as the voice presents
    rate: float  # flite: duration stretch (>1 slower); espeak-ng: words per minute
    pitch: float  # flite: target mean F0 in Hz; espeak-ng: pitch 0-99
    split: str  # train | valid | test


# 13 voices: flite's four 16 kHz voices and nine espeak-ng accent/variant combinations. The test speakers (an
# engine voice and two accents no training speaker has) and the valid speakers are never trained on. Rates and
# pitches are spread so that speakers differ in prosody, not only in timbre.
VOICES = (
    Voice(101, "flite", "rms", "M", 1.00, 105, "train"),
    Voice(102, "flite", "slt", "F", 0.95, 175, "train"),
    Voice(103, "flite", "awb", "M", 1.10, 120, "train"),
    Voice(201, "espeak-ng", "en-us+m3", "M", 150, 40, "train"),
    Voice(202, "espeak-ng", "en-gb+f3", "F", 165, 70, "train"),
    Voice(203, "espeak-ng", "en-gb-scotland+m1", "M", 140, 35, "train"),
    Voice(204, "espeak-ng", "en-029+f2", "F", 175, 60, "train"),
    Voice(205, "espeak-ng", "en-gb-x-rp+m7", "M", 160, 50, "train"),
    Voice(206, "espeak-ng", "en-us+f1", "F", 155, 85, "train"),
    Voice(401, "espeak-ng", "en-us+f4", "F", 145, 75, "valid"),
    Voice(402, "espeak-ng", "en-gb+m2", "M", 170, 30, "valid"),
    Voice(501, "flite", "kal16", "M", 0.90, 100, "test"),
    Voice(502, "espeak-ng", "en-gb-x-gbcwmd+m4", "M", 155, 45, "test"),
    Voice(503, "espeak-ng", "en-gb-x-gbclan+f5", "F", 150, 65, "test"),
)


class CorpusError(RuntimeError):
    pass


def check_engines(voices) -> None:
    missing = sorted({v.engine for v in voices if shutil.which(v.engine) is None})
    if missing:
        raise CorpusError(f"{', '.join(missing)} not found; {INSTALL_HINT}")


def synthesize(voice: Voice, text: str, wav_path: Path) -> None:
    if voice.engine == "flite":
        command = ["flite", "-voice", voice.voice, "--setf", f"duration_stretch={voice.rate}",
                   "--setf", f"int_f0_target_mean={voice.pitch}", "-t", text, "-o", str(wav_path)]
    else:
        command = ["espeak-ng", "-v", voice.voice, "-s", str(int(voice.rate)), "-p", str(int(voice.pitch)),
                   "-w", str(wav_path), text]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0 or not wav_path.exists():
        raise CorpusError(f"{voice.engine} {voice.voice} failed: {done.stderr.strip()[:200]}")


def trim_silence(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cuts leading/trailing silence (10 ms frames below TRIM_DB re the peak), keeping KEEP_SILENCE_S."""
    frame = sample_rate // 100
    n = len(wav) // frame
    if n == 0:
        return wav
    energy = np.sqrt(np.mean(wav[: n * frame].reshape(n, frame) ** 2, axis=1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(energy / np.max(np.abs(wav) + 1e-12)) > TRIM_DB)
    if len(loud) == 0:
        return wav
    keep = int(KEEP_SILENCE_S * sample_rate)
    return wav[max(loud[0] * frame - keep, 0): min((loud[-1] + 1) * frame + keep, len(wav))]


def transcript(text: str) -> str:
    """LibriSpeech style: upper case, apostrophes kept, other punctuation removed."""
    return " ".join(re.sub(r"[^A-Z' ]", " ", text.upper()).split())


def render(voice: Voice, text: str, flac_path: Path, scratch: Path) -> float:
    """Synthesises, resamples to 16 kHz, trims, writes FLAC atomically; returns the duration in seconds."""
    raw = scratch / "raw.wav"
    synthesize(voice, text, raw)
    wav, rate = sf.read(raw, dtype="float64", always_2d=True)
    wav = wav.mean(axis=1)
    if rate != SAMPLE_RATE:
        wav = soxr.resample(wav, rate, SAMPLE_RATE, quality="VHQ")
    wav = trim_silence(wav, SAMPLE_RATE)
    peak = np.max(np.abs(wav))
    if peak > 0.99:  # resampling overshoot: scale, never clip
        wav = wav * (0.99 / peak)
    tmp = flac_path.with_name(flac_path.name + ".tmp")
    sf.write(tmp, wav, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    tmp.replace(flac_path)
    return len(wav) / SAMPLE_RATE


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def make_corpus(out: Path, sentences: list[str], per_speaker: int, voices=VOICES, log=print) -> dict:
    check_engines(voices)
    if per_speaker * len(voices) > len(sentences):
        log(f"note: {per_speaker * len(voices)} utterances from {len(sentences)} sentences: some are reused "
            f"by several speakers")
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for i, voice in enumerate(voices):
            folder = out / str(voice.speaker) / str(CHAPTER)
            folder.mkdir(parents=True, exist_ok=True)
            lines, total = [], 0.0
            for j in range(per_speaker):
                text = sentences[(i + j * len(voices)) % len(sentences)]
                utt = f"{voice.speaker}-{CHAPTER}-{j:04d}"
                flac = folder / f"{utt}.flac"
                total += sf.info(flac).duration if flac.exists() else render(voice, text, flac, Path(scratch))
                lines.append(f"{utt} {transcript(text)}\n")
            write_text(folder / f"{voice.speaker}-{CHAPTER}.trans.txt", "".join(lines))
            seconds[voice.speaker] = total
            log(f"speaker {voice.speaker} ({voice.engine} {voice.voice}, {voice.split}): {per_speaker} utterances, "
                f"{total:.1f} s")
    labels = [{**dataclasses.asdict(v), "seconds": round(seconds[v.speaker], 2)} for v in voices]
    write_text(out / "speakers.json", json.dumps(labels, indent=1) + "\n")
    header = "; SPEAKER | SPLIT | GENDER | ENGINE | VOICE | RATE | PITCH | SECONDS\n"
    rows = "".join(f"{v.speaker} | {v.split} | {v.gender} | {v.engine} | {v.voice} | {v.rate} | {v.pitch} | "
                   f"{seconds[v.speaker]:.1f}\n" for v in voices)
    write_text(out / "SPEAKERS.txt", header + rows)
    return {"speakers": len(voices), "utterances": per_speaker * len(voices), "seconds": sum(seconds.values())}


def read_sentences(path: Path = SENTENCES) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def make_real_corpus(out: Path | None, cache: Path | None) -> int:
    """--source asterisk: jaxcodec.data.real_corpus.build, and what it made."""
    from jaxcodec.data import real_corpus

    if out is None:
        print("make_corpus: error: --source asterisk needs --out (the bundled corpus folder is for the TTS corpus)",
              file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        summary = real_corpus.build(out, cache=cache)
    except real_corpus.CorpusError as err:
        print(f"make_corpus: error: {err}", file=sys.stderr)
        return 2
    for s in summary["speakers"]:
        splits = ", ".join(f"{k} {v['utterances']} ({v['seconds'] / 60:.1f} min)" for k, v in s["splits"].items())
        print(f"speaker {s['speaker']} ({s['folder']}, {s['licence']}): {s['utterances']} utterances, "
              f"{s['seconds'] / 3600:.3f} h: {splits}; rejected {s['rejects']}")
    verb = "built" if summary["built"] else "already built"
    print(f"{summary['utterances']} utterances, {summary['seconds'] / 3600:.2f} h in {out} ({verb}; rejected "
          f"{summary['rejects']}; {time.monotonic() - start:.1f} s)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("tts", "asterisk"), default="tts",
                        help="tts: synthesise the bundled corpus (default); asterisk: real speech from Debian's "
                             "Asterisk voice packages (jaxcodec/data/real_corpus.py)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (tts default: jaxcodec/data/corpus; asterisk: required)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="asterisk: folder for the downloaded .deb files (default $XDG_CACHE_HOME/jaxcodec/debian)")
    parser.add_argument("--sentences-per-speaker", type=int, default=10)
    args = parser.parse_args(argv)
    if args.source == "asterisk":
        return make_real_corpus(args.out, args.cache)
    args.out = args.out or ROOT / "jaxcodec" / "data" / "corpus"
    try:
        summary = make_corpus(args.out, read_sentences(), args.sentences_per_speaker)
    except CorpusError as err:
        print(f"make_corpus: error: {err}", file=sys.stderr)
        return 2
    print(f"{summary['utterances']} utterances, {summary['speakers']} speakers, {summary['seconds'] / 60:.1f} min "
          f"of audio in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
