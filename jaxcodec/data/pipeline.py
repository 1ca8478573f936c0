"""The training input pipeline: shard records → hop-aligned crops → per-host batches → sharded jax.Arrays.

Built on grain's MapDataset, lazily, so only the batches a host needs are ever read:

    record indices of a split (short ones dropped here under "drop")  → shuffle (global seed: same on every host)
    → repeat (epoch e reshuffles with seed + e)  → read record  → crop (per-element Philox RNG keyed by the
    element's position in the *global* stream, so crops do not depend on the host count)
    → batch of b = global_batch / process_count crops  → host slice [p::P]  → to_iter_dataset (threads)
    → mp_prefetch (when data.worker_count > 0)

Row layout: consecutive local batches 0..P-1 of the global stream form global step 0, P..2P-1 step 1, and so on,
so process p holds the contiguous rows [p·b, (p+1)·b) of each global batch — the block that
`jax.make_array_from_process_local_data` gives process p when the mesh orders devices by process (as
`jax.make_mesh` does). Everything up to `global_batch` is numpy; jax is imported only there.

A batch is a dict of numpy arrays with static shapes (S = segment_frames·hop samples, T = segment_frames):
  wav float32 [b, S] in [-1, 1); mask float32 [b, S] (1 on real samples, 0 on padding);
  content float16 [b, T, D] (the content teacher's frames); speaker_embedding float16 [b, E] (the speaker teacher's
  embedding, standardised by the shard set's calibration under loss.acoustic_standardize); speaker_frames float16
  [b, T, C] (only when model.acoustic_mode == "frame"). Teacher features stay float16, as stored: float32 would add
  no information and double host→device traffic; the model casts. A frame j is real when mask[j·hop] == 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from jaxcodec.config import Config
from jaxcodec.data.shards import Requirement, ShardError, ShardReader, speaker_calibration
from jaxcodec.data.shards.format import CONTENT, SPEAKER_EMBEDDING, SPEAKER_FRAMES

AUDIO_SCALE = 32768.0  # int16 full scale: int16 / 32768 lies in [-1, 1).
MAX_PEAK = 1.0  # gains never push a crop's peak above full scale.
SILENT_RMS = 1e-5  # -100 dBFS: crops quieter than this are silence and are not amplified.
FRAME_EPSILON = 1e-6  # guards int() against 0.58 * 50 = 28.999…; segments still round down to whole frames.
CROP_SEED_SALT = 0x5EED  # crop RNG seed = shuffle seed + salt, so crops and order are independent streams.
READ_THREADS = 4  # threads per process building batches (a batch is read and cropped in one thread).
PREFETCH_BATCHES = 4  # batches buffered per process: enough to hide read latency, small in memory.
BATCH_AXES = ("data", "fsdp")  # mesh axes the leading batch axis is split over (train/sharding.py agrees).
SHORT_POLICIES = ("pad", "drop")


# --- crops -----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CropSpec:
    """What one training example is: a whole number of frames of audio, with its teacher features."""

    segment_frames: int
    hop: int
    short_policy: str = "pad"
    loudness_target_db: float | None = None  # None: keep each crop's level.
    gain_augment_db: float = 0.0  # random crops get a uniform gain in ±this many dB.
    speaker_frames: bool = False  # carry frame-level speaker features (acoustic_mode "frame").
    # The speaker teacher's calibration (centre, scale) applied to its embedding; None: raw values.
    speaker_center: tuple[float, ...] | None = None
    speaker_scale: float = 1.0

    @property
    def segment_samples(self) -> int:
        return self.segment_frames * self.hop

    @classmethod
    def from_config(cls, config: Config, calibration: dict | None = None) -> CropSpec:
        """`calibration`: the shard set's speaker calibration, applied when loss.acoustic_standardize is on."""
        data, model = config.data, config.model
        frames = int(data.segment_seconds * model.frame_rate + FRAME_EPSILON)
        if frames < 1:
            raise ValueError(f"data.segment_seconds={data.segment_seconds} is shorter than one frame "
                             f"({model.hop_length} samples at {model.sample_rate} Hz)")
        if data.short_utterances not in SHORT_POLICIES:
            raise ValueError(f"data.short_utterances must be one of {SHORT_POLICIES}, got {data.short_utterances!r}")
        return cls(segment_frames=frames, hop=model.hop_length, short_policy=data.short_utterances,
                   loudness_target_db=data.loudness_target_db if data.loudness_normalize else None,
                   gain_augment_db=data.gain_augment_db, speaker_frames=model.acoustic_mode == "frame",
                   **_standardisation(config, calibration))


def _standardisation(config: Config, calibration: dict | None) -> dict:
    """CropSpec's speaker_center/speaker_scale: the calibration's, when the config standardises (utterance mode
    only: frame-level speaker features are not calibrated)."""
    if calibration is None or not config.loss.acoustic_standardize or config.model.acoustic_mode == "frame":
        return {}
    return {"speaker_center": tuple(float(v) for v in calibration["center"]),
            "speaker_scale": float(calibration["scale"])}


def _rows(features: np.ndarray, start: int, count: int) -> np.ndarray:
    """features[start : start+count], zero-padded at the end to exactly `count` rows (dtype kept)."""
    out = np.zeros((count, *features.shape[1:]), dtype=features.dtype)
    piece = features[start:start + count]
    out[:len(piece)] = piece
    return out


def crop(record: dict[str, Any], rng: np.random.Generator | None, segment_frames: int, hop: int,
         short_policy: str = "pad") -> dict[str, np.ndarray]:
    """A hop-aligned crop: frame offset f, audio[f·hop : f·hop + S], content[f : f + T]; so content row j of the
    crop covers crop samples [j·hop, (j+1)·hop). `rng` None gives the first segment (validation).

    f is uniform in [0, (N − S) // hop]: a crop of an utterance at least S long is all real audio (the last,
    partial frame is only ever reached by the zero padding of a short utterance)."""
    audio = record["audio"]
    samples = segment_frames * hop
    if len(audio) < samples and short_policy != "pad":
        raise ShardError(f"record {record.get('id')!r} has {len(audio)} samples, fewer than a segment ({samples}); "
                         f"short_utterances={short_policy!r} should have removed it")
    last_offset = max(0, (len(audio) - samples) // hop)
    frame = 0 if rng is None else int(rng.integers(0, last_offset + 1))
    piece = audio[frame * hop:frame * hop + samples]
    wav = np.zeros(samples, dtype=np.float32)
    wav[:len(piece)] = piece / np.float32(AUDIO_SCALE)
    mask = np.zeros(samples, dtype=np.float32)
    mask[:len(piece)] = 1.0
    out = {"wav": wav, "mask": mask, CONTENT: _rows(record[CONTENT], frame, segment_frames),
           SPEAKER_EMBEDDING: np.asarray(record[SPEAKER_EMBEDDING])}
    if SPEAKER_FRAMES in record:
        out[SPEAKER_FRAMES] = _rows(record[SPEAKER_FRAMES], frame, segment_frames)
    return out


def normalize_loudness(wav: np.ndarray, mask: np.ndarray, target_db: float | None, gain_db: float = 0.0
                       ) -> np.ndarray:
    """Scales a crop so the RMS of its real samples is `target_db` dBFS (RMS re full scale 1.0; None keeps the
    level), then by `gain_db`; the total gain is capped so the peak stays ≤ MAX_PEAK. Silence is not amplified."""
    real = wav[mask > 0]
    rms = float(np.sqrt(np.mean(np.square(real, dtype=np.float64)))) if real.size else 0.0
    level_db = 0.0 if target_db is None or rms < SILENT_RMS else target_db - 20.0 * np.log10(rms)
    gain = 10.0 ** ((level_db + gain_db) / 20.0)
    peak = float(np.max(np.abs(real))) if real.size else 0.0
    if peak * gain > MAX_PEAK:
        gain = MAX_PEAK / peak
    return (wav * np.float32(gain)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Crop:
    """The per-record transform (a picklable callable for grain's map / random_map and its worker processes)."""

    spec: CropSpec

    def __call__(self, record: dict[str, Any], rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        spec = self.spec
        example = crop(record, rng, spec.segment_frames, spec.hop, spec.short_policy)
        if not spec.speaker_frames:
            example.pop(SPEAKER_FRAMES, None)  # utterance mode: don't ship unused features to the devices
        if spec.speaker_center is not None:  # stored as float16, like the raw embedding
            center = np.asarray(spec.speaker_center, np.float32)
            embedding = example[SPEAKER_EMBEDDING]
            example[SPEAKER_EMBEDDING] = ((embedding.astype(np.float32) - center) / np.float32(spec.speaker_scale)
                                          ).astype(embedding.dtype)
        # Drawn after the offset, so switching augmentation on does not change which crops are taken.
        augment = rng is not None and spec.gain_augment_db > 0
        gain_db = float(rng.uniform(-spec.gain_augment_db, spec.gain_augment_db)) if augment else 0.0
        if spec.loudness_target_db is not None or gain_db:
            example["wav"] = normalize_loudness(example["wav"], example["mask"], spec.loudness_target_db, gain_db)
        return example


@dataclasses.dataclass(frozen=True)
class _Records:
    """The records of one split, by position (a grain random-access source; pickles because ShardReader does)."""

    reader: ShardReader
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Any]:
        return self.reader[int(self.indices[position])]


# --- datasets --------------------------------------------------------------------------------------------------

def check_shards(reader: ShardReader, config: Config) -> None:
    """Raises a one-line ShardError when the shards were made for another model or teacher setting."""
    frame_mode = config.model.acoustic_mode == "frame"
    reader.require(Requirement(
        sample_rate=config.model.sample_rate, hop_length=config.model.hop_length,
        content_layer=config.data.content_layer, content_dim=config.model.semantic_dim,
        speaker_dim=config.model.acoustic_dim,
        # Utterance mode can train on shards that also hold frame-level features; frame mode needs them.
        speaker_frames=True if frame_mode else None))
    if frame_mode:
        frame_dim = reader.fields[SPEAKER_FRAMES]["shape"][1]
        if frame_dim != config.model.acoustic_dim:
            raise ShardError(f"{reader.directory}: frame-level speaker dimension is {frame_dim} in the shards but "
                             f"model.acoustic_dim is {config.model.acoustic_dim}; precompute shards with matching "
                             f"settings")


def usable_indices(reader: ShardReader, split: str, spec: CropSpec) -> np.ndarray:
    """Record indices of `split`; under "drop", without the utterances shorter than a segment (removed before the
    shuffle, so every batch is full and the stream is the same on every host)."""
    indices = reader.indices(split)
    if spec.short_policy == "drop":
        indices = indices[reader.num_samples[indices] >= spec.segment_samples]
    if len(indices) == 0:
        raise ShardError(f"{reader.directory}: split {split!r} has no usable utterances "
                         f"(splits: {reader.index.get('splits')}, short_utterances={spec.short_policy!r})")
    return indices


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size % process_count:
        raise ValueError(f"train.batch_size={global_batch_size} is not divisible by the {process_count} processes")
    return global_batch_size // process_count


def make_dataset(reader: ShardReader, config: Config, *, split: str = "train", seed: int | None = None,
                 process_index: int = 0, process_count: int = 1, shuffle: bool = True, repeat: bool = True,
                 random_crops: bool | None = None) -> grain.IterDataset:
    """This host's batches of `split` (see the module docstring for order, layout and shapes).

    seed defaults to data.shuffle_seed. random_crops (default: = shuffle) draws crop offsets and gain
    augmentation; without it every crop is the utterance's first segment, unaugmented, so a validation stream
    (shuffle=False, repeat=False) is identical at every evaluation. Batches are full (drop remainder); with
    repeat=False every host gets the same number of them."""
    ds = _batches(reader, config, split, seed, process_index, process_count, shuffle, repeat, random_crops)
    iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=PREFETCH_BATCHES))
    if config.data.worker_count > 0:
        _mark_absl_flags_parsed()
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.worker_count))
    return iter_ds


def global_batch_shapes(reader: ShardReader, config: Config, split: str = "train",
                        process_count: int = 1) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The (shape, dtype) of each array of a global batch of `split`, read from one local batch (no workers, no
    iterator): what a step can be compiled for before the input pipeline starts."""
    local = _batches(reader, config, split, None, 0, process_count, False, False, False)[0]
    return {key: ((value.shape[0] * process_count, *value.shape[1:]), value.dtype) for key, value in local.items()}


def _batches(reader: ShardReader, config: Config, split: str, seed: int | None, process_index: int,
             process_count: int, shuffle: bool, repeat: bool, random_crops: bool | None) -> grain.MapDataset:
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    check_shards(reader, config)
    seed = config.data.shuffle_seed if seed is None else seed
    random_crops = shuffle if random_crops is None else random_crops
    spec = CropSpec.from_config(config, speaker_calibration(reader.provenance))
    batch = local_batch_size(config.train.batch_size, process_count)

    ds = grain.MapDataset.source(_Records(reader, usable_indices(reader, split, spec)))
    if shuffle:
        ds = ds.shuffle(seed=seed)  # before the host slice: one global permutation
    if repeat:
        ds = ds.repeat()  # after the shuffle: epoch e is permuted with seed + e, epochs never mix
    # Crops are keyed by position in the global stream, before the host slice, so they don't depend on the host
    # count; after the repeat, so each epoch crops differently.
    ds = ds.random_map(_Crop(spec), seed=(seed + CROP_SEED_SALT) % 2**32) if random_crops else ds.map(_Crop(spec))
    ds = ds.batch(batch, drop_remainder=True)
    if not repeat:
        ds = ds[:len(ds) // process_count * process_count]  # whole global batches only
        if len(ds) == 0:
            raise ShardError(f"{reader.directory}: split {split!r} has fewer usable utterances than one global "
                             f"batch ({config.train.batch_size})")
    return ds[process_index::process_count]  # local batch k·P + p is host p's share of global step k


def _mark_absl_flags_parsed() -> None:
    """grain 0.2.18's mp_prefetch reads an absl flag, which raises in programs that don't run absl.app (ours);
    the flags keep their defaults (google/grain issue #1355)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_iterator(dataset: grain.IterDataset) -> grain.DatasetIterator:
    """An iterator whose get_state() — a small JSON-able dict ({"next_index": k} in-process; per-worker indices
    under mp_prefetch) — is saved with each checkpoint; set_state(saved) on a fresh iterator of the same dataset
    (same shards, config, seed, host) continues with exactly the next batch. Close it when done: with workers it
    holds processes and shared memory."""
    return iter(dataset)


# --- devices ---------------------------------------------------------------------------------------------------

def global_batch(local_batch: dict[str, np.ndarray], mesh, batch_spec=None) -> dict[str, Any]:
    """This host's rows → global jax.Arrays: the leading axis split over `batch_spec` (default over both
    ('data', 'fsdp') mesh axes), the other axes replicated. Every process calls it with its own local batch."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    spec = PartitionSpec(BATCH_AXES) if batch_spec is None else batch_spec
    sharding = NamedSharding(mesh, spec)
    leading = spec[0] if len(spec) else None
    axes = leading if isinstance(leading, tuple) else (leading,)
    shards = int(np.prod([mesh.shape[axis] for axis in axes if axis is not None]))
    rows = len(next(iter(local_batch.values()))) * jax.process_count()
    if rows % shards:
        raise ValueError(f"global batch of {rows} rows cannot be split over {shards} devices on mesh axes {axes}")
    return {key: jax.make_array_from_process_local_data(sharding, value) for key, value in local_batch.items()}


def local_rows(global_array) -> np.ndarray:
    """The rows of a batch-sharded global array that this process holds, in the order `global_batch` took them
    from the local batch (shards replicated over another mesh axis are taken once)."""
    by_start: dict[int, np.ndarray] = {}
    for shard in global_array.addressable_shards:
        by_start.setdefault(shard.index[0].start or 0, np.asarray(shard.data))
    return np.concatenate([by_start[start] for start in sorted(by_start)])
