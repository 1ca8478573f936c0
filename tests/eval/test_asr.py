"""WER (jiwer) by hand, and PocketSphinx on a bundled clip with a known transcript."""

from pathlib import Path

import pytest

from jaxcodec import audio
from jaxcodec.eval import asr

CLIP = Path(__file__).resolve().parents[2] / "jaxcodec" / "data" / "corpus" / "101" / "1" / "101-1-0000.flac"
TEXT = "THE BIRCH CANOE SLID ON THE SMOOTH PLANKS"


def test_normalisation_and_wer_by_hand():
    assert asr.normalize_text("  Hello, WORLD!  It's   me. ") == "hello world it's me"
    assert asr.wer(["a b c d"], ["a x c"]) == pytest.approx(2 / 4)  # one substitution, one deletion
    # Corpus WER: total edits over total reference words, not a mean of per-utterance rates.
    assert asr.wer(["a b", "c d e f"], ["a b", "c"]) == pytest.approx(3 / 6)
    # The hypothesis PocketSphinx gives for CLIP: canoe→can, slid→you, +switch, planks→clamps: 4 edits / 8 words.
    assert asr.wer([TEXT], ["the birch can you switch on the smooth clamps"]) == pytest.approx(4 / 8)
    with pytest.raises(ValueError, match="no non-empty reference"):
        asr.wer([""], ["x"])


@pytest.fixture(scope="module")
def recogniser():
    pytest.importorskip("pocketsphinx", reason="the eval extra is not installed")
    return asr.PocketSphinx()


def test_pocketsphinx_transcribes_a_known_clip(recogniser):
    wav, _ = audio.read(CLIP)
    hypothesis = recogniser.transcribe(wav)
    assert "birch" in hypothesis.split() and "smooth" in hypothesis.split()
    assert 0.0 < asr.wer([TEXT], [hypothesis]) <= 0.5


def test_forced_alignment_gives_ordered_phones_of_the_text(recogniser):
    wav, _ = audio.read(CLIP)
    phones = recogniser.align_phones(wav, TEXT)
    names = [p[0] for p in phones]
    assert names[names.index("B"):names.index("B") + 3] == ["B", "ER", "CH"]  # "birch"
    starts = [p[1] for p in phones]
    assert starts == sorted(starts) and all(end > start for _, start, end in phones)
    assert phones[-1][2] <= len(wav) / audio.SAMPLE_RATE + 0.02
    assert recogniser.align_phones(wav, "zzyzxq") is None  # not in the dictionary: no alignment, no crash
    # The aligner is reusable: a second clip aligns too.
    assert recogniser.align_phones(wav, TEXT) == phones
