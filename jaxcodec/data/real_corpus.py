"""Real human speech for training: three Debian Asterisk voice-prompt packages (G.722, 16 kHz) decoded into a
LibriSpeech-shaped corpus with a fixed train/valid/test split.

    from jaxcodec.data import real_corpus
    summary = real_corpus.build("/data/real_corpus")          # fetch, decode, screen, split, write; idempotent
    entries = real_corpus.manifest_entries("/data/real_corpus")  # manifest rows with the corpus' split
    rows = manifest.combine(bundled_entries, entries)          # one manifest with the synthetic corpus

or `scripts/make_corpus.py --source asterisk --out DIR [--cache DIR]`. numpy + soundfile (+ the `G722` decoder,
extra `corpus`); no jax, no torch.

Sources, exactly these three (asterisk_packages.VOICES): asterisk-core-sounds-{fr,it,ru}-g722, each one
professional voice reading ~25 min of telephone prompts (studio recordings; no transcripts, the prompt names are
kept). Every other Asterisk voice package is reserved for an independent evaluation: `fetch_package` refuses any
other name before apt-get runs, and only these three names are looked for in the cache folder.

Steps. (1) Fetch (asterisk_packages.py): a `PACKAGE_*.deb` already in the cache folder is used as it is, else
`apt-get download` fetches it there (no root); each .deb's version and sha256 are recorded. (2) Read the .deb in
memory (debian_package.py: ar + tarfile, unsafe paths refused) and check its copyright file still grants the
licence recorded here. (3)
Decode every `.g722` prompt (G.722 at 64 kbit/s: 8000 bytes per second of 16 kHz audio, two samples per byte,
checked) to int16 as it is: no trimming (the prompts are edited tight: make_corpus.py's trim rule would cut 6.9 s
of 71.8 min) and no gain change. (4) Screen (`SCREENING_RULES`, first match): an empty file, digital silence (the
`silence/` folder: peak below SILENCE_PEAK_DBFS), a synthetic tone (tone_detector.py), shorter than MIN_SECONDS;
then a prompt rejected as a tone in one package is rejected in all (the same Asterisk system sound; the ru
package's chime version is not a steady sinusoid). Each reject is recorded with its reason. (5) Split each kept
utterance by the hash of its id (manifest.assign_split, VALID_FRACTION/TEST_FRACTION): exactly what
`jaxcodec manifest DIR --split-by utterance --valid-fraction 0.08 --test-fraction 0.08` computes; every speaker
must get at least MIN_VALID valid and MIN_TEST test utterances, or the build fails. (6) Write
OUT/SPEAKER/1/SPEAKER-1-UTT.flac (one chapter per speaker; UTT numbers the package's prompts in sorted order,
rejected ones included, so an id never depends on the screening rules), utterances.jsonl (id → prompt, source
path, split), rejects.jsonl, speakers.json, SPEAKERS.txt, README.md, licences/, corpus.json (last).

Nothing half-written: the corpus is built in a temporary sibling folder (`.NAME.tmp-…`) and renamed to OUT at the
end; a rerun with the finished corpus present (its corpus.json) does nothing; a killed run's temporary folder is
removed by the next run. A second build of the same OUT while one runs is refused (a lock file beside OUT).
Every failure (no apt-get, no network, a damaged package, a full disk) is one `CorpusError` line saying what to do.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from jaxcodec import atomic, output_lock
from jaxcodec.data import manifest, real_corpus_readme, tone_detector
from jaxcodec.data.asterisk_packages import (
    PACKAGES,
    PROMPT_SUFFIX,
    SAMPLE_RATE,
    SOUNDS_ROOT,
    VOICES,
    CorpusError,
    Package,
    Voice,
    decode_g722,
    default_cache,
    fetch_package,
    read_package,
)

# The API the demo and the command line use (the package-level names are re-exported from asterisk_packages).
__all__ = ["PACKAGES", "VOICES", "CorpusError", "build", "decode_g722", "default_cache", "fetch_package",
           "is_finished", "manifest_entries", "split_of"]

CHAPTER = 1  # one chapter per speaker (the prompts have no book/chapter structure; the subfolder is in `prompt`)
# teachers/precompute.py's MIN_SECONDS (jaxcodec/ cannot import teachers/): precompute drops shorter clips anyway,
# so keeping them here would only make the manifest and the shards disagree.
MIN_SECONDS = 0.5
# Digital silence: the silence/ prompts decode to G.722's idle noise, peaks of ±11..13 LSB (-68 dBFS); the quietest
# speech prompt peaks at -15 dBFS. -50 dBFS lies well between.
SILENCE_PEAK_DBFS = -50.0
VALID_FRACTION = TEST_FRACTION = 0.08  # per speaker, ~45 utterances each of ~560
MIN_VALID, MIN_TEST = 1, 5  # per speaker: a speaker without them cannot be validated or tested
INT16_SCALE = 32_768.0
FORMAT = 1  # corpus.json's "format": bump when the layout or the metadata's meaning changes
DONE_FILE = "corpus.json"  # written last: its presence marks a finished corpus
UTTERANCES_FILE, REJECTS_FILE = "utterances.jsonl", "rejects.jsonl"
LICENCE_FOLDER = "licences"
# Screening reasons, in the order they are tested (a clip gets the first that applies).
SCREENING_RULES = {
    "empty": "the file holds no G.722 data",
    "silence": f"digital silence: peak below {SILENCE_PEAK_DBFS:g} dBFS",
    "tone": (f"a synthetic tone: at least {tone_detector.TONE_FRAME_SHARE:g} of the loud frames hold one steady "
             f"sinusoid (>= {tone_detector.PURE_PEAK_SHARE:g} of the frame's energy in one peak whose frequency moves "
             f"< {tone_detector.STEADY_HZ:g} Hz between frames)"),
    "short": f"shorter than {MIN_SECONDS:g} s (precompute's minimum)",
    "tone-elsewhere": "the same prompt is a tone in another voice's package (the same Asterisk system sound)",
}


@dataclasses.dataclass
class Clip:
    voice: Voice
    id: str
    prompt: str
    pcm: np.ndarray  # int16
    peak_dbfs: float | None
    tonal_share: float
    reason: str | None = None  # a SCREENING_RULES key, or None: kept
    detail: str = ""

    @property
    def seconds(self) -> float:
        return len(self.pcm) / SAMPLE_RATE


def measure(voice: Voice, utterance_id: str, prompt: str, data: bytes) -> Clip:
    """Decodes one prompt and applies the clip's own screening rules (all but tone-elsewhere)."""
    pcm = decode_g722(data)
    if len(pcm) == 0:
        return Clip(voice, utterance_id, prompt, pcm, None, 0.0, "empty", "0 bytes of G.722")
    wav = pcm / INT16_SCALE
    peak = float(np.max(np.abs(wav)))
    peak_dbfs = round(20 * np.log10(max(peak, 1 / INT16_SCALE)), 1)
    share = round(tone_detector.tonal_share(wav, SAMPLE_RATE), 3)
    clip = Clip(voice, utterance_id, prompt, pcm, peak_dbfs, share)
    if peak_dbfs < SILENCE_PEAK_DBFS:
        clip.reason, clip.detail = "silence", f"peak {peak_dbfs:g} dBFS"
    elif share >= tone_detector.TONE_FRAME_SHARE:
        clip.reason, clip.detail = "tone", f"{share:g} of the loud frames tonal"
    elif clip.seconds < MIN_SECONDS:
        clip.reason, clip.detail = "short", f"{clip.seconds:.3f} s"
    return clip


def screen(packages: Sequence[Package]) -> list[Clip]:
    """Every prompt of every package, decoded and screened; a prompt that is a tone in one package is rejected in
    all (rule tone-elsewhere)."""
    clips = []
    for package in packages:
        for index, (prompt, data) in enumerate(package.prompts.items()):
            utterance_id = f"{package.voice.speaker}-{CHAPTER}-{index:04d}"
            clips.append(measure(package.voice, utterance_id, prompt, data))
    tone_in = collections.defaultdict(list)
    for clip in clips:
        if clip.reason == "tone":
            tone_in[clip.prompt].append(clip.voice.folder)
    for clip in clips:
        if clip.reason is None and clip.prompt in tone_in:
            clip.reason = "tone-elsewhere"
            clip.detail = f"a tone in {', '.join(tone_in[clip.prompt])}; here {clip.tonal_share:g} of frames tonal"
    return clips


REAL_SPEAKERS = frozenset(str(voice.speaker) for voice in VOICES)


def is_real_speaker(speaker) -> bool:
    """Whether a manifest speaker id is one of this corpus' real voices (601-603)."""
    return str(speaker) in REAL_SPEAKERS


def split_of(utterance_id: str) -> str:
    """The fixed split: manifest.scan(split_by="utterance") with VALID_FRACTION and TEST_FRACTION computes the same."""
    return manifest.assign_split(utterance_id, VALID_FRACTION, TEST_FRACTION)


def check_coverage(kept: Sequence[Clip]) -> None:
    for voice in VOICES:
        counts = collections.Counter(split_of(c.id) for c in kept if c.voice == voice)
        if counts["valid"] < MIN_VALID or counts["test"] < MIN_TEST:
            raise CorpusError(f"speaker {voice.speaker} ({voice.package}) gets {counts['valid']} valid and "
                              f"{counts['test']} test utterances from the hash split, fewer than {MIN_VALID} and "
                              f"{MIN_TEST}: the package holds too few usable prompts for this corpus")


# ------------------------------------------------------------------------------------------------ writing


def _write_flac(path: Path, pcm: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        sf.write(f, pcm, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
        f.flush()
        os.fsync(f.fileno())


def _utterance_row(clip: Clip) -> dict:
    return {"id": clip.id, "speaker": clip.voice.speaker, "split": split_of(clip.id), "prompt": clip.prompt,
            "seconds": round(clip.seconds, 4), "package": clip.voice.package,
            "source": f"{SOUNDS_ROOT}/{clip.voice.folder}/{clip.prompt}{PROMPT_SUFFIX}",
            "peak_dbfs": clip.peak_dbfs, "tonal_share": clip.tonal_share}


def _reject_row(clip: Clip) -> dict:
    row = _utterance_row(clip)
    del row["split"]
    return {**row, "reason": clip.reason, "detail": clip.detail}


def describe(packages: Sequence[Package], clips: Sequence[Clip]) -> dict:
    """corpus.json: sources, rules, split and counts (what README.md, speakers.json and the CLI report)."""
    speakers = []
    for package in packages:
        voice = package.voice
        mine = [c for c in clips if c.voice == voice]
        splits = {split: [c for c in mine if c.reason is None and split_of(c.id) == split]
                  for split in manifest.SPLITS}
        speakers.append({
            "speaker": voice.speaker, "name": voice.name, "language": voice.language,
            "language_name": voice.language_name, "gender": voice.gender, "licence": voice.licence,
            "package": voice.package, "version": package.version, "folder": voice.folder, "credit": voice.credit,
            "prompts": len(mine), "utterances": sum(len(s) for s in splits.values()),
            "seconds": round(sum(c.seconds for s in splits.values() for c in s), 2),
            "splits": {split: {"utterances": len(s), "seconds": round(sum(c.seconds for c in s), 2)}
                       for split, s in splits.items()},
            "rejects": dict(sorted(collections.Counter(c.reason for c in mine if c.reason).items())),
        })
    return {
        "format": FORMAT, "built_by": "jaxcodec.data.real_corpus", "sample_rate": SAMPLE_RATE,
        "packages": [{"package": p.voice.package, "version": p.version, "file": p.path.name, "sha256": p.sha256,
                      "url": real_corpus_readme.pool_url(p.source, p.path.name)} for p in packages],
        "rules": {"min_seconds": MIN_SECONDS, "silence_peak_dbfs": SILENCE_PEAK_DBFS,
                  "tone_frame_share": tone_detector.TONE_FRAME_SHARE, "reasons": SCREENING_RULES, "trimmed": False},
        "split": {"by": "utterance", "valid_fraction": VALID_FRACTION, "test_fraction": TEST_FRACTION,
                  "min_valid": MIN_VALID, "min_test": MIN_TEST},
        "speakers": speakers,
        "utterances": sum(s["utterances"] for s in speakers),
        "seconds": round(sum(s["seconds"] for s in speakers), 2),
        "rejects": dict(sorted(collections.Counter(c.reason for c in clips if c.reason).items())),
    }


def write_corpus(folder: Path, packages: Sequence[Package], clips: Sequence[Clip]) -> dict:
    """Writes the whole corpus into `folder` (a fresh temporary folder); corpus.json last."""
    kept = [c for c in clips if c.reason is None]
    for clip in kept:
        flac = folder / str(clip.voice.speaker) / str(CHAPTER) / f"{clip.id}.flac"
        try:
            _write_flac(flac, clip.pcm)
        except (OSError, sf.LibsndfileError) as err:
            raise CorpusError(f"writing {flac} failed: {getattr(err, 'strerror', None) or err}") from None
    summary = describe(packages, clips)
    atomic.write_jsonl(folder / UTTERANCES_FILE, [_utterance_row(c) for c in kept])
    atomic.write_jsonl(folder / REJECTS_FILE, [_reject_row(c) for c in clips if c.reason])
    for package in packages:
        atomic.write_text(folder / LICENCE_FOLDER / f"{package.voice.package}.copyright", package.copyright)
    speakers = [{key: s[key] for key in ("speaker", "name", "language", "gender", "licence", "package", "version",
                                         "folder", "utterances", "seconds", "splits")} for s in summary["speakers"]]
    atomic.write_text(folder / "speakers.json", json.dumps(speakers, indent=1, ensure_ascii=False) + "\n")
    atomic.write_text(folder / "SPEAKERS.txt", real_corpus_readme.speakers_table(summary))
    rejected = [_reject_row(c) for c in clips if c.reason]
    atomic.write_text(folder / "README.md", real_corpus_readme.readme(summary, rejected))
    atomic.write_text(folder / DONE_FILE, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return summary


def is_finished(out: str | os.PathLike) -> bool:
    return (Path(out) / DONE_FILE).is_file()


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary folders of killed builds of `out` (we hold out's lock, so none is live)."""
    for stale in out.parent.glob(atomic.tmp_prefix(out.name) + "*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def build(out: str | os.PathLike, cache: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> dict:
    """Builds the corpus in `out` (see the module docstring); returns corpus.json's contents, plus "built": False
    when `out` was already finished (then nothing is fetched or written)."""
    out = Path(out).absolute()
    if is_finished(out):
        log(f"{out} is a finished corpus ({DONE_FILE}): nothing to do")
        return {**json.loads((out / DONE_FILE).read_text(encoding="utf-8")), "built": False}
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CorpusError(f"{out} exists and is not a finished corpus (no {DONE_FILE}): remove it or choose another "
                          "output folder")
    cache = Path(cache) if cache is not None else default_cache()
    try:
        with output_lock.held(out.parent, name=f".{out.name}.lock"):
            if is_finished(out):  # a run that held the lock finished it between our first look and now
                return {**json.loads((out / DONE_FILE).read_text(encoding="utf-8")), "built": False}
            _remove_stale_temporaries(out)
            packages = []
            for voice in VOICES:
                path = fetch_package(voice.package, cache)
                packages.append(read_package(voice, path))
                log(f"{voice.package} {packages[-1].version}: {len(packages[-1].prompts)} prompts ({path})")
            clips = screen(packages)
            check_coverage([c for c in clips if c.reason is None])
            folder = out.parent / (atomic.tmp_prefix(out.name) + atomic.temporary_suffix())
            folder.mkdir()
            try:
                summary = write_corpus(folder, packages, clips)
                os.replace(folder, out)  # an empty `out` folder is replaced; anything else was refused above
            finally:
                if folder.exists():
                    shutil.rmtree(folder, ignore_errors=True)
    except output_lock.OutputLockError as err:
        raise CorpusError(str(err)) from None
    except OSError as err:  # the lock file, the temporary folder, the metadata or the final rename
        raise CorpusError(f"building {out} failed: {err.strerror or err} ({err.filename or out})") from None
    return {**summary, "built": True}


# ------------------------------------------------------------------------------------------------ reading


def manifest_entries(corpus: str | os.PathLike, workers: int = 8) -> list[dict]:
    """Manifest rows (manifest.ENTRY_KEYS, sorted by id) of a finished corpus with its fixed split; checked against
    its utterances.jsonl, so a corpus with files added, lost or unreadable is refused instead of mis-split.
    Combine with other corpora through manifest.combine (ids 601-…, 602-…, 603-… collide with none of the bundled
    corpus' 101-503)."""
    corpus = Path(corpus)
    if not is_finished(corpus):
        raise CorpusError(f"{corpus} is not a finished real corpus (no {DONE_FILE}); build it with "
                          "scripts/make_corpus.py --source asterisk --out DIR")
    try:
        entries, rejects = manifest.scan(corpus, split_by="utterance", valid_fraction=VALID_FRACTION,
                                         test_fraction=TEST_FRACTION, workers=workers)
    except manifest.ManifestError as err:
        raise CorpusError(f"{corpus}: {err}") from None
    try:
        rows = [json.loads(line) for line in (corpus / UTTERANCES_FILE).read_text(encoding="utf-8").splitlines()]
        recorded = {row["id"]: row["split"] for row in rows}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorpusError(f"{corpus / UTTERANCES_FILE} is missing or damaged ({err}); rebuild the corpus into an "
                          "empty folder") from None
    found = {entry["id"]: entry["split"] for entry in entries}
    if rejects or found != recorded:
        missing, extra = sorted(set(recorded) - set(found)), sorted(set(found) - set(recorded))
        moved = sorted(k for k in set(found) & set(recorded) if found[k] != recorded[k])
        raise CorpusError(f"{corpus} no longer matches its {UTTERANCES_FILE}: {len(missing)} missing or unreadable, "
                          f"{len(extra)} unexpected, {len(moved)} in another split (e.g. "
                          f"{(missing + extra + moved)[:1] or rejects[:1]}); rebuild it into an empty folder")
    return entries
