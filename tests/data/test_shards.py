"""The shard format: records round-trip, writers commit atomically, the index merges, the reader gives random
access, and `verify` catches each kind of damage."""

import json
import subprocess
import sys

import msgpack
import numpy as np
import pytest

from jaxcodec.data import shards

FIELDS = {
    "audio": {"dtype": "int16", "shape": ["samples"]},
    "content": {"dtype": "float16", "shape": ["frames", 8]},
    "speaker_embedding": {"dtype": "float16", "shape": [4]},
}
PROVENANCE = {"content": {"layer": "9", "dim": 8}, "speaker": {"dim": 4}, "sample_rate": 16_000, "hop_length": 320}
SOURCE = {"manifest_sha256": "x", "num_shards": 2}


def make_record(i: int, split: str = "train") -> dict:
    rng = np.random.default_rng(i)
    n = 320 * (3 + i) + 17 * i  # not always a whole number of frames
    frames = -(-n // 320)
    return {
        "id": f"utt-{i:03d}", "split": split, "speaker": f"spk{i % 2}", "text": "héllo", "sample_rate": 16_000,
        "num_samples": n, "peak": 0.5, "rms_db": -20.0,
        "audio": rng.integers(-3000, 3000, n).astype(np.int16),
        "content": rng.standard_normal((frames, 8)).astype(np.float16),
        "speaker_embedding": rng.standard_normal(4).astype(np.float16),
    }


def write_set(directory, records_per_shard=((0, 1, 2), (3, 4)), rejects=({"id": "bad", "reason": "silent"},)):
    count = len(records_per_shard)
    for index, ids in enumerate(records_per_shard):
        writer = shards.ShardWriter(directory, index, count, FIELDS)
        for i in ids:
            writer.write(make_record(i, "valid" if i == 4 else "train"))
        writer.commit(PROVENANCE, list(rejects) if index == 0 else [], SOURCE, code_version="test")
    return shards.merge_index(directory)


def test_record_round_trip_keeps_dtypes_shapes_and_values():
    record = make_record(3)
    back = shards.decode_record(shards.encode_record(record))
    assert set(back) == set(record)
    for key, value in record.items():
        if isinstance(value, np.ndarray):
            assert back[key].dtype == value.dtype and back[key].shape == value.shape
            np.testing.assert_array_equal(back[key], value)
        else:
            assert back[key] == value
    # Big-endian input is stored little-endian with the same values.
    big = np.arange(5, dtype=">i2")
    np.testing.assert_array_equal(shards.decode_record(shards.encode_record({"a": big}))["a"], big)


def test_records_are_plain_msgpack_with_no_object_dtypes():
    raw = shards.encode_record(make_record(0))
    plain = msgpack.unpackb(raw, raw=False)  # any msgpack reader can read it: no pickle, no ext types
    assert plain["audio"][shards.ARRAY_KEY] == "int16" and isinstance(plain["audio"]["data"], bytes)
    with pytest.raises(shards.ShardError, match="cannot be stored"):
        shards.encode_record({"x": np.array([object()], dtype=object)})
    evil = msgpack.packb({"x": {shards.ARRAY_KEY: "object", "shape": [1], "data": b"\0" * 8}})
    with pytest.raises(shards.ShardError, match="not allowed"):
        shards.decode_record(evil)


def test_writer_refuses_a_record_that_breaks_the_field_spec(tmp_path):
    writer = shards.ShardWriter(tmp_path, 0, 1, FIELDS)
    bad = make_record(0)
    bad["content"] = bad["content"].astype(np.float32)
    with pytest.raises(shards.ShardError, match="field 'content' is float32"):
        writer.write(bad)
    writer.abort()
    assert list(tmp_path.iterdir()) == []  # nothing half-written stays


def test_commit_is_the_last_step_and_merge_builds_the_index(tmp_path):
    writer = shards.ShardWriter(tmp_path, 0, 1, FIELDS)
    writer.write(make_record(0))
    # Before commit only a temporary file exists: a reader or a rerun sees no shard.
    assert [p.name.startswith(".shard-00000-of-00001.array_record.tmp-") for p in tmp_path.iterdir()] == [True]
    assert shards.read_part(tmp_path, 0, 1) is None
    part = writer.commit(PROVENANCE, [], SOURCE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000-of-00001.array_record",
                                                          "shard-00000-of-00001.json"]
    assert part["sha256"] == shards.sha256_file(tmp_path / part["file"]) and part["records"] == 1


def test_reader_random_access_across_shards(tmp_path):
    index = write_set(tmp_path)
    assert index["num_records"] == 5 and index["splits"] == {"train": 4, "valid": 1} and index["num_rejects"] == 1
    reader = shards.ShardReader(tmp_path)
    assert len(reader) == 5
    assert reader.ids == [f"utt-{i:03d}" for i in range(5)]
    for i in (4, 0, 3, 2, 1):  # out of order: random access
        record, expected = reader[i], make_record(i)
        np.testing.assert_array_equal(record["audio"], expected["audio"])
        np.testing.assert_array_equal(record["content"], expected["content"])
        assert record["text"] == "héllo"
    assert reader.locate(3) == (1, 0)
    assert list(reader.indices("valid")) == [4] and len(reader.indices()) == 5
    assert reader.position("utt-002") == 2
    assert [r["id"] for r in reader.__getitems__([1, 3])] == ["utt-001", "utt-003"]
    with pytest.raises(IndexError):
        reader[5]
    assert [json.loads(line)["id"] for line in (tmp_path / shards.REJECTS_NAME).read_text().splitlines()] == ["bad"]


def test_reader_is_picklable_for_grain_workers(tmp_path):
    import pickle  # only to prove the *data source* can be sent to worker processes; records never use pickle

    write_set(tmp_path)
    reader = shards.ShardReader(tmp_path)
    reader[0]
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone[3]["audio"], reader[3]["audio"])


def test_require_names_the_mismatch(tmp_path):
    write_set(tmp_path)
    reader = shards.ShardReader(tmp_path)
    reader.require(shards.Requirement(sample_rate=16_000, content_layer="9", content_dim=8, speaker_frames=False))
    with pytest.raises(shards.ShardError, match="content teacher layer is '9' in the shards but the config needs"):
        reader.require(shards.Requirement(content_layer="avg"))
    with pytest.raises(shards.ShardError, match="content teacher dimension is 8"):
        reader.require(shards.Requirement(content_dim=768))


def test_merge_names_missing_shards_and_disagreeing_parts(tmp_path):
    writer = shards.ShardWriter(tmp_path, 1, 3, FIELDS)
    writer.write(make_record(0))
    writer.commit(PROVENANCE, [], SOURCE)
    with pytest.raises(shards.ShardError, match=r"2 of 3 shards are not complete \(shard index 0, 2\)"):
        shards.merge_index(tmp_path)
    for index, layer in ((0, "9"), (2, "avg")):
        writer = shards.ShardWriter(tmp_path, index, 3, FIELDS)
        writer.write(make_record(index + 1))
        writer.commit({**PROVENANCE, "content": {"layer": layer, "dim": 8}}, [], SOURCE)
    with pytest.raises(shards.ShardError, match="disagree on provenance"):
        shards.merge_index(tmp_path)


def test_stale_temporaries_and_uncommitted_shards_are_removed(tmp_path):
    (tmp_path / ".shard-00000-of-00002.array_record.tmp-123").write_bytes(b"partial")
    (tmp_path / "shard-00000-of-00002.array_record").write_bytes(b"renamed but never committed")
    removed = shards.remove_stale_temporaries(tmp_path, 0, 2)
    assert len(removed) == 2 and list(tmp_path.iterdir()) == []


def test_load_index_errors(tmp_path):
    with pytest.raises(shards.ShardError, match="index.json not found"):
        shards.ShardReader(tmp_path)
    (tmp_path / "index.json").write_text('{"format": "other"}')
    with pytest.raises(shards.ShardError, match="is not jaxcodec-shards"):
        shards.load_index(tmp_path)


def test_verify_passes_on_a_good_set_and_checks_manifest_coverage(tmp_path):
    write_set(tmp_path)
    assert shards.verify(tmp_path) == ([], [])
    ids = [f"utt-{i:03d}" for i in range(5)] + ["bad"]
    assert shards.verify(tmp_path, manifest_ids=ids)[0] == []
    problems, _ = shards.verify(tmp_path, manifest_ids=ids + ["lost-one"])
    assert problems == ["1 manifest utterances are in no shard and not rejected, e.g. 'lost-one'"]
    problems, _ = shards.verify(tmp_path, manifest_ids=ids[1:])
    assert problems == ["1 shard utterances are not in the manifest, e.g. 'utt-000'"]


def test_verify_detects_a_flipped_byte(tmp_path):
    write_set(tmp_path)
    path = tmp_path / "shard-00001-of-00002.array_record"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    problems, _ = shards.verify(tmp_path)
    assert problems == ["shard-00001-of-00002.array_record: sha256 differs from index.json (file changed or corrupt)"]


RECORD_BYTE = 2000  # inside a shard's first record (riegeli's file header is shorter, its next block header at 64 KiB)


def test_reading_a_corrupt_shard_names_the_file(tmp_path):
    """Issue 18 #12: array_record reports a damaged chunk as 'chunk data hash mismatch', naming no file; the reader
    (and so the training pipeline) raises a ShardError naming the shard."""
    write_set(tmp_path)
    path = tmp_path / "shard-00001-of-00002.array_record"
    data = bytearray(path.read_bytes())
    data[RECORD_BYTE] ^= 0xFF  # same size: the cheap checks at open pass, the record's checksum does not
    path.write_bytes(bytes(data))
    reader = shards.ShardReader(tmp_path)
    with pytest.raises(shards.ShardError, match=r"shard-00001-of-00002\.array_record: record 0 cannot be read "
                                                r"\(.*chunk data hash mismatch"):
        reader.__getitems__(range(len(reader)))
    reader.check_files()  # the start checks read no record: this damage shows on the read


def test_an_index_claiming_more_records_than_a_shard_holds_names_the_shard(tmp_path):
    """Issue 18 #12: index.json saying a shard holds more records than it does ('index 3 out of bound 3' from
    array_record, before) is a ShardError naming the shard, at the start checks and on a read."""
    write_set(tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    shard = index["shards"][0]
    shard["records"] += 1
    shard["ids"].append("utt-extra")
    shard["splits"].append("train")
    shard["num_samples"].append(1000)
    shard["speakers"].append("")
    (tmp_path / "index.json").write_text(json.dumps(index))
    message = r"shard-00000-of-00002\.array_record: holds 3 records, index.json says 4"
    with pytest.raises(shards.ShardError, match=message):
        shards.ShardReader(tmp_path)[3]
    with pytest.raises(shards.ShardError, match=message):
        shards.ShardReader(tmp_path).check_files()
    size = (tmp_path / "shard-00001-of-00002.array_record").stat().st_size
    index["shards"][1]["bytes"] = size + 1  # a truncated shard: refused at open, from its size alone
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(shards.ShardError, match=rf"shard-00001-of-00002\.array_record: {size} bytes, index.json "
                                                rf"says {size + 1}"):
        shards.ShardReader(tmp_path)


def test_verify_detects_missing_files_wrong_counts_and_duplicates(tmp_path):
    write_set(tmp_path, records_per_shard=((0, 1, 2), (2, 3)))  # utt-002 twice
    problems, _ = shards.verify(tmp_path)
    assert problems == ["utterance 'utt-002' is in both shard-00000-of-00002.array_record and "
                        "shard-00001-of-00002.array_record"]
    index = json.loads((tmp_path / "index.json").read_text())
    index["shards"][0]["records"] = 4
    (tmp_path / "index.json").write_text(json.dumps(index))
    (tmp_path / "shard-00001-of-00002.array_record").unlink()
    problems, _ = shards.verify(tmp_path)
    assert "shard-00000-of-00002.array_record: 3 records, index.json says 4" in problems
    assert "shard-00001-of-00002.array_record: missing" in problems


def test_verify_deep_checks_frame_counts_against_the_hop(tmp_path):
    writer = shards.ShardWriter(tmp_path, 0, 1, FIELDS)
    record = make_record(2)
    record["content"] = record["content"][:-1]  # one frame short of ceil(N / 320)
    writer.write(record)
    writer.commit(PROVENANCE, [], SOURCE)
    shards.merge_index(tmp_path)
    problems, _ = shards.verify(tmp_path)
    assert problems == ["shard-00000-of-00001.array_record record 0: content has 5 frames, 1634 samples need 6"]
    assert shards.verify(tmp_path, deep=False)[0] == []  # the quick check reads no records


def test_cli_shards_verify_exit_codes(tmp_path):
    write_set(tmp_path)
    ok = subprocess.run([sys.executable, "-m", "jaxcodec", "shards", "verify", str(tmp_path)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    (tmp_path / "shard-00000-of-00002.array_record").write_bytes(b"garbage")
    bad = subprocess.run([sys.executable, "-m", "jaxcodec", "shards", "verify", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "shard-00000-of-00002.array_record" in bad.stdout


def test_shard_module_imports_neither_jax_nor_torch():
    code = ("import sys, jaxcodec.data.shards, jaxcodec.audio; "
            "print(sorted(m for m in ('jax', 'torch', 'flax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wrong_type_records_and_index_keys_are_reported_not_raised(tmp_path, capsys):
    """Issue 18 #12: a record whose array entry has the wrong types, and an index.json missing a key, were
    tracebacks (TypeError in decode_record, KeyError in `shards info`)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    from jaxcodec import commands

    write_set(tmp_path)
    name = "shard-00001-of-00002.array_record"
    path = tmp_path / name
    path.unlink()
    writer = ArrayRecordWriter(str(path), shards.WRITER_OPTIONS)
    for i in (3, 4):
        writer.write(msgpack.packb({"id": f"utt-{i:03d}", "audio": {shards.ARRAY_KEY: "int16", "shape": "n",
                                                                       "data": 7}}))
    writer.close()
    index = json.loads((tmp_path / "index.json").read_text())
    index["shards"][1].update(bytes=path.stat().st_size, sha256=shards.sha256_file(path))
    (tmp_path / "index.json").write_text(json.dumps(index))
    (tmp_path / "shard-00001-of-00002.json").unlink()  # its part-index describes the old file
    problems, _ = shards.verify(tmp_path)
    assert len(problems) == 2 and all(p.startswith(f"{name} record ") and "undecodable" in p for p in problems)

    del index["num_records"]
    (tmp_path / "index.json").write_text(json.dumps(index))
    for action, code in (("info", 2), ("verify", 1)):
        assert commands.main(["shards", action, str(tmp_path)]) == code
        captured = capsys.readouterr()
        said = (captured.err + captured.out).strip().splitlines()
        assert len(said) == 2 if action == "verify" else len(said) == 1, said
        assert "index.json: has no 'num_records'" in said[0]
