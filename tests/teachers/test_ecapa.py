"""ECAPA-TDNN teacher: real speechbrain loading of hub-format directories, outputs against speechbrain's own
forward and a model built by hand, padding behaviour, the 50 Hz frame pooling, long files, and load errors."""

import os
import time

import numpy as np
import pytest
import torch
from speechbrain.inference.speaker import EncoderClassifier
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.processing.features import InputNormalization

from jaxcodec.data.shards.format import SPEAKER_EMBEDDING, SPEAKER_FRAMES
from teachers.ecapa import (
    DEFAULT_ECAPA,
    HUB_FILES,
    SIZES,
    EcapaTeacher,
    pool_mfa_frames,
    save_random_ecapa,
)
from teachers.errors import TeacherLoadError
from teachers.frames import chunk_plan, codec_frames

SR = 16_000
TOL = 1e-4  # max abs difference relative to the feature scale: the padding contract of the precompute
LENGTHS = (11_200, 20_800, 32_800)  # 0.7 s, 1.3 s, 2.05 s


def _speech_like(num_samples: int, seed: int) -> np.ndarray:
    """A few sinusoids plus noise, seeded."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SR
    wav = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(80, 3000) * t) for _ in range(4))
    return (wav + 0.01 * rng.standard_normal(num_samples)).astype(np.float32)


def _rel_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_random_ecapa(tmp_path_factory.mktemp("ecapa") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="module")
def teacher(tiny_dir):
    return EcapaTeacher(str(tiny_dir), frames=True)


@pytest.fixture(scope="module")
def speechbrain_encoder(tiny_dir, tmp_path_factory):
    """speechbrain's own interface, loaded as its docs say for a local copy of the hub model."""
    return EncoderClassifier.from_hparams(source=str(tiny_dir), savedir=str(tmp_path_factory.mktemp("savedir")),
                                          overrides={"pretrained_path": str(tiny_dir)})


def _hand_built_model(tiny_dir):
    """The tiny architecture built directly (no yaml, no Pretrainer) with the checkpoint loaded strictly, and a
    hook keeping the MFA output: a reference independent of the teacher's loading path."""
    spec = SIZES["tiny"]
    model = ECAPA_TDNN(input_size=80, channels=list(spec.channels), kernel_sizes=[5, 3, 3, 3, 1],
                       dilations=[1, 2, 3, 4, 1], attention_channels=spec.attention_channels, lin_neurons=192)
    model.load_state_dict(torch.load(tiny_dir / "embedding_model.ckpt", weights_only=True), strict=True)
    model.eval()
    captured = {}
    model.mfa.register_forward_hook(lambda module, inputs, output: captured.__setitem__("mfa", output))
    fbank, norm = Fbank(n_mels=80), InputNormalization(norm_type="sentence", std_norm=False)

    def run(wav):
        with torch.inference_mode():
            x = torch.from_numpy(wav)[None]
            embedding = model(norm(fbank(x), torch.ones(1)))[0, 0].numpy()
        return embedding, captured["mfa"][0].numpy()

    return run


def test_saved_directory_has_the_hub_files_and_loads(tiny_dir, teacher):
    assert sorted(p.name for p in tiny_dir.iterdir()) == sorted(HUB_FILES)
    assert "pretrained_path: speechbrain/spkrec-ecapa-voxceleb\n" in (tiny_dir / "hyperparams.yaml").read_text()
    prov = teacher.provenance()
    assert (teacher.dim, teacher.frame_dim) == (192, SIZES["tiny"].channels[-1])
    assert prov["model"] == str(tiny_dir.resolve()) and prov["revision"] is None
    assert prov["frame_layer"] == "mfa" and prov["sample_rate"] == SR and prov["frame_rate"] == 50.0
    assert len(prov["weights_sha256"]) == 64


def test_matches_speechbrain_encode_batch_and_hand_built_model(tiny_dir, teacher, speechbrain_encoder):
    wav = _speech_like(20_837, seed=1)
    out = teacher([wav])[0]
    reference = speechbrain_encoder.encode_batch(torch.from_numpy(wav)[None])[0, 0].numpy()
    assert out[SPEAKER_EMBEDDING].dtype == np.float32 and out[SPEAKER_EMBEDDING].shape == (192,)
    assert _rel_diff(out[SPEAKER_EMBEDDING], reference) < TOL
    embedding, mfa_ct = _hand_built_model(tiny_dir)(wav)
    assert _rel_diff(out[SPEAKER_EMBEDDING], embedding) < TOL  # the checkpoint's weights really were loaded
    assert _rel_diff(out[SPEAKER_FRAMES], pool_mfa_frames(mfa_ct, len(wav))) < TOL


def test_seed_determines_weights(tmp_path):
    sha = [EcapaTeacher(str(save_random_ecapa(tmp_path / name, seed=seed))).provenance()["weights_sha256"]
           for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    assert sha[0] == sha[1] != sha[2]


def test_different_lengths_in_one_call_equal_each_alone(teacher, speechbrain_encoder):
    wavs = [_speech_like(n, seed=i) for i, n in enumerate(LENGTHS)] + [_speech_like(LENGTHS[0], seed=9)]
    together = teacher(wavs)  # the last two share a length, so they share a batch
    for wav, out in zip(wavs, together, strict=True):
        alone = speechbrain_encoder.encode_batch(torch.from_numpy(wav)[None])[0, 0].numpy()
        assert _rel_diff(out[SPEAKER_EMBEDDING], alone) < TOL
        assert _rel_diff(out[SPEAKER_FRAMES], teacher([wav])[0][SPEAKER_FRAMES]) < TOL


def test_speechbrain_padded_batch_is_not_padding_invariant(speechbrain_encoder):
    """Why the teacher never zero-pads: speechbrain's documented batched call with relative wav_lens moves the
    shorter utterances' embeddings far beyond the tolerance. If this ever fails, batching could come back."""
    wavs = [_speech_like(n, seed=i) for i, n in enumerate(LENGTHS)]
    batch = torch.zeros(len(wavs), max(LENGTHS))
    for row, wav in zip(batch, wavs, strict=True):
        row[:len(wav)] = torch.from_numpy(wav)
    wav_lens = torch.tensor(LENGTHS, dtype=torch.float32) / max(LENGTHS)
    batched = speechbrain_encoder.encode_batch(batch, wav_lens)[:, 0].numpy()
    alone = [speechbrain_encoder.encode_batch(torch.from_numpy(w)[None])[0, 0].numpy() for w in wavs]
    assert _rel_diff(batched[-1], alone[-1]) < TOL  # the longest is not padded
    assert min(_rel_diff(batched[i], alone[i]) for i in range(2)) > 100 * TOL


def test_frame_count_is_the_codec_grid(teacher):
    for num_samples in (640, 16_000 + 37, 16_000 + 160, 16_000 + 161, 32_000):
        frames = teacher([_speech_like(num_samples, seed=num_samples)])[0][SPEAKER_FRAMES]
        assert frames.shape == (codec_frames(num_samples), teacher.frame_dim) == (-(-num_samples // 320), 96)
        assert frames.dtype == np.float32


def test_pooling_is_the_triangle_centred_on_each_codec_frame():
    rng = np.random.default_rng(0)
    for num_samples in (3_200, 3_200 + 100, 3_200 + 200):  # the last codec frame clamps 0, 2 and 1 indices
        num_fbank = num_samples // 160 + 1  # STFT center=True, hop 160
        mfa_ct = rng.standard_normal((5, num_fbank)).astype(np.float32)
        expected = np.zeros((-(-num_samples // 320), 5), np.float32)
        for j in range(len(expected)):
            centre = 320 * j + 160  # codec frame j's centre, in samples
            for k in (2 * j, 2 * j + 1, 2 * j + 2):  # fbank frame k is centred at sample 160 k
                weight = 0.5 - abs(160 * k - centre) / 640  # a triangle of half-width 320 samples, area 1
                expected[j] += weight * mfa_ct[:, min(k, num_fbank - 1)]
        np.testing.assert_allclose(pool_mfa_frames(mfa_ct, num_samples), expected, rtol=1e-6, atol=1e-6)


def test_long_input_runs_in_windows(tiny_dir, teacher):
    wav = _speech_like(int(12.3 * SR), seed=5)
    chunked = EcapaTeacher(str(tiny_dir), frames=True, max_chunk_seconds=5.0)
    out = chunked([wav])[0]
    assert out[SPEAKER_EMBEDDING].shape == (192,) and out[SPEAKER_FRAMES].shape == (codec_frames(len(wav)), 96)
    plan = chunk_plan(len(wav), 5 * SR, 2 * SR)
    assert len(plan) > 2
    windows = [teacher([wav[c.start:c.stop]])[0] for c in plan]
    kept = [c.keep_stop - c.keep_start for c in plan]
    expected = sum(k * w[SPEAKER_EMBEDDING] for k, w in zip(kept, windows, strict=True)) / sum(kept)
    assert _rel_diff(out[SPEAKER_EMBEDDING], expected) < TOL
    frames = np.concatenate([w[SPEAKER_FRAMES][c.keep_start - c.offset:c.keep_stop - c.offset]
                             for c, w in zip(plan, windows, strict=True)])
    assert _rel_diff(out[SPEAKER_FRAMES], frames) < TOL
    fits = _speech_like(3 * SR, seed=6)  # shorter than a window: untouched by chunking
    np.testing.assert_array_equal(chunked([fits])[0][SPEAKER_EMBEDDING], teacher([fits])[0][SPEAKER_EMBEDDING])


def test_base_size_has_the_hub_shapes(tmp_path):
    teacher = EcapaTeacher(str(save_random_ecapa(tmp_path / "base", size="base")))
    assert (teacher.dim, teacher.frame_dim) == (192, None)
    assert teacher.encoder.mods.embedding_model.mfa.conv.conv.out_channels == 3072
    classifier = torch.load(tmp_path / "base" / "classifier.ckpt", weights_only=True)  # not loaded by the teacher
    assert classifier["weight"].shape == (7205, 192)


def test_savedir_is_relinked_for_each_local_source(tmp_path):
    """speechbrain's savedir is used by the HyperPyYAML load (the weights-only load reads the folder in place)."""
    savedir = str(tmp_path / "savedir")
    first = EcapaTeacher(str(save_random_ecapa(tmp_path / "a", seed=0)), savedir=savedir, hyperpyyaml=True)
    second = EcapaTeacher(str(save_random_ecapa(tmp_path / "b", seed=1)), savedir=savedir, hyperpyyaml=True)
    fresh = EcapaTeacher(str(tmp_path / "b"))
    assert first.provenance()["weights_sha256"] != second.provenance()["weights_sha256"]
    assert second.provenance()["weights_sha256"] == fresh.provenance()["weights_sha256"]


def test_hub_id_loads_from_the_cache_without_network(tmp_path, monkeypatch):
    """The hub id path, offline: a Hugging Face cache holding the model at a known commit."""
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--speechbrain--spkrec-ecapa-voxceleb"
    save_random_ecapa(repo / "snapshots" / commit, seed=3)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    prov = EcapaTeacher(DEFAULT_ECAPA).provenance()
    local = EcapaTeacher(str(repo / "snapshots" / commit)).provenance()
    assert prov["model"] == DEFAULT_ECAPA and prov["revision"] == commit
    assert prov["weights_sha256"] == local["weights_sha256"] and local["revision"] is None


def test_unreachable_hub_is_one_actionable_line():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests/conftest.py: no hub access
    start = time.perf_counter()
    with pytest.raises(TeacherLoadError) as caught:
        EcapaTeacher("speechbrain/some-nonexistent-id")
    message = str(caught.value)
    assert "\n" not in message and "--ecapa" in message and "speechbrain/some-nonexistent-id" in message
    assert time.perf_counter() - start < 5  # no network retries


@pytest.mark.parametrize(("missing", "hyperpyyaml"), [("hyperparams.yaml", True), ("embedding_model.ckpt", True),
                                                     ("embedding_model.ckpt", False)])
def test_local_directory_missing_a_file_names_it(tmp_path, missing, hyperpyyaml):
    directory = save_random_ecapa(tmp_path / "model")
    (directory / missing).unlink()
    with pytest.raises(TeacherLoadError, match=missing.replace(".", r"\.")) as caught:
        EcapaTeacher(str(directory), hyperpyyaml=hyperpyyaml)
    assert "\n" not in str(caught.value)


def test_nonexistent_path_is_not_mistaken_for_a_hub_id(tmp_path):
    with pytest.raises(TeacherLoadError, match="neither an existing directory nor a hub id"):
        EcapaTeacher(str(tmp_path / "no" / "such" / "dir"))


@pytest.mark.parametrize("hyperpyyaml", [False, True])
def test_checkpoint_missing_tensors_is_refused(tmp_path, hyperpyyaml):
    """speechbrain only logs a warning and leaves such layers random; the teacher must refuse."""
    directory = save_random_ecapa(tmp_path / "model")
    state = torch.load(directory / "embedding_model.ckpt", weights_only=True)
    for prefix in ("fc.", "blocks.2.se_block."):  # one the weights-only load reads widths from, one it does not
        torch.save({k: v for k, v in state.items() if not k.startswith(prefix)}, directory / "embedding_model.ckpt")
        with pytest.raises(TeacherLoadError, match="lacks"):
            EcapaTeacher(str(directory), hyperpyyaml=hyperpyyaml)


def test_a_local_folder_is_read_weights_only_and_its_yaml_never_runs(tiny_dir, teacher, tmp_path):
    """Issue 18 #10: HyperPyYAML executes the Python a yaml's tags name, so `--ecapa DIR` ran the folder's code.
    By default the folder's yaml (here with an !apply: tag that would create a marker file) is not read, and the
    weights-only model gives what the HyperPyYAML load of the same folder gives."""
    import shutil

    folder, marker = tmp_path / "planted", tmp_path / "yaml-ran"
    shutil.copytree(tiny_dir, folder)
    with open(folder / "hyperparams.yaml", "a", encoding="utf-8") as f:
        f.write(f"\nplanted: !apply:builtins.open [{str(marker)!r}, 'w']\n")
    weights_only = EcapaTeacher(str(folder), frames=True)
    assert not marker.exists()
    from_yaml = EcapaTeacher(str(folder), frames=True, hyperpyyaml=True)
    assert marker.exists()  # the opt-in path does run it: the marker would have caught the default path
    assert weights_only.provenance()["weights_sha256"] == from_yaml.provenance()["weights_sha256"]
    wav = _speech_like(20_837, seed=1)
    ours, theirs = weights_only([wav])[0], from_yaml([wav])[0]
    for key in (SPEAKER_EMBEDDING, SPEAKER_FRAMES):
        np.testing.assert_array_equal(ours[key], theirs[key])


def test_rejects_too_short_and_multichannel_input(teacher):
    with pytest.raises(ValueError, match="utterance 1"):
        teacher([_speech_like(16_000, seed=0), np.zeros(639, np.float32)])
    with pytest.raises(ValueError, match="mono"):
        teacher([np.zeros((2, 16_000), np.float32)])
