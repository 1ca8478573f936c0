"""The offline acoustic teacher (resemblyzer's pretrained speaker encoder, shipped in its PyPI package)."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from teachers import precompute
from teachers.hubert import save_random_hubert
from teachers.resemblyzer import EMBEDDING_DIM, ResemblyzerTeacher

CORPUS = Path(__file__).resolve().parents[2] / "jaxcodec" / "data" / "corpus"


@pytest.fixture(scope="module")
def teacher():
    return ResemblyzerTeacher()


def corpus_wav(speaker: int, utt: int) -> np.ndarray:
    wav, rate = sf.read(CORPUS / str(speaker) / "1" / f"{speaker}-1-{utt:04d}.flac", dtype="float32")
    assert rate == 16_000
    return wav


def test_same_speaker_embeddings_are_closer_than_other_speakers(teacher):
    """A real pretrained encoder: two sentences of one voice are more alike than the same voice and another
    (flite rms vs slt, espeak-ng en-us+m3 vs en-gb+f3 in the bundled corpus)."""
    speakers = (101, 102, 201, 202)
    embeddings = {(s, u): teacher([corpus_wav(s, u)])[0]["speaker_embedding"] for s in speakers for u in (0, 1)}
    for e in embeddings.values():
        assert e.shape == (EMBEDDING_DIM,) and e.dtype == np.float32
        assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-4)  # resemblyzer's embeddings are L2-normalised
    same = [float(embeddings[(s, 0)] @ embeddings[(s, 1)]) for s in speakers]
    other = [float(embeddings[(a, 0)] @ embeddings[(b, 1)]) for a in speakers for b in speakers if a != b]
    assert min(same) > max(other), (same, other)


def test_silence_and_short_inputs_still_give_an_embedding(teacher):
    rng = np.random.default_rng(0)
    out = teacher([np.zeros(8000, np.float32) + 1e-4 * rng.standard_normal(8000).astype(np.float32),
                   corpus_wav(101, 0)[:4000]])
    assert all(np.all(np.isfinite(o["speaker_embedding"])) and o["speaker_embedding"].shape == (EMBEDDING_DIM,)
               for o in out)


def test_precompute_with_the_resemblyzer_teacher(tmp_path):
    """Shards in the speaker role, and the calibration the merge records: resemblyzer's raw embeddings (unit norm,
    non-negative) give a near-uniform softmax at τ = 1 and almost no KL between speakers; calibrated, the KL
    between speakers is the target."""
    rows = []
    for speaker in (101, 202, 501):
        for utterance in (0, 1):
            path = CORPUS / str(speaker) / "1" / f"{speaker}-1-{utterance:04d}.flac"
            info = sf.info(path)
            rows.append({"id": path.stem, "path": str(path), "duration": info.duration, "frames": info.frames,
                         "sample_rate": 16_000, "channels": 1, "speaker": str(speaker), "split": "train"})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    hubert = save_random_hubert(tmp_path / "hubert", size="tiny", seed=0)
    options = precompute.Options(manifest=manifest, out=tmp_path / "shards", hubert=str(hubert), hubert_layer="1",
                                 speaker_teacher="resemblyzer", progress=False)
    precompute.run(options, log=lambda *_: None)
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert index["num_records"] == 6
    acoustic = index["provenance"]["speaker"]
    assert acoustic["model"] == "resemblyzer" and acoustic["dim"] == EMBEDDING_DIM and acoustic["name"] == "resemblyzer"
    assert index["fields"]["speaker_embedding"]["shape"] == [EMBEDDING_DIM]
    calibration = acoustic["calibration"]
    assert calibration["utterances"] == 6 and calibration["speakers"] == 3
    raw, calibrated = calibration["raw"], calibration["calibrated"]
    assert raw["uniform_entropy"] - raw["entropy"] < 0.01 and raw["kl_between_speakers"] < 0.02
    assert calibrated["kl_between_speakers"] == pytest.approx(calibration["target_nats"], rel=1e-3)
    assert calibrated["kl_between_speakers"] >= 0.5 and calibrated["entropy"] > 0.5 * calibrated["uniform_entropy"]

    with pytest.raises(precompute.TeacherLoadError, match="resemblyzer gives utterance embeddings only"):
        precompute.Teachers(precompute.Options(manifest=manifest, out=tmp_path / "x", hubert=str(hubert),
                                               hubert_layer="1", speaker_teacher="resemblyzer", ecapa_frames=True))
