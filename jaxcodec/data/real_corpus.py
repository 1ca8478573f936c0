"""Real human speech for training: three Debian Asterisk voice-prompt packages (G.722, 16 kHz) decoded into a
LibriSpeech-shaped corpus with a fixed train/valid/test split.

    from jaxcodec.data import real_corpus
    summary = real_corpus.build("/data/real_corpus")          # fetch, decode, screen, split, write; idempotent
    entries = real_corpus.manifest_entries("/data/real_corpus")  # manifest rows with the corpus' split
    rows = manifest.combine(bundled_entries, entries)          # one manifest with the synthetic corpus

or `scripts/make_corpus.py --source asterisk --out DIR [--cache DIR]`. numpy + soundfile (+ the `G722` decoder,
extra `corpus`); no jax, no torch.

Sources, exactly these three (VOICES): asterisk-core-sounds-{fr,it,ru}-g722, each one professional voice reading
~25 min of telephone prompts (studio recordings; no transcripts, the prompt names are kept). Every other Asterisk
voice package is reserved for an independent evaluation: `fetch_package` refuses any other name before apt-get
runs, and only these three names are looked for in the cache folder.

Steps. (1) Fetch: a `PACKAGE_*.deb` already in the cache folder is used as it is, else `apt-get download` fetches
it there (no root); each .deb's version and sha256 are recorded. (2) Read the .deb in memory (debian_package.py:
ar + tarfile, unsafe paths refused) and check its copyright file still grants the licence recorded here. (3)
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

from jaxcodec import atomic, audio, output_lock
from jaxcodec.data import debian_package, manifest, real_corpus_readme, tone_detector

SAMPLE_RATE = audio.SAMPLE_RATE  # 16 kHz: G.722's rate, and the codec's
G722_BITRATE = 64_000  # Asterisk's .g722 files are raw G.722 mode 1 (64 kbit/s), no header
SAMPLES_PER_BYTE = 2  # 64 kbit/s = 8000 bytes/s for 16 000 samples/s: a decoder disagreeing is a rate mix-up
SOUNDS_ROOT = "usr/share/asterisk/sounds"
PROMPT_SUFFIX = ".g722"
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
CACHE_ENV = "JAXCODEC_DEB_CACHE"
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


class CorpusError(RuntimeError):
    """The real corpus cannot be fetched, read or written; the message is one line saying what to do."""


@dataclasses.dataclass(frozen=True)
class Voice:
    speaker: int  # LibriSpeech-style id; the bundled synthetic corpus uses 101-503
    package: str  # Debian binary package
    folder: str  # the voice's folder under usr/share/asterisk/sounds/
    name: str  # who the copyright file credits
    language: str  # BCP 47
    language_name: str
    gender: str  # F | M: the voice as the folder name states it (fr_CA_f_..., it_IT_m_..., ru_RU_f_...)
    licence: str  # SPDX id, as the package's copyright file states it for `copyright_files`
    copyright_files: str  # the copyright file's `Files:` pattern that covers this voice
    credit: str  # the CREDITS text the copyright file quotes, condensed


# Checked against usr/share/doc/PACKAGE/copyright of version 1.6.1-1 (one file shared by the three packages);
# read_package() checks the licence again in whatever version it is given.
VOICES = (
    Voice(601, "asterisk-core-sounds-fr-g722", "fr_CA_f_June", "June Wallack", "fr-CA", "French (Canada)", "F",
          "CC-BY-SA-3.0", "fr-*",
          "Copyright 2006-2008 June Wallack. Recorded by June Wallack (http://www.junewallack.com); translated into "
          "French by Clod Patry, Kristopher Lalletti and June Wallack; financial contributions by Digium, Inc., "
          "Unlimitel and BGM Informatique."),
    Voice(602, "asterisk-core-sounds-it-g722", "it_IT_m_Carlo", "Carlo Flora", "it-IT", "Italian", "M",
          "CC-BY-3.0", "it-*",
          "Copyright 2012 Carlo Flora (http://www.segreterietelefoniche.it). Recorded by Carlo Flora "
          "(http://www.carloflora.com); translated by Silvia Petrin from the English text distributed by Digium."),
    Voice(603, "asterisk-core-sounds-ru-g722", "ru_RU_f_IvrvoiceRU", "Maxim Topal / ivrvoice.ru", "ru-RU", "Russian",
          "F", "CC-BY-3.0", "ru-*",
          "Copyright 2010 Maxim. Provided by Maxim Topal (http://www.ivrvoice.ru); the voice is a woman's, "
          "not named."),
)
PACKAGES = tuple(voice.package for voice in VOICES)


@dataclasses.dataclass
class Package:
    voice: Voice
    path: Path  # the .deb
    version: str
    sha256: str
    source: str  # Debian source package (for the archive URL)
    copyright: str  # usr/share/doc/PACKAGE/copyright
    prompts: dict[str, bytes]  # prompt name ("digits/5", "vm-deleted") → G.722 bytes, sorted by name


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


# --------------------------------------------------------------------------------------------------- fetching


def default_cache() -> Path:
    """$JAXCODEC_DEB_CACHE, else $XDG_CACHE_HOME/jaxcodec/debian (default ~/.cache/jaxcodec/debian)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxcodec" / "debian"


def check_package_name(name: str) -> Voice:
    for voice in VOICES:
        if voice.package == name:
            return voice
    raise CorpusError(f"{name!r} is not one of the corpus packages ({', '.join(PACKAGES)}); the other Asterisk "
                      "voices are reserved for evaluation and never fetched here")


def fetch_package(name: str, cache: str | os.PathLike) -> Path:
    """The .deb of one of the three packages: the one in `cache` (NAME_*.deb), else downloaded there by apt-get."""
    check_package_name(name)
    cache = Path(cache)
    found = sorted(cache.glob(f"{name}_*.deb"))
    if len(found) > 1:
        raise CorpusError(f"{len(found)} versions of {name} in {cache} ({', '.join(p.name for p in found)}): "
                          "keep one")
    if found:
        return found[0]
    try:
        return debian_package.apt_download(name, cache)
    except debian_package.PackageError as err:
        raise CorpusError(f"{err}; on a machine without apt or network, copy {name}_*.deb (Debian's archive, "
                          f"pool/main/a/asterisk-core-sounds/) into {cache}") from None


def _copyright_path(voice: Voice) -> str:
    return f"usr/share/doc/{voice.package}/copyright"


def check_licence(voice: Voice, copyright_text: str) -> None:
    """The copyright file must still grant voice.licence for voice.copyright_files (deb822 paragraphs)."""
    for paragraph in copyright_text.split("\n\n"):
        fields = debian_package.parse_control(paragraph)
        if voice.copyright_files in fields.get("Files", "").split():
            if fields.get("License", "").split("\n")[0].strip() == voice.licence:
                return
            raise CorpusError(f"{voice.package}'s copyright file gives {voice.copyright_files} the licence "
                              f"{fields.get('License')!r}, not {voice.licence}: check it before using the voice")
    raise CorpusError(f"{voice.package}'s copyright file has no 'Files: {voice.copyright_files}' paragraph: "
                      "check the voice's licence before using it")


def read_package(voice: Voice, path: Path) -> Package:
    """The prompts, version and copyright of one voice's .deb; a damaged or unexpected package → CorpusError."""
    prefix = f"{SOUNDS_ROOT}/{voice.folder}/"
    wanted = lambda p: (p.startswith(prefix) and p.endswith(PROMPT_SUFFIX)) or p == _copyright_path(voice)
    remedy = f"delete {path} and run again to download it afresh"
    try:
        contents = debian_package.read_deb(path, wanted)
    except debian_package.PackageError as err:
        raise CorpusError(f"{path.name}: {err}; {remedy}") from None
    if contents.control.get("Package") != voice.package:
        raise CorpusError(f"{path.name} holds package {contents.control.get('Package')!r}, not {voice.package}; "
                          f"{remedy}")
    copyright_bytes = contents.files.pop(_copyright_path(voice), None)
    if copyright_bytes is None:
        raise CorpusError(f"{path.name} has no {_copyright_path(voice)}: its licence cannot be checked; {remedy}")
    copyright_text = copyright_bytes.decode("utf-8", "replace")
    check_licence(voice, copyright_text)
    prompts = {p[len(prefix):-len(PROMPT_SUFFIX)]: data for p, data in sorted(contents.files.items())}
    if not prompts:
        raise CorpusError(f"{path.name} holds no {PROMPT_SUFFIX} prompts under {prefix}; {remedy}")
    return Package(voice, path, contents.control.get("Version", "?"), debian_package.sha256(path),
                   contents.control.get("Source", voice.package).split()[0], copyright_text, prompts)


# ----------------------------------------------------------------------------------------- decoding, screening


def decode_g722(data: bytes) -> np.ndarray:
    """Raw G.722 at 64 kbit/s → 16 kHz int16 samples (a fresh decoder state: each file is its own bitstream)."""
    try:
        from G722 import G722
    except ImportError:
        raise CorpusError("the G.722 decoder is not installed: pip install -e '.[corpus]' (or G722==1.2.8)") from None
    pcm = np.array(G722(SAMPLE_RATE, G722_BITRATE).decode(data), dtype=np.int16)
    if len(pcm) != SAMPLES_PER_BYTE * len(data):
        raise CorpusError(f"the G.722 decoder returned {len(pcm)} samples for {len(data)} bytes, not "
                          f"{SAMPLES_PER_BYTE} per byte: a different G722 package version? (pinned: 1.2.8)")
    return pcm


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
    recorded = {}
    for line in (corpus / UTTERANCES_FILE).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        recorded[row["id"]] = row["split"]
    found = {entry["id"]: entry["split"] for entry in entries}
    if rejects or found != recorded:
        missing, extra = sorted(set(recorded) - set(found)), sorted(set(found) - set(recorded))
        moved = sorted(k for k in set(found) & set(recorded) if found[k] != recorded[k])
        raise CorpusError(f"{corpus} no longer matches its {UTTERANCES_FILE}: {len(missing)} missing or unreadable, "
                          f"{len(extra)} unexpected, {len(moved)} in another split (e.g. "
                          f"{(missing + extra + moved)[:1] or rejects[:1]}); rebuild it into an empty folder")
    return entries
