"""Phone error rate: the dictionary reference, the edit distance and the corpus rate by hand (and the distance
against jiwer's), and PocketSphinx's phone decoding of a bundled clip and of white noise."""

from pathlib import Path

import numpy as np
import pytest

from jaxcodec import audio
from jaxcodec.eval import asr
from jaxcodec.eval import phone_error_rate as per
from jaxcodec.quality import MetricUnavailable

CORPUS = Path(__file__).resolve().parents[2] / "jaxcodec" / "data" / "corpus"
CLIP = CORPUS / "101" / "1" / "101-1-0000.flac"  # flite voice rms
TEXT = "THE BIRCH CANOE SLID ON THE SMOOTH PLANKS"


@pytest.fixture(scope="module")
def pronunciations():
    pytest.importorskip("pocketsphinx", reason="the eval extra is not installed")
    return per.Pronunciations()


def test_the_inventory_is_the_phone_teachers_without_silence():
    from teachers.phones import PHONES

    assert per.ARPABET_PHONES == PHONES[1:] and PHONES[0] == "SIL" and len(per.ARPABET_PHONES) == 39


def test_the_wheels_dictionary_gives_a_transcripts_phones(pronunciations):
    assert pronunciations.path.name == "cmudict-en-us.dict"
    # CMUdict 0.7a: the DH AH (first of the/the(2)), birch B ER CH, canoe K AH N UW.
    assert pronunciations.reference("The birch, canoe!") == (["DH", "AH", "B", "ER", "CH", "K", "AH", "N", "UW"],
                                                             None)
    assert pronunciations.reference("it's") == (["IH", "T", "S"], None)  # apostrophes kept, as normalize_text does
    assert pronunciations.reference("the zzyzxq") == (None, per.WORD_NOT_IN_DICTIONARY)
    assert pronunciations.missing_words("the zzyzxq canoe qqxv") == ["zzyzxq", "qqxv"]
    assert pronunciations.reference("  ,. ") == (None, per.NO_TRANSCRIPT)
    assert pronunciations.reference(None) == (None, per.NO_TRANSCRIPT)


def test_first_pronunciation_stress_digits_and_merged_runs(tmp_path):
    dictionary = tmp_path / "tiny.dict"
    # As the standard CMUdict writes it: stress digits on vowels, alternatives as word(2), after the first.
    dictionary.write_text("read R EH1 D\nread(2) R IY1 D\nsome S AH1 M\nthis DH IH1 S\n")
    tiny = per.Pronunciations(dictionary)
    assert tiny.reference("Read") == (["R", "EH", "D"], None)
    # this + some: S S at the word boundary is one S.
    assert tiny.reference("this some") == (["DH", "IH", "S", "AH", "M"], None)
    not_cmudict = tmp_path / "not_cmudict.dict"
    not_cmudict.write_text("read R EH1 D\nbad B Q D\n")
    with pytest.raises(ValueError, match="outside CMUdict's 39"):
        per.Pronunciations(not_cmudict).reference("bad")
    with pytest.raises(MetricUnavailable, match="no pronouncing dictionary"):
        per.Pronunciations(tmp_path / "missing.dict")


def test_hypothesis_drops_silence_and_noise_and_merges_runs():
    segments = [("SIL", 0.0, 0.1), ("DH", 0.1, 0.15), ("DH", 0.15, 0.2), ("+NSN+", 0.2, 0.3), ("DH", 0.3, 0.35),
                ("AH", 0.35, 0.4), ("+BREATH+", 0.4, 0.5), ("+SPN+", 0.5, 0.6), ("AH", 0.6, 0.7), ("sil", 0.7, 0.8),
                ("B", 0.8, 0.9)]
    assert per.hypothesis_phones(segments) == ["DH", "AH", "B"]
    assert per.hypothesis_phones([("SIL", 0.0, 1.0)]) == []


@pytest.mark.parametrize("reference, hypothesis, edits", [
    ("DH AH", "DH AH", 0),
    ("DH AH B", "DH IH B", 1),  # one substitution
    ("DH AH", "DH AH B", 1),  # one insertion
    ("DH AH B", "DH B", 1),  # one deletion
    ("DH AH B", "", 3),  # empty hypothesis: every reference phone deleted
    ("", "DH AH", 2),  # empty reference: every hypothesis phone inserted
    ("", "", 0),
    ("K IH T AH N", "S IH T IH NG", 3),  # kitten → sitting: K→S, AH→IH, N→NG
    ("AH B", "B AH", 2),  # a swap is two edits (no transpositions)
    ("S T R IY T", "T R IY T S", 2),  # delete S at the front, insert S at the end
])
def test_edit_distance_by_hand(reference, hypothesis, edits):
    assert per.edit_distance(reference.split(), hypothesis.split()) == edits


def test_edit_distance_agrees_with_jiwer_on_random_strings():
    jiwer = pytest.importorskip("jiwer", reason="the eval extra is not installed")
    rng = np.random.default_rng(0)
    for _ in range(200):
        reference = list(rng.choice(per.ARPABET_PHONES[:5], rng.integers(1, 12)))
        hypothesis = list(rng.choice(per.ARPABET_PHONES[:5], rng.integers(0, 12)))
        # jiwer's WER is its word-level Levenshtein distance over the reference length.
        expected = jiwer.wer(" ".join(reference), " ".join(hypothesis)) * len(reference)
        assert per.edit_distance(reference, hypothesis) == round(expected)


def test_corpus_rate_is_total_edits_over_total_reference_phones():
    references = [["DH", "AH", "B", "ER"], ["K", "AH"], None, ["S"]]
    hypotheses = [["DH", "AH", "B", "IH"], [], ["Z"], None]
    # 1 edit / 4 and 2 edits / 2: (1 + 2) / (4 + 2) = 0.5, not the mean of rates (0.25 + 1) / 2 = 0.625; the
    # unscorable reference and the undecoded clip are left out.
    errors = per.corpus_errors(list(zip(references, hypotheses, strict=True)))
    assert (errors.edits, errors.reference_phones, errors.utterances) == (3, 6, 2)
    assert per.per(references, hypotheses) == pytest.approx(0.5)
    assert per.per([None], [["DH"]]) is None


@pytest.fixture(scope="module")
def recogniser():
    pytest.importorskip("pocketsphinx", reason="the eval extra is not installed")
    return asr.PocketSphinx()


# The recogniser's floor on the bundled flite voices, measured over their 40 original clips by
# scripts/phone_error_floor.py: PER 0.29-0.45 per speaker, 0.26 (7 / 27) on CLIP. Half the reference phones
# wrong leaves room for another PocketSphinx build and still fails a reference on the wrong phone set or words
# out of order (PER near 1, like noise).
CLEAN_FLITE_PER_BOUND = 0.5
# White noise holds none of the sentence's phones: the recogniser hears silence and noise (an empty hypothesis,
# PER 1) or phones of its own (substitutions and insertions); only chance matches could bring it below 1.
NOISE_PER_BOUND = 0.9


def test_pocketsphinx_hears_a_clean_clips_phones_and_not_noises(recogniser, pronunciations):
    wav, _ = audio.read(CLIP)
    reference, _ = pronunciations.reference(TEXT)
    heard = per.hypothesis_phones(recogniser.decode_phones(wav))
    clean = per.per([reference], [heard])
    noise = (0.1 * np.random.default_rng(0).standard_normal(len(wav))).astype(np.float32)
    noisy = per.per([reference], [per.hypothesis_phones(recogniser.decode_phones(noise))])
    print(f"PER of {CLIP.name}: {clean:.3f} ({' '.join(heard)}); of white noise: {noisy:.3f}")
    assert clean < CLEAN_FLITE_PER_BOUND
    assert noisy >= NOISE_PER_BOUND
