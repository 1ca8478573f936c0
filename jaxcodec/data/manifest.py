"""The corpus manifest: one JSON line per utterance (id, path, duration, rate, speaker, transcript, split), the
contract between a directory of audio and everything downstream (teachers' precompute, training, evaluation).

`jaxcodec manifest DIR -o manifest.jsonl` scans DIR recursively, reads only audio headers (in a thread pool, so
LibriSpeech's 280k files take seconds, not hours), and writes the manifest plus `manifest.rejects.jsonl` listing
every file it could not use and why. No jax, no torch: this runs on any machine that holds the audio.

Speakers come from a regex over the path relative to DIR (named group `speaker`, optionally `chapter`). The
default matches LibriSpeech/LibriTTS `SPEAKER/CHAPTER/file` with numeric directory names; a file it does not match
takes its parent directory's name as speaker and no chapter (VCTK's `wav48/p225/p225_001.wav` → speaker p225).

Splits are deterministic. By speaker (default) or utterance, a key (speaker or id) hashes to u in [0, 1):
u < test_fraction → test, u < test_fraction + valid_fraction → valid, else train. The split depends on the key
alone, never on the rest of the corpus, so adding files or speakers never moves an existing utterance between
splits; raising a fraction only moves keys into the enlarged split. Speakers named with `valid_speakers` /
`test_speakers` override the hash (small corpora, where a hash might leave a split empty). By path, the split
comes from a directory name (LibriSpeech's train-clean-100, dev-clean, test-other, ...).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from jaxcodec import atomic, audio

# SPEAKER/CHAPTER/file, both numeric (LibriSpeech, LibriTTS). Numeric so that an arbitrary corpus such as
# `wav48/p225/x.wav` falls through to the parent-directory rule instead of making "wav48" its only speaker.
LIBRISPEECH_PATTERN = r"(?:^|/)(?P<speaker>\d+)/(?P<chapter>\d+)/[^/]+$"
SPLITS = ("train", "valid", "test")
SPLIT_BY = ("speaker", "utterance", "path")
ID_FROM = ("stem", "path")
# A directory naming a split (split_by="path"): its name starts with one of these (case-insensitive).
PATH_SPLIT_PREFIXES = (("train", "train"), ("dev", "valid"), ("valid", "valid"), ("test", "test"))
ENTRY_KEYS = ("id", "path", "duration", "frames", "sample_rate", "channels", "speaker", "chapter", "text", "split")
REQUIRED_KEYS = ("id", "path", "duration", "sample_rate", "split")
DURATION_DECIMALS = 4  # 0.1 ms: finer than any sample period a speech corpus uses
TRANS_SUFFIX = ".trans.txt"  # LibriSpeech: SPEAKER-CHAPTER.trans.txt, lines "UTTERANCE_ID TEXT"
SIDECAR_SUFFIX = ".txt"  # <stem>.txt next to the audio: the whole file is the transcript
REJECTS_SUFFIX = ".rejects.jsonl"
HEADER_CHUNK = 64  # files per thread-pool task: small enough to balance 8 workers, large enough to keep few futures
HASH_BYTES = 8  # 64 bits of sha256: the split hash's resolution is 2**-64


class ManifestError(ValueError):
    """A manifest that cannot be built or read as asked; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class _Planned:
    """What the path alone decides, known before any header is read (so option errors fail fast)."""

    path: Path
    id: str
    speaker: str
    chapter: str | None
    split: str


# --------------------------------------------------------------------------------------------------- splits


def hash_unit(key: str) -> float:
    """A key's stable position in [0, 1): the first 64 bits of its sha256, over 2**64."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:HASH_BYTES], "big") / 2.0**64


def assign_split(key: str, valid_fraction: float, test_fraction: float) -> str:
    """The split of one key (a speaker or an utterance id); depends on nothing but the key and the fractions."""
    u = hash_unit(key)
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def split_from_path(relative: str) -> str | None:
    """The split named by the outermost directory of `relative` that starts with train/dev/valid/test."""
    for part in relative.split("/")[:-1]:
        lowered = part.lower()
        for prefix, split in PATH_SPLIT_PREFIXES:
            if lowered.startswith(prefix):
                return split
    return None


def _check_split_options(split_by: str, valid_fraction: float, test_fraction: float,
                         valid_speakers: Sequence[str], test_speakers: Sequence[str]) -> None:
    if split_by not in SPLIT_BY:
        raise ManifestError(f"split_by must be one of {', '.join(SPLIT_BY)}, not {split_by!r}")
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ManifestError(f"{name} must be a number >= 0, not {value!r}")
    if valid_fraction + test_fraction >= 1:
        raise ManifestError(f"valid_fraction + test_fraction must be < 1 (training needs data), "
                            f"got {valid_fraction} + {test_fraction}")
    both = sorted(set(valid_speakers) & set(test_speakers))
    if both:
        raise ManifestError(f"speaker(s) named both valid and test: {', '.join(both)}")
    if split_by == "path" and (valid_speakers or test_speakers):
        raise ManifestError("valid/test speakers apply to split_by speaker or utterance; "
                            "with split_by path the directories decide")


# ------------------------------------------------------------------------------------------------- scanning


def find_files(root: str | os.PathLike, suffixes: Sequence[str] = audio.EXTENSIONS) -> tuple[list[Path], list[dict]]:
    """(files under `root` with one of `suffixes` (any case), sorted by relative path; the folders that could not
    be listed, as rejects {"path", "reason", "kind": "folder"}): an unreadable folder is reported, never silently
    left out. Hidden files and directories (names starting with '.', including our temporary files) are skipped.
    Symlinked directories are followed (corpora are often assembled from links), each real directory once."""
    root = Path(root)
    seen_dirs: set[str] = set()
    found: list[tuple[str, Path]] = []
    unreadable: list[dict] = []

    def report(err: OSError) -> None:
        unreadable.append({"path": str(err.filename), "kind": "folder",
                           "reason": f"folder not readable ({err.strerror or err}): the files in it are not listed"})

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=report):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink cycle or a second link to a directory already scanned
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in suffixes:
                path = Path(dirpath, name)
                found.append((path.relative_to(root).as_posix(), path))
    found.sort()
    return [path for _, path in found], sorted(unreadable, key=lambda reject: reject["path"])


def _compile_pattern(speaker_pattern: str) -> re.Pattern:
    try:
        pattern = re.compile(speaker_pattern)
    except re.error as err:
        raise ManifestError(f"speaker pattern {speaker_pattern!r} is not a valid regex: {err}") from None
    if "speaker" not in pattern.groupindex:
        raise ManifestError(f"speaker pattern {speaker_pattern!r} needs a named group (?P<speaker>...)")
    return pattern


def _speaker_chapter(relative: str, pattern: re.Pattern, root: Path) -> tuple[str, str | None]:
    match = pattern.search(relative)
    if match and match.group("speaker"):
        return match.group("speaker"), match.groupdict().get("chapter") or None
    parts = relative.split("/")
    # No match: the parent directory names the speaker (a file directly under root: root's own name).
    return (parts[-2] if len(parts) > 1 else root.name), None


def _plan(root: Path, files: list[Path], pattern: re.Pattern, split_by: str, id_from: str,
          valid_fraction: float, test_fraction: float, fixed_splits: dict[str, str]) -> list[_Planned]:
    planned = []
    for path in files:
        relative = path.relative_to(root).as_posix()
        utterance_id = path.stem if id_from == "stem" else os.path.splitext(relative)[0]
        speaker, chapter = _speaker_chapter(relative, pattern, root)
        if split_by == "path":
            split = split_from_path(relative)
            if split is None:
                raise ManifestError(f"split_by path: no directory in {relative!r} names a split (expected one "
                                    "starting with train, dev, valid or test, e.g. LibriSpeech's train-clean-100)")
        elif speaker in fixed_splits:
            split = fixed_splits[speaker]
        else:
            key = speaker if split_by == "speaker" else utterance_id
            split = assign_split(key, valid_fraction, test_fraction)
        planned.append(_Planned(path, utterance_id, speaker, chapter, split))
    return planned


def _check_unique_ids(planned: list[_Planned], id_from: str) -> None:
    first: dict[str, Path] = {}
    collisions = []
    for item in planned:
        if item.id in first:
            collisions.append((item.id, first[item.id], item.path))
        else:
            first[item.id] = item.path
    if not collisions:
        return
    utterance_id, a, b = collisions[0]
    fix = ("use --id-from path (ids from relative paths)" if id_from == "stem"
           else "rename or remove one of them (same name, different extension?)")
    raise ManifestError(f"{len(collisions)} duplicate id(s), e.g. {utterance_id!r} from both {a} and {b}; {fix}")


def _check_named_speakers(planned: list[_Planned], fixed_splits: dict[str, str]) -> None:
    """A misspelt speaker would otherwise silently fall back to the hash."""
    missing = sorted(set(fixed_splits) - {item.speaker for item in planned})
    if missing:
        raise ManifestError(f"valid/test speaker(s) not found in the corpus: {', '.join(missing)}")


def _probe(path: Path) -> audio.AudioInfo | str:
    """A header, or the reason the file cannot be used (one bad file never stops a 280k-file scan)."""
    try:
        return audio.info(path)
    except audio.AudioError as err:
        return str(err)
    except OSError as err:  # e.g. permission denied while checking a WAV's data chunk
        return f"cannot read: {err.strerror or err}"


def _probe_chunk(paths: list[Path]) -> list[audio.AudioInfo | str]:
    return [_probe(path) for path in paths]


def _read_headers(paths: list[Path], workers: int, progress: bool) -> list[audio.AudioInfo | str]:
    # Header reads are I/O-bound and libsndfile releases the GIL: threads overlap the disk latency. Files go to the
    # pool in chunks: one future per file would cost ~1.6 kB each, ~450 MB for LibriSpeech.
    chunks = [paths[i:i + HEADER_CHUNK] for i in range(0, len(paths), HEADER_CHUNK)]
    results: list[audio.AudioInfo | str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="file", desc="reading headers")
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for chunk_results in pool.map(_probe_chunk, chunks):  # map keeps the input order
            results.extend(chunk_results)
            if bar is not None:
                bar.update(len(chunk_results))
    if bar is not None:
        bar.close()
    return results


class _Transcripts:
    """LibriSpeech `*.trans.txt` first (each file read once per directory), then a `<stem>.txt` side-car."""

    def __init__(self) -> None:
        self._by_dir: dict[Path, dict[str, str]] = {}

    def find(self, audio_path: Path) -> str | None:
        directory = audio_path.parent
        if directory not in self._by_dir:
            self._by_dir[directory] = self._load_trans(directory)
        text = self._by_dir[directory].get(audio_path.stem)
        if text is None:
            sidecar = audio_path.with_name(audio_path.stem + SIDECAR_SUFFIX)
            if sidecar.is_file():
                text = " ".join(_read_text(sidecar).split())
        return text or None

    @staticmethod
    def _load_trans(directory: Path) -> dict[str, str]:
        texts: dict[str, str] = {}
        for trans in sorted(directory.glob("*" + TRANS_SUFFIX)):
            for line in _read_text(trans).splitlines():
                fields = line.split(maxsplit=1)
                if fields:
                    texts[fields[0]] = " ".join(fields[1].split()) if len(fields) > 1 else ""
        return texts


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        # A wrong transcript is worse than none; the user converts the file (e.g. iconv -f latin1 -t utf-8).
        raise ManifestError(f"transcript {path} is not UTF-8 ({err.reason} at byte {err.start})") from None


def _entry(item: _Planned, header: audio.AudioInfo, text: str | None) -> dict:
    values = {
        "id": item.id,
        "path": str(item.path),
        "duration": round(header.duration, DURATION_DECIMALS),
        "frames": header.frames,
        "sample_rate": header.sample_rate,
        "channels": header.channels,
        "speaker": item.speaker,
        "chapter": item.chapter,
        "text": text,
        "split": item.split,
    }
    return {key: values[key] for key in ENTRY_KEYS}


def scan(root: str | os.PathLike, *, speaker_pattern: str = LIBRISPEECH_PATTERN, split_by: str = "speaker",
         valid_fraction: float = 0.05, test_fraction: float = 0.05, valid_speakers: Iterable[str] = (),
         test_speakers: Iterable[str] = (), id_from: str = "stem", workers: int = 8,
         progress: bool = False) -> tuple[list[dict], list[dict]]:
    """Scans `root` into (entries sorted by id, rejects sorted by path); see the module docstring.

    Raises ManifestError for options that cannot work (bad fractions or regex, duplicate ids, unknown named
    speakers, no split directory under split_by="path", no audio at all) before any header is read.
    """
    valid_speakers, test_speakers = tuple(valid_speakers), tuple(test_speakers)
    _check_split_options(split_by, valid_fraction, test_fraction, valid_speakers, test_speakers)
    if id_from not in ID_FROM:
        raise ManifestError(f"id_from must be one of {', '.join(ID_FROM)}, not {id_from!r}")
    if workers < 1:
        raise ManifestError(f"workers must be >= 1, not {workers}")
    pattern = _compile_pattern(speaker_pattern)
    root = Path(root).absolute()  # absolute, but symlinks kept: the path the user chose for the corpus
    if not root.is_dir():
        raise ManifestError(f"not a directory: {root}")

    files, unreadable = find_files(root)
    if not files:
        unlisted = f"; {len(unreadable)} folders could not be read, e.g. {unreadable[0]['path']}" if unreadable else ""
        raise ManifestError(f"no audio files ({', '.join(audio.EXTENSIONS)}) under {root}{unlisted}")
    fixed_splits = {**{s: "valid" for s in valid_speakers}, **{s: "test" for s in test_speakers}}
    planned = _plan(root, files, pattern, split_by, id_from, valid_fraction, test_fraction, fixed_splits)
    _check_unique_ids(planned, id_from)
    _check_named_speakers(planned, fixed_splits)

    headers = _read_headers(files, workers, progress)
    transcripts = _Transcripts()
    entries, rejects = [], list(unreadable)
    for item, header in zip(planned, headers, strict=True):
        if isinstance(header, str):
            rejects.append({"path": str(item.path), "reason": header})
        elif round(header.duration, DURATION_DECIMALS) <= 0:
            reason = f"zero duration ({header.frames} frames at {header.sample_rate} Hz)"
            rejects.append({"path": str(item.path), "reason": reason})
        else:
            entries.append(_entry(item, header, transcripts.find(item.path)))
    entries.sort(key=lambda entry: entry["id"])
    return entries, rejects


# ------------------------------------------------------------------------------------------ writing, reading


def rejects_path(out_path: str | os.PathLike) -> Path:
    """`manifest.jsonl` → `manifest.rejects.jsonl`."""
    out_path = Path(out_path)
    stem = out_path.name.removesuffix(".jsonl")
    return out_path.with_name(stem + REJECTS_SUFFIX)


def write(entries: Sequence[dict], rejects: Sequence[dict], out_path: str | os.PathLike) -> Path | None:
    """Writes the manifest (JSON lines) and, when there are rejects, the rejects file beside it; a stale
    rejects file from an earlier run is removed. Returns the rejects path, or None."""
    out_path = Path(out_path)
    atomic.write_jsonl(out_path, entries)
    rejected = rejects_path(out_path)
    if rejects:
        atomic.write_jsonl(rejected, rejects)
        return rejected
    rejected.unlink(missing_ok=True)
    return None


def _problem(entry: object) -> str | None:
    """What is wrong with one parsed manifest line, or None."""
    if not isinstance(entry, dict):
        return f"expected a JSON object, got {type(entry).__name__}"
    missing = [key for key in REQUIRED_KEYS if key not in entry]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    for key in ("id", "path"):
        if not isinstance(entry[key], str) or not entry[key]:
            return f"{key} must be a non-empty string, got {entry[key]!r}"
    duration = entry["duration"]
    if isinstance(duration, bool) or not isinstance(duration, int | float) or not (0 < duration < math.inf):
        return f"duration must be a positive number of seconds, got {duration!r}"
    rate = entry["sample_rate"]
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        return f"sample_rate must be a positive integer, got {rate!r}"
    if entry["split"] not in SPLITS:
        return f"split must be one of {', '.join(SPLITS)}, got {entry['split']!r}"
    return None


def read(path: str | os.PathLike) -> list[dict]:
    """Reads and validates a manifest; raises ManifestError("FILE:LINE: what is wrong")."""
    path = Path(path)
    try:
        raw_lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    entries: list[dict] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():  # a trailing newline or a blank line carries nothing
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ManifestError(f"{path}:{number}: not UTF-8 ({err.reason})") from None
        except json.JSONDecodeError as err:
            raise ManifestError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
        problem = _problem(entry)
        if problem is None and entry["id"] in first_line:
            problem = f"duplicate id {entry['id']!r} (first on line {first_line[entry['id']]})"
        if problem:
            raise ManifestError(f"{path}:{number}: {problem}")
        first_line[entry["id"]] = number
        entries.append(entry)
    return entries


def summary(entries: Sequence[dict]) -> str:
    """A few lines a user reads after a scan: totals, then utterances, hours and speakers per split."""
    def line(label: str, group: Sequence[dict]) -> str:
        hours = sum(e["duration"] for e in group) / 3600
        speakers = len({e.get("speaker") for e in group})
        return f"{label}: {len(group)} utterances, {hours:.2f} h, {speakers} speakers"

    by_split = {split: [e for e in entries if e["split"] == split] for split in SPLITS}
    rates = sorted({e["sample_rate"] for e in entries})
    lines = [line("total", entries), *(line(f"  {split}", by_split[split]) for split in SPLITS),
             f"sample rates: {', '.join(f'{r} Hz' for r in rates) or 'none'}"]
    empty = [split for split in ("valid", "test") if not by_split[split]]
    if entries and empty:
        lines.append(f"note: no {' or '.join(empty)} utterances; name speakers with --valid-speakers/--test-speakers "
                     "or raise the fractions")
    return "\n".join(lines)


def combine(*groups: Sequence[dict]) -> list[dict]:
    """Several corpora's entries as one manifest, sorted by id (e.g. the bundled synthetic corpus and the real
    one); raises ManifestError when an id occurs twice, naming both files."""
    first: dict[str, dict] = {}
    for group in groups:
        for entry in group:
            if entry["id"] in first:
                raise ManifestError(f"id {entry['id']!r} is in two corpora: {first[entry['id']]['path']} and "
                                    f"{entry['path']}; give one of them other ids")
            first[entry["id"]] = entry
    return sorted(first.values(), key=lambda entry: entry["id"])
