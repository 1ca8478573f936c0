"""The speaker teacher's calibration (jaxcodec/data/shards/calibration.py) against numpy by hand, its invariances,
and its life in a shard set: `jaxcodec shards calibrate` on a set written before calibration (legacy field names),
`shards verify` and `shards info` after it, and the standardised targets the input pipeline hands to training."""

import json

import numpy as np
import pytest

from jaxcodec import config as config_lib
from jaxcodec.commands import main
from jaxcodec.data import pipeline, shards
from jaxcodec.data.shards import calibration


def unit_norm_speakers(speakers=4, per_speaker=3, dim=32, seed=0):
    """resemblyzer-like embeddings: non-negative, L2-normalised, a speaker direction plus utterance noise."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for s in range(speakers):
        centre = np.abs(rng.normal(size=dim))
        for _ in range(per_speaker):
            e = np.maximum(centre + 0.3 * rng.normal(size=dim), 0)
            rows.append(e / np.linalg.norm(e))
            labels.append(f"s{s}")
    return np.array(rows), labels


def kl_by_hand(p, q):
    return float(np.sum(p * np.log(p / q)))


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_measures_by_hand():
    embeddings = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.5, 1.0]])
    speakers = ["a", "b", "a"]
    m = calibration.measures(embeddings, speakers, center=0.0, scale=1.0, tau=0.5)
    p = [softmax(e / 0.5) for e in embeddings]
    assert m["entropy"] == pytest.approx(np.mean([-np.sum(x * np.log(x)) for x in p]), rel=1e-9)
    assert m["uniform_entropy"] == pytest.approx(np.log(3))
    between = [kl_by_hand(p[i], p[j]) for i in range(3) for j in range(3) if speakers[i] != speakers[j]]
    within = [kl_by_hand(p[0], p[2]), kl_by_hand(p[2], p[0])]
    assert m["kl_between_speakers"] == pytest.approx(np.mean(between), rel=1e-9)
    assert m["kl_within_speakers"] == pytest.approx(np.mean(within), rel=1e-9)
    mean = np.mean(p, axis=0)  # three utterances: the only batch is all of them
    assert m["floor_batch3"] == pytest.approx(np.mean([kl_by_hand(x, mean) for x in p]), rel=1e-9)


def test_unit_norm_teacher_is_uniform_raw_and_informative_calibrated():
    embeddings, speakers = unit_norm_speakers()
    result = calibration.speaker_calibration(embeddings, speakers, target_nats=1.5)
    raw, calibrated = result["raw"], result["calibrated"]
    assert raw["uniform_entropy"] - raw["entropy"] < 0.05 and raw["kl_between_speakers"] < 0.05
    assert calibrated["kl_between_speakers"] == pytest.approx(1.5, rel=1e-6)
    assert calibrated["kl_between_speakers"] > calibrated["kl_within_speakers"]  # speakers, not noise
    np.testing.assert_allclose(result["center"], embeddings.mean(axis=0), rtol=1e-12)
    assert result["scale"] == pytest.approx(np.sqrt(np.mean((embeddings - embeddings.mean(0)) ** 2)), rel=1e-12)
    # Standardising is what the pipeline applies: unit mean square on the calibration set.
    standardised = calibration.standardise(embeddings, result)
    assert np.mean(standardised**2) == pytest.approx(1.0, rel=1e-5)


def test_calibration_ignores_the_teachers_offset_and_scale():
    embeddings, speakers = unit_norm_speakers(seed=3)
    first = calibration.speaker_calibration(embeddings, speakers)
    moved = calibration.speaker_calibration(40.0 * embeddings - 7.0, speakers)
    assert moved["temperature"] == pytest.approx(first["temperature"], rel=1e-6)
    for key in ("entropy", "kl_between_speakers", "kl_within_speakers"):
        assert moved["calibrated"][key] == pytest.approx(first["calibrated"][key], rel=1e-6)


def test_one_speaker_uses_utterances_and_constant_embeddings_are_refused():
    embeddings, _ = unit_norm_speakers(speakers=1, per_speaker=5)
    result = calibration.speaker_calibration(embeddings, ["only"] * 5, target_nats=1.0)
    assert result["between"].startswith("utterances") and result["calibrated"]["kl_between_speakers"] == \
        pytest.approx(1.0, rel=1e-6)
    with pytest.raises(calibration.CalibrationError, match="every training embedding is the same"):
        calibration.speaker_calibration(np.ones((4, 8)), ["a", "b", "a", "b"])
    with pytest.raises(calibration.CalibrationError, match="at least 2"):
        calibration.speaker_calibration(np.ones((1, 8)), ["a"])


def test_sample_rows_deals_round_robin_over_speakers():
    speakers = ["a"] * 5 + ["b"] * 2 + ["c"] * 3
    assert calibration.sample_rows(speakers, limit=6) == [0, 1, 5, 6, 7, 8]
    assert calibration.sample_rows(speakers, limit=100) == list(range(10))


# --- a shard set written before calibration and the role names -------------------------------------------------

def write_legacy_set(directory, speakers=3, per_speaker=4, dim=16):
    """A set as jaxcodec wrote them before issue 24: `hubert`/`ecapa` fields and provenance, no speaker lists."""
    embeddings, labels = unit_norm_speakers(speakers, per_speaker, dim, seed=5)
    fields = {"audio": {"dtype": "int16", "shape": ["samples"]},
              "hubert": {"dtype": "float16", "shape": ["frames", 4]},
              "ecapa": {"dtype": "float16", "shape": [dim]}}
    provenance = {"hubert": {"layer": "9", "dim": 4, "model": "h"}, "ecapa": {"dim": dim, "model": "resemblyzer"},
                  "sample_rate": 16_000, "hop_length": 320}
    writer = shards.ShardWriter(directory, 0, 1, fields)
    rng = np.random.default_rng(0)
    for i, (embedding, speaker) in enumerate(zip(embeddings, labels, strict=True)):
        n = 16_000
        writer.write({"id": f"u{i:02d}", "split": "train", "speaker": speaker, "sample_rate": 16_000,
                      "num_samples": n, "audio": (1000 * rng.standard_normal(n)).astype(np.int16),
                      "hubert": rng.standard_normal((50, 4)).astype(np.float16),
                      "ecapa": embedding.astype(np.float16)})
    writer.commit(provenance, [], {"num_shards": 1})
    shards.merge_index(directory)
    index_path = directory / "index.json"
    raw = json.loads(index_path.read_text())
    for shard in raw["shards"]:  # indexes of that time listed no per-record speakers
        del shard["speakers"]
    raw["fields"], raw["provenance"] = fields, provenance  # and named the teachers' entries after the models
    index_path.write_text(json.dumps(raw))
    return embeddings.astype(np.float16).astype(np.float32), labels


def test_legacy_set_reads_under_role_names_and_calibrates(tmp_path, capsys):
    embeddings, speakers = write_legacy_set(tmp_path)
    reader = shards.ShardReader(tmp_path)
    assert set(reader.fields) == {"audio", "content", "speaker_embedding"}
    assert reader.provenance["speaker"]["model"] == "resemblyzer" and reader.speakers is None
    assert set(reader[0]) >= {"content", "speaker_embedding"} and "ecapa" not in reader[0]
    assert shards.speaker_calibration(reader.provenance) is None

    assert main(["shards", "calibrate", str(tmp_path), "--target-nats", "2.0"]) == 0
    assert "speaker calibration centred" in capsys.readouterr().out
    calibrated = shards.speaker_calibration(shards.ShardReader(tmp_path).provenance)
    expected = calibration.speaker_calibration(embeddings, speakers, 2.0)
    assert calibrated["temperature"] == pytest.approx(expected["temperature"], rel=1e-6)
    assert calibrated["calibrated"]["kl_between_speakers"] == pytest.approx(2.0, rel=1e-6)
    assert shards.verify(tmp_path)[0] == []  # the parts, without calibration, still agree with index.json
    assert main(["shards", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "speaker teacher: resemblyzer" in out and "τ = " in out and "KL between speakers" in out


def test_pipeline_hands_training_the_standardised_embedding(tmp_path):
    embeddings, speakers = write_legacy_set(tmp_path)
    assert main(["shards", "calibrate", str(tmp_path)]) == 0
    reader = shards.ShardReader(tmp_path)
    cal = shards.speaker_calibration(reader.provenance)
    base = {"model": {"semantic_dim": 4, "acoustic_dim": 16}, "train": {"batch_size": 4}}
    batch = next(iter(pipeline.make_dataset(reader, config_lib.from_dict(base), split="train", shuffle=False,
                                            repeat=False)))
    by_id = {reader.ids[i]: embeddings[i] for i in range(len(reader))}
    expected = [(by_id[f"u{i:02d}"] - np.asarray(cal["center"])) / cal["scale"] for i in range(4)]
    np.testing.assert_allclose(batch["speaker_embedding"].astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    raw = config_lib.from_dict({**base, "loss": {"acoustic_standardize": False}})
    batch = next(iter(pipeline.make_dataset(reader, raw, split="train", shuffle=False, repeat=False)))
    np.testing.assert_array_equal(batch["speaker_embedding"].astype(np.float32), embeddings[:4])
