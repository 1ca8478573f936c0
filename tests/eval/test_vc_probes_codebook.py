"""Token-swap VC, the probes' pieces and codebook health, each against a hand computation."""

import numpy as np
import pytest

from jaxcodec.eval import probes, vc
from jaxcodec.eval.codebook import CodeUsage


def test_swap_tokens_keeps_source_level_1_and_repeats_or_crops_the_target():
    source = np.array([[1, 2, 3, 4, 5], [9, 9, 9, 9, 9], [9, 9, 9, 9, 9]])
    target = np.array([[7, 7], [10, 11], [20, 21]])
    np.testing.assert_array_equal(vc.swap_tokens(source, target),
                                  [[1, 2, 3, 4, 5], [10, 11, 10, 11, 10], [20, 21, 20, 21, 20]])
    np.testing.assert_array_equal(vc.swap_tokens(source[:, :1], target), [[1], [10], [20]])  # cropped
    np.testing.assert_array_equal(vc.swap_tokens(source, target, n_q=2), [[1, 2, 3, 4, 5], [10, 11, 10, 11, 10]])
    with pytest.raises(ValueError, match="2..3"):
        vc.swap_tokens(source, target, n_q=1)


def test_pair_targets_prefers_the_next_speakers_parallel_utterance():
    entries = [{"speaker": "a", "text": "one"}, {"speaker": "a", "text": "two"},
               {"speaker": "b", "text": "three"}, {"speaker": "b", "text": "one"}]
    # a → b (a's "one" has b's parallel "one"; a's "two" takes b's utterance at the same position), b → a.
    assert vc.pair_targets(entries) == [(0, 3), (1, 3), (2, 0), (3, 0)]
    assert vc.pair_targets(entries[:2]) == []


def test_frame_phone_labels_take_the_phone_at_each_frame_centre():
    phones = [("SIL", 0.0, 0.03), ("AH", 0.03, 0.07), ("B", 0.07, 0.10)]
    # 20 ms frames, centres 10 30 50 70 90 110 ms: SIL, AH, AH, B, B, outside.
    assert probes.frame_phone_labels(phones, 6, 0.02) == ["", "AH", "AH", "B", "B", ""]


def test_alternate_split_and_features_by_hand():
    assert probes.alternate_split(["x", "x", "y", "x", "y"]).tolist() == [True, False, True, True, False]
    codebooks = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)  # [n_q, K, D]
    codes = np.array([[0, 2], [1, 1]])
    np.testing.assert_array_equal(probes.frame_features(codes, codebooks, [0]), [[0, 1], [4, 5]])
    np.testing.assert_array_equal(probes.frame_features(codes, codebooks, [0, 1]), [[0 + 8, 1 + 9], [4 + 8, 5 + 9]])
    assert list(probes.level_groups(8)) == ["level 1", "levels 2-8", "levels 1-8"]


def test_utterance_probe_finds_the_level_that_carries_the_label():
    # Level 1's codes encode the label (code 0 or 1), level 2's are noise: level 1 must score 1.0, level 2 chance.
    rng = np.random.default_rng(0)
    codebooks = rng.standard_normal((2, 4, 3)).astype(np.float32)
    labels = [str(i % 2) for i in range(40)]
    codes = [np.stack([np.full(20, int(label)), rng.integers(0, 4, 20)]) for label in labels]
    result = probes.utterance_probes(codes, codebooks, {"label": labels})["label"]
    assert result["level 1"]["accuracy"] == 1.0 and result["level 1"]["chance"] == 0.5
    assert result["levels 2-2"]["accuracy"] < 0.8
    assert probes.utterance_probes(codes, codebooks, {"constant": ["a"] * 40}) == {}


def test_speaker_split_holds_out_whole_speakers_by_hand():
    speakers = ["a", "b", "a", "c", "b", "d"]
    assert probes.speaker_split(speakers).tolist() == [True, False, True, True, False, False]  # a, c train
    # Within each label: M speakers a, c → a trains; F speakers b, d → b trains.
    labels = ["M", "F", "M", "M", "F", "F"]
    assert probes.speaker_split(speakers, labels).tolist() == [True, True, True, False, True, False]


def test_phone_probe_on_held_out_speakers_tests_only_unseen_speakers():
    """Level 1 carries the phone (code = phone index) in every voice; level 2 the speaker. Held out by speaker,
    level 1 still scores 1.0; the test frames are exactly those of the held-out speakers' utterances."""
    rng = np.random.default_rng(1)
    codebooks = rng.standard_normal((2, 4, 3)).astype(np.float32)
    speakers = [str(i % 4) for i in range(16)]
    phones = ["AA", "IY", "UW", "S"]
    frame_labels = [[phones[t % 4] for t in range(10)] for _ in speakers]
    codes = [np.stack([np.arange(10) % 4, np.full(10, int(s))]) for s in speakers]
    result = probes.phone_probe(codes, codebooks, frame_labels, speakers=speakers)
    assert result["level 1"]["accuracy"] == 1.0
    assert result["level 1"]["test"] == 10 * sum(s in ("1", "3") for s in speakers)
    utterances = probes.utterance_probes(codes, codebooks, {"speaker": speakers}, speakers=speakers)
    assert utterances == {}  # the speaker label has no held-out-speaker split


def test_codebook_health_by_hand():
    usage = CodeUsage(n_q=2, codebook_size=4)
    usage.add(np.array([[0, 1, 2, 3], [0, 0, 0, 1]]))
    usage.add(np.array([[0, 1, 2, 3], [0, 0, 0, 1]]))
    summary = usage.summary(frame_rate=50.0)
    assert summary["used_codes_per_level"] == [4, 2] and summary["dead_codes_per_level"] == [0, 2]
    h2 = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    assert summary["entropy_bits_per_level"] == [2.0, round(h2, 3)]
    assert summary["perplexity_per_level"][0] == 4.0
    assert summary["bits_per_second"] == 50 * 2 * 2 and summary["tokens_per_second"] == 100
    assert summary["entropy_bits_per_second"] == pytest.approx(50 * (2 + h2), abs=0.05)
    assert summary["counts_per_level"] == [[2, 2, 2, 2], [6, 2, 0, 0]]
