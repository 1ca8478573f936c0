"""`jaxcodec eval`: one checkpoint measured the way the field does, on a manifest's test split.

For every test utterance and every bitrate (n_q = 1..8 levels, 50..400 tokens/s): PESQ-wb, STOI, SI-SDR, mel
distance (metrics.py), MCD and F0 error (world.py), the ASR transcript (asr.py) and the phones PocketSphinx
hears against the transcript's dictionary phones (phone_error_rate.py); speaker similarity of each
reconstruction to its original and verification EER (speaker.py); voice conversion by token swap (vc.py);
probes on the frozen tokens (probes.py); codebook health (codebook.py). Results: DIR/metrics.json (means),
DIR/utterances.jsonl (every score of every clip), DIR/report.md with PNGs (report.py), DIR/samples/*.wav.

A metric whose package or model is missing is skipped with its reason (recorded in metrics.json and the report),
never guessed; an unreadable file is skipped with its reason and the run goes on.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxcodec import atomic, audio
from jaxcodec.data import manifest as manifest_lib
from jaxcodec.eval import asr as asr_lib
from jaxcodec.eval import phone_error_rate, probes, scoring, speaker, vc
from jaxcodec.eval.codebook import CodeUsage
from jaxcodec.eval.torch_subprocess import ToolError
from jaxcodec.quality import MetricUnavailable

# Manifest keys that are bookkeeping, not labels a probe could predict.
MANIFEST_KEYS = frozenset({"id", "path", "duration", "frames", "sample_rate", "channels", "speaker", "chapter",
                           "text", "split"})
LABEL_FILE_SKIP = frozenset({"id", "speaker", "split", "seconds"})
# Words missing from the pronouncing dictionary listed in metrics.json (enough to see what to add; the count
# of unscorable utterances is complete).
MISSING_WORDS_LISTED = 50
SCORE_KEYS = ("pesq", "stoi", "mel_distance", "si_sdr", "mcd", "f0_rmse", "f0_corr", "vuv_error")


class EvalError(RuntimeError):
    pass


@dataclasses.dataclass
class Options:
    checkpoint: Path  # a training workdir (or its checkpoints/ folder)
    manifest: Path
    out: Path
    step: int | str | None = None  # None = latest, "best", or a step number
    split: str = "test"  # the manifest split evaluated ("all" = every entry)
    n_q: str | list[int] | None = None  # bitrates as numbers of RVQ levels, or a parse_levels spec (default: all)
    max_utterances: int | None = None
    speaker_encoder: str | None = speaker.DEFAULT_ENCODER  # None: no speaker metrics
    asr: str | None = "pocketsphinx"  # WER: pocketsphinx, a transformers model id or directory, or None
    voice_conversion: bool = True
    probes: bool = True
    probe_split: str = "all"  # utterances the probes train and test on
    probe_max_utterances: int = 1000
    labels: Path | None = None  # JSON list of {"speaker" or "id": ..., label: value} for the probes
    samples: int = 3  # utterances whose original / reconstructions / conversion are kept as WAV
    workers: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)  # scoring processes


def parse_levels(spec: str, n_q: int) -> list[int]:
    """'1..8', '1,2,4,8' or '8' → sorted level counts, each in 1..n_q."""
    try:
        if ".." in spec:
            first, last = (int(x) for x in spec.split(".."))
            levels = list(range(first, last + 1))
        else:
            levels = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError as err:
        raise EvalError(f"--n-q {spec!r}: expected A..B or a comma list of integers") from err
    bad = [n for n in levels if not 1 <= n <= n_q]
    if not levels or bad:
        raise EvalError(f"--n-q {spec!r}: every value must be in 1..{n_q} (the checkpoint has {n_q} levels)")
    return sorted(set(levels))


def _select(entries: list[dict], split: str, limit: int | None) -> list[dict]:
    chosen = [e for e in entries if split == "all" or e["split"] == split]
    return chosen[:limit] if limit else chosen


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def _try(fn, skipped: dict, name: str):
    """fn() or None, recording why a metric could not run (missing package, failing model)."""
    try:
        return fn()
    except (MetricUnavailable, speaker.SpeakerEncoderError, ToolError) as err:
        skipped.setdefault(name, " ".join(str(err).split()))
        return None


class _Clips:
    """WAVs written for the speaker encoder (a temporary folder) and the few kept as samples."""

    def __init__(self, out: Path, keep: int):
        self._tmp = tempfile.TemporaryDirectory(prefix=".speaker-audio-", dir=out)
        self.root, self.samples, self.keep = Path(self._tmp.name), out / "samples", keep
        self.paths: dict[tuple, Path] = {}

    def add(self, key: tuple, wav: np.ndarray, sample_index: int) -> Path:
        path = self.root / ("_".join(str(k) for k in key) + ".wav")
        audio.write(path, wav, subtype="FLOAT")  # scored as decoded: no 16-bit rounding
        self.paths[key] = path
        if sample_index < self.keep:
            audio.write(self.samples / path.name, wav)
        return path

    def close(self) -> None:
        self._tmp.cleanup()


def evaluate(options: Options, log=print) -> dict:
    from tqdm import tqdm

    import jaxcodec

    started = time.monotonic()
    entries = manifest_lib.read(options.manifest)
    if options.probes and options.labels is not None:
        _label_table(entries[:1], options.labels)  # a bad label file is refused now, not after the scoring
    test = _select(entries, options.split, options.max_utterances)
    if not test:
        raise EvalError(f"{options.manifest}: no utterances in split {options.split!r}")
    codec = jaxcodec.load(options.checkpoint, options.step)
    levels = options.n_q or list(range(1, codec.n_q + 1))
    levels = parse_levels(levels if isinstance(levels, str) else ",".join(map(str, levels)), codec.n_q)
    options.out.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}
    recogniser = _try(lambda: asr_lib.recogniser(options.asr), skipped, "asr")
    pronunciations = _pronunciations(recogniser, options.asr, skipped)
    clips = _Clips(options.out, options.samples)
    rows, codes_by_id, bad_files, jobs = [], {}, {}, {}
    usage = CodeUsage(codec.n_q, codec.codebook_size)
    try:
        # 1. The codec (jax, this process): every clip to score is written to a temporary folder.
        for index, entry in enumerate(tqdm(test, desc="encoding and decoding", unit="utt", dynamic_ncols=True)):
            try:
                wav, _ = audio.read(entry["path"], codec.sample_rate)
            except audio.AudioError as err:
                bad_files[entry["id"]] = " ".join(str(err).split())
                continue
            codes = codec.encode(wav)
            codes_by_id[entry["id"]] = codes
            usage.add(codes)
            base = {"id": entry["id"], "speaker": str(entry["speaker"]), "text": entry.get("text")}
            jobs[entry["id"]] = {"original": str(clips.add((entry["id"], "original"), wav, index)),
                                 "original_row": len(rows), "items": [], "sample_rate": codec.sample_rate}
            rows.append({**base, "kind": "original", "clip": (entry["id"], "original")})
            for n in levels:
                key = (entry["id"], f"nq{n}")
                path = clips.add(key, codec.decode(codes[:n], num_samples=len(wav)), index)
                jobs[entry["id"]]["items"].append({"row": len(rows), "path": str(path), "kind": "reconstruction"})
                rows.append({**base, "kind": "reconstruction", "n_q": n, "clip": key})
        evaluated = [e for e in test if e["id"] in codes_by_id]
        if not evaluated:
            raise EvalError(f"none of the {len(test)} utterances could be read: {next(iter(bad_files.values()))}")
        if options.voice_conversion:
            _voice_conversion(codec, evaluated, codes_by_id, clips, rows, jobs, skipped)
        # 2. Scores (numpy and C libraries, `workers` processes): metrics, WORLD, PocketSphinx.
        groups = scoring.score_groups(list(jobs.values()), options.workers,
                                      isinstance(recogniser, asr_lib.PocketSphinx))
        for scored, why in tqdm(groups, total=len(jobs), desc=f"scoring ({options.workers} workers)", unit="utt",
                                dynamic_ncols=True):
            for row, scores in scored:
                rows[row].update(scores)
            for name, reason in why.items():
                skipped.setdefault(name, reason)
        if isinstance(recogniser, asr_lib.TransformersASR):
            transcripts = _try(lambda: recogniser.transcribe_files([clips.paths[r["clip"]] for r in rows]), skipped,
                               "asr")
            for row, transcript in zip(rows, transcripts or [], strict=False):
                row["transcript"] = transcript
        # 3. The speaker encoder (PyTorch, one subprocess for every clip).
        embeddings = _speaker_embeddings(options, clips, skipped)
    finally:
        clips.close()
    result = {
        "checkpoint": str(options.checkpoint), "step": codec.step, "manifest": str(options.manifest),
        "split": options.split, "utterances": len(evaluated),
        "audio_seconds": round(sum(float(e["duration"]) for e in evaluated), 2),
        "sample_rate": codec.sample_rate, "frame_rate": codec.frame_rate, "codebook_size": codec.codebook_size,
        "bad_files": bad_files,
        "asr_model": recogniser.name if recogniser is not None and "asr" not in skipped else None,
    }
    references = None
    if pronunciations is not None:
        references = {e["id"]: pronunciations.reference(e.get("text")) for e in evaluated}
        result["phone_reference"] = _phone_reference_summary(pronunciations, evaluated, references)
    result["originals"] = _originals_summary(rows, evaluated, embeddings, references)
    result["bitrates"] = [_bitrate_summary(rows, n, codec, embeddings, evaluated, references) for n in levels]
    if options.voice_conversion:
        result["voice_conversion"] = _vc_summary(rows, embeddings, references)
    result["codebook"] = usage.summary(codec.frame_rate)
    if options.probes:
        aligner = recogniser if isinstance(recogniser, asr_lib.PocketSphinx) else \
            _try(asr_lib.PocketSphinx, skipped, "phone_probe")
        result["probes"] = _probes(options, entries, codec, codes_by_id, aligner, skipped)
    result["speaker_encoder"] = embeddings["model"] if embeddings else None
    result["teachers"] = _training_teachers(options.checkpoint)
    result["skipped"] = skipped
    result["seconds"] = round(time.monotonic() - started, 1)
    atomic.write_jsonl(options.out / "utterances.jsonl", [{k: v for k, v in r.items() if k != "clip"} for r in rows])
    atomic.write_json(options.out / "metrics.json", result)
    log(f"evaluated {len(evaluated)} utterances at n_q {levels} in {result['seconds']:.0f} s → {options.out}")
    return result


def _voice_conversion(codec, evaluated, codes_by_id, clips, rows, jobs, skipped) -> None:
    """Converted clips, their rows and their scoring items (in the source's group)."""
    pairs = vc.pair_targets(evaluated)
    if not pairs or codec.n_q < 2:
        skipped.setdefault("voice_conversion", "needs two speakers and a codec with at least 2 levels")
        return
    for index, (s, t) in enumerate(pairs):
        source, target = evaluated[s], evaluated[t]
        converted = codec.decode(vc.swap_tokens(codes_by_id[source["id"]], codes_by_id[target["id"]]))
        parallel = bool(source.get("text")) and source.get("text") == target.get("text")
        key = (source["id"], "to", str(target["speaker"]))
        path = clips.add(key, converted, index)
        jobs[source["id"]]["items"].append({
            "row": len(rows), "path": str(path), "kind": "conversion",
            "parallel_target": str(clips.paths[(target["id"], "original")]) if parallel else None})
        rows.append({"id": source["id"], "target_id": target["id"], "kind": "conversion", "clip": key,
                     "speaker": str(source["speaker"]), "target_speaker": str(target["speaker"]),
                     "text": source.get("text"), "parallel": parallel})


def _speaker_embeddings(options, clips, skipped) -> dict | None:
    if not options.speaker_encoder:
        skipped.setdefault("speaker", "disabled (--speaker-encoder none)")
        return None
    keys = list(clips.paths)
    found = _try(lambda: speaker.embed_files([clips.paths[k] for k in keys], options.speaker_encoder), skipped,
                 "speaker")
    if found is None:
        return None
    embeddings, model, errors = found
    return {"model": model, "by_key": dict(zip(keys, embeddings, strict=True)), "errors": errors}


def _wer(rows: list[dict]) -> float | None:
    scored = [r for r in rows if r.get("transcript") is not None and r.get("text")]
    return asr_lib.wer([r["text"] for r in scored], [r["transcript"] for r in scored]) if scored else None


def _pronunciations(recogniser, asr_spec, skipped) -> phone_error_rate.Pronunciations | None:
    """The reference side of PER, when its hypothesis side (PocketSphinx's phone-loop decoding) runs."""
    if not isinstance(recogniser, asr_lib.PocketSphinx):
        skipped.setdefault("per", f"needs PocketSphinx's phone decoding (--asr pocketsphinx; this run's ASR: "
                                  f"{asr_spec or 'none'}{', not loaded' if 'asr' in skipped else ''})")
        return None
    return _try(phone_error_rate.Pronunciations, skipped, "per")


def _per(rows: list[dict], references: dict | None) -> float | None:
    """Corpus PER of `rows` (originals, reconstructions or conversions) against their (source) utterance's
    dictionary phones; None when PER is not measured or no row is scorable."""
    if references is None:
        return None
    return phone_error_rate.per(
        [references[r["id"]][0] for r in rows],
        [None if r.get("decoded_phones") is None else r["decoded_phones"].split() for r in rows])


def _phone_reference_summary(pronunciations, evaluated, references) -> dict:
    """How many utterances PER scores, and why the others are not scored."""
    reasons = [why for _, why in references.values() if why is not None]
    missing = sorted({w for e in evaluated for w in pronunciations.missing_words(e.get("text"))})
    return {"dictionary": str(pronunciations.path), "scorable_utterances": len(references) - len(reasons),
            "unscorable": {why: reasons.count(why) for why in sorted(set(reasons))},
            "missing_words": missing[:MISSING_WORDS_LISTED]}


def _originals_summary(rows, evaluated, embeddings, references) -> dict:
    originals = [r for r in rows if r["kind"] == "original"]
    summary = {"wer": _wer(originals), "per": _per(originals, references)}
    if embeddings:
        matrix = np.stack([embeddings["by_key"][(e["id"], "original")] for e in evaluated])
        summary["eer"] = speaker.verification_eer(matrix, [str(e["speaker"]) for e in evaluated])
    return summary


def _bitrate_summary(rows, n, codec, embeddings, evaluated, references) -> dict:
    at_n = [r for r in rows if r["kind"] == "reconstruction" and r["n_q"] == n]
    summary = {"n_q": n, "tokens_per_second": codec.frame_rate * n,
               "kbps": codec.frame_rate * n * np.log2(codec.codebook_size) / 1000}
    summary.update({key: _mean(r.get(key) for r in at_n) for key in SCORE_KEYS})
    summary["pesq_scored"] = sum(r.get("pesq") is not None for r in at_n)
    summary["wer"] = _wer(at_n)
    summary["per"] = _per(at_n, references)
    if embeddings:
        by_key = embeddings["by_key"]
        originals = np.stack([by_key[(e["id"], "original")] for e in evaluated])
        recons = np.stack([by_key[(e["id"], f"nq{n}")] for e in evaluated])
        summary["speaker_similarity"] = _mean(speaker.cosine(originals, recons))
        summary["eer"] = speaker.verification_eer(recons, [str(e["speaker"]) for e in evaluated])
    return summary


def _vc_summary(rows, embeddings, references) -> dict:
    conversions = [r for r in rows if r["kind"] == "conversion"]
    summary = {"pairs": len(conversions), "parallel_pairs": sum(r["parallel"] for r in conversions),
               "wer": _wer(conversions), "per": _per(conversions, references),
               "mcd_to_source": _mean(r.get("mcd") for r in conversions),
               "mcd_to_target": _mean(r.get("mcd_to_target") for r in conversions),
               "f0_corr_to_source": _mean(r.get("f0_corr") for r in conversions)}
    if embeddings and conversions:
        by_key = embeddings["by_key"]
        converted = np.stack([by_key[(r["id"], "to", r["target_speaker"])] for r in conversions])
        target = np.stack([by_key[(r["target_id"], "original")] for r in conversions])
        source = np.stack([by_key[(r["id"], "original")] for r in conversions])
        summary["similarity_to_target"] = _mean(speaker.cosine(converted, target))
        summary["similarity_to_source"] = _mean(speaker.cosine(converted, source))
    return summary


def _training_teachers(checkpoint: Path) -> dict | None:
    """The teachers that guided the evaluated run (its workdir's teachers.json), or None when not recorded."""
    import json

    from jaxcodec.data.shards import describe_teachers
    from jaxcodec.workdir import TEACHERS_FILE, workdir_of

    workdir = workdir_of(checkpoint)
    try:
        return describe_teachers(json.loads((workdir / TEACHERS_FILE).read_text()))
    except (OSError, ValueError, AttributeError):
        return None


# --- probes --------------------------------------------------------------------------------------------------------

def _label_table(entries: list[dict], label_file: Path | None) -> dict[str, list]:
    """{label name: value per entry (None = unknown)}: the speaker, categorical manifest keys, and a label file's
    per-speaker or per-utterance fields."""
    import json

    table: dict[str, list] = {"speaker": [str(e["speaker"]) for e in entries]}
    for key in sorted({k for e in entries for k in e} - MANIFEST_KEYS):
        table[key] = [None if e.get(key) is None else str(e[key]) for e in entries]
    if label_file is not None:
        try:
            records = json.loads(Path(label_file).read_text())
        except (OSError, ValueError) as err:
            raise EvalError(f"--labels {label_file}: not a readable JSON list ({err})") from err
        by_speaker = {str(r["speaker"]): r for r in records if "speaker" in r and "id" not in r}
        by_id = {str(r["id"]): r for r in records if "id" in r}
        for key in sorted({k for r in records for k in r} - LABEL_FILE_SKIP):
            table[key] = [None if (r := by_id.get(e["id"]) or by_speaker.get(str(e["speaker"]))) is None
                          or r.get(key) is None else str(r[key]) for e in entries]
    # A label with one value, or nearly one per utterance, says nothing a probe could learn; a per-speaker label
    # with one value per speaker (a voice name) is the speaker probe again.
    speaker_count = len(set(table["speaker"]))
    return {k: v for k, v in table.items()
            if 2 <= len({x for x in v if x is not None}) <= max(len(entries) // 4, 2)
            and (k == "speaker" or len({(s, x) for s, x in zip(table["speaker"], v, strict=True)}) > speaker_count
                 or len({x for x in v if x is not None}) < speaker_count)}


def _probes(options, entries, codec, codes_by_id, aligner, skipped) -> dict:
    from tqdm import tqdm

    chosen = _select(entries, options.probe_split, options.probe_max_utterances)
    codes, frame_labels, kept = [], [], []
    for entry in tqdm(chosen, desc="probe features", unit="utt", dynamic_ncols=True):
        codes_qt = codes_by_id.get(entry["id"])
        wav = None
        if codes_qt is None or aligner is not None:
            try:
                wav, _ = audio.read(entry["path"], codec.sample_rate)
            except audio.AudioError:
                continue
            if codes_qt is None:
                codes_qt = codec.encode(wav)
        kept.append(entry)
        codes.append(codes_qt)
        phones = aligner.align_phones(wav, entry["text"]) if aligner is not None and entry.get("text") else None
        frame_labels.append(None if phones is None else
                            probes.frame_phone_labels(phones, codes_qt.shape[1], 1.0 / codec.frame_rate))
    codebooks = codec.codebooks()
    labels, speakers = _label_table(kept, options.labels), [str(e["speaker"]) for e in kept]
    result = {"utterances": len(kept), "split": options.probe_split,
              "utterance": probes.utterance_probes(codes, codebooks, labels),
              "utterance_by_speaker": probes.utterance_probes(codes, codebooks, labels, speakers)}
    if aligner is None:
        skipped.setdefault("phone_probe", "needs the ASR (PocketSphinx) for phone alignments")
    else:
        result["aligned_utterances"] = sum(labels is not None for labels in frame_labels)
        result["phone"] = probes.phone_probe(codes, codebooks, frame_labels)
        result["phone_by_speaker"] = probes.phone_probe(codes, codebooks, frame_labels, speakers=speakers)
    return result
