"""`jaxcodec encode | decode | resynth` on a micro codec exported to one file: batched results equal the Python
API one file at a time, bad inputs are skipped with their reason (and a non-zero exit), reruns resume."""

import json
import re

import numpy as np
import pytest
import soundfile as sf
from flax import nnx

import jaxcodec
from jaxcodec import audio
from jaxcodec.cli import main
from jaxcodec.interop import files
from jaxcodec.models.codec import Codec
from tests.test_tokenizer import _speech_like
from tests.train.micro import micro_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    config = micro_config(model={"conv_init": "lecun"}, rvq={"n_q": 4, "kmeans_init": False})
    path = tmp_path_factory.mktemp("model") / "micro.safetensors"
    files.export_file(Codec(config, rngs=nnx.Rngs(0)), config, path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three clips (two share the 1 s bucket at different lengths, one is longer, one at 22.05 kHz) + a bad file."""
    folder = tmp_path_factory.mktemp("audio")
    (folder / "sub").mkdir()
    sf.write(folder / "a.wav", _speech_like(0.55, seed=1), 16_000)
    sf.write(folder / "sub" / "b.wav", _speech_like(0.8, seed=2), 16_000)
    sf.write(folder / "c.flac", _speech_like(1.6, 22_050, seed=3), 22_050)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt not really")
    return folder


def test_encode_folder_batched_equals_one_by_one_and_skips_bad_files(exported, corpus, tmp_path, capsys):
    out = tmp_path / "codes"
    assert main(["encode", str(corpus), "-o", str(out), "--checkpoint", str(exported), "--quiet"]) == 1
    tokenizer = jaxcodec.load(exported)
    for name in ("a", "sub/b", "c"):
        codes = np.load(out / f"{name}.npy", allow_pickle=False)
        source = next(corpus.glob(f"{name}.*"))
        wav, _ = audio.read(source)
        assert codes.dtype == np.int16 and codes.shape == (4, -(-wav.size // 320))
        np.testing.assert_array_equal(codes, tokenizer.encode(wav))
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["broken"] and rejects[0]["reason"]
    assert "skipped" in capsys.readouterr().err
    # a rerun keeps what is there
    before = (out / "a.npy").stat().st_mtime_ns
    main(["encode", str(corpus), "-o", str(out), "--checkpoint", str(exported), "--quiet"])
    assert (out / "a.npy").stat().st_mtime_ns == before
    assert "3 already there" in capsys.readouterr().out

    wavs = tmp_path / "wavs"
    assert main(["decode", str(out), "-o", str(wavs), "--checkpoint", str(exported), "--quiet", "--n-q", "2"]) == 0
    for name in ("a", "sub/b", "c"):
        codes = np.load(out / f"{name}.npy")
        decoded, rate = sf.read(wavs / f"{name}.wav", dtype="float32")
        expected = np.clip(tokenizer.decode(codes[:2]), -1.0, 32767 / 32768)  # a random codec exceeds full scale
        assert rate == 16_000 and decoded.shape == expected.shape
        np.testing.assert_allclose(decoded, expected, atol=1.5 / 32768)  # 16-bit WAV


def test_resynth_one_file_and_n_q(exported, corpus, tmp_path):
    out = tmp_path / "a_resynth.wav"
    assert main(["resynth", str(corpus / "a.wav"), "-o", str(out), "--checkpoint", str(exported), "--n-q", "1"]) == 0
    wav, _ = sf.read(corpus / "a.wav", dtype="float32")
    resynth, _ = sf.read(out, dtype="float32")
    assert resynth.shape == wav.shape
    expected = np.clip(jaxcodec.load(exported).reconstruct(wav, n_q=1), -1.0, 32767 / 32768)
    np.testing.assert_allclose(resynth, expected, atol=1.5 / 32768)


@pytest.mark.parametrize("payload,message", [
    (np.zeros((4, 10), np.float32), "codes must be integers"),
    (np.zeros((1, 4, 10), np.int16), "codes must be \\[n_q ≤ 4, T > 0\\]"),
    (np.full((4, 10), 16, np.int16), "codes must be in 0..15"),
    (np.array([{"a": 1}], dtype=object), "not a numpy codes file"),
])
def test_decode_refuses_bad_codes_files(exported, tmp_path, capsys, payload, message):
    path = tmp_path / "bad.npy"
    np.save(path, payload, allow_pickle=payload.dtype == object)
    assert main(["decode", str(path), "-o", str(tmp_path / "x.wav"), "--checkpoint", str(exported)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "x.wav").exists()


def test_one_bad_audio_file_or_bad_arguments(exported, corpus, tmp_path, capsys):
    assert main(["encode", str(corpus / "broken.wav"), "-o", str(tmp_path / "x.npy"),
                 "--checkpoint", str(exported)]) == 1
    assert "broken.wav" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "missing"), "-o", str(tmp_path / "y"), "--checkpoint", str(exported)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["encode", str(corpus / "a.wav"), "-o", str(tmp_path / "z.npy"), "--checkpoint", str(exported),
                 "--n-q", "9"]) == 2
    assert "--n-q must be in 1..4" in capsys.readouterr().err
