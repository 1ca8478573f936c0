"""`jaxcodec demo [--out DIR] [--minutes M] [--corpus bundled|real|mixed|DIR]`: the whole pipeline on CPU, in minutes.

Stages, each through the code path of its stand-alone command:
  1. manifest    `jaxcodec manifest` on the corpus: the bundled one (jaxcodec/data/corpus: 14 TTS speakers, 3 test
                 speakers unseen in training), the real one (three professional voices from Debian's Asterisk
                 packages, built into DIR/real_corpus by jaxcodec/data/real_corpus.py; held-out utterances of each
                 speaker for validation and test), or both ("mixed")
  2. teachers    `jaxcodec precompute`, in PRECOMPUTE_WORKERS subprocesses, one shard each (the only stage that runs
                 PyTorch). With the model hub reachable, or --hubert/--ecapa naming local directories, the real
                 HuBERT and ECAPA-TDNN; offline, phone posteriorgrams from PocketSphinx (forced alignment to the
                 transcripts; labelled "phones from PocketSphinx, not HuBERT" everywhere) and resemblyzer's
                 pretrained speaker encoder; both models ship in their PyPI packages. The merge calibrates the
                 speaker teacher (jaxcodec/data/shards/calibration.py).
  3. training    `jaxcodec train` with configs/cpu.yaml (the tiny codec and the CPU recipe of bench/learning.md),
                 for the share of the time budget the other stages leave
  4. evaluation  PESQ-wb, STOI, mel distance and SI-SDR on the test utterances (per group: unseen synthetic
                 speakers, held-out real utterances), for the trained model and for the untrained one
  5. tokens      every test utterance tokenized (DIR/tokens/*.npy), with token statistics
  6. report      DIR/report.md with PNG plots (training curves, each guidance loss beside its floor,
                 spectrograms) and the WAVs to listen to

Everything lands in DIR (default demo_out/): manifest.jsonl, shards/, workdir/ (`jaxcodec.load` accepts it),
tokens/, samples/, report.md, summary.json. A rerun reuses the finished stages (precompute and training resume);
a rerun with another corpus is refused (DIR/demo.json records it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from jaxcodec import atomic, audio, python_child, stopping
from jaxcodec.data import manifest as manifest_lib

HELP = ("the whole pipeline on the bundled corpus, on CPU, in minutes: manifest → teachers → training → "
        "evaluation → tokens → report.md")

PACKAGE = Path(__file__).resolve().parents[1]  # jaxcodec/
CORPUS = PACKAGE / "data" / "corpus"
CPU_CONFIG = PACKAGE.parent / "configs" / "cpu.yaml"
DEFAULT_MINUTES = 15.0
# The budget's shares, measured on this project's 2-core machine (bench/learning.md): the offline teachers take
# 24 s on the bundled corpus (nothing on a rerun; estimated at 90 s to refuse a budget before they run), evaluation
# of two models on the 30 test clips, tokens and the report 25 s (60 s kept back: a slower machine must not
# overrun), and training is given what is left, but never less than MIN_TRAINING_SECONDS (a shorter run shows
# nothing: validation PESQ is still at its floor after 500 steps).
TEACHERS_ESTIMATE_SECONDS = 90.0
EVAL_RESERVE_SECONDS = 60.0
MIN_TRAINING_SECONDS = 120.0
# Training steps per second of budget: configs/cpu.yaml made 4163 steps in 11.8 min in the demo on that machine,
# validation and start-up included (bench/learning.md): 5.9 a second. The cosine schedule's length is the
# training share times this, so the learning rate has decayed when the budget ends; a slower machine stops on the
# budget first.
DEMO_STEPS_PER_SECOND = 5.8
REPORT_CLIPS = 3  # test reconstructions written as WAV and linked from the report
# What --corpus names besides a folder: the bundled synthetic voices, the three real voices of the Debian Asterisk
# packages (jaxcodec/data/real_corpus.py), or both.
CORPORA = ("bundled", "real", "mixed")
DEFAULT_CORPUS = "bundled"  # see README "Real speech in training": measured against "mixed"
DEMO_FILE = "demo.json"  # OUT/demo.json: the corpus a demo folder was made with
REAL_CORPUS_FOLDER = "real_corpus"  # OUT/real_corpus: the decoded real-speech corpus (~90 MB)
PRECOMPUTE_WORKERS = 2  # teacher processes (one shard each): this project's machines have 2 cores
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # read by PyTorch and numpy
# Test utterances are scored in groups that answer different questions: voices never trained on (the bundled
# corpus' test speakers) and held-out utterances of voices trained on (the real corpus' split).
UNSEEN_GROUP, HELD_OUT_GROUP = "unseen synthetic speakers", "held-out real utterances"
# Test utterances scored per group, spread evenly over the group's ids: the bundled corpus has exactly 30 (3 unseen
# speakers × 10); the real corpus' held-out split has 141, whose scoring (two models, PESQ and STOI) took 181 s
# here and pushed the mixed demo 2 min past its budget; 30 of them, 10 per real speaker, take ~35 s.
TEST_UTTERANCES_PER_GROUP = 30


class DemoError(RuntimeError):
    pass


def _log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- 1. manifest -------------------------------------------------------------------------------------------------

def corpus_splits(corpus: Path) -> dict[str, list[str]]:
    labels = json.loads((corpus / "speakers.json").read_text())
    return {split: [str(s["speaker"]) for s in labels if s["split"] == split] for split in ("valid", "test")}


def bundled_entries(corpus: Path) -> tuple[list[dict], list[dict]]:
    """A corpus in the bundled corpus' layout (speakers.json names its valid and test speakers): entries, rejects."""
    splits = corpus_splits(corpus)
    return manifest_lib.scan(corpus, valid_fraction=0.0, test_fraction=0.0, valid_speakers=splits["valid"],
                             test_speakers=splits["test"])


def real_entries(out: Path) -> list[dict]:
    """The real-speech corpus (jaxcodec/data/real_corpus.py: three Debian Asterisk voices), built once into
    OUT/real_corpus; DemoError in one line when its packages cannot be obtained."""
    from jaxcodec.data import real_corpus

    folder = out / REAL_CORPUS_FOLDER
    try:
        real_corpus.build(folder, log=_log)
        return real_corpus.manifest_entries(folder)
    except real_corpus.CorpusError as err:
        raise DemoError(f"the real-speech corpus cannot be built: {err}") from None


def make_manifest(corpus: str | Path, out: Path) -> list[dict]:
    """The manifest of `corpus`: "bundled" (the synthetic voices of jaxcodec/data/corpus), "real" (three real
    voices, held-out utterances of each for validation and test), "mixed" (both), or a folder in the bundled
    corpus' layout."""
    path = out / "manifest.jsonl"
    if not path.exists():
        rejects: list[dict] = []
        if corpus == "real":
            entries = real_entries(out)
        elif corpus == "mixed":
            entries, rejects = bundled_entries(CORPUS)
            entries = manifest_lib.combine(entries, real_entries(out))
        else:
            entries, rejects = bundled_entries(CORPUS if corpus == "bundled" else Path(corpus))
        manifest_lib.write(entries, rejects, path)
    entries = manifest_lib.read(path)
    _log(f"manifest: {manifest_lib.summary(entries).splitlines()[0]} → {path}")
    return entries


# --- 2. teachers -------------------------------------------------------------------------------------------------

def choose_teachers(hubert: str | None, ecapa: str | None, offline: bool) -> dict:
    """Real teachers when given or reachable; otherwise the labelled offline stand-ins."""
    if hubert is None and ecapa is None and offline:
        return {"content": "phones", "hubert": None, "speaker": "resemblyzer", "ecapa": None,
                "why": "the model hub is not reachable and no --hubert/--ecapa directories were given"}
    if hubert is not None and hubert.startswith("random:") and ecapa is None:
        return {"content": "hubert", "hubert": hubert, "speaker": "resemblyzer", "ecapa": None,
                "why": "chosen with --hubert"}
    return {"content": "hubert", "hubert": hubert or "facebook/hubert-base-ls960", "speaker": "ecapa",
            "ecapa": ecapa or "speechbrain/spkrec-ecapa-voxceleb", "why": "real teachers"}


def hub_offline() -> bool:
    """True when huggingface.co does not answer (no network here, or HF_HUB_OFFLINE set)."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return True
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return False
    except OSError:
        return True


def precompute(out: Path, teachers: dict, hubert_layer: str = "9") -> Path:
    """`jaxcodec precompute` as PRECOMPUTE_WORKERS processes, one per shard (the teachers run on one core each:
    PocketSphinx is single-threaded); the last to finish merges the index and calibrates the speaker teacher."""
    shards = out / "shards"
    workers = max(1, min(PRECOMPUTE_WORKERS, os.cpu_count() or 1))
    command = ["precompute", "--manifest", str(out / "manifest.jsonl"), "--out", str(shards),
               "--content-teacher", teachers["content"], "--speaker-teacher", teachers["speaker"],
               "--num-shards", str(workers), "--no-progress"]
    if teachers["hubert"]:
        command += ["--hubert", teachers["hubert"], "--hubert-layer", hubert_layer]
    if teachers["ecapa"]:
        command += ["--ecapa", teachers["ecapa"]]
    _log(f"teachers ({workers} processes): " + " ".join(command))
    env = python_child.environment()
    # Each child gets its share of the cores: PyTorch's default of one thread per core in every child makes
    # `workers` × cores threads contend for the cores (a user's own setting is kept).
    for name in THREAD_VARIABLES:
        env.setdefault(name, str(max(1, (os.cpu_count() or 1) // workers)))
    children = [subprocess.Popen(python_child.command("jaxcodec", *command, "--shard-index", str(i)), env=env)
                for i in range(workers)]
    failed = [(i, code) for i, code in enumerate(child.wait() for child in children) if code != 0]
    if failed:
        raise DemoError(f"precompute failed (shard {failed[0][0]}: exit {failed[0][1]}); its message is above")
    if not (shards / "index.json").is_file():  # both finished together and neither saw the other's part
        done = python_child.run("jaxcodec", ["precompute", "--out", str(shards), "--merge-index"])
        if done.returncode != 0:
            raise DemoError(f"precompute --merge-index failed (exit {done.returncode}); its message is above")
    return shards


# --- 3. training -------------------------------------------------------------------------------------------------

def demo_config(provenance: dict, steps: int, config_path: Path = CPU_CONFIG):
    """The training config: `config_path` (cpu.yaml) with what the shards imply (teachers' dimensions, the
    semantic cosine's axis) and `steps` steps; its validation and checkpoint intervals, capped at the run's
    length."""
    from jaxcodec import config as config_lib
    from jaxcodec.data.shards import config_overrides

    base = config_lib.load(config_path).train
    every = max(min(base.eval_every, steps), 1)
    return config_lib.load(config_path, [*config_overrides(provenance), f"train.num_steps={steps}",
                                         f"train.eval_every={every}",
                                         f"train.checkpoint_every={max(min(base.checkpoint_every, steps), 1)}"])


def budget_check(minutes: float, teachers_done: bool) -> None:
    """Refuses, before any stage runs, a budget that cannot hold every stage's share."""
    needed = (0.0 if teachers_done else TEACHERS_ESTIMATE_SECONDS) + MIN_TRAINING_SECONDS + EVAL_RESERVE_SECONDS
    if not minutes * 60 >= needed:
        raise DemoError(f"--minutes {minutes:g} is too small: the teachers (~{TEACHERS_ESTIMATE_SECONDS / 60:.1f} min"
                        f"{', done' if teachers_done else ''}), at least {MIN_TRAINING_SECONDS / 60:.0f} min of "
                        f"training and the evaluation (~{EVAL_RESERVE_SECONDS / 60:.0f} min) need "
                        f"--minutes {math.ceil(needed / 60 * 10) / 10:g} or more")


def training_seconds(minutes: float, elapsed: float) -> float:
    """Training's share: what the budget leaves after the stages so far and the evaluation reserve, at least
    MIN_TRAINING_SECONDS (then the demo ends late, and says so)."""
    remaining = minutes * 60 - elapsed - EVAL_RESERVE_SECONDS
    if remaining < MIN_TRAINING_SECONDS:
        _log(f"the stages before training took {elapsed / 60:.1f} min; training gets its minimum of "
             f"{MIN_TRAINING_SECONDS / 60:.0f} min and the demo ends ~{(MIN_TRAINING_SECONDS - remaining) / 60:.1f} "
             f"min after its budget")
    return max(remaining, MIN_TRAINING_SECONDS)


def train(shards: Path, out: Path, config, budget_seconds: float) -> dict:
    from jaxcodec.train import loop

    _log(f"training for up to {config.train.num_steps} steps or {budget_seconds / 60:.1f} min")
    last = loop.train(config, shards, out / "workdir", log=_log, time_budget=budget_seconds)
    if last.get("stopped_by"):  # a stop signal: the checkpoint is saved; the demo stops here and resumes there
        raise stopping.Stopped(last["stopped_by"])
    return last


# --- 4-5. evaluation and tokens ------------------------------------------------------------------------------------

def untrained_tokenizer(config):
    """The baseline: the same codec at initialisation (k-means codebooks on one training batch would already
    be training; the initial codebooks are used as they are)."""
    import jax
    from flax import nnx

    from jaxcodec.config import MeshConfig
    from jaxcodec.tokenizer import Tokenizer
    from jaxcodec.train import sharding
    from jaxcodec.train import state as state_lib

    graphs, state, _ = state_lib.create(config, sharding.make_mesh(MeshConfig(), jax.devices()[:1]))
    graphdef, params, rest = nnx.split(state_lib.merge_codec(graphs, state), nnx.Param, ...)
    return Tokenizer(config, graphdef, params, rest, step=0)


def evenly(entries: list[dict], count: int) -> list[dict]:
    """At most `count` of `entries`, spread evenly over them in id order (every speaker of a group keeps a share)."""
    ordered = sorted(entries, key=lambda e: e["id"])
    if len(ordered) <= count:
        return ordered
    return [ordered[i * len(ordered) // count] for i in range(count)]


def test_groups(entries: list[dict], per_group: int = TEST_UTTERANCES_PER_GROUP) -> dict[str, list[dict]]:
    """The scored test utterances by group (UNSEEN_GROUP, HELD_OUT_GROUP; at most `per_group` of each, evenly by
    id), the groups that have any."""
    from jaxcodec.data.real_corpus import is_real_speaker

    test = [e for e in entries if e["split"] == "test"]
    groups = {UNSEEN_GROUP: [e for e in test if not is_real_speaker(e.get("speaker"))],
              HELD_OUT_GROUP: [e for e in test if is_real_speaker(e.get("speaker"))]}
    return {name: evenly(group, per_group) for name, group in groups.items() if group}


def evaluate(entries: list[dict], tokenizers: dict, out: Path) -> dict:
    """Scores per model on the test split (overall and per test group), token statistics and files for the
    trained model."""
    from jaxcodec.eval import metrics
    from jaxcodec.eval.codebook import CodeUsage

    available = sum(e["split"] == "test" for e in entries)
    groups = test_groups(entries)
    test = [e for group in groups.values() for e in group]
    if not test:
        raise DemoError("the manifest has no test utterances")
    by_group: dict[str, dict] = {name: {} for name in groups}
    results, tokens_dir, samples = {}, out / "tokens", out / "samples"
    tokens_dir.mkdir(exist_ok=True)
    samples.mkdir(exist_ok=True)
    trained = tokenizers["trained"]
    usage = CodeUsage(trained.n_q, trained.codebook_size)
    from tqdm import tqdm

    for name, tokenizer in tokenizers.items():
        rows = []
        for i, entry in enumerate(tqdm(test, desc=f"evaluating the {name} model", unit="utt", dynamic_ncols=True)):
            wav, _ = audio.read(entry["path"])
            recon = tokenizer.reconstruct(wav)
            rows.append(metrics.reconstruction_scores(wav, recon, tokenizer.sample_rate))
            if name == "trained":
                codes = tokenizer.encode(wav)
                with atomic.replacing(tokens_dir / f"{entry['id']}.npy") as tmp, open(tmp, "wb") as f:
                    np.save(f, codes.astype(np.int16))  # [n_q, T]; int16 holds codes < 32768
                usage.add(codes)
                if i < REPORT_CLIPS:
                    audio.write(samples / f"{entry['id']}_original.wav", wav)
                    audio.write(samples / f"{entry['id']}_reconstruction.wav", recon)
            if name == "untrained" and i < REPORT_CLIPS:
                audio.write(samples / f"{entry['id']}_untrained.wav", recon)
        results[name] = {key: _mean([r[key] for r in rows]) for key in rows[0]}
        results[name]["scored_pesq"] = sum(r["pesq"] is not None for r in rows)
        for group, members in groups.items():
            ids = {e["id"] for e in members}
            kept = [r for r, e in zip(rows, test, strict=True) if e["id"] in ids]
            by_group[group][name] = {key: _mean([r[key] for r in kept]) for key in kept[0]}
            by_group[group][name]["scored_pesq"] = sum(r["pesq"] is not None for r in kept)
    token_stats = {"utterances": len(test), **usage.summary(trained.frame_rate)}
    del token_stats["counts_per_level"]  # summary.json stays readable
    return {"test_utterances": len(test), "test_utterances_available": available, "scores": results,
            "tokens": token_stats,
            "groups": {name: {"utterances": len(groups[name]), "scores": scores} for name, scores in by_group.items()},
            "clips": [e["id"] for e in test[:REPORT_CLIPS]]}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# --- 6. report ---------------------------------------------------------------------------------------------------

def write_report(out: Path, teachers: dict, provenance: dict, summary: dict, timings: dict, train_info: dict
                 ) -> Path:
    from jaxcodec.commands.demo_report import render

    return render(out, teachers, provenance, summary, timings, train_info)


# --- driver ------------------------------------------------------------------------------------------------------

def check_corpus(out: Path, corpus: str | Path) -> str:
    """The corpus' name as recorded in OUT/demo.json; a rerun in OUT with another corpus is refused (its manifest,
    shards and workdir are the first corpus')."""
    name = corpus if corpus in CORPORA else str(Path(corpus).resolve())
    record = out / DEMO_FILE
    if record.is_file():
        previous = json.loads(record.read_text()).get("corpus")
        if previous != name:
            raise DemoError(f"{out} holds a demo of --corpus {previous}; use another --out for --corpus {name}")
    elif (out / "manifest.jsonl").exists() and name != "bundled":  # a demo from before demo.json: bundled
        raise DemoError(f"{out} holds a demo of the bundled corpus; use another --out for --corpus {name}")
    else:
        atomic.write_json(record, {"corpus": name})
    return name


def run(out: Path, minutes: float = DEFAULT_MINUTES, hubert: str | None = None, ecapa: str | None = None,
        corpus: str | Path = DEFAULT_CORPUS, steps: int | None = None, config_path: Path = CPU_CONFIG,
        hubert_layer: str = "9") -> Path:
    started = time.monotonic()
    if not Path(config_path).is_file():
        # configs/ lives in the repository, beside the package: a wheel install has no cpu.yaml to find.
        raise DemoError(f"config {config_path} not found; run the demo from a clone of the repository "
                        f"(make demo) or pass --config PATH")
    budget_check(minutes, teachers_done=(out / "shards" / "index.json").is_file())
    out.mkdir(parents=True, exist_ok=True)
    corpus_name = check_corpus(out, corpus)
    timings = {}

    def stage(name, fn, *args):
        t = time.monotonic()
        result = fn(*args)
        timings[name] = time.monotonic() - t
        return result

    entries = stage("manifest", make_manifest, corpus, out)
    teachers = choose_teachers(hubert, ecapa, offline=hub_offline() if hubert is None and ecapa is None else False)
    content = f"HuBERT {teachers['hubert']}" if teachers["hubert"] else "phones from PocketSphinx (not HuBERT)"
    _log(f"corpus: {corpus_name}; teachers: content {content}, speaker {teachers['speaker']} ({teachers['why']})")
    shards = stage("teachers", precompute, out, teachers, hubert_layer)
    provenance = json.loads((shards / "index.json").read_text())["provenance"]
    budget = training_seconds(minutes, time.monotonic() - started)
    config = demo_config(provenance, steps or max(int(budget * DEMO_STEPS_PER_SECOND), 1), config_path)
    train_info = stage("training", train, shards, out, config, budget)

    import jaxcodec

    # The checkpoint with the lowest validation mel loss (valid speakers, not the test ones), as keep-best keeps.
    try:
        trained = jaxcodec.load(out / "workdir", "best")
    except ValueError:  # no validation ran: the latest step
        trained = jaxcodec.load(out / "workdir")
    tokenizers = {"trained": trained, "untrained": untrained_tokenizer(config)}
    summary = stage("evaluation", evaluate, entries, tokenizers, out)
    summary["trained_step"] = tokenizers["trained"].step
    summary["corpus"] = corpus_name
    from jaxcodec.commands.demo_report import guidance_summary

    summary["guidance"] = guidance_summary(out / "workdir")
    timings["total"] = time.monotonic() - started
    report = write_report(out, teachers, provenance, summary, timings, train_info)
    atomic.write_json(out / "summary.json", {**summary, "timings": timings, "teachers": teachers})
    _log(f"done in {timings['total'] / 60:.1f} min: open {report}")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                        help="total time budget; training gets what the other stages leave (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps at most, the learning-rate schedule's length (the budget may stop "
                             f"earlier) (default: {DEMO_STEPS_PER_SECOND:g} per second of training budget)")
    parser.add_argument("--hubert", help="a HuBERT hub id or local directory, or random:SIZE[:SEED] (default: the hub "
                                         "model if reachable, else phone posteriorgrams from PocketSphinx)")
    parser.add_argument("--hubert-layer", default="9", help="HuBERT layer of the semantic targets (paper: 9) "
                                                             "(default: %(default)s)")
    parser.add_argument("--ecapa", help="an ECAPA-TDNN hub id or local directory, read weights only (its "
                                        "hyperparams.yaml, which would run code, is not read) (default: the hub "
                                        "model if reachable, else resemblyzer's bundled speaker encoder)")
    parser.add_argument("--config", type=Path, default=CPU_CONFIG,
                        help="training config; the teachers' dimensions come from the shards (default: cpu.yaml)")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help="bundled: the synthetic voices shipped in jaxcodec/data/corpus (3 test speakers never "
                             "trained on); real: three real voices from Debian's Asterisk packages, fetched with "
                             "apt-get download (held-out utterances of each for validation and test); mixed: both; "
                             "or a folder in the bundled corpus' layout, with speakers.json (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    from jaxcodec import output_lock

    try:
        with output_lock.held(args.out):  # one demo per output folder (its stages also lock their own folders)
            run(args.out, args.minutes, args.hubert, args.ecapa, args.corpus, args.steps, args.config,
                args.hubert_layer)
        return 0
    except (DemoError, manifest_lib.ManifestError, ValueError, FileNotFoundError) as err:
        print(f"jaxcodec demo: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
