"""The manifest on small corpora written here: what it records (checked against the values the clips were written
with), how it splits (checked against sha256 computed here), what it rejects, and its files on disk."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxcodec.commands import manifest as manifest_command
from jaxcodec.data import manifest
from jaxcodec.data.manifest import ManifestError


def write_clip(path: Path, frames: int, sample_rate: int, channels: int = 1, seed: int = 0) -> Path:
    """A noise clip of exactly `frames` frames (the header values the manifest must report)."""
    rng = np.random.default_rng(seed)
    data = 0.1 * rng.standard_normal((frames, channels)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sample_rate)
    return path


def write_librispeech(root: Path) -> None:
    """train-clean-100 (speakers 19, 26), dev-clean (84), test-clean (61), in LibriSpeech's layout."""
    chapters = {
        "train-clean-100/19/198": {"19-198-0000": ("NORTHANGER ABBEY", 8_000), "19-198-0001": ("CHAPTER ONE", 4_000)},
        "train-clean-100/26/495": {"26-495-0000": ("NO ONE WHO HAD EVER SEEN", 4_800)},
        "dev-clean/84/121123": {"84-121123-0000": ("GO DO YOU HEAR", 3_200)},
        "test-clean/61/70968": {"61-70968-0000": ("HE BEGAN A CONFUSED COMPLAINT", 6_400)},
    }
    for directory, utterances in chapters.items():
        speaker, chapter = directory.split("/")[-2:]
        lines = []
        for i, (utterance_id, (text, frames)) in enumerate(utterances.items()):
            write_clip(root / directory / f"{utterance_id}.flac", frames, 16_000, seed=i)
            lines.append(f"{utterance_id} {text}\n")
        (root / directory / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))


def write_speakers(root: Path, speakers, per_speaker: int = 2) -> None:
    """Flat corpus root/SPEAKER/SPEAKER_i.wav, tiny 8 kHz clips (the split tests need many files, fast)."""
    for speaker in speakers:
        for i in range(per_speaker):
            write_clip(root / speaker / f"{speaker}_{i}.wav", 800, 8_000, seed=i)


def by_id(entries):
    return {entry["id"]: entry for entry in entries}


# ------------------------------------------------------------------------------------------- what is recorded


def test_librispeech_layout(tmp_path):
    root = tmp_path / "LibriSpeech"
    write_librispeech(root)
    entries, rejects = manifest.scan(root, split_by="path")
    assert rejects == []
    assert [e["id"] for e in entries] == sorted(["19-198-0000", "19-198-0001", "26-495-0000", "84-121123-0000",
                                                 "61-70968-0000"])
    first = by_id(entries)["19-198-0000"]
    assert list(first) == list(manifest.ENTRY_KEYS)
    assert first == {
        "id": "19-198-0000",
        "path": str(root.absolute() / "train-clean-100/19/198/19-198-0000.flac"),
        "duration": 0.5,  # 8000 frames / 16 kHz
        "frames": 8_000,
        "sample_rate": 16_000,
        "channels": 1,
        "speaker": "19",
        "chapter": "198",
        "text": "NORTHANGER ABBEY",
        "split": "train",
    }
    entries = by_id(entries)
    assert entries["19-198-0001"]["text"] == "CHAPTER ONE"
    assert entries["19-198-0001"]["duration"] == 0.25
    assert (entries["26-495-0000"]["speaker"], entries["26-495-0000"]["chapter"]) == ("26", "495")
    assert entries["61-70968-0000"]["text"] == "HE BEGAN A CONFUSED COMPLAINT"
    assert {i: e["split"] for i, e in entries.items()} == {
        "19-198-0000": "train", "19-198-0001": "train", "26-495-0000": "train",
        "84-121123-0000": "valid", "61-70968-0000": "test"}


def test_own_corpus_sidecar_transcripts_rates_channels(tmp_path):
    write_clip(tmp_path / "spkA" / "a1.wav", 4_410, 22_050, channels=2)
    (tmp_path / "spkA" / "a1.txt").write_text("  bonjour,\n\tcafé  crème \n", encoding="utf-8")
    write_clip(tmp_path / "spkB" / "b1.WAV", 48_000, 48_000)  # upper-case extension, no transcript
    write_clip(tmp_path / "spkB" / ".b2.wav", 800, 8_000)  # hidden: skipped
    write_clip(tmp_path / ".cache" / "c1.wav", 800, 8_000)  # hidden directory: skipped
    (tmp_path / "spkB" / "notes.md").write_text("not audio, not scanned")
    entries, rejects = manifest.scan(tmp_path, test_fraction=0, valid_fraction=0)
    assert rejects == []
    entries = by_id(entries)
    assert sorted(entries) == ["a1", "b1"]
    a1, b1 = entries["a1"], entries["b1"]
    assert (a1["frames"], a1["sample_rate"], a1["channels"], a1["duration"]) == (4_410, 22_050, 2, 0.2)
    assert (b1["frames"], b1["sample_rate"], b1["channels"], b1["duration"]) == (48_000, 48_000, 1, 1.0)
    assert a1["text"] == "bonjour, café crème"  # whitespace collapsed
    assert b1["text"] is None
    # The default pattern wants numeric SPEAKER/CHAPTER directories; otherwise the parent directory is the speaker.
    assert (a1["speaker"], a1["chapter"], b1["speaker"], b1["chapter"]) == ("spkA", None, "spkB", None)
    assert a1["split"] == b1["split"] == "train"


def test_headers_stay_with_their_files_across_pool_chunks(tmp_path):
    count = 2 * manifest.HEADER_CHUNK + 7
    for i in range(count):  # each file's length identifies it
        write_clip(tmp_path / "s" / f"u{i:03d}.wav", 100 + i, 8_000)
    write_clip(tmp_path / "top.wav", 100, 8_000)  # directly under root: root's name is the speaker
    entries, _ = manifest.scan(tmp_path, workers=3)
    entries = by_id(entries)
    assert [entries[f"u{i:03d}"]["frames"] for i in range(count)] == [100 + i for i in range(count)]
    assert entries["top"]["speaker"] == tmp_path.name


def test_custom_speaker_pattern(tmp_path):
    write_clip(tmp_path / "wav48" / "p225_001.wav", 800, 8_000)
    entries, _ = manifest.scan(tmp_path, speaker_pattern=r"(?P<speaker>p\d+)_\d+\.wav$")
    assert entries[0]["speaker"] == "p225"
    with pytest.raises(ManifestError, match="speaker"):
        manifest.scan(tmp_path, speaker_pattern=r"(p\d+)")


def test_rejects_keep_the_reason_and_the_readable_files(tmp_path):
    write_clip(tmp_path / "s" / "good.wav", 1_600, 16_000)
    (tmp_path / "s" / "empty.wav").write_bytes(b"")
    (tmp_path / "s" / "text.wav").write_bytes(b"this is a text file, not a RIFF header\n" * 4)
    truncated = write_clip(tmp_path / "s" / "cut.wav", 16_000, 16_000)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    write_clip(tmp_path / "s" / "tiny.wav", 1, 48_000)  # 21 µs: 0.0 s at the manifest's 0.1 ms resolution
    entries, rejects = manifest.scan(tmp_path)
    assert [e["id"] for e in entries] == ["good"]
    reasons = {Path(r["path"]).name: r["reason"] for r in rejects}
    assert sorted(reasons) == ["cut.wav", "empty.wav", "text.wav", "tiny.wav"]  # rejects sorted by path
    assert "empty" in reasons["empty.wav"]
    assert "not readable" in reasons["text.wav"]
    assert "truncated" in reasons["cut.wav"]
    assert "zero duration" in reasons["tiny.wav"]


# ---------------------------------------------------------------------------------------------------- splits


def test_hash_unit_is_sha256_prefix():
    digest = hashlib.sha256(b"84").hexdigest()
    assert manifest.hash_unit("84") == int(digest[:16], 16) / 2**64
    u = manifest.hash_unit("84")
    assert manifest.assign_split("84", valid_fraction=0.0, test_fraction=u + 1e-9) == "test"
    assert manifest.assign_split("84", valid_fraction=1e-9 + 1e-12, test_fraction=u - 1e-9) == "valid"
    assert manifest.assign_split("84", valid_fraction=0.0, test_fraction=u - 1e-9) == "train"


def test_fractions_roughly_respected():
    keys = [f"speaker-{i}" for i in range(400)]
    counts = {split: 0 for split in manifest.SPLITS}
    for key in keys:
        counts[manifest.assign_split(key, valid_fraction=0.1, test_fraction=0.2)] += 1
    # Binomial(400, p): 4 standard deviations either side.
    assert abs(counts["test"] - 80) <= 4 * np.sqrt(400 * 0.2 * 0.8)
    assert abs(counts["valid"] - 40) <= 4 * np.sqrt(400 * 0.1 * 0.9)
    assert counts["train"] == 400 - counts["test"] - counts["valid"]


@pytest.mark.parametrize("valid, test", [(-0.1, 0.05), (0.5, 0.5), (0.05, float("nan"))])
def test_bad_fractions(tmp_path, valid, test):
    write_speakers(tmp_path, ["s0"], per_speaker=1)
    with pytest.raises(ManifestError, match="fraction"):
        manifest.scan(tmp_path, valid_fraction=valid, test_fraction=test)


SPEAKERS = [f"spk{i:02d}" for i in range(16)]


def test_split_by_speaker_disjoint_deterministic_stable(tmp_path):
    write_speakers(tmp_path, SPEAKERS)
    options = dict(valid_fraction=0.25, test_fraction=0.25)
    entries, _ = manifest.scan(tmp_path, **options)
    splits_of = {}
    for entry in entries:
        splits_of.setdefault(entry["speaker"], set()).add(entry["split"])
        assert entry["split"] == manifest.assign_split(entry["speaker"], 0.25, 0.25)
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert {split for splits in splits_of.values() for split in splits} == set(manifest.SPLITS)
    assert manifest.scan(tmp_path, **options) == (entries, [])

    write_speakers(tmp_path, [f"new{i}" for i in range(8)])  # the corpus grows
    grown, _ = manifest.scan(tmp_path, **options)
    grown = by_id(grown)
    assert len(grown) == len(entries) + 16
    assert all(grown[e["id"]]["split"] == e["split"] for e in entries)


def test_split_by_utterance_follows_the_id(tmp_path):
    write_speakers(tmp_path, SPEAKERS[:4], per_speaker=5)
    entries, _ = manifest.scan(tmp_path, split_by="utterance", valid_fraction=0.3, test_fraction=0.3)
    assert all(e["split"] == manifest.assign_split(e["id"], 0.3, 0.3) for e in entries)


def test_named_speakers_override_the_hash(tmp_path):
    write_speakers(tmp_path, SPEAKERS)
    hashed_train = [s for s in SPEAKERS if manifest.assign_split(s, 0.05, 0.05) == "train"]
    to_test, to_valid = hashed_train[:2], hashed_train[2:3]
    entries, _ = manifest.scan(tmp_path, test_speakers=to_test, valid_speakers=to_valid)
    for entry in entries:
        expected = ("test" if entry["speaker"] in to_test else "valid" if entry["speaker"] in to_valid
                    else manifest.assign_split(entry["speaker"], 0.05, 0.05))
        assert entry["split"] == expected
    with pytest.raises(ManifestError, match="not found.*nobody"):
        manifest.scan(tmp_path, test_speakers=["nobody"])
    with pytest.raises(ManifestError, match="both valid and test"):
        manifest.scan(tmp_path, test_speakers=to_test, valid_speakers=to_test[:1])


def test_split_by_path_needs_a_split_directory(tmp_path):
    write_clip(tmp_path / "train" / "s1" / "a.wav", 800, 8_000)
    write_clip(tmp_path / "misc" / "s2" / "b.wav", 800, 8_000)
    with pytest.raises(ManifestError, match="misc/s2/b.wav"):
        manifest.scan(tmp_path, split_by="path")


# ------------------------------------------------------------------------------------------------------- ids


def test_stem_collision_suggests_id_from_path(tmp_path):
    write_clip(tmp_path / "a" / "x.wav", 800, 8_000)
    write_clip(tmp_path / "b" / "x.wav", 800, 8_000)
    with pytest.raises(ManifestError, match="--id-from path") as raised:
        manifest.scan(tmp_path)
    assert "a/x.wav" in str(raised.value) and "b/x.wav" in str(raised.value)
    entries, _ = manifest.scan(tmp_path, id_from="path")
    assert [(e["id"], e["speaker"]) for e in entries] == [("a/x", "a"), ("b/x", "b")]


# ------------------------------------------------------------------------------------------------ files on disk


def test_write_read_round_trip_atomic(tmp_path):
    corpus = tmp_path / "corpus"
    write_clip(corpus / "s" / "é1.wav", 800, 8_000)
    (corpus / "s" / "é1.txt").write_text("naïve café", encoding="utf-8")
    (corpus / "s" / "bad.wav").write_bytes(b"")
    entries, rejects = manifest.scan(corpus)
    out = tmp_path / "out" / "manifest.jsonl"
    rejected = manifest.write(entries, rejects, out)
    assert rejected == tmp_path / "out" / "manifest.rejects.jsonl"
    assert "naïve café" in out.read_text(encoding="utf-8")  # UTF-8, not \u escapes
    assert manifest.read(out) == entries
    assert [json.loads(line) for line in rejected.read_text().splitlines()] == rejects
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.jsonl", "manifest.rejects.jsonl"]

    assert manifest.write(entries, [], out) is None  # a clean rerun removes the stale rejects file
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.jsonl"]


def valid_line(utterance_id="u1", **changes):
    entry = {"id": utterance_id, "path": "/c/u1.wav", "duration": 1.0, "sample_rate": 16_000, "split": "train"}
    return json.dumps({**entry, **changes})


@pytest.mark.parametrize("bad_line, complaint", [
    ('{"id": "u2", "path": ', "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"id": "u2", "path": "/c/u2.wav", "sample_rate": 16_000, "split": "train"}), "duration"),
    (valid_line("u2", split="holdout"), "split"),
    (valid_line("u2", duration=-1), "duration"),
    (valid_line("u2", sample_rate=16_000.5), "sample_rate"),
    (valid_line("u1"), "duplicate id 'u1' \\(first on line 1\\)"),
])
def test_read_names_the_bad_line(tmp_path, bad_line, complaint):
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join([valid_line("u1"), bad_line, valid_line("u3")]) + "\n")
    with pytest.raises(ManifestError, match=f"manifest.jsonl:2: .*{complaint}"):
        manifest.read(path)


def test_summary_counts(tmp_path):
    entries = [json.loads(valid_line(f"u{i}", speaker=f"s{i % 3}", split=split, duration=1800.0))
               for i, split in enumerate(["train", "train", "train", "valid"])]
    text = manifest.summary(entries)
    assert "total: 4 utterances, 2.00 h, 3 speakers" in text
    assert "train: 3 utterances, 1.50 h, 3 speakers" in text
    assert "valid: 1 utterances, 0.50 h, 1 speakers" in text
    assert "sample rates: 16000 Hz" in text
    assert "no test utterances" in text


# ------------------------------------------------------------------------------------------------------ CLI


def parse(argv):
    parser = argparse.ArgumentParser()
    manifest_command.add_arguments(parser)
    return parser.parse_args(argv)


def test_run_end_to_end(tmp_path, capsys):
    corpus = tmp_path / "LibriSpeech"
    write_librispeech(corpus)
    (corpus / "dev-clean" / "84" / "121123" / "84-121123-0001.flac").write_bytes(b"")
    out = tmp_path / "manifest.jsonl"
    assert manifest_command.main(parse([str(corpus), "-o", str(out), "--split-by", "path", "--workers", "2"])) == 0
    printed = capsys.readouterr().out
    assert "total: 5 utterances" in printed
    assert f"1 files rejected, see {tmp_path / 'manifest.rejects.jsonl'}" in printed
    assert len(manifest.read(out)) == 5

    args = parse([str(corpus), "-o", str(out), "--test-speakers", " 19, 26 ,", "--valid-fraction", "0"])
    assert args.test_speakers == ("19", "26")
    assert manifest_command.main(args) == 0
    assert {e["split"] for e in manifest.read(out) if e["speaker"] in ("19", "26")} == {"test"}


def test_run_reports_errors(tmp_path, capsys):
    write_clip(tmp_path / "a" / "x.wav", 800, 8_000)
    write_clip(tmp_path / "b" / "x.wav", 800, 8_000)
    out = tmp_path / "manifest.jsonl"
    assert manifest_command.main(parse([str(tmp_path), "-o", str(out)])) == 2
    assert capsys.readouterr().err.startswith("jaxcodec manifest: error: ")
    assert not out.exists()


def test_run_fails_when_nothing_is_readable(tmp_path, capsys):
    (tmp_path / "corpus" / "s").mkdir(parents=True)
    (tmp_path / "corpus" / "s" / "a.flac").write_bytes(b"")
    out = tmp_path / "manifest.jsonl"
    assert manifest_command.main(parse([str(tmp_path / "corpus"), "-o", str(out)])) == 2
    assert "none of the 1 audio files is readable" in capsys.readouterr().err
    assert not out.exists()
    assert "empty" in (tmp_path / "manifest.rejects.jsonl").read_text()


def test_no_jax_no_torch():
    code = "import sys, jaxcodec.data.manifest; print(sorted({'jax', 'torch', 'flax'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _corpus_with_a_locked_folder(root: Path) -> Path:
    write_clip(root / "s1" / "a.wav", 800, 8_000)
    return write_clip(root / "s2" / "b.wav", 800, 8_000).parent


def _check_the_locked_folder_is_reported(root: Path, locked: Path, capsys) -> None:
    out = root.parent / "manifest.jsonl"
    assert manifest_command.main(parse([str(root), "-o", str(out), "--split-by", "utterance", "--workers", "1"])) == 0
    captured = capsys.readouterr()
    assert f"jaxcodec manifest: warning: {locked}: folder not readable (Permission denied)" in captured.err
    assert "0 files and 1 unreadable folders rejected" in captured.out
    assert [e["id"] for e in manifest.read(out)] == ["a"]
    rejects = [json.loads(line) for line in manifest.rejects_path(out).read_text().splitlines()]
    assert [(r["path"], r["kind"]) for r in rejects] == [(str(locked), "folder")]


def test_an_unreadable_folder_is_reported_not_skipped(tmp_path, capsys, monkeypatch):
    """Issue 18 #7: os.walk without onerror skipped a folder it could not list without a word. Listing fails here
    by os.scandir raising PermissionError for one folder (as for chmod 000), so the test also runs as root."""
    root = (tmp_path / "corpus").absolute()
    locked = _corpus_with_a_locked_folder(root)
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    _check_the_locked_folder_is_reported(root, locked, capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_a_chmod_000_folder_is_reported_not_skipped(tmp_path, capsys):
    root = (tmp_path / "corpus").absolute()
    locked = _corpus_with_a_locked_folder(root)
    os.chmod(locked, 0)
    try:
        _check_the_locked_folder_is_reported(root, locked, capsys)
    finally:
        os.chmod(locked, 0o755)
