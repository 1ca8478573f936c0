"""`jaxcodec precompute` end to end with small random teachers saved in the hubs' on-disk formats: every manifest
utterance ends in exactly one shard or in the rejects, records hold what each teacher gives the utterance alone,
bad files are rejected with their reasons, work splits across processes, and a SIGKILL'd run resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from jaxcodec import audio
from jaxcodec.data import manifest, shards
from teachers import precompute
from teachers.ecapa import EcapaTeacher, save_random_ecapa
from teachers.frames import codec_frames
from teachers.hubert import EDGE_PAD, MAX_CHUNK_SECONDS, HubertTeacher, save_random_hubert

HUBERT_LAYER = "1"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return (str(save_random_hubert(root / "hubert", size="tiny", seed=0)),
            str(save_random_ecapa(root / "ecapa", size="tiny", seed=0)))


def speechlike(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Harmonic bursts over noise: enough structure for every stage, no speech engine needed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 100 + 80 * rng.random()
    wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t + rng.random())
    return (0.2 * wav * envelope + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def entry(path, utt_id, seconds=1.0, rate=16_000, split="train"):
    return {"id": utt_id, "path": str(path), "duration": seconds, "frames": int(seconds * rate),
            "sample_rate": rate, "channels": 1, "speaker": utt_id.split("-")[0], "chapter": None, "text": None,
            "split": split}


def good_corpus(directory, count: int, seconds=(0.6, 1.4)) -> list[dict]:
    rows = []
    for i in range(count):
        speaker = 100 + i % 3
        path = directory / f"{speaker}" / "1" / f"{speaker}-1-{i:04d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        dur = seconds[0] + (seconds[1] - seconds[0]) * ((i * 7) % count) / count
        sf.write(path, speechlike(dur, 16_000, i), 16_000, subtype="PCM_16")
        rows.append(entry(path, path.stem, dur, split="valid" if i % 5 == 4 else "train"))
    return rows


def write_manifest(path, rows):
    manifest.write(rows, [], path)
    return path


def options(manifest_path, out, models, **kw):
    hubert, ecapa = models
    kw.setdefault("progress", False)
    return precompute.Options(manifest=manifest_path, out=out, hubert=hubert, hubert_layer=HUBERT_LAYER,
                              ecapa=ecapa, **kw)


def bad_inputs(directory) -> tuple[list[dict], dict[str, str]]:
    """Each bad input of the issue, and the word its rejection reason must contain (None: processed)."""
    directory.mkdir(parents=True, exist_ok=True)
    rows, expect = [], {}

    def add(name, writer, reason, **kw):
        path = directory / name
        writer(path)
        utt = path.stem
        rows.append(entry(path, utt, **kw))
        expect[utt] = reason

    add("empty.wav", lambda p: p.write_bytes(b""), "empty file")
    add("truncated.wav", lambda p: (sf.write(p, speechlike(1.0, 16_000, 1), 16_000),
                                    p.write_bytes(p.read_bytes()[:12_000])), "truncated")
    add("notaudio.wav", lambda p: p.write_bytes(b"<html>not audio</html>" * 50), "not readable as audio")
    nan = speechlike(1.0, 16_000, 2)
    nan[100] = np.nan
    add("nan.wav", lambda p: sf.write(p, nan, 16_000, subtype="FLOAT"), "NaN")
    add("zeros.wav", lambda p: sf.write(p, np.zeros(16_000, np.float32), 16_000), "silent")
    add("short.wav", lambda p: sf.write(p, speechlike(0.05, 16_000, 3), 16_000), "too short", seconds=0.05)
    add("stereo.wav", lambda p: sf.write(p, np.stack([speechlike(1.0, 16_000, 4)] * 2, 1), 16_000), None)
    add("rate8k.wav", lambda p: sf.write(p, speechlike(1.0, 8_000, 5), 8_000), None, rate=8_000)
    add("rate48k.flac", lambda p: sf.write(p, speechlike(1.0, 48_000, 6), 48_000), None, rate=48_000)
    add("missing.wav", lambda p: None, "file not found")
    return rows, expect


def read_all(out) -> dict[str, dict]:
    reader = shards.ShardReader(out)
    return {reader.ids[i]: reader[i] for i in range(len(reader))}


def test_end_to_end_records_equal_each_teacher_alone_and_bad_inputs_are_rejected(tmp_path, models):
    rows = good_corpus(tmp_path / "corpus", 7)
    bad_rows, expect = bad_inputs(tmp_path / "bad")
    manifest_path = write_manifest(tmp_path / "manifest.jsonl", rows + bad_rows)
    out = tmp_path / "shards"
    index = precompute.run(options(manifest_path, out, models, num_shards=3, batch_seconds=3.0), log=lambda m: None)
    assert index is not None and len(index["shards"]) == 3

    problems, _ = shards.verify(out, manifest_ids=[r["id"] for r in rows + bad_rows])
    assert problems == []
    rejects = {r["id"]: r["reason"] for r in map(json.loads, (out / shards.REJECTS_NAME).read_text().splitlines())}
    assert set(rejects) == {utt for utt, reason in expect.items() if reason}
    for utt, reason in rejects.items():
        assert expect[utt] in reason, (utt, reason)

    records = read_all(out)
    assert set(records) == {r["id"] for r in rows} | {utt for utt, reason in expect.items() if reason is None}
    hubert, ecapa = HubertTeacher(models[0], layer=HUBERT_LAYER), EcapaTeacher(models[1])
    for row in rows + bad_rows:
        if row["id"] not in records:
            continue
        record = records[row["id"]]
        wav, _ = audio.read(row["path"])
        pcm, _ = audio.to_int16(wav)
        np.testing.assert_array_equal(record["audio"], pcm)  # stereo downmixed, 8/48 kHz resampled to 16 kHz
        assert record["num_samples"] == len(pcm) and record["split"] == row["split"]
        assert record["content"].shape == (codec_frames(len(pcm)), hubert.dim)
        alone = audio.from_int16(pcm)  # the teachers see the stored int16 signal
        np.testing.assert_allclose(record["content"], hubert([alone])[0], atol=2e-3, rtol=2e-3)  # float16 storage
        np.testing.assert_allclose(record["speaker_embedding"], ecapa([alone])[0]["speaker_embedding"], atol=2e-3,
                                   rtol=2e-3)
    assert index["provenance"]["content"]["layer"] == HUBERT_LAYER
    assert index["provenance"]["content"]["weights_sha256"] == hubert.weights_sha256
    # The random ECAPA-TDNN stand-in, calibrated at the merge: checked by hand from the stored embeddings.
    calibration = index["provenance"]["speaker"]["calibration"]
    train = [r for r in records.values() if r["split"] == "train"]
    embeddings = np.stack([r["speaker_embedding"].astype(np.float64) for r in train])
    speakers = np.array([r["speaker"] for r in train])
    center = embeddings.mean(axis=0)
    scale = np.sqrt(np.mean((embeddings - center) ** 2))
    np.testing.assert_allclose(calibration["center"], center, rtol=1e-6, atol=1e-9)
    assert calibration["scale"] == pytest.approx(scale, rel=1e-6)
    logits = (embeddings - center) / (scale * calibration["temperature"])
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    kl = [np.sum(np.exp(log_p[i]) * (log_p[i] - log_p[j])) for i in range(len(train)) for j in range(len(train))
          if speakers[i] != speakers[j]]
    assert np.mean(kl) == pytest.approx(calibration["target_nats"], rel=1e-4)
    assert calibration["calibrated"]["kl_between_speakers"] >= 0.5


def test_twenty_minute_file_runs_in_bounded_windows(tmp_path, models, monkeypatch):
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    minutes = 20
    with sf.SoundFile(path, "w", 16_000, 1, subtype="PCM_16") as f:  # written a minute at a time
        for m in range(minutes):
            f.write(speechlike(60.0, 16_000, m) + 0.001 * rng.standard_normal(960_000).astype(np.float32))
    manifest_path = write_manifest(tmp_path / "m.jsonl", [entry(path, "long", minutes * 60.0)])
    longest_forward = []
    original = HubertTeacher._forward

    def spy(self, inputs):
        longest_forward.append(max(len(x) for x in inputs))
        return original(self, inputs)

    monkeypatch.setattr(HubertTeacher, "_forward", spy)
    out = tmp_path / "shards"
    precompute.run(options(manifest_path, out, models), log=lambda m: None)
    record = read_all(out)["long"]
    assert record["num_samples"] == minutes * 960_000
    assert record["content"].shape[0] == minutes * 3_000 and np.all(np.isfinite(record["content"]))
    # HuBERT never saw more than one 40 s window (+ its edge padding) at once.
    assert len(longest_forward) > 1
    assert max(longest_forward) <= MAX_CHUNK_SECONDS * 16_000 + 2 * EDGE_PAD


def test_split_across_processes_then_merge_and_rerun_skips(tmp_path, models):
    rows = good_corpus(tmp_path / "corpus", 6)
    manifest_path = write_manifest(tmp_path / "manifest.jsonl", rows)
    out = tmp_path / "shards"
    assert precompute.run(options(manifest_path, out, models, num_shards=2, shard_index=1), log=lambda m: None) is None
    assert not (out / shards.INDEX_NAME).exists()
    index = precompute.run(options(manifest_path, out, models, num_shards=2, shard_index=0), log=lambda m: None)
    assert index["num_records"] == 6
    assert sorted(read_all(out)) == sorted(r["id"] for r in rows)
    # Each shard holds the round-robin share of the id-sorted manifest.
    ids = sorted(r["id"] for r in rows)
    assert [sorted(s["ids"]) for s in index["shards"]] == [ids[0::2], ids[1::2]]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    messages = []
    precompute.run(options(manifest_path, out, models, num_shards=2), log=messages.append)
    assert "2 already complete" in messages[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")} == before  # nothing rewritten
    cli = subprocess.run([sys.executable, "-m", "jaxcodec", "precompute", "--out", str(out), "--merge-index"],
                         capture_output=True, text=True)
    assert cli.returncode == 0 and "6 utterances in 2 shards" in cli.stdout


def test_other_teacher_settings_are_refused_on_an_existing_set(tmp_path, models):
    rows = good_corpus(tmp_path / "corpus", 4)
    manifest_path = write_manifest(tmp_path / "manifest.jsonl", rows)
    out = tmp_path / "shards"
    precompute.run(options(manifest_path, out, models, num_shards=2, shard_index=0), log=lambda m: None)
    with pytest.raises(shards.ShardError, match=r"different provenance \(content\)"):
        precompute.run(precompute.Options(manifest=manifest_path, out=out, hubert=models[0], hubert_layer="avg",
                                          ecapa=models[1], num_shards=2, shard_index=1, progress=False),
                       log=lambda m: None)
    with pytest.raises(shards.ShardError, match=r"holds a set of 2 shards; this run asks for 3 \(use --num-shards 2"):
        precompute.run(options(manifest_path, out, models, num_shards=3), log=lambda m: None)
    with pytest.raises(shards.ShardError, match="needs --num-shards"):
        precompute.run(options(manifest_path, out, models, shard_index=1), log=lambda m: None)


def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path, models):
    rows = good_corpus(tmp_path / "corpus", 40, seconds=(0.6, 1.0))
    manifest_path = write_manifest(tmp_path / "manifest.jsonl", rows)
    out = tmp_path / "shards"
    command = [sys.executable, "-m", "jaxcodec", "precompute", "--manifest", str(manifest_path), "--out", str(out),
               "--hubert", models[0], "--hubert-layer", HUBERT_LAYER, "--ecapa", models[1], "--num-shards", "8",
               "--batch-seconds", "1", "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob("shard-*.json")) and list(out.glob(".shard-*.tmp-*")):
            break  # one shard committed, the next one half-written
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (out / shards.INDEX_NAME).exists(), "the run finished before it could be killed"
    committed = len(list(out.glob("shard-*.json")))
    assert 1 <= committed < 8
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{committed} already complete" in resumed.stdout
    verify = subprocess.run([sys.executable, "-m", "jaxcodec", "shards", "verify", str(out), "--manifest",
                             str(manifest_path)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout
    index = shards.load_index(out)
    ids = [i for shard in index["shards"] for i in shard["ids"]]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # every utterance exactly once
    assert not list(out.glob(".shard-*.tmp-*"))


class FlakyTeachers(precompute.Teachers):
    """Real teachers, except that one utterance length makes the forward raise and another gives NaN features:
    the batch containing them must still land, with exactly those two rejected."""

    def __init__(self, options, crash_samples, nan_samples):
        super().__init__(options)
        self.crash_samples, self.nan_samples = crash_samples, nan_samples

    def __call__(self, wavs, texts=None):
        if any(len(w) == self.crash_samples for w in wavs):
            raise RuntimeError("CUDA out of memory (simulated)\nsecond line")
        out = super().__call__(wavs, texts)
        for w, features in zip(wavs, out, strict=True):
            if len(w) == self.nan_samples:
                features["content"][3] = np.nan
        return out


def test_a_failing_or_non_finite_utterance_is_rejected_and_its_batch_survives(tmp_path, models):
    rows = good_corpus(tmp_path / "corpus", 6)
    manifest_path = write_manifest(tmp_path / "manifest.jsonl", rows)
    lengths = {r["id"]: len(audio.read(r["path"])[0]) for r in rows}
    crash_id, nan_id = rows[1]["id"], rows[4]["id"]
    opts = options(manifest_path, tmp_path / "shards", models, batch_seconds=60.0)  # one batch holds them all
    teachers = FlakyTeachers(opts, lengths[crash_id], lengths[nan_id])
    index = precompute.run(opts, log=lambda m: None, teachers=teachers)
    rejects = {r["id"]: r["reason"] for r in map(json.loads, (opts.out / shards.REJECTS_NAME).read_text().splitlines())}
    assert rejects == {crash_id: "teacher failed: CUDA out of memory (simulated) second line",
                       nan_id: "teacher output content is not finite (NaN/Inf, or beyond float16 range)"}
    assert index["num_records"] == 4


def test_frame_level_ecapa_features_are_stored_on_the_codec_grid(tmp_path, models):
    rows = good_corpus(tmp_path / "corpus", 2)
    manifest_path = write_manifest(tmp_path / "manifest.jsonl", rows)
    out = tmp_path / "shards"
    index = precompute.run(options(manifest_path, out, models, ecapa_frames=True), log=lambda m: None)
    assert index["fields"]["speaker_frames"] == {"dtype": "float16", "shape": ["frames", 96]}
    assert index["provenance"]["speaker"]["frame_layer"] == "mfa"
    assert shards.verify(out)[0] == []  # includes: speaker_frames rows == ceil(samples / 320)
    reader = shards.ShardReader(out)
    reader.require(shards.Requirement(speaker_frames=True, content_layer=HUBERT_LAYER))
    record = reader[0]
    assert record["speaker_frames"].shape == (codec_frames(record["num_samples"]), 96)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_is_rejected_not_fatal(tmp_path, models):
    rows = good_corpus(tmp_path / "corpus", 3)
    os.chmod(rows[0]["path"], 0)
    manifest_path = write_manifest(tmp_path / "manifest.jsonl", rows)
    index = precompute.run(options(manifest_path, tmp_path / "shards", models), log=lambda m: None)
    assert index["num_records"] == 2 and index["num_rejects"] == 1


def test_unexpected_reader_errors_become_rejects(monkeypatch):
    def explode(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(audio, "read", explode)
    result = precompute.load({"id": "x", "path": "/data/x.flac"}, 0.5, None)
    assert isinstance(result, precompute.Rejected)
    assert result.reason == "cannot read: PermissionError: [Errno 13] Permission denied: '/data/x.flac'"
