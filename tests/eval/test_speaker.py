"""Speaker metrics: EER by hand, cosine, and the torch-side embedding subprocess on bundled clips."""

from pathlib import Path

import numpy as np
import pytest

from jaxcodec.eval import speaker

CORPUS = Path(__file__).resolve().parents[2] / "jaxcodec" / "data" / "corpus"


def test_eer_by_hand():
    # Targets 0.9 0.8 0.3, non-targets 0.7 0.2 0.1: at a threshold in (0.3, 0.7] one target of three is
    # rejected and one non-target of three accepted: EER = 1/3.
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    is_target = np.array([1, 1, 1, 0, 0, 0], bool)
    assert speaker.equal_error_rate(scores, is_target) == pytest.approx(1 / 3)
    assert speaker.equal_error_rate(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0], bool)) == 0.0
    with pytest.raises(ValueError, match="both"):
        speaker.equal_error_rate(scores, np.ones(6, bool))


def test_verification_eer_uses_every_pair_and_skips_failed_rows():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    embeddings = np.stack([a, a + 0.1 * b, b, b + 0.1 * a, np.full(2, np.nan)])
    assert speaker.verification_eer(embeddings, ["x", "x", "y", "y", "x"]) == 0.0
    assert speaker.verification_eer(embeddings[:2], ["x", "x"]) is None  # one speaker: no impostor trials
    np.testing.assert_allclose(speaker.cosine(np.stack([a, a]), np.stack([a, b])), [1.0, 0.0])


def test_embedding_subprocess_separates_speakers_and_reports_bad_files(tmp_path):
    pytest.importorskip("resemblyzer", reason="the eval extra is not installed")
    paths = [CORPUS / "101" / "1" / f"101-1-000{i}.flac" for i in (0, 1)]
    paths += [CORPUS / "102" / "1" / f"102-1-000{i}.flac" for i in (0, 1)]
    bad = tmp_path / "not-audio.wav"
    bad.write_text("hello")
    embeddings, model, errors = speaker.embed_files([*paths, bad])
    assert model == "resemblyzer" and embeddings.shape == (5, 256)
    np.testing.assert_allclose(np.linalg.norm(embeddings[:4], axis=1), 1.0, rtol=1e-5)
    assert np.isnan(embeddings[4]).all() and str(bad) in errors
    same = speaker.cosine(embeddings[[0, 2]], embeddings[[1, 3]])
    different = speaker.cosine(embeddings[[0, 1]], embeddings[[2, 3]])
    assert same.min() > different.max()
    assert speaker.verification_eer(embeddings, ["101", "101", "102", "102", "102"]) == 0.0


def test_embedding_subprocess_loads_a_local_ecapa(tmp_path):
    pytest.importorskip("speechbrain", reason="the teachers extra is not installed")
    from teachers.ecapa import EMBEDDING_DIM, save_random_ecapa

    model = save_random_ecapa(tmp_path / "ecapa", size="tiny", seed=0)
    embeddings, name, errors = speaker.embed_files([CORPUS / "101" / "1" / "101-1-0000.flac"], f"ecapa:{model}")
    assert name == str(model.resolve()) and embeddings.shape == (1, EMBEDDING_DIM) and not errors
    np.testing.assert_allclose(np.linalg.norm(embeddings[0]), 1.0, rtol=1e-5)
    with pytest.raises(speaker.SpeakerEncoderError, match="speaker encoder ecapa:"):
        speaker.embed_files([CORPUS / "101" / "1" / "101-1-0000.flac"], f"ecapa:{tmp_path / 'missing'}")
