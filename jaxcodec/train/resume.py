"""What a resumed run must keep: the config keys that shape arrays or the data stream, and the shard set.

The shard set a workdir trains on (its index's shard checksums, and the --data path it was given) is recorded in
the workdir's data.json: a resume on another set would silently change the data stream, so it is refused unless
--allow-new-data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax

from jaxcodec import atomic
from jaxcodec import config as config_lib
from jaxcodec.config import Config
from jaxcodec.data.shards import ShardReader, speaker_calibration
from jaxcodec.train.errors import TrainingError
from jaxcodec.workdir import DATA_FILE

# Config keys whose change would alter array shapes or the data stream: a resumed run must keep them.
RESUME_FIXED = ("model.", "rvq.n_q", "rvq.codebook_size", "disc.", "loss.balancer", "data.", "train.batch_size",
                "train.seed")


def _flatten(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(saved: dict, config: Config) -> list[str]:
    """Refuses (TrainingError) a resume whose config changes shapes or the data stream; returns the other
    changed keys (learning rate, step count, ...) so the caller can say what changed."""
    old, new = _flatten(saved), _flatten(config_lib.to_dict(config))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    fixed = [k for k in changed if k.startswith(RESUME_FIXED)]
    if fixed:
        diffs = "; ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in fixed[:4])
        raise TrainingError(f"the workdir's checkpoint was trained with another {fixed[0]} ({diffs}); resuming "
                            f"would change shapes or the data stream: use a new --workdir, or the saved config")
    return changed


def _data_identity(reader: ShardReader) -> dict:
    calibration = speaker_calibration(reader.provenance)  # recalibrating a set changes the teacher's targets
    return {"path": str(reader.directory.resolve()),
            "shards_sha256": [shard["sha256"] for shard in reader.index["shards"]],
            "speaker_calibration_sha256": None if calibration is None else hashlib.sha256(
                json.dumps(calibration, sort_keys=True).encode()).hexdigest()}


def check_data(workdir: Path, reader: ShardReader, resuming: bool, allow_new: bool = False, log=print) -> None:
    """Records the shard set's identity in workdir/data.json; on a resume, refuses (TrainingError) a shard set
    with other contents unless `allow_new` (which then records the new one). A workdir from before data.json
    (or from `jaxcodec import`) gets it now."""
    path, current = workdir / DATA_FILE, _data_identity(reader)
    try:
        saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    except json.JSONDecodeError as err:
        raise TrainingError(f"{path}: not valid JSON ({err}); delete it to record --data afresh") from None
    changed = saved is not None and (saved.get("shards_sha256") != current["shards_sha256"] or (
        "speaker_calibration_sha256" in saved  # a data.json from before calibration existed: not compared
        and saved["speaker_calibration_sha256"] != current["speaker_calibration_sha256"]))
    if resuming and changed:
        if not allow_new:
            raise TrainingError(f"{workdir} was trained on the shards in {saved.get('path')}; --data "
                                f"{current['path']} holds other shards (or the set was recalibrated): pass "
                                f"--allow-new-data to continue the run on them, or use a new --workdir")
        log(f"continuing on new data: {current['path']} (was {saved.get('path')})")
    if saved != current and jax.process_index() == 0:
        atomic.write_json(path, current)
