"""`jaxcodec encode | decode | resynth | tokenize` on a micro codec exported to one file: batched results equal
the Python API one file at a time, bad inputs are skipped with their reason (and a non-zero exit), reruns resume;
token shards split over two "hosts" merge their index with the codec's weight hash."""

import json
import re

import numpy as np
import pytest
import soundfile as sf
from array_record.python.array_record_module import ArrayRecordReader
from flax import nnx

import jaxcodec
from jaxcodec import audio
from jaxcodec.commands import main
from jaxcodec.commands.tokenize import weights_sha256
from jaxcodec.data import shards
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


def _manifest(folder, path):
    rows = []
    for i, name in enumerate(["a.wav", "sub/b.wav", "c.flac", "broken.wav"]):
        file = folder / name
        rate = 22_050 if name.endswith(".flac") else 16_000
        duration = sf.info(file).duration if name != "broken.wav" else 1.0
        rows.append({"id": f"utt{i}", "path": str(file), "duration": duration, "sample_rate": rate,
                     "speaker": f"spk{i % 2}", "split": "train"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_tokenize_two_hosts_resume_and_index(exported, corpus, tmp_path, capsys):
    manifest = _manifest(corpus, tmp_path / "manifest.jsonl")
    out = tmp_path / "tokens"
    base = ["tokenize", "--manifest", str(manifest), "--checkpoint", str(exported), "--out", str(out),
            "--num-shards", "2"]
    assert main([*base, "--shard-index", "0"]) == 0
    assert "index not merged yet" in capsys.readouterr().out and not (out / "index.json").exists()
    assert main([*base, "--shard-index", "1"]) == 0
    index = shards.load_index(out)
    tokenizer = jaxcodec.load(exported)
    assert index["num_records"] == 3 and index["num_rejects"] == 1
    assert index["provenance"]["codec"]["weights_sha256"] == weights_sha256(tokenizer)
    assert index["fields"]["codes"] == {"dtype": "int16", "shape": ["frames", 4]}
    rejects = [json.loads(line) for line in (out / shards.REJECTS_NAME).read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["utt3"]

    seen = {}
    for shard in index["shards"]:
        reader = ArrayRecordReader(str(out / shard["file"]))
        for i in range(reader.num_records()):
            record = shards.decode_record(reader.read([i])[0])
            seen[record["id"]] = record
        reader.close()
    rows = {json.loads(line)["id"]: json.loads(line) for line in manifest.read_text().splitlines()}
    for utt_id, record in seen.items():
        wav, _ = audio.read(rows[utt_id]["path"])
        np.testing.assert_array_equal(record["codes"].T, tokenizer.encode(wav))
        assert record["codes"].dtype == np.int16 and record["num_samples"] == wav.size
        assert record["speaker"] == rows[utt_id]["speaker"]

    # a rerun finds everything complete; other settings into the same folder are refused
    assert main(base) == 0
    assert "2 already complete" in capsys.readouterr().out
    assert main([*base[:-1], "3"]) == 2
    assert "holds a set of 2 shards" in capsys.readouterr().err


def test_a_checkpoint_for_another_config_is_named(exported, corpus, tmp_path, capsys):
    """An exported file whose tensors do not fit the config it carries (here: relabelled as 8 levels)."""
    from safetensors.numpy import save_file

    tensors, metadata = files.read_safetensors(exported)
    config = json.loads(metadata["config"])
    config["rvq"]["n_q"] = 8
    bad = tmp_path / "relabelled.safetensors"
    save_file(tensors, str(bad), metadata={**metadata, "config": json.dumps(config)})
    assert main(["encode", str(corpus / "a.wav"), "-o", str(tmp_path / "a.npy"), "--checkpoint", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has shape" in err and "quantizer" in err, err


def test_a_nan_file_in_a_folder_is_a_reject_and_the_run_goes_on(exported, tmp_path, capsys):
    """Issue 18 #6: NaN samples were found only when the batch ran, so one bad file aborted the run (and the
    rejects gathered so far were lost); now the file is rejected when it is read."""
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "good.wav", _speech_like(0.5, seed=4), 16_000)
    nan = _speech_like(0.5, seed=5)
    nan[100:103] = np.nan
    sf.write(folder / "nan.wav", nan, 16_000, subtype="FLOAT")  # same bucket, so the same batch as good.wav
    out = tmp_path / "codes"
    assert main(["encode", str(folder), "-o", str(out), "--checkpoint", str(exported), "--quiet"]) == 1
    assert (out / "good.npy").is_file() and not (out / "nan.npy").exists()
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejects] == [("nan", "3 NaN/Inf samples")]
    assert "1 written" in capsys.readouterr().out


def test_one_input_into_an_existing_folder_is_refused_in_one_line(exported, corpus, tmp_path, capsys):
    """Issue 18 #6: `encode one.wav -o EXISTING_DIR` did nothing (the folder "existed" as the output) and with
    --overwrite was a traceback; -o names the output file for one input (help, README)."""
    for extra in ([], ["--overwrite"]):
        assert main(["encode", str(corpus / "a.wav"), "-o", str(tmp_path), "--checkpoint", str(exported),
                     *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"-o {tmp_path} is a folder" in err, err
        assert str(tmp_path / "a.npy") in err and not (tmp_path / "a.npy").exists()


def test_an_unreadable_folder_is_a_reject_of_encode(exported, tmp_path, capsys, monkeypatch):
    """Issue 18 #7: rglob skipped a folder it could not list without a word. The folder is made unlistable by
    os.scandir raising PermissionError, as it does for a chmod 000 folder (which root could list anyway)."""
    import os

    folder = tmp_path / "in"
    (folder / "locked").mkdir(parents=True)
    sf.write(folder / "good.wav", _speech_like(0.5, seed=4), 16_000)
    sf.write(folder / "locked" / "hidden.wav", _speech_like(0.5, seed=5), 16_000)
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(folder / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "codes"
    assert main(["encode", str(folder), "-o", str(out), "--checkpoint", str(exported), "--quiet"]) == 1
    assert (out / "good.npy").is_file()
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["path"]) for r in rejects] == [("locked", str(folder / "locked"))]
    assert "folder not readable (Permission denied)" in rejects[0]["reason"]
    assert "1 skipped" in capsys.readouterr().out


def _npy_header(shape, descr="<i2") -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()  # the magic string, version and header


def test_a_codes_header_claiming_a_terabyte_is_refused_before_reading(exported, tmp_path, capsys):
    """Issue 18 #8: a .npy header claiming 8 × 1.1e11 int16 made decode allocate 1.8 TiB; the header is now
    checked against the file's size and MAX_CODES_BYTES before anything is read."""
    path = tmp_path / "huge.npy"
    path.write_bytes(_npy_header((8, 110_000_000_000)) + bytes(64))
    assert main(["decode", str(path), "-o", str(tmp_path / "x.wav"), "--checkpoint", str(exported)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "header declares 1760000000000 bytes of codes, more than" in err, err


def test_an_empty_or_truncated_codes_file_is_a_reject_of_a_folder_run(exported, tmp_path, capsys):
    """Issue 18 #8: an empty .npy raised EOFError, which aborted the folder run."""
    folder = tmp_path / "codes"
    folder.mkdir()
    np.save(folder / "good.npy", np.ones((4, 10), np.int16))
    (folder / "empty.npy").write_bytes(b"")
    (folder / "short.npy").write_bytes(_npy_header((4, 10)) + bytes(30))  # 80 bytes declared
    out = tmp_path / "wavs"
    assert main(["decode", str(folder), "-o", str(out), "--checkpoint", str(exported), "--quiet"]) == 1
    assert (out / "good.wav").is_file()
    reasons = {json.loads(line)["id"]: json.loads(line)["reason"] for line in (out / "rejects.jsonl").open()}
    assert reasons.keys() == {"empty", "short"}
    assert reasons["empty"].startswith("not a numpy codes file (EOF")
    assert reasons["short"] == "header declares 80 bytes of codes, the file holds 30 (truncated?)"
    assert "2 skipped" in capsys.readouterr().out


def test_encode_into_a_folder_another_run_holds_writes_nothing(exported, corpus, tmp_path, capsys):
    """Issue 18 defect 1 with inputs that would encode: refused before the codec loads (tests/test_output_lock.py
    covers the lock itself and the other commands)."""
    from jaxcodec import output_lock
    from tests.test_output_lock import held_by_child

    out = tmp_path / "codes"
    with held_by_child(out) as child:
        assert main(["encode", str(corpus), "-o", str(out), "--checkpoint", str(exported), "--quiet"]) == 2
        assert [p.name for p in out.iterdir()] == [output_lock.LOCK_NAME]  # the holder's, nothing else
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"pid {child.pid}" in err
