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
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from jaxcodec import __version__, audio
from jaxcodec.data import manifest as manifest_lib
from jaxcodec.data import shards
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
    content_teacher: str = "hubert"  # hubert | phones (PocketSphinx phone posteriors; its model ships in its wheel)
    hubert: str = "facebook/hubert-base-ls960"
    hubert_layer: str = "9"
    ecapa: str = "speechbrain/spkrec-ecapa-voxceleb"
    ecapa_frames: bool = False
    ecapa_hyperpyyaml: bool = False  # a local --ecapa folder built by its hyperparams.yaml (runs its code)
    acoustic_teacher: str = "ecapa"  # ecapa | resemblyzer (offline: weights ship in its PyPI package)
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


RANDOM_PREFIX = "random:"  # --hubert random:base[:SEED]


def _random_hubert(source: str, out: Path) -> tuple[str, str]:
    """`random:SIZE[:SEED]` → a HuBERT of that architecture with seeded random weights, saved once under
    OUT/teachers/ in the hub's format; returns (its directory, the label recorded in the provenance)."""
    from teachers.hubert import save_random_hubert

    parts = source[len(RANDOM_PREFIX):].split(":")
    size, seed = parts[0] or "base", int(parts[1]) if len(parts) > 1 else 0
    directory = Path(out) / "teachers" / f"hubert-{size}-random-seed{seed}"
    if not (directory / "config.json").is_file():
        save_random_hubert(directory, size=size, seed=seed)
    return str(directory), f"HuBERT-{size} architecture, random weights (seed {seed}), NOT pretrained"


class Teachers:
    """Both teachers behind one call; the only place precompute touches torch models."""

    def __init__(self, options: Options):
        import torch

        from teachers.hubert import HubertTeacher

        half = options.half if options.half is not None else options.device.startswith("cuda")
        dtype = torch.float16 if half else torch.float32
        hubert, self.random_hubert = options.hubert, None
        # The content teacher fills the shards' `hubert` field; provenance names the model.
        if options.content_teacher == "phones":
            from teachers.phones import PhoneTeacher

            self.hubert = PhoneTeacher()
        elif options.content_teacher == "hubert":
            if hubert.startswith(RANDOM_PREFIX):  # an offline stand-in: the architecture with seeded random weights
                hubert, self.random_hubert = _random_hubert(hubert, options.out)
            self.hubert = HubertTeacher(hubert, layer=options.hubert_layer, device=options.device, dtype=dtype,
                                        max_batch_seconds=options.batch_seconds)
        else:
            raise TeacherLoadError(f"unknown content teacher {options.content_teacher!r}: hubert or phones")
        # The acoustic teacher fills the shards' `ecapa` field (what training reads); provenance names the model.
        if options.acoustic_teacher == "resemblyzer":
            from teachers.resemblyzer import ResemblyzerTeacher

            if options.ecapa_frames:
                raise TeacherLoadError("--ecapa-frames needs ECAPA-TDNN: resemblyzer gives utterance embeddings only")
            self.ecapa = ResemblyzerTeacher(device=options.device)
        elif options.acoustic_teacher == "ecapa":
            from teachers.ecapa import EcapaTeacher

            self.ecapa = EcapaTeacher(options.ecapa, device=options.device, frames=options.ecapa_frames,
                                      hyperpyyaml=options.ecapa_hyperpyyaml)
        else:
            raise TeacherLoadError(f"unknown acoustic teacher {options.acoustic_teacher!r}: ecapa or resemblyzer")
        self.half = half
        self.content_teacher = options.content_teacher

    def provenance(self) -> dict:
        hubert = self.hubert.provenance()
        if self.random_hubert is not None:
            hubert["random_init"] = self.random_hubert  # never to be mistaken for a pretrained HuBERT
        return {
            "hubert": hubert,
            "ecapa": self.ecapa.provenance(),
            "sample_rate": audio.SAMPLE_RATE,
            "hop_length": CODEC_HOP,
            "frame_rate": audio.SAMPLE_RATE / CODEC_HOP,
            "teacher_dtype": "float16" if self.half else "float32",
            "feature_dtype": np.dtype(FEATURE_DTYPE).name,
        }

    def fields(self) -> dict:
        spec = {
            "audio": {"dtype": "int16", "shape": ["samples"]},
            "hubert": {"dtype": np.dtype(FEATURE_DTYPE).name, "shape": ["frames", self.hubert.dim]},
            "ecapa": {"dtype": np.dtype(FEATURE_DTYPE).name, "shape": [self.ecapa.dim]},
        }
        if self.ecapa.frame_dim is not None:
            spec["ecapa_frames"] = {"dtype": np.dtype(FEATURE_DTYPE).name, "shape": ["frames", self.ecapa.frame_dim]}
        return spec

    def __call__(self, wavs: list[np.ndarray], texts: list[str | None] | None = None) -> list[dict]:
        texts = texts if texts is not None else [None] * len(wavs)
        hubert = self.hubert(wavs, texts) if self.content_teacher == "phones" else self.hubert(wavs)
        ecapa = self.ecapa(wavs)
        return [{"hubert": h, **e} for h, e in zip(hubert, ecapa, strict=True)]


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
        if teachers.content_teacher == "phones":
            log(f"phone targets: {teachers.hubert.aligned} utterances aligned to their transcript, "
                f"{teachers.hubert.decoded} by phone-loop decoding")
    return shards.merge_when_complete(options.out, log)


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
    arg("--content-teacher", choices=("hubert", "phones"), default=Options.content_teacher,
        help="content (linguistic) target: HuBERT (--hubert), or phone posteriorgrams from PocketSphinx, whose "
             "en-us model ships in its wheel (no hub needed): forced alignment to the manifest's transcript, "
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
    arg("--acoustic-teacher", choices=("ecapa", "resemblyzer"), default=Options.acoustic_teacher,
        help="acoustic (timbre/prosody) target: ECAPA-TDNN (--ecapa), or resemblyzer's 256-d speaker encoder, whose "
             "weights ship in its PyPI package (no hub needed)" + default)
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
        if args.merge_index:
            with shards.writing(args.out, shard_index=None):
                index = shards.merge_index(args.out)
            print(f"index.json: {index['num_records']} utterances in {len(index['shards'])} shards, "
                  f"{index['num_rejects']} rejected")
            return 0
        if args.manifest is None:
            print("jaxcodec precompute: error: --manifest is required (unless --merge-index)", file=sys.stderr)
            return 2
        options = Options(manifest=args.manifest, out=args.out, content_teacher=args.content_teacher,
                          hubert=args.hubert, hubert_layer=args.hubert_layer,
                          ecapa=args.ecapa, ecapa_frames=args.ecapa_frames,
                          ecapa_hyperpyyaml=args.ecapa_hyperpyyaml, acoustic_teacher=args.acoustic_teacher,
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
