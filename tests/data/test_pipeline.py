"""The grain input pipeline: hop-aligned crops, short utterances, static batches, global shuffle and per-epoch
reshuffle, host slices that reassemble the single-host batch, exact resume, validation determinism, batch placement
on a (4, 2) mesh, shard checks and loudness.

Synthetic records make every check exact: audio sample i holds the value i, content row j holds (j, record) and
speaker embedding holds the record number, so any array of a batch says where in which utterance it came from."""

import dataclasses
import json
import pickle

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcodec import config as cfg
from jaxcodec.data import pipeline, shards

HOP = 320
SEGMENT_FRAMES = 4
SEGMENT = SEGMENT_FRAMES * HOP  # 1280 samples
CONTENT_DIM, SPEAKER_DIM = 8, 4
PROVENANCE = {"content": {"layer": "9", "dim": CONTENT_DIM}, "speaker": {"dim": SPEAKER_DIM}, "sample_rate": 16_000,
              "hop_length": HOP}
# 20 train utterances (4 shorter than a segment, lengths not whole frames) and 6 validation ones, in two shards.
TRAIN_LENGTHS = [700, 1000, 3 * HOP + 17, 1279] + [SEGMENT + 37 * i for i in range(16)]
VALID_LENGTHS = [SEGMENT + 500 * i for i in range(6)]
LENGTHS = TRAIN_LENGTHS + VALID_LENGTHS
SHORT = [i for i, n in enumerate(TRAIN_LENGTHS) if n < SEGMENT]


def fields(speaker_frames_dim=None):
    spec = {"audio": {"dtype": "int16", "shape": ["samples"]},
            "content": {"dtype": "float16", "shape": ["frames", CONTENT_DIM]},
            "speaker_embedding": {"dtype": "float16", "shape": [SPEAKER_DIM]}}
    if speaker_frames_dim:
        spec["speaker_frames"] = {"dtype": "float16", "shape": ["frames", speaker_frames_dim]}
    return spec


def make_record(i: int, n: int, split: str, speaker_frames_dim=None) -> dict:
    frames = -(-n // HOP)
    content = np.zeros((frames, CONTENT_DIM), np.float16)
    content[:, 0] = np.arange(frames)  # row j says "I am frame j" …
    content[:, 1] = i  # … "of record i"
    record = {"id": f"utt-{i:03d}", "split": split, "sample_rate": 16_000, "num_samples": n,
              "audio": np.arange(n, dtype=np.int16),  # sample k holds k
              "content": content, "speaker_embedding": np.full(SPEAKER_DIM, i, np.float16)}
    if speaker_frames_dim:
        record["speaker_frames"] = np.repeat(content[:, :1], speaker_frames_dim, axis=1)
    return record


def write_set(directory, speaker_frames_dim=None, provenance=PROVENANCE):
    directory.mkdir(parents=True, exist_ok=True)
    halves = [range(0, 13), range(13, len(LENGTHS))]
    for index, ids in enumerate(halves):
        writer = shards.ShardWriter(directory, index, len(halves), fields(speaker_frames_dim))
        for i in ids:
            split = "train" if i < len(TRAIN_LENGTHS) else "valid"
            writer.write(make_record(i, LENGTHS[i], split, speaker_frames_dim))
        writer.commit(provenance, [], {"manifest_sha256": "x"})
    shards.merge_index(directory)
    return shards.ShardReader(directory)


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    return write_set(tmp_path_factory.mktemp("shards"))


def make_config(batch_size=4, **data):
    return cfg.from_dict({"model": {"semantic_dim": CONTENT_DIM, "acoustic_dim": SPEAKER_DIM},
                          "data": {"segment_seconds": SEGMENT_FRAMES / 50, **data},
                          "train": {"batch_size": batch_size}})


def take(dataset_or_iterator, count):
    iterator = iter(dataset_or_iterator)
    return [next(iterator) for _ in range(count)]


def assert_batches_equal(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def record_ids(batches):
    return [int(r) for batch in batches for r in batch["speaker_embedding"][:, 0]]


# --- crops -----------------------------------------------------------------------------------------------------

def test_segment_is_whole_frames_and_rounds_down():
    assert pipeline.CropSpec.from_config(make_config()).segment_frames == SEGMENT_FRAMES
    assert pipeline.CropSpec.from_config(make_config(segment_seconds=0.58)).segment_frames == 29  # 28.999… → 29
    assert pipeline.CropSpec.from_config(make_config(segment_seconds=0.02)).segment_samples == HOP
    assert pipeline.CropSpec.from_config(make_config(segment_seconds=0.035)).segment_frames == 1  # 1.75 → 1
    with pytest.raises(ValueError, match="shorter than one frame"):
        pipeline.CropSpec.from_config(make_config(segment_seconds=0.01))


def test_crop_is_hop_aligned_content_row_j_covers_samples_j_hop_to_j_plus_1_hop():
    n = 20 * HOP + 123  # not a whole number of frames
    record = make_record(7, n, "train")
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(300):
        out = pipeline.crop(record, rng, SEGMENT_FRAMES, HOP)
        sample = np.round(out["wav"] * 32768).astype(np.int64)  # the original sample index of each crop sample
        start = int(sample[0])
        assert start % HOP == 0
        offsets.add(start // HOP)
        np.testing.assert_array_equal(sample, np.arange(start, start + SEGMENT))  # contiguous, real audio
        assert out["mask"].dtype == np.float32 and np.all(out["mask"] == 1)
        for j in range(SEGMENT_FRAMES):  # the alignment contract, row by row
            assert np.all(sample[j * HOP:(j + 1) * HOP] // HOP == int(out["content"][j, 0]))
        assert out["content"].dtype == np.float16 and np.all(out["content"][:, 1] == 7)
        np.testing.assert_array_equal(out["speaker_embedding"], record["speaker_embedding"])
    # Every offset that keeps the crop inside the real audio is drawn, and none beyond.
    assert offsets == set(range((n - SEGMENT) // HOP + 1))
    first = pipeline.crop(record, None, SEGMENT_FRAMES, HOP)  # no rng: the first segment
    assert first["wav"][0] == 0 and first["content"][0, 0] == 0


def test_frame_level_speaker_features_are_cropped_like_content():
    record = make_record(3, 10 * HOP, "train", speaker_frames_dim=SPEAKER_DIM)
    out = pipeline.crop(record, np.random.default_rng(5), SEGMENT_FRAMES, HOP)
    assert out["speaker_frames"].shape == (SEGMENT_FRAMES, SPEAKER_DIM)
    np.testing.assert_array_equal(out["speaker_frames"][:, 0], out["content"][:, 0])


def test_short_utterance_is_zero_padded_with_a_mask():
    record = make_record(0, 700, "train")  # 2.19 frames: content has 3 rows
    out = pipeline.crop(record, np.random.default_rng(1), SEGMENT_FRAMES, HOP)
    assert out["wav"].shape == out["mask"].shape == (SEGMENT,)
    np.testing.assert_array_equal(np.round(out["wav"][:700] * 32768), np.arange(700))
    assert np.all(out["wav"][700:] == 0)
    np.testing.assert_array_equal(out["mask"], (np.arange(SEGMENT) < 700).astype(np.float32))
    np.testing.assert_array_equal(out["content"][:, 0], [0, 1, 2, 0])
    assert np.all(out["content"][3] == 0) and out["content"].shape == (SEGMENT_FRAMES, CONTENT_DIM)
    with pytest.raises(shards.ShardError, match="fewer than a segment"):
        pipeline.crop(record, None, SEGMENT_FRAMES, HOP, short_policy="drop")


def test_pad_keeps_short_utterances_and_drop_removes_them_before_the_shuffle(reader):
    padded = make_config(short_utterances="pad")
    dropped = make_config(short_utterances="drop")
    assert list(pipeline.usable_indices(reader, "train", pipeline.CropSpec.from_config(padded))) == list(range(20))
    kept = list(pipeline.usable_indices(reader, "train", pipeline.CropSpec.from_config(dropped)))
    assert kept == [i for i in range(20) if i not in SHORT]
    batches = take(pipeline.make_dataset(reader, dropped, seed=3), 8)  # 2 epochs of 16
    assert sorted(record_ids(batches)) == sorted(kept * 2)
    assert all(np.all(b["mask"] == 1) for b in batches)  # full batches, all real audio
    padded_ids = record_ids(take(pipeline.make_dataset(reader, padded, seed=3), 5))
    assert sorted(padded_ids) == list(range(20))
    masks = {i: m for b in take(pipeline.make_dataset(reader, padded, seed=3), 5)
             for i, m in zip(b["speaker_embedding"][:, 0].astype(int), b["mask"], strict=True)}
    assert masks[0].sum() == 700 and masks[3].sum() == 1279 and masks[5].sum() == SEGMENT


# --- batches ---------------------------------------------------------------------------------------------------

def test_batches_have_static_shapes_and_dtypes(reader):
    for batch in take(pipeline.make_dataset(reader, make_config(batch_size=4)), 7):  # crosses an epoch boundary
        assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {
            "wav": ((4, SEGMENT), "float32"), "mask": ((4, SEGMENT), "float32"),
            "content": ((4, SEGMENT_FRAMES, CONTENT_DIM), "float16"),
            "speaker_embedding": ((4, SPEAKER_DIM), "float16")}
        assert np.all(np.abs(batch["wav"]) < 1)


def test_global_batch_shapes_are_those_of_the_batches(reader):
    """What the training loop compiles its step for before the pipeline starts: every global batch's arrays."""
    config = make_config(batch_size=4)
    for process_count in (1, 2):
        local = take(pipeline.make_dataset(reader, config, process_count=process_count), 1)[0]
        assert pipeline.global_batch_shapes(reader, config, "train", process_count) == {
            key: ((4, *value.shape[1:]), value.dtype) for key, value in local.items()}


def test_frame_mode_batches_carry_frame_level_speaker_features(tmp_path):
    reader = write_set(tmp_path / "frames", speaker_frames_dim=SPEAKER_DIM)
    frame_cfg = dataclasses.replace(make_config(), model=dataclasses.replace(make_config().model,
                                                                             acoustic_mode="frame"))
    batch = take(pipeline.make_dataset(reader, frame_cfg), 1)[0]
    assert batch["speaker_frames"].shape == (4, SEGMENT_FRAMES, SPEAKER_DIM)
    np.testing.assert_array_equal(batch["speaker_frames"][..., 0], batch["content"][..., 0])
    # Utterance mode trains on the same shards and leaves the unused frame features out of the batch.
    assert "speaker_frames" not in take(pipeline.make_dataset(reader, make_config()), 1)[0]


def test_shuffle_is_deterministic_global_and_reshuffles_each_epoch(reader):
    config = make_config(batch_size=4)  # 20 train utterances: an epoch is exactly 5 batches
    ids = record_ids(take(pipeline.make_dataset(reader, config, seed=11), 15))
    epochs = [ids[i * 20:(i + 1) * 20] for i in range(3)]
    assert all(sorted(e) == list(range(20)) for e in epochs)  # each epoch sees every utterance once
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(20))
    assert record_ids(take(pipeline.make_dataset(reader, config, seed=11), 15)) == ids  # same seed, same stream
    assert record_ids(take(pipeline.make_dataset(reader, config, seed=12), 5)) != ids[:20]
    # The seed defaults to data.shuffle_seed.
    seeded = dataclasses.replace(config, data=dataclasses.replace(config.data, shuffle_seed=11))
    assert record_ids(take(pipeline.make_dataset(reader, seeded), 5)) == ids[:20]
    # Unshuffled: utterances in shard order.
    assert record_ids(take(pipeline.make_dataset(reader, config, shuffle=False), 5)) == list(range(20))


def test_crops_differ_between_epochs(reader):
    config = make_config(batch_size=4)
    batches = take(pipeline.make_dataset(reader, config, seed=2), 10)
    starts = {}  # record → crop start per epoch
    for epoch in (0, 1):
        for batch in batches[epoch * 5:(epoch + 1) * 5]:
            for rec, wav in zip(batch["speaker_embedding"][:, 0].astype(int), batch["wav"], strict=True):
                starts.setdefault(rec, []).append(int(round(wav[0] * 32768)))
    assert any(a != b for a, b in starts.values())


def test_two_hosts_rebuild_the_single_host_global_batch(reader):
    config = make_config(batch_size=4)
    whole = take(pipeline.make_dataset(reader, config, seed=5), 8)  # 8 steps cross an epoch boundary
    hosts = [take(pipeline.make_dataset(reader, config, seed=5, process_index=p, process_count=2), 8)
             for p in range(2)]
    for step, global_batch in enumerate(whole):
        for key, value in global_batch.items():
            assert hosts[0][step][key].shape[0] == 2
            # Process p holds the contiguous rows [2p, 2p + 2) of the global batch.
            np.testing.assert_array_equal(np.concatenate([hosts[0][step][key], hosts[1][step][key]]), value)
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        pipeline.make_dataset(reader, config, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="process_index 2"):
        pipeline.make_dataset(reader, config, process_index=2, process_count=2)


def test_iterator_state_resumes_exactly(reader):
    config = make_config(batch_size=4, gain_augment_db=6.0, loudness_normalize=True)
    iterator = pipeline.make_iterator(pipeline.make_dataset(reader, config, seed=9))
    take(iterator, 3)
    state = iterator.get_state()
    saved = json.loads(json.dumps(state))  # plain data: it can go into a checkpoint
    expected = take(iterator, 4)
    resumed = pipeline.make_iterator(pipeline.make_dataset(reader, config, seed=9))
    resumed.set_state(saved)
    assert_batches_equal(take(resumed, 4), expected)
    fresh = take(pipeline.make_iterator(pipeline.make_dataset(reader, config, seed=9)), 4)
    assert record_ids(fresh) != record_ids(expected)  # the resumed stream is not just the start again


def test_validation_stream_is_finite_fixed_and_starts_each_utterance_at_zero(reader):
    config = make_config(batch_size=2)
    first = list(pipeline.make_dataset(reader, config, split="valid", shuffle=False, repeat=False))
    second = list(pipeline.make_dataset(reader, config, split="valid", shuffle=False, repeat=False))
    assert len(first) == 3  # 6 utterances / batch of 2, then the stream ends
    assert_batches_equal(first, second)
    assert record_ids(first) == list(range(20, 26))
    assert all(np.all(b["wav"][:, 0] == 0) and np.all(b["content"][:, 0, 0] == 0) for b in first)
    # With 4 per batch, 2 hosts each get 1 local batch (the 2 leftover utterances are dropped everywhere).
    config = make_config(batch_size=4)
    per_host = [list(pipeline.make_dataset(reader, config, split="valid", shuffle=False, repeat=False,
                                           process_index=p, process_count=2)) for p in range(2)]
    assert [len(h) for h in per_host] == [1, 1] and record_ids(per_host[0] + per_host[1]) == [20, 21, 22, 23]
    with pytest.raises(shards.ShardError, match="fewer usable utterances than one global batch"):
        pipeline.make_dataset(reader, make_config(batch_size=8), split="valid", shuffle=False, repeat=False)
    with pytest.raises(shards.ShardError, match="split 'test' has no usable utterances"):
        pipeline.make_dataset(reader, config, split="test")


def test_dataset_pickles_for_worker_processes(reader):
    dataset = pipeline.make_dataset(reader, make_config(), seed=4)
    assert_batches_equal(take(pickle.loads(pickle.dumps(dataset)), 2), take(dataset, 2))


# --- devices ---------------------------------------------------------------------------------------------------

def test_global_batch_splits_rows_over_a_4_by_2_mesh(reader):
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "fsdp"))
    local = take(pipeline.make_dataset(reader, make_config(batch_size=8)), 1)[0]
    placed = pipeline.global_batch(local, mesh)
    for key, value in local.items():
        array = placed[key]
        assert array.shape == value.shape and array.dtype == value.dtype
        assert array.sharding == NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
        np.testing.assert_array_equal(np.asarray(array), value)
        for shard in array.addressable_shards:
            row = [i for i, d in enumerate(mesh.devices.flat) if d == shard.device][0]  # data-major order
            assert shard.data.shape == (1, *value.shape[1:])  # one row each; the other axes whole
            np.testing.assert_array_equal(np.asarray(shard.data), value[row:row + 1])
    with pytest.raises(ValueError, match="cannot be split over 8 devices"):
        pipeline.global_batch({"wav": np.zeros((4, 3), np.float32)}, mesh)


# --- shard checks ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,message", [
    ({"data": {"content_layer": "avg"}}, "content teacher layer is '9' in the shards but the config needs 'avg'"),
    ({"model": {"semantic_dim": 768}}, "content teacher dimension is 8 in the shards but the config needs 768"),
    ({"model": {"acoustic_dim": 192}}, "speaker teacher dimension is 4"),
    ({"model": {"acoustic_mode": "frame"}}, "frame-level speaker features is False"),
])
def test_check_shards_refuses_a_mismatch_in_one_line(reader, overrides, message):
    base = cfg.to_dict(make_config())
    for section, values in overrides.items():
        base[section].update(values)
    with pytest.raises(shards.ShardError, match=message) as err:
        pipeline.make_dataset(reader, cfg.from_dict(base))
    assert "\n" not in str(err.value)
    pipeline.check_shards(reader, make_config())  # the matching config passes


def test_check_shards_compares_the_frame_level_speaker_dimension(tmp_path):
    reader = write_set(tmp_path / "wide", speaker_frames_dim=6)
    frame_cfg = cfg.from_dict({"model": {"semantic_dim": CONTENT_DIM, "acoustic_dim": SPEAKER_DIM,
                                         "acoustic_mode": "frame"}})
    with pytest.raises(shards.ShardError, match="frame-level speaker dimension is 6 .* model.acoustic_dim is 4"):
        pipeline.check_shards(reader, frame_cfg)


# --- loudness --------------------------------------------------------------------------------------------------

def rms_db(wav, mask):
    return 20 * np.log10(np.sqrt(np.mean(wav[mask > 0].astype(np.float64) ** 2)))


def test_loudness_normalisation_hits_the_target_ignoring_padding():
    t = np.arange(SEGMENT) / 16_000
    wav = (0.01 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    mask = (np.arange(SEGMENT) < 1000).astype(np.float32)
    wav[1000:] = 0.0  # padding must not dilute the measurement
    out = pipeline.normalize_loudness(wav, mask, -20.0)
    assert abs(rms_db(out, mask) - (-20.0)) < 0.1 and out.dtype == np.float32
    assert abs(rms_db(pipeline.normalize_loudness(wav, mask, -20.0, gain_db=3.0), mask) - (-17.0)) < 0.1
    assert abs(rms_db(pipeline.normalize_loudness(wav, mask, None, gain_db=6.0), mask) - (rms_db(wav, mask) + 6)) < 0.1
    # A spiky crop that would clip at the target is capped at full scale instead.
    spiky = np.zeros(SEGMENT, np.float32)
    spiky[::400] = 0.5
    capped = pipeline.normalize_loudness(spiky, np.ones(SEGMENT, np.float32), -3.0)
    assert np.isclose(np.max(np.abs(capped)), 1.0) and rms_db(capped, np.ones(SEGMENT)) < -3.0
    silent = np.zeros(SEGMENT, np.float32)  # silence stays silence (no division by zero)
    assert np.all(pipeline.normalize_loudness(silent, np.ones(SEGMENT, np.float32), -20.0) == 0)


def test_pipeline_loudness_and_gain_augmentation(reader):
    plain = take(pipeline.make_dataset(reader, make_config(), seed=1), 3)
    levelled = take(pipeline.make_dataset(reader, make_config(loudness_normalize=True), seed=1), 3)
    augmented = take(pipeline.make_dataset(reader, make_config(loudness_normalize=True, gain_augment_db=6.0),
                                           seed=1), 3)
    levels, spread = [], []
    for a, b, c in zip(plain, levelled, augmented, strict=True):
        for key in ("mask", "content", "speaker_embedding"):  # loudness and gain never move the crop
            np.testing.assert_array_equal(a[key], b[key])
            np.testing.assert_array_equal(a[key], c[key])
        levels += [rms_db(w, m) for w, m in zip(b["wav"], b["mask"], strict=True)]
        spread += [rms_db(w, m) + 20 for w, m in zip(c["wav"], c["mask"], strict=True)]
    np.testing.assert_allclose(levels, -20.0, atol=0.1)
    assert max(np.abs(spread)) <= 6.0 + 1e-3 and np.std(spread) > 1.0
    # Validation crops are never augmented.
    valid = make_config(batch_size=2, loudness_normalize=True, gain_augment_db=6.0)
    batch = take(pipeline.make_dataset(reader, valid, split="valid", shuffle=False, repeat=False), 1)[0]
    np.testing.assert_allclose([rms_db(w, m) for w, m in zip(batch["wav"], batch["mask"], strict=True)], -20.0,
                               atol=0.1)
