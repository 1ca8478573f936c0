"""The evaluation report: DIR/report.md with PNGs (metric-vs-bitrate curves, spectrograms of an original, its
reconstruction and its voice conversion, codebook usage), and the side-by-side table of two runs
(`jaxcodec eval --compare A B`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxcodec import atomic, audio

# (key in a bitrate row, label, format, higher is better)
BITRATE_METRICS = (
    ("pesq", "PESQ-wb", "{:.3f}", True), ("stoi", "STOI", "{:.3f}", True),
    ("mel_distance", "mel distance", "{:.3f}", False), ("si_sdr", "SI-SDR (dB)", "{:.2f}", True),
    ("mcd", "MCD (dB)", "{:.2f}", False), ("f0_rmse", "F0 RMSE (Hz)", "{:.1f}", False),
    ("f0_corr", "F0 correlation", "{:.3f}", True), ("vuv_error", "V/UV error", "{:.3f}", False),
    ("wer", "WER", "{:.3f}", False), ("per", "PER", "{:.3f}", False),
    ("speaker_similarity", "speaker similarity", "{:.3f}", True),
    ("eer", "speaker EER", "{:.3f}", False),
)
# Bitrate metrics also reported for RVQ level 1 alone (n_q = 1) beside the full bitrate, in --compare and the
# ablation (scripts/ablate.py): how much of the transcript level 1 carries, judged by a recogniser.
LEVEL_ONE_METRICS = tuple(m for m in BITRATE_METRICS if m[0] in ("wer", "per"))
VC_METRICS = (
    ("similarity_to_target", "speaker similarity to target ↑", "{:.3f}"),
    ("similarity_to_source", "speaker similarity to source ↓", "{:.3f}"),
    ("wer", "WER against the source transcript ↓", "{:.3f}"),
    ("per", "PER against the source transcript's phones ↓", "{:.3f}"),
    ("mcd_to_source", "MCD to source, DTW (dB)", "{:.2f}"),
    ("mcd_to_target", "MCD to the target's parallel utterance (dB) ↓", "{:.2f}"),
    ("f0_corr_to_source", "F0 correlation with source", "{:.3f}"),
)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """Writes the figure atomically and closes it."""
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    pyplot().close(fig)
    return path


def fmt_value(value, pattern: str) -> str:
    """A number in `pattern`, or a dash for a metric that was not measured."""
    return "—" if value is None else pattern.format(value)


def plot_bitrate_curves(results: dict[str, dict], path: Path) -> Path:
    """One panel per metric, x = tokens/s, one line per run."""
    plt = pyplot()
    shown = [m for m in BITRATE_METRICS
             if any(row.get(m[0]) is not None for r in results.values() for row in r["bitrates"])]
    columns = 4
    rows_n = max(-(-len(shown) // columns), 1)
    fig, axes = plt.subplots(rows_n, columns, figsize=(4 * columns, 3 * rows_n), squeeze=False)
    for ax, (key, label, _, higher) in zip(axes.flat, shown, strict=False):
        for name, result in results.items():
            points = [(row["tokens_per_second"], row[key]) for row in result["bitrates"] if row.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), "o-", label=name)
        originals = [r["originals"].get(key) for r in results.values() if r.get("originals", {}).get(key) is not None]
        if originals:
            ax.axhline(originals[0], color="gray", ls="--", lw=1, label="original")
        ax.set_title(f"{label} {'↑' if higher else '↓'}")
        ax.set_xlabel("tokens/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    return save_png(fig, path)


def plot_codebook_usage(codebook: dict, path: Path) -> Path:
    """Left: each level's codes ranked by frequency (the usage histogram, sorted); right: codes used and
    perplexity per level against the codebook size."""
    plt = pyplot()
    levels = np.arange(1, len(codebook["used_codes_per_level"]) + 1)
    fig, (ranked, bars) = plt.subplots(1, 2, figsize=(12, 3.6))
    for level, counts in zip(levels, codebook["counts_per_level"], strict=True):
        frequency = np.sort(np.asarray(counts, float))[::-1] / max(sum(counts), 1)
        ranked.plot(np.arange(1, len(frequency) + 1), frequency, label=f"level {level}")
    ranked.set_yscale("log")
    ranked.set_xlabel("code rank")
    ranked.set_ylabel("share of frames")
    ranked.set_title("code usage, ranked")
    ranked.legend(fontsize=7, ncol=2)
    bars.bar(levels - 0.2, codebook["used_codes_per_level"], width=0.4, label="codes used")
    bars.bar(levels + 0.2, codebook["perplexity_per_level"], width=0.4, label="perplexity")
    bars.axhline(codebook["codebook_size"], color="gray", ls="--", lw=1, label="codebook size")
    bars.set_xlabel("RVQ level")
    bars.set_xticks(levels)
    bars.set_title(f"on the test set ({codebook['tokens']} frames)")
    bars.legend(fontsize=8)
    for ax in (ranked, bars):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


def plot_spectrograms(wavs: dict[str, np.ndarray], sample_rate: int, path: Path) -> Path:
    from jaxcodec.plots import spectrogram_image

    plt = pyplot()
    fig, axes = plt.subplots(len(wavs), 1, figsize=(10, 2.4 * len(wavs)), squeeze=False)
    for ax, (name, wav) in zip(axes[:, 0], wavs.items(), strict=True):
        ax.imshow(spectrogram_image([wav], sample_rate), aspect="auto",
                  extent=(0, len(wav) / sample_rate, 0, sample_rate / 2000))
        ax.set_title(name)
        ax.set_ylabel("kHz")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    return save_png(fig, path)


def _bitrate_table(result: dict) -> list[str]:
    shown = [m for m in BITRATE_METRICS if any(row.get(m[0]) is not None for row in result["bitrates"])]
    lines = ["| tokens/s | kbps | " + " | ".join(f"{label} {'↑' if up else '↓'}" for _, label, _, up in shown) + " |",
             "|---|---|" + "---|" * len(shown)]
    for row in result["bitrates"]:
        lines.append(f"| {row['tokens_per_second']:.0f} | {row['kbps']:.2f} | "
                     + " | ".join(fmt_value(row.get(key), pattern) for key, _, pattern, _ in shown) + " |")
    originals = result.get("originals", {})
    if any(originals.get(key) is not None for key, *_ in shown):
        cells = [fmt_value(originals.get(key), pattern) for key, _, pattern, _ in shown]
        lines.append("| original | — | " + " | ".join(cells) + " |")
    return lines


def _phone_reference_lines(reference: dict | None) -> list[str]:
    """One sentence: the utterances PER scores, and why the others are not scored."""
    if not reference:
        return []
    line = f"PER scores {reference['scorable_utterances']} utterances"
    if reference["unscorable"]:
        line += "; not scored: " + ", ".join(f"{count} ({why})" for why, count in reference["unscorable"].items())
    if reference["missing_words"]:
        line += "; words not in the dictionary: " + ", ".join(f"`{w}`" for w in reference["missing_words"])
    return [line + ".", ""]


def level_one_row(result: dict) -> dict:
    """The bitrate row of RVQ level 1 alone ({} when n_q = 1 was not evaluated)."""
    return next((row for row in result["bitrates"] if row.get("n_q") == 1), {})


def _teacher_lines(teachers: dict | None) -> list[str]:
    if not teachers:
        return []
    return [f"Trained with the content teacher {teachers['content']} and the speaker teacher "
            f"{teachers['speaker']}.", ""]


def _probe_tables(probes: dict) -> list[str]:
    lines = []
    tables = [(f"utterance label `{name}`", groups) for name, groups in probes.get("utterance", {}).items()]
    tables += [(f"utterance label `{name}`, held-out speakers", groups)
               for name, groups in probes.get("utterance_by_speaker", {}).items()]
    if probes.get("phone"):
        tables.append(("phone (per 20 ms frame)", probes["phone"]))
    if probes.get("phone_by_speaker"):
        tables.append(("phone (per 20 ms frame), held-out speakers", probes["phone_by_speaker"]))
    if not tables:
        return ["No probe had two classes to tell apart."]
    groups = list(tables[0][1])
    lines += ["| probe | " + " | ".join(groups) + " | chance | train / test |", "|---|" + "---|" * (len(groups) + 2)]
    for name, result in tables:
        first = next((r for r in result.values() if r), None)
        cells = [fmt_value(result.get(g) and result[g]["accuracy"], "{:.3f}") for g in groups]
        extra = [fmt_value(first and first["chance"], "{:.3f}"),
                 f"{first['train']} / {first['test']}" if first else "—"]
        lines.append(f"| {name} | " + " | ".join(cells + extra) + " |")
    return lines


def render(out: Path, result: dict) -> Path:
    """report.md and its PNGs from metrics.json's content and the WAVs in out/samples."""
    curves = plot_bitrate_curves({"this run": result}, out / "bitrate_curves.png")
    usage = plot_codebook_usage(result["codebook"], out / "codebook_usage.png")
    lines = ["# jaxcodec evaluation", "",
             f"Checkpoint `{result['checkpoint']}` at step {result['step']}, on {result['utterances']} utterances "
             f"({result['audio_seconds']:.1f} s) of split `{result['split']}` of `{result['manifest']}`.", "",
             f"ASR: {result.get('asr_model') or 'none'}; speaker encoder: {result.get('speaker_encoder') or 'none'}.",
             "", *_teacher_lines(result.get("teachers")),
             "## Reconstruction at every bitrate", "", *_bitrate_table(result), "",
             f"![metrics against bitrate]({curves.name})", "",
             "PESQ-wb (ITU-T P.862.2), STOI, SI-SDR; mel distance: mean |Δ log10 mel|, 80 bands; MCD: 24 "
             "mel-cepstra (α 0.42) from WORLD, DTW-aligned; F0 by Harvest, over frames both voice; WER: the ASR "
             "against the manifest's transcripts; PER: PocketSphinx's phone-loop decoding against the "
             "transcript's phones in the CMU pronouncing dictionary (first pronunciation; silence dropped, "
             "repeated phones merged), total edits / total reference phones; speaker similarity: cosine of the "
             "encoder's embeddings of original and reconstruction; EER: all same/different-speaker pairs of the "
             "set.", "", *_phone_reference_lines(result.get("phone_reference"))]
    samples = out / "samples"
    kept = sorted(samples.glob("*_original.wav")) if samples.is_dir() else []
    vc = result.get("voice_conversion")
    if vc:
        lines += ["## Voice conversion by token swap", "",
                  f"Level 1 of the source, levels 2–{result['bitrates'][-1]['n_q']} of another speaker's utterance; "
                  f"{vc['pairs']} pairs ({vc['parallel_pairs']} with a parallel target utterance).", "",
                  "| metric | value |", "|---|---|",
                  *[f"| {label} | {fmt_value(vc.get(key), pattern)} |" for key, label, pattern in VC_METRICS], ""]
    if kept:
        clip = kept[0].name[: -len("_original.wav")]
        top = result["bitrates"][-1]["n_q"]
        wavs = {"original": samples / f"{clip}_original.wav",
                f"reconstruction, {top} levels": samples / f"{clip}_nq{top}.wav",
                "reconstruction, level 1 only": samples / f"{clip}_nq1.wav"}
        wavs.update({f"converted to speaker {p.name.split('_to_')[1][:-4]}": p
                     for p in sorted(samples.glob(f"{clip}_to_*.wav"))})
        wavs = {name: audio.read(p)[0] for name, p in wavs.items() if p.exists()}
        triplet = plot_spectrograms(wavs, result["sample_rate"], out / "spectrograms.png")
        lines += ["## Spectrograms", "", f"Utterance `{clip}`.", "", f"![spectrograms]({triplet.name})", "",
                  "Listen: " + ", ".join(f"`samples/{p.name}`" for p in sorted(samples.glob(f"{clip}_*.wav"))), ""]
    book = result["codebook"]
    lines += ["## Codebook health", "",
              f"{book['tokens_per_second']:.0f} tokens/s, {book['bits_per_second']:.0f} bit/s nominal, "
              f"{book['entropy_bits_per_second']:.0f} bit/s of token entropy; "
              f"codebooks of {book['codebook_size']}.", "",
              "| level | " + " | ".join(str(i + 1) for i in range(len(book["used_codes_per_level"]))) + " |",
              "|---" * (len(book["used_codes_per_level"]) + 1) + "|",
              "| codes used | " + " | ".join(map(str, book["used_codes_per_level"])) + " |",
              "| dead codes | " + " | ".join(map(str, book["dead_codes_per_level"])) + " |",
              "| entropy (bits) | " + " | ".join(map(str, book["entropy_bits_per_level"])) + " |",
              "| perplexity | " + " | ".join(map(str, book["perplexity_per_level"])) + " |", "",
              f"![codebook usage]({usage.name})", ""]
    if result.get("probes"):
        probes = result["probes"]
        lines += ["## Probes on frozen tokens", "",
                  f"Linear probes (logistic regression) on {probes['utterances']} utterances of split "
                  f"`{probes['split']}`: accuracy on held-out examples per group of RVQ levels.", "",
                  *_probe_tables(probes), ""]
    if result.get("skipped") or result.get("bad_files"):
        lines += ["## Not measured", ""]
        lines += [f"- {name}: {reason}" for name, reason in result.get("skipped", {}).items()]
        lines += [f"- file `{key}` skipped: {reason}" for key, reason in result.get("bad_files", {}).items()]
        lines.append("")
    lines.append(f"Evaluation took {result['seconds']:.0f} s.")
    report = out / "report.md"
    atomic.write_text(report, "\n".join(lines) + "\n")
    return report


def _run_names(directories: list[Path]) -> list[str]:
    """Folder names, or parent/name where two folders share a name (DIR/a/eval, DIR/b/eval)."""
    names = [Path(d).resolve().name for d in directories]
    if len(set(names)) < len(names):
        names = [f"{Path(d).resolve().parent.name}/{Path(d).resolve().name}" for d in directories]
    return names


PROBE_ROWS = ("phone", "phone, held-out speakers", "speaker")


def probe_table(result: dict, probe: str) -> dict | None:
    """{level group: probe result} of one of PROBE_ROWS in a metrics.json's content (None when not run)."""
    probes = result.get("probes") or {}
    if probe == "speaker":
        return probes.get("utterance", {}).get("speaker")
    return probes.get("phone_by_speaker" if probe.endswith("held-out speakers") else "phone")


def compare(directories: list[Path], out: Path | None = None, names: list[str] | None = None) -> str:
    """A markdown table of two or more runs' metrics.json side by side (at each run's full bitrate, WER and PER
    of level 1 alone, VC and probes), and, with `out`, the table as out/compare.md and the overlaid bitrate
    curves as out/compare_curves.png."""
    results = {}
    for name, directory in zip(names or _run_names(directories), directories, strict=True):
        path = Path(directory) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: no metrics.json (run `jaxcodec eval` there first)")
        results[name] = json.loads(path.read_text())
    lines = ["| metric | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for key, label, pattern, up in BITRATE_METRICS:
        cells = [fmt_value(r["bitrates"][-1].get(key), pattern) for r in results.values()]
        if any(c != "—" for c in cells):
            lines.append(f"| {label} {'↑' if up else '↓'} (full bitrate) | " + " | ".join(cells) + " |")
    for key, label, pattern, up in LEVEL_ONE_METRICS:
        cells = [fmt_value(level_one_row(r).get(key), pattern) for r in results.values()]
        if any(c != "—" for c in cells):
            lines.append(f"| {label} {'↑' if up else '↓'} (level 1 only) | " + " | ".join(cells) + " |")
    for key, label, pattern in VC_METRICS:
        cells = [fmt_value((r.get("voice_conversion") or {}).get(key), pattern) for r in results.values()]
        if any(c != "—" for c in cells):
            lines.append(f"| VC: {label} | " + " | ".join(cells) + " |")
    for probe in PROBE_ROWS:
        tables = [probe_table(r, probe) for r in results.values()]
        groups = list(dict.fromkeys(g for table in tables for g in (table or {})))
        for group in groups:
            cells = [fmt_value((table or {}).get(group) and table[group]["accuracy"], "{:.3f}") for table in tables]
            lines.append(f"| probe: {probe}, {group} ↑ | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        plot_bitrate_curves(results, out / "compare_curves.png")
        atomic.write_text(out / "compare.md", table)
    return table
