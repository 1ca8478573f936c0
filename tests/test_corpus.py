"""The bundled demo corpus and its synthesis script (scripts/make_corpus.py)."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "jaxcodec" / "data" / "corpus"


def load_script():
    spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "scripts" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bundled_corpus_is_librispeech_shaped_small_and_split_by_unseen_speakers():
    speakers = json.loads((CORPUS / "speakers.json").read_text())
    splits = {s["speaker"]: s["split"] for s in speakers}
    assert sorted(set(splits.values())) == ["test", "train", "valid"]
    # Test speakers have a voice (engine voice or espeak accent) that no training speaker has.
    accent = lambda s: (s["engine"], s["voice"].split("+")[0])
    train_accents = {accent(s) for s in speakers if s["split"] == "train"}
    assert all(accent(s) not in train_accents for s in speakers if s["split"] == "test")
    size = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert size <= 10 * 2**20, size
    flacs = sorted(CORPUS.rglob("*.flac"))
    assert len(flacs) == 10 * len(speakers)
    for path in flacs[::7]:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
        assert 1.0 < info.duration < 6.0
    # Every file has its transcript line, in LibriSpeech's "ID TEXT" form.
    ids = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for t in CORPUS.rglob("*.trans.txt")
           for line in t.read_text().splitlines()}
    assert sorted(ids) == sorted(p.stem for p in flacs)
    assert ids["101-1-0000"] == "THE BIRCH CANOE SLID ON THE SMOOTH PLANKS"


def test_manifest_reads_the_corpus_with_the_documented_split(tmp_path):
    speakers = json.loads((CORPUS / "speakers.json").read_text())
    wanted = {str(s["speaker"]): s["split"] for s in speakers}
    by_split = {split: ",".join(k for k, v in wanted.items() if v == split) for split in ("valid", "test")}
    out = tmp_path / "manifest.jsonl"
    done = subprocess.run([sys.executable, "-m", "jaxcodec", "manifest", str(CORPUS), "-o", str(out),
                           "--valid-fraction", "0", "--test-fraction", "0", "--valid-speakers", by_split["valid"],
                           "--test-speakers", by_split["test"]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 10 * len(speakers)
    assert all(row["split"] == wanted[row["speaker"]] for row in rows)
    assert all(row["text"] for row in rows)


def test_transcript_and_trim_by_hand():
    make_corpus = load_script()
    assert make_corpus.transcript("It's easy to tell the depth of a well.") == "IT'S EASY TO TELL THE DEPTH OF A WELL"
    assert make_corpus.transcript("It snowed, rained, and hailed.") == "IT SNOWED RAINED AND HAILED"
    sr = 16_000
    tone = 0.5 * np.sin(2 * np.pi * 200 * np.arange(sr) / sr)
    wav = np.concatenate([np.zeros(sr), tone, np.zeros(sr // 2)])
    trimmed = make_corpus.trim_silence(wav, sr)
    keep = int(make_corpus.KEEP_SILENCE_S * sr)
    assert len(trimmed) == sr + 2 * keep  # the tone plus 0.1 s each side (the tone is frame-aligned here)
    np.testing.assert_array_equal(trimmed[keep:keep + sr], tone)


def test_missing_engines_are_named_with_the_install_command(monkeypatch):
    make_corpus = load_script()
    monkeypatch.setattr(make_corpus.shutil, "which", lambda name: None)
    with pytest.raises(make_corpus.CorpusError, match="apt-get install flite espeak-ng"):
        make_corpus.check_engines(make_corpus.VOICES)


@pytest.mark.skipif(shutil.which("flite") is None or shutil.which("espeak-ng") is None,
                    reason="flite/espeak-ng not installed (sudo apt-get install flite espeak-ng)")
def test_synthesis_writes_flac_transcripts_and_labels_and_resumes(tmp_path):
    make_corpus = load_script()
    voices = (make_corpus.VOICES[0], make_corpus.VOICES[3])  # one flite, one espeak-ng (22.05 kHz → 16 kHz)
    sentences = make_corpus.read_sentences()[:4]
    summary = make_corpus.make_corpus(tmp_path, sentences, 2, voices=voices, log=lambda *_: None)
    assert summary["utterances"] == 4
    for voice in voices:
        folder = tmp_path / str(voice.speaker) / "1"
        flacs = sorted(folder.glob("*.flac"))
        assert len(flacs) == 2 and not list(folder.glob("*.tmp"))
        assert sf.info(flacs[0]).samplerate == 16_000
    labels = json.loads((tmp_path / "speakers.json").read_text())
    assert [(s["speaker"], s["rate"], s["pitch"]) for s in labels] == [(v.speaker, v.rate, v.pitch) for v in voices]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.flac")}
    make_corpus.make_corpus(tmp_path, sentences, 2, voices=voices, log=lambda *_: None)  # resume: nothing redone
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.flac")} == before
