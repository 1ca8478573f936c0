"""The HuBERT teacher, on a small random checkpoint saved in the hub's on-disk format: padded batches equal the
stock transformers model on each utterance alone, frames land on the codec's grid, long files are windowed."""

import time

import numpy as np
import pytest
import torch
from transformers import HubertModel

from teachers.errors import TeacherLoadError
from teachers.frames import CODEC_HOP, Chunk, chunk_plan, codec_frames
from teachers.hubert import EDGE_PAD, HubertTeacher, save_random_hubert


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_random_hubert(tmp_path_factory.mktemp("hubert"), size="tiny", seed=0)


@pytest.fixture(scope="module")
def stock(tiny_dir):
    return HubertModel.from_pretrained(str(tiny_dir)).eval()


def utterances(*lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def stock_hidden(stock, teacher, wav):
    """The reference: transformers' own HubertModel, unmodified, on one utterance (no padding, no mask)."""
    with torch.inference_mode():
        out = stock(torch.from_numpy(teacher.model_input(wav))[None], output_hidden_states=True)
    return [h[0].numpy() for h in out.hidden_states]


def test_padded_batch_equals_each_utterance_alone(tiny_dir, stock):
    teacher = HubertTeacher(str(tiny_dir), layer="2")
    wavs = utterances(11_200, 20_837, 32_900)  # 0.7 s, 1.3 s, 2.06 s: very different padding in one batch
    batched = teacher(wavs)
    for wav, feats in zip(wavs, batched, strict=True):
        reference = stock_hidden(stock, teacher, wav)[2]
        n = len(reference)
        assert np.abs(feats[:n] - reference).max() < 1e-4 * max(1.0, np.abs(reference).max())
        np.testing.assert_array_equal(feats[n:], np.repeat(feats[n - 1:n], len(feats) - n, axis=0))


def test_group_norm_masking_is_what_makes_padding_exact(tiny_dir, stock):
    """Without the masked GroupNorm the padded utterance's features change: the test above can fail."""
    teacher = HubertTeacher(str(tiny_dir), layer="2")
    wavs = utterances(11_200, 32_900)
    with torch.inference_mode():
        x = torch.zeros(2, 32_900 + 2 * EDGE_PAD)
        x[0, :11_200 + 2 * EDGE_PAD] = torch.from_numpy(teacher.model_input(wavs[0]))
        mask = (torch.arange(x.shape[1]) < 11_200 + 2 * EDGE_PAD)[None].repeat(2, 1)
        mask[1] = True
        x[1] = torch.from_numpy(teacher.model_input(wavs[1]))
        # Stock forward: GroupNorm over the padded length.
        unmasked = stock(x, attention_mask=mask.long(), output_hidden_states=True).hidden_states[2][0].numpy()
    reference = stock_hidden(stock, teacher, wavs[0])[2]
    assert np.abs(unmasked[:len(reference)] - reference).max() > 1e-2


def test_frame_counts_hubert_vs_codec():
    """HuBERT alone gives floor((N − 400) / 320) + 1 frames; the stored features have the codec's ceil(N / 320)."""
    for n, hubert_frames, ours in ((16_000, 49, 50), (16_001, 49, 51), (400, 1, 2), (719, 1, 3), (720, 2, 3)):
        assert (n - 400) // 320 + 1 == hubert_frames
        assert codec_frames(n) == ours
        # With EDGE_PAD zeros on each side, HuBERT gives floor(N / 320) frames: at most one short of the codec.
        assert (n + 2 * EDGE_PAD - 400) // 320 + 1 == n // 320


def test_stock_model_frame_count_and_ours(tiny_dir, stock):
    teacher = HubertTeacher(str(tiny_dir), layer="1")
    for n in (16_000, 16_001, 20_837):
        with torch.inference_mode():
            raw = stock(torch.zeros(1, n)).last_hidden_state.shape[1]
        assert raw == (n - 400) // 320 + 1
        assert teacher(utterances(n))[0].shape == (codec_frames(n), 32)


def test_frames_are_centred_on_codec_frames(tiny_dir, stock):
    """A change at sample s reaches the conv features of exactly the frames i with 320i − 40 ≤ s < 320i + 360,
    i.e. HuBERT frame i is centred on sample 320i + 160, the centre of codec frame i."""
    teacher = HubertTeacher(str(tiny_dir), layer="1")
    wav = utterances(6_400)[0]
    s = 2_200  # in the 80-sample overlap of frames 6 and 7
    bumped = wav.copy()
    bumped[s] += 0.5
    teacher.do_normalize = False  # normalisation would spread the bump over every sample

    def conv_stack(w):  # the conv front end without the GroupNorm, whose time statistics reach every frame
        first, *rest = stock.feature_extractor.conv_layers
        h = first.activation(first.conv(torch.from_numpy(teacher.model_input(w))[None, None]))
        for layer in rest:
            h = layer(h)
        return h[0].numpy()

    with torch.inference_mode():
        a, b = conv_stack(wav), conv_stack(bumped)
    changed = np.flatnonzero(np.abs(a - b).max(axis=0) > 0)
    expected = [i for i in range(a.shape[1]) if 320 * i - EDGE_PAD <= s < 320 * i + 400 - EDGE_PAD]
    assert list(changed) == expected == [6, 7]


def test_average_of_all_layers(tiny_dir, stock):
    teacher = HubertTeacher(str(tiny_dir), layer="avg")
    wav = utterances(9_600)[0]
    hidden = stock_hidden(stock, teacher, wav)
    assert len(hidden) == 3  # the embedding output and each of the 2 transformer layers
    np.testing.assert_allclose(teacher([wav])[0][:len(hidden[0])], np.mean(hidden, axis=0), atol=1e-4)


def test_long_input_is_windowed_and_matches_away_from_seams(tiny_dir):
    whole = HubertTeacher(str(tiny_dir), layer="1")
    windowed = HubertTeacher(str(tiny_dir), layer="1", max_chunk_seconds=1.0, chunk_context_seconds=0.2)
    wav = utterances(64_000 + 123)[0]  # 4 s in 1 s windows
    a, b = whole([wav])[0], windowed([wav])[0]
    assert a.shape == b.shape == (codec_frames(len(wav)), 32)
    assert np.all(np.isfinite(b))
    # Attention is global, so windowed features differ from whole-file ones; by construction they are close.
    corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert corr > 0.9


def test_chunk_plan_tiles_every_frame_once():
    for n, max_samples, context in ((100_000, 16_000, 3_200), (64_123, 16_000, 3_200), (16_000, 16_000, 0),
                                    (50_000, 8_000, 640)):
        plan = chunk_plan(n, max_samples, context)
        kept = [f for c in plan for f in range(c.keep_start, c.keep_stop)]
        assert kept == list(range(codec_frames(n)))
        for c in plan:
            assert c.start == c.offset * CODEC_HOP and c.stop - c.start <= max_samples and c.stop <= n
            # Each kept frame lies inside its window, with context on both sides except at the file's ends.
            assert c.keep_start >= c.offset and c.keep_stop <= c.offset + -(-(c.stop - c.start) // CODEC_HOP)
            if c.keep_start > 0:
                assert (c.keep_start - c.offset) * CODEC_HOP >= context
    assert chunk_plan(1000, 16_000, 3_200) == [Chunk(0, 1000, 0, 4, 0)]
    with pytest.raises(ValueError, match="too short"):
        chunk_plan(100_000, 3_200, 3_200)


def test_provenance_and_seeded_weights(tmp_path, tiny_dir):
    teacher = HubertTeacher(str(tiny_dir), layer="2")
    prov = teacher.provenance()
    assert prov["model"] == str(tiny_dir.resolve()) and prov["layer"] == "2" and prov["dim"] == 32
    assert prov["do_normalize"] is True and prov["frame_rate"] == 50.0
    same = HubertTeacher(str(save_random_hubert(tmp_path / "a", seed=0)), layer="2")
    other = HubertTeacher(str(save_random_hubert(tmp_path / "b", seed=1)), layer="2")
    assert same.weights_sha256 == teacher.weights_sha256 != other.weights_sha256


def test_bad_layer_and_bad_sources(tmp_path, tiny_dir):
    with pytest.raises(TeacherLoadError, match=r"layer must be 0..2 or 'avg'"):
        HubertTeacher(str(tiny_dir), layer="9")
    with pytest.raises(TeacherLoadError, match="has no config.json"):
        HubertTeacher(str(tmp_path))
    with pytest.raises(TeacherLoadError) as err:
        HubertTeacher("facebook/no-such-hubert-model")  # HF_HUB_OFFLINE=1 (conftest): fails at once
    message = str(err.value)
    assert "\n" not in message and "--hubert DIR" in message and "hub is unreachable" in message


def test_unreachable_hub_fails_fast_without_retries(monkeypatch):
    """Not cached and the hub refuses connections: one line at once, not huggingface_hub's ~25 s of retries."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens, refused at once
    start = time.monotonic()
    with pytest.raises(TeacherLoadError, match="hub is unreachable"):
        HubertTeacher("facebook/not-cached-anywhere")
    assert time.monotonic() - start < 5.0
