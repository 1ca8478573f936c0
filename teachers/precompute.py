"""Runs both teachers once over a manifest and writes the shard set training reads (`jaxcodec precompute`).

Work is divided into shards: utterances are dealt round-robin, in id order, to `num_shards` shards, and a process
writes the shards it is given (`--shard-index I`, or all of them). A shard is the unit of resumption: it is
written under a temporary name, renamed when complete, and committed by its part-index (jaxcodec.data.shards); a
rerun skips committed shards and redoes an interrupted one. Every utterance ends up in exactly one shard or in the
rejects with its reason; a bad file never stops the run. When the last shard is committed, the index is merged.

Inside a shard, utterances are read, downmixed and resampled by a pool of threads ahead of the models, sorted by
length so that batches hold similar lengths, and batched under a padded-seconds budget.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import hashlib
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from jaxcodec import __version__, audio
from jaxcodec.data import manifest as manifest_lib
from jaxcodec.data import shards
from jaxcodec.data.shards import CONTENT, SPEAKER, SPEAKER_EMBEDDING, SPEAKER_FRAMES
from jaxcodec.data.shards.calibration import DEFAULT_TARGET_NATS, CalibrationError
from teachers import registry
from teachers.errors import TeacherLoadError
from teachers.frames import CODEC_HOP

TARGET_SHARD_SECONDS = 3600.0  # default shard size: 1 h of audio ≈ 0.4 GB (int16 audio + float16 HuBERT frames).
BATCH_SECONDS = 120.0  # default padded audio per teacher batch.
MIN_SECONDS = 0.5  # default shortest utterance kept: shorter clips give < 25 frames and no usable speaker cue.
READ_THREADS = 4  # decode/resample threads (libsndfile and soxr release the GIL).
PREFETCH = 64  # utterances decoded ahead of the models.
FEATURE_DTYPE = np.float16  # storage dtype of teacher features (DESIGN's shard contract).


@dataclasses.dataclass
class Options:
    manifest: Path
    out: Path
    content_teacher: str = "hubert"  # a content teacher of teachers/registry.py: hubert | phones (PocketSphinx)
    hubert: str = "facebook/hubert-base-ls960"
    hubert_layer: str = "9"
    ecapa: str = "speechbrain/spkrec-ecapa-voxceleb"
    ecapa_frames: bool = False
    ecapa_hyperpyyaml: bool = False  # a local --ecapa folder built by its hyperparams.yaml (runs its code)
    speaker_teacher: str = "ecapa"  # a speaker teacher of teachers/registry.py: ecapa | resemblyzer (offline)
    target_nats: float = DEFAULT_TARGET_NATS  # the speaker calibration's target KL between speakers
    device: str = "cpu"
    half: bool | None = None  # float16 teachers; default: on CUDA only
    num_shards: int | None = None
    shard_index: int | None = None
    splits: tuple[str, ...] = ()  # only these manifest splits (all when empty)
    batch_seconds: float = BATCH_SECONDS
    min_seconds: float = MIN_SECONDS
    max_seconds: float | None = None
    read_threads: int = READ_THREADS
    progress: bool = True


@dataclasses.dataclass
class Utterance:
    entry: dict
    pcm: np.ndarray  # int16, what the shard stores
    wav: np.ndarray  # float32 of exactly that int16 signal: the teachers see what training will see
    levels: audio.Levels
    gain: float


@dataclasses.dataclass
class Rejected:
    entry: dict
    reason: str


def default_num_shards(entries: list[dict]) -> int:
    return max(1, round(sum(e["duration"] for e in entries) / TARGET_SHARD_SECONDS))


def load(entry: dict, min_seconds: float, max_seconds: float | None) -> Utterance | Rejected:
    try:
        wav, _ = audio.read(entry["path"])
        audio.check(wav, audio.SAMPLE_RATE, min_seconds, max_seconds)
    except audio.AudioError as err:
        return Rejected(entry, str(err))
    except MemoryError:
        return Rejected(entry, "out of memory while decoding")
    except Exception as err:  # e.g. permission denied: one unreadable file must not end a long run
        return Rejected(entry, f"cannot read: {type(err).__name__}: {' '.join(str(err).split())[:300]}")
    pcm, gain = audio.to_int16(wav)
    wav = audio.from_int16(pcm)
    return Utterance(entry, pcm, wav, audio.levels(wav), gain)


def _prefetched(entries: list[dict], fn: Callable[[dict], object], threads: int, depth: int) -> Iterator[object]:
    """fn over entries in a thread pool, in order, at most `depth` ahead of the consumer."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        pending: list[concurrent.futures.Future] = []
        it = iter(entries)
        for entry in it:
            pending.append(pool.submit(fn, entry))
            if len(pending) >= depth:
                break
        while pending:
            result = pending.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            yield result


def batches(items: Iterator[Utterance | Rejected], budget_samples: int) -> Iterator[tuple[list[Utterance],
                                                                                          list[Rejected]]]:
    """Groups utterances (arriving sorted by length) so that count × longest ≤ budget; rejects pass through."""
    current: list[Utterance] = []
    rejected: list[Rejected] = []
    for item in items:
        if isinstance(item, Rejected):
            rejected.append(item)
            continue
        longest = max([len(item.wav)] + [len(u.wav) for u in current])
        if current and (len(current) + 1) * longest > budget_samples:
            yield current, rejected
            current, rejected = [], []
        current.append(item)
    if current or rejected:
        yield current, rejected


class Teachers:
    """The content and the speaker teacher (teachers/registry.py) behind one call; the only place precompute
    touches torch models."""

    def __init__(self, options: Options):
        half = options.half if options.half is not None else options.device.startswith("cuda")
        self.content = registry.build(CONTENT, options.content_teacher, options)
        self.speaker = registry.build(SPEAKER, options.speaker_teacher, options)
        self.half = half

    def provenance(self) -> dict:
        return {
            CONTENT: self.content.provenance(),
            SPEAKER: self.speaker.provenance(),
            "sample_rate": audio.SAMPLE_RATE,
            "hop_length": CODEC_HOP,
            "frame_rate": audio.SAMPLE_RATE / CODEC_HOP,
            "teacher_dtype": "float16" if self.half else "float32",
            "feature_dtype": np.dtype(FEATURE_DTYPE).name,
        }

    def fields(self) -> dict:
        feature = np.dtype(FEATURE_DTYPE).name
        spec = {
            "audio": {"dtype": "int16", "shape": ["samples"]},
            CONTENT: {"dtype": feature, "shape": ["frames", self.content.dim]},
            SPEAKER_EMBEDDING: {"dtype": feature, "shape": [self.speaker.dim]},
        }
        if self.speaker.frame_dim is not None:
            spec[SPEAKER_FRAMES] = {"dtype": feature, "shape": ["frames", self.speaker.frame_dim]}
        return spec

    def __call__(self, wavs: list[np.ndarray], texts: list[str | None] | None = None) -> list[dict]:
        texts = texts if texts is not None else [None] * len(wavs)
        return [{**c, **s} for c, s in zip(self.content.features(wavs, texts), self.speaker.features(wavs, texts),
                                           strict=True)]


def calibrate_speaker_teacher(target_nats: float, log: Callable[[str], None]) -> Callable[[dict, Path], dict]:
    """merge_index's `finalize`: the merged index with the speaker teacher's calibration (its role's rule, on the
    training split of the finished shards) in provenance["speaker"]["calibration"]; a set that cannot be
    calibrated (no training utterances, one constant embedding) is merged without it, with the reason."""
    def finalize(index: dict, directory: Path) -> dict:
        speaker = dict(index["provenance"][SPEAKER])
        teacher = registry.teacher_class(SPEAKER, speaker.get("name", "ecapa"))
        try:
            speaker["calibration"] = teacher.calibrate(shards.ShardReader(directory, index=index), target_nats)
            log(calibration_line(speaker["calibration"]))
        except CalibrationError as err:
            speaker["calibration"], speaker["calibration_skipped"] = None, str(err)
            log(f"speaker teacher not calibrated: {err}")
        return {**index, "provenance": {**index["provenance"], SPEAKER: speaker}}

    return finalize


def calibration_line(calibration: dict) -> str:
    raw, after = calibration["raw"], calibration["calibrated"]
    return (f"speaker teacher calibrated on {calibration['utterances']} training utterances of "
            f"{calibration['speakers']} speakers: τ = {calibration['temperature']:.4g} after centring and scaling; "
            f"KL between speakers {raw['kl_between_speakers']:.4f} → {after['kl_between_speakers']:.3f} nats, "
            f"entropy {raw['entropy']:.3f} → {after['entropy']:.3f} of {after['uniform_entropy']:.3f}")


def record(utt: Utterance, features: dict) -> dict:
    entry = utt.entry
    out = {
        "id": entry["id"],
        "split": entry.get("split", "train"),
        "speaker": entry.get("speaker") or "",
        "text": entry.get("text") or "",
        "sample_rate": audio.SAMPLE_RATE,
        "num_samples": len(utt.pcm),
        "source_sample_rate": int(entry.get("sample_rate", audio.SAMPLE_RATE)),
        "source_channels": int(entry.get("channels", 1)),
        "peak": utt.levels.peak,
        "rms_db": utt.levels.rms_db,
        "clipped_fraction": utt.levels.clipped_fraction,
        "gain": utt.gain,
        "audio": utt.pcm,
    }
    for key, value in features.items():
        out[key] = np.asarray(value, dtype=np.float32).astype(FEATURE_DTYPE)
    return out


def _finite_reason(features: dict) -> str | None:
    for key, value in features.items():
        stored = np.asarray(value, dtype=np.float32).astype(FEATURE_DTYPE)
        if not np.all(np.isfinite(stored)):
            return f"teacher output {key} is not finite (NaN/Inf, or beyond float16 range)"
    return None


def fill_shard(teachers: Teachers, options: Options, progress, writer: shards.ShardWriter,
               entries: list[dict]) -> list[dict]:
    """Runs the teachers over one shard's entries (read ahead, sorted by length, batched) and writes a record per
    utterance they accept; returns the rejects."""
    rejects: list[dict] = []
    budget = int(options.batch_seconds * audio.SAMPLE_RATE)
    ordered = sorted(entries, key=lambda e: (e.get("duration", 0.0), e["id"]))
    loaded = _prefetched(ordered, lambda e: load(e, options.min_seconds, options.max_seconds),
                         options.read_threads, PREFETCH)
    for group, rejected in batches(loaded, budget):
        rejects += [_reject_row(r.entry, r.reason) for r in rejected]
        for utt, features in _run_teachers(teachers, group):
            reason = features if isinstance(features, str) else _finite_reason(features)
            if reason is not None:
                rejects.append(_reject_row(utt.entry, reason))
            else:
                writer.write(record(utt, features))
        progress(sum(e.get("duration", 0.0) for e in [u.entry for u in group] + [r.entry for r in rejected]))
    return rejects


def _run_teachers(teachers: Teachers, group: list[Utterance]) -> list[tuple[Utterance, dict | str]]:
    """The batch at once; if it fails (e.g. out of memory on one long file), each utterance alone, so one bad
    utterance is rejected with its reason instead of ending the run."""
    if not group:
        return []
    try:
        return list(zip(group, teachers([u.wav for u in group], [u.entry.get("text") for u in group]),
                        strict=True))
    except (RuntimeError, MemoryError, ValueError) as err:
        if len(group) == 1:
            return [(group[0], f"teacher failed: {' '.join(str(err).split())[:300]}")]
        return [pair for utt in group for pair in _run_teachers(teachers, [utt])]


def _reject_row(entry: dict, reason: str) -> dict:
    return {"id": entry["id"], "path": entry.get("path"), "reason": reason}


@functools.cache
def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"jaxcodec {__version__}" + (f" ({sha})" if sha else "")


def manifest_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(options: Options, log: Callable[[str], None] = print, teachers: Teachers | None = None) -> dict | None:
    """Precomputes the shards this process is responsible for; merges the index when all are committed.
    Returns the index when it was merged, else None. `teachers` may be passed in already loaded (benchmarks).
    Refused (OutputLockError) while another run writes the same shards of `options.out`."""
    with shards.writing(options.out, options.shard_index):
        return _run(options, log, teachers)


def _run(options: Options, log: Callable[[str], None], teachers: Teachers | None) -> dict | None:
    entries = shards.select(manifest_lib.read(options.manifest), options.splits, options.manifest, "process")
    plan = shards.plan(options.out, entries, options.num_shards, options.shard_index, default_num_shards)
    source = {"manifest_sha256": manifest_sha256(options.manifest), "num_shards": plan.count,
              "splits": sorted(options.splits), "min_seconds": options.min_seconds,
              "max_seconds": options.max_seconds}
    log(f"{len(entries)} utterances, {sum(e['duration'] for e in entries) / 3600:.2f} h in {plan.count} shards; "
        f"this process: {len(plan.mine)} shards, {plan.done} already complete")
    if plan.todo:
        teachers = teachers or Teachers(options)
        provenance, fields = teachers.provenance(), teachers.fields()
        shards.check_existing(plan.out, plan.count, provenance, source, fields)
        seconds = sum(e["duration"] for i in plan.todo for e in plan.assigned[i])
        with _Progress(seconds, options.progress, log) as progress:
            shards.write_planned(plan, provenance, source, fields,
                                 functools.partial(fill_shard, teachers, options, progress.update), progress.write,
                                 code_version=code_version())
        if options.content_teacher == "phones":
            log(f"phone targets: {teachers.content.aligned} utterances aligned to their transcript, "
                f"{teachers.content.decoded} by phone-loop decoding")
    return shards.merge_when_complete(options.out, log, calibrate_speaker_teacher(options.target_nats, log))


class _Progress:
    """Audio hours done, real-time factor and ETA on one line."""

    def __init__(self, total_seconds: float, enabled: bool, log: Callable[[str], None]):
        from tqdm import tqdm

        self.enabled, self.log = enabled, log
        self.start = time.perf_counter()
        self.bar = tqdm(total=total_seconds / 3600, disable=not enabled, unit="h", dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} audio-h [{elapsed}<{remaining}{postfix}]",
                        file=sys.stderr)
        self.done = 0.0

    def update(self, seconds: float) -> None:
        self.done += seconds
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{rate:.1f} audio-s/s", refresh=False)
        self.bar.update(seconds / 3600)

    def write(self, message: str) -> None:
        if self.enabled:
            self.bar.write(message, file=sys.stderr)  # above the bar, which stays at the bottom
        else:
            self.log(message)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


def add_arguments(parser) -> None:
    default = " (default: %(default)s)"
    arg = parser.add_argument
    arg("--manifest", type=Path, help="manifest.jsonl from `jaxcodec manifest`")
    arg("--out", type=Path, required=True, help="shard directory (created; resumable)")
    arg("--content-teacher", choices=registry.names(CONTENT), default=Options.content_teacher,
        help="the content (linguistic) teacher: HuBERT (--hubert), or phone posteriorgrams from PocketSphinx, "
             "whose en-us model ships in its wheel (no hub needed): forced alignment to the manifest's transcript, "
             "phone-loop decoding without one" + default)
    arg("--hubert", default=Options.hubert,
        help="HuBERT hub id or local save_pretrained directory, or random:base[:SEED] for the architecture with "
             "seeded random weights (an offline stand-in, labelled as such in the shards)" + default)
    arg("--hubert-layer", default=Options.hubert_layer,
        help="hidden layer to store (0..num_layers), or 'avg' for the mean of all" + default)
    arg("--ecapa", default=Options.ecapa,
        help="ECAPA-TDNN speechbrain hub id or local directory. A directory is read weights only: the hub model's "
             "architecture is built here and embedding_model.ckpt loaded with torch.load(weights_only=True); its "
             "hyperparams.yaml is not read (see --ecapa-hyperpyyaml). A hub id is loaded by speechbrain from its "
             "hyperparams.yaml" + default)
    arg("--ecapa-hyperpyyaml", action="store_true",
        help="build a local --ecapa DIR from its hyperparams.yaml with speechbrain's HyperPyYAML instead. This "
             "EXECUTES CODE from the folder (its !new:/!apply: tags call any Python): only for folders you trust")
    arg("--speaker-teacher", "--acoustic-teacher", dest="speaker_teacher", choices=registry.names(SPEAKER),
        default=Options.speaker_teacher,
        help="the speaker (timbre/prosody) teacher: ECAPA-TDNN (--ecapa), or resemblyzer's 256-d speaker encoder, "
             "whose weights ship in its PyPI package (no hub needed); --acoustic-teacher is its old name" + default)
    arg("--target-nats", type=float, default=DEFAULT_TARGET_NATS,
        help="the speaker teacher's calibration: the temperature is chosen so that the mean KL between the "
             "teacher distributions of different training speakers is this many nats (README: Teacher "
             "calibration)" + default)
    arg("--ecapa-frames", action="store_true",
        help="also store frame-level ECAPA features (MFA layer pooled to 50 Hz; large)")
    arg("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ..." + default)
    arg("--half", action=argparse.BooleanOptionalAction, default=None,
        help="run the teachers in float16 (unset: on CUDA only)")
    arg("--num-shards", type=int, help="shards to split the manifest into (unset: ~1 h of audio each)")
    arg("--shard-index", type=int, help="write only this shard (one process of a job array)")
    arg("--split", dest="splits", action="append", default=[],
        help="only utterances of this manifest split (repeatable; unset: all)")
    arg("--batch-seconds", type=float, default=BATCH_SECONDS, help="padded audio seconds per teacher batch" + default)
    arg("--min-seconds", type=float, default=MIN_SECONDS, help="reject shorter utterances, in seconds" + default)
    arg("--max-seconds", type=float,
        help="reject longer utterances (unset: none; long files are processed in windows)")
    arg("--read-threads", type=int, default=READ_THREADS, help="audio decoding threads" + default)
    arg("--merge-index", action="store_true",
        help="only merge the finished shards' parts into index.json (after a job array)")
    arg("--no-progress", action="store_true", help="no progress bar")


def main(args) -> int:
    try:
        if not (args.target_nats > 0 and math.isfinite(args.target_nats)):
            print(f"jaxcodec precompute: error: --target-nats must be a positive number, got {args.target_nats}",
                  file=sys.stderr)
            return 2
        if args.merge_index:
            with shards.writing(args.out, shard_index=None):
                index = shards.merge_index(args.out, calibrate_speaker_teacher(args.target_nats, print))
            print(f"index.json: {index['num_records']} utterances in {len(index['shards'])} shards, "
                  f"{index['num_rejects']} rejected")
            return 0
        if args.manifest is None:
            print("jaxcodec precompute: error: --manifest is required (unless --merge-index)", file=sys.stderr)
            return 2
        options = Options(manifest=args.manifest, out=args.out, content_teacher=args.content_teacher,
                          hubert=args.hubert, hubert_layer=args.hubert_layer,
                          ecapa=args.ecapa, ecapa_frames=args.ecapa_frames,
                          ecapa_hyperpyyaml=args.ecapa_hyperpyyaml, speaker_teacher=args.speaker_teacher,
                          target_nats=args.target_nats,
                          device=args.device, half=args.half,
                          num_shards=args.num_shards, shard_index=args.shard_index, splits=tuple(args.splits),
                          batch_seconds=args.batch_seconds, min_seconds=args.min_seconds,
                          max_seconds=args.max_seconds, read_threads=args.read_threads,
                          progress=not args.no_progress)
        run(options)
        return 0
    except (shards.ShardError, manifest_lib.ManifestError, TeacherLoadError) as err:
        print(f"jaxcodec precompute: error: {err}", file=sys.stderr)
        return 2
