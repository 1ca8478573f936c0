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


def test_a_transcript_does_not_depend_on_the_clips_decoded_before(recogniser):
    # Without resetting the front end between clips, 501-1-0000 came out as "... think simon" or "... pink
    # salmon" depending on which clips preceded it; worker processes would then change the WER.
    corpus = CLIP.parents[2]
    target = audio.read(corpus / "501" / "1" / "501-1-0000.flac")[0]
    fresh = recogniser.transcribe(target)
    for other in sorted((corpus / "501" / "1").glob("*.flac"))[1:8]:
        recogniser.transcribe(audio.read(other)[0])
        assert recogniser.transcribe(target) == fresh


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


def save_random_ctc_model(directory: Path) -> Path:
    """A tiny randomly initialised wav2vec2 CTC model with its processor, in the hub's on-disk format."""
    import json

    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")}}
    directory.mkdir(parents=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(directory / "vocab.json"), word_delimiter_token="|")
    processor = Wav2Vec2Processor(feature_extractor=Wav2Vec2FeatureExtractor(), tokenizer=tokenizer)
    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, pad_token_id=0)
    Wav2Vec2ForCTC(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def test_a_local_transformers_asr_model_transcribes_files_in_a_subprocess(tmp_path):
    pytest.importorskip("transformers", reason="the teachers extra is not installed")
    model = save_random_ctc_model(tmp_path / "ctc")
    recogniser = asr.recogniser(str(model))
    assert isinstance(recogniser, asr.TransformersASR) and recogniser.name == str(model)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    transcripts = recogniser.transcribe_files([CLIP, bad])
    # Random weights: any characters of its vocabulary, normalised; the unreadable file gives "" and no crash.
    assert len(transcripts) == 2 and transcripts[1] == "" and transcripts[0] == asr.normalize_text(transcripts[0])
    from jaxcodec.eval.torch_subprocess import ToolError

    with pytest.raises(ToolError, match="ASR model"):
        asr.TransformersASR(str(tmp_path / "missing")).transcribe_files([CLIP])
