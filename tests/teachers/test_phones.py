"""The offline content teacher: PocketSphinx phones on the codec's 50 Hz grid, checked against a hand computation
and against CMUdict (read directly, the independent reference for what forced alignment must produce)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from jaxcodec import audio
from teachers.frames import codec_frames
from teachers.phones import LABEL_SMOOTHING, PHONES, PhoneTeacher, posteriorgram

pytest.importorskip("pocketsphinx")
CORPUS = Path(__file__).resolve().parents[2] / "jaxcodec" / "data" / "corpus"
FLITE_CLIP = "101-1-0000"  # "THE BIRCH CANOE SLID ON THE SMOOTH PLANKS", a flite voice PocketSphinx aligns


def cmudict() -> dict[str, list[list[str]]]:
    import pocketsphinx

    words: dict[str, list[list[str]]] = {}
    path = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    for line in path.read_text().splitlines():
        word, *phones = line.split()
        words.setdefault(re.sub(r"\(\d+\)$", "", word), []).append(phones)
    return words


def corpus_clip(utt_id: str) -> tuple[np.ndarray, str]:
    speaker, chapter, _ = utt_id.split("-")
    wav, _ = audio.read(CORPUS / speaker / chapter / f"{utt_id}.flac")
    transcript = (CORPUS / speaker / chapter / f"{speaker}-{chapter}.trans.txt").read_text()
    text = next(line.split(" ", 1)[1] for line in transcript.splitlines() if line.startswith(utt_id))
    return wav, text


def test_posteriorgram_by_hand():
    """10 ms sub-frames: SIL SIL | AH AH | AH noise | (uncovered) (uncovered) → frames SIL, AH, ½ AH + ½ SIL, SIL,
    each smoothed as (1 − ε)·share + ε/40."""
    got = posteriorgram([("SIL", 0.0, 0.02), ("AH", 0.02, 0.05), ("+NSN+", 0.05, 0.06)], num_frames=4)
    share = np.zeros((4, len(PHONES)))
    sil, ah = PHONES.index("SIL"), PHONES.index("AH")
    share[0, sil] = share[3, sil] = share[1, ah] = 1.0
    share[2, ah] = share[2, sil] = 0.5
    np.testing.assert_allclose(got, (1 - LABEL_SMOOTHING) * share + LABEL_SMOOTHING / len(PHONES), atol=1e-7)
    assert got.dtype == np.float32 and np.allclose(got.sum(axis=1), 1.0)


@pytest.fixture(scope="module")
def teacher():
    return PhoneTeacher()


def test_forced_alignment_gives_the_transcripts_dictionary_phones(teacher):
    """With a transcript, the phones are one of CMUdict's pronunciations of its words, in order, and the
    posteriorgram's frame-wise winners spell the same sequence (every phone lasts ≥ 30 ms, a whole frame)."""
    wav, text = corpus_clip(FLITE_CLIP)
    segments = teacher.segments(wav, text)
    assert teacher.aligned == 1 and teacher.decoded == 0
    spoken = [name for name, _, _ in segments if name != "SIL"]
    words = cmudict()
    pattern = " ".join("(?:" + "|".join(" ".join(re.sub(r"\d", "", p) for p in variant) for variant in
                                        words[w.lower()]) + ")" for w in text.split())
    assert re.fullmatch(pattern, " ".join(spoken)), (spoken, text)
    grams = teacher([wav], [text])[0]
    assert grams.shape == (codec_frames(len(wav)), len(PHONES))
    winners = [PHONES[i] for i in grams.argmax(axis=1)]
    collapsed = [p for i, p in enumerate(winners) if p != "SIL" and (i == 0 or p != winners[i - 1])]
    merged = [p for i, p in enumerate(spoken) if i == 0 or p != spoken[i - 1]]  # e.g. "...S S..." across words
    assert collapsed == merged


def test_without_a_transcript_the_phone_loop_decodes(teacher):
    """No text → phone-loop decoding: silence first (the clip starts quietly), then mostly the right phones (phone
    error rate against the dictionary pronunciation below 0.5; measured 0.26 on this clip)."""
    wav, text = corpus_clip(FLITE_CLIP)
    before = teacher.decoded
    segments = teacher.segments(wav, None)
    assert teacher.decoded == before + 1
    assert segments[0][0] == "SIL" and all(0 <= s < e <= len(wav) / 16_000 + 0.02 for _, s, e in segments)
    decoded = [name for name, _, _ in segments if name in PHONES and name != "SIL"]
    reference = [re.sub(r"\d", "", p) for w in text.split() for p in cmudict()[w.lower()][0]]
    assert edit_distance(decoded, reference) / len(reference) < 0.5


def test_an_alignment_that_stops_early_is_refused():
    """PocketSphinx's search can end before the last word (it did on 61 of the corpus' 140 clips): such a partial
    alignment must be None (the teacher then decodes), never labels for a part of the words."""
    from jaxcodec.eval.asr import PocketSphinx

    wav, text = corpus_clip(FLITE_CLIP)
    recogniser = PocketSphinx()
    assert recogniser.align_phones(wav, text) is not None
    assert recogniser.align_phones(wav[: len(wav) // 3], text) is None  # a third of the audio, all the words


def test_precompute_stores_phone_posteriorgrams_with_their_label(tmp_path, capsys):
    """`--content-teacher phones`: the `content` field holds [ceil(N/320), 40] rows summing to 1, the provenance
    says it is not HuBERT, and `jaxcodec shards info` prints that label."""
    from jaxcodec.commands import main
    from jaxcodec.data import manifest, shards
    from teachers import precompute

    wav, text = corpus_clip(FLITE_CLIP)
    path = tmp_path / "101" / "1" / f"{FLITE_CLIP}.flac"
    path.parent.mkdir(parents=True)
    audio.write(path, wav)
    row = {"id": FLITE_CLIP, "path": str(path), "duration": len(wav) / 16_000, "frames": len(wav),
           "sample_rate": 16_000, "channels": 1, "speaker": "101", "chapter": "1", "text": text, "split": "train"}
    manifest.write([row], [], tmp_path / "manifest.jsonl")
    options = precompute.Options(manifest=tmp_path / "manifest.jsonl", out=tmp_path / "shards",
                                 content_teacher="phones", speaker_teacher="resemblyzer", progress=False)
    index = precompute.run(options, log=lambda m: None)
    content = index["provenance"]["content"]
    assert content["teacher"] == "phones from PocketSphinx, not HuBERT" and content["dim"] == len(PHONES)
    assert content["name"] == "phones" and index["provenance"]["speaker"]["name"] == "resemblyzer"
    reader = shards.ShardReader(tmp_path / "shards")
    record = reader[0]
    assert record["content"].shape == (codec_frames(len(wav)), len(PHONES))
    np.testing.assert_allclose(record["content"].astype(np.float32).sum(axis=1), 1.0, atol=1e-2)  # float16 storage
    assert json.loads((tmp_path / "shards" / "index.json").read_text())["fields"]["content"]["shape"][1] == 40
    # What training must set for these shards: 40 dims, the "phones" layer, and the per-frame cosine.
    overrides = shards.config_overrides(index["provenance"])
    assert overrides == ["model.semantic_dim=40", "model.acoustic_dim=256", "data.content_layer=phones",
                         "loss.semantic_axis=time"]
    from jaxcodec import config as config_lib

    reader.require(shards.Requirement(content_layer=config_lib.load("configs/cpu.yaml", overrides).data.content_layer,
                                      content_dim=40, speaker_dim=256))
    with pytest.raises(shards.ShardError, match="or train with --set model.semantic_dim=40 .*semantic_axis=time"):
        reader.require(shards.Requirement(content_layer="9", content_dim=768))  # a config made for HuBERT
    assert main(["shards", "info", str(tmp_path / "shards")]) == 0
    assert "phones from PocketSphinx, not HuBERT" in capsys.readouterr().out


def edit_distance(a: list, b: list) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]
