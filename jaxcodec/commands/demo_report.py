"""The demo's report: DIR/report.md with PNG plots (matplotlib, Agg), from the files the stages left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxcodec import atomic, audio
from jaxcodec.eval.report import fmt_value, plot_spectrograms, pyplot, save_png
from jaxcodec.train import monitor
from jaxcodec.workdir import read_metrics

METRIC_ROWS = (("pesq", "PESQ-wb ↑", "{:.3f}"), ("stoi", "STOI ↑", "{:.3f}"),
               ("mel_distance", "mel distance ↓", "{:.3f}"), ("si_sdr", "SI-SDR (dB) ↑", "{:.2f}"))


def plot_curves(workdir: Path, path: Path) -> Path:
    """Training losses (total, mel, semantic, acoustic, discriminator), validation mel and per-level codebook
    perplexity, from workdir/metrics.jsonl."""
    plt = pyplot()
    rows = read_metrics(workdir)
    train = [r for r in rows if "loss/total" in r]
    valid = [r for r in rows if "valid_mel" in r]
    steps = [r["step"] for r in train]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in ("loss/mel", "loss/total", "loss/disc"):
        logged = [r for r in train if key in r]  # loss/disc: GAN steps only, not the generator-only warm-up
        axes[0].plot([r["step"] for r in logged], [r[key] for r in logged], label=key.split("/")[1])
    if valid:
        axes[0].plot([r["step"] for r in valid], [r["valid_mel"] for r in valid], "o-", label="valid mel")
    axes[0].set_yscale("log")
    axes[0].set_title("reconstruction and adversarial losses")
    for key in ("loss/semantic", "loss/acoustic", "loss/commit"):
        axes[1].plot(steps, [r[key] for r in train], label=key.split("/")[1])
    axes[1].set_title("teacher guidance and commitment")
    perplexity = np.array([r["codebook/perplexity_q"] for r in train])
    for level in range(perplexity.shape[1]):
        axes[2].plot(steps, perplexity[:, level], label=f"level {level + 1}")
    axes[2].set_title("codebook perplexity per level (batch)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


GUIDANCE = monitor.GUIDANCE


def metric_rows(workdir: Path) -> list[dict]:
    return read_metrics(workdir)


def guidance_summary(workdir: Path) -> dict:
    return monitor.guidance_summary(metric_rows(workdir))


def plot_guidance(workdir: Path, path: Path) -> Path:
    """Each guidance loss beside its floor (what a constant output reaches on the same batch), over steps."""
    plt = pyplot()
    train = [r for r in metric_rows(workdir) if "loss/total" in r and "loss/acoustic_floor" in r]
    steps = [r["step"] for r in train]
    fig, axes = plt.subplots(1, len(GUIDANCE), figsize=(12, 3.8))
    for ax, name in zip(axes, GUIDANCE, strict=True):
        ax.plot(steps, [r[f"loss/{name}"] for r in train], label=f"{name} loss", linewidth=1)
        ax.plot(steps, [r[f"loss/{name}_floor"] for r in train], label="floor (constant output)", linewidth=1,
                linestyle="--")
        ax.set_title(f"{name} guidance and its floor")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


def guidance_lines(guidance: dict) -> list[str]:
    lines = [f"| guidance loss | median floor | loss / floor, last {monitor.LAST_INTERVALS} log steps |",
             "|---|---|---|"]
    for name in GUIDANCE:
        row = guidance[name]
        lines.append(f"| {name} | {fmt_value(row['median_floor'], '{:.3f}')} | "
                     f"{fmt_value(row['last_ratio'], '{:.3f}')} |")
    lines += ["", "A ratio below 1 means the loss is below what a constant output reaches on the same batches: the "
              "guidance carries information about each example."]
    if guidance["warnings"]:
        lines += ["", "Warnings during training:", "", *[f"- {w}" for w in guidance["warnings"]]]
    if guidance["diverged"]:
        lines += ["", f"**Training diverged:** {guidance['diverged']}"]
    return lines


VALID_ROWS = (("valid_mel", "mel loss ↓", "{:.3f}"), ("valid_stoi", "STOI ↑", "{:.3f}"),
              ("valid_pesq", "PESQ-wb ↑", "{:.3f}"))


def validation_rows(workdir: Path) -> list[dict]:
    rows = read_metrics(workdir)
    return [r for r in rows if "valid_mel" in r]


def plot_validation(valid: list[dict], best_step: int, path: Path) -> Path:
    """Validation mel loss, STOI and PESQ-wb (valid speakers' crops) over steps; step 0 is the untrained model,
    the dashed line the evaluated (best) step."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(VALID_ROWS), figsize=(15, 3.6))
    for ax, (key, label, _) in zip(axes, VALID_ROWS, strict=True):
        points = [(r["step"], r[key]) for r in valid if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", markersize=3)
        ax.axvline(best_step, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"validation {label}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


def validation_table(valid: list[dict], best_step: int) -> list[str]:
    """Untrained (step 0, when validated), best and last step: the learning the demo shows, in three rows."""
    picks = [("untrained (step 0)", next((r for r in valid if r["step"] == 0), None)),
             (f"best (step {best_step})", next((r for r in valid if r["step"] == best_step), None)),
             (f"last (step {valid[-1]['step']})" if valid else "last", valid[-1] if valid else None)]
    lines = ["| validation | " + " | ".join(label for _, label, _ in VALID_ROWS) + " |",
             "|---" * (len(VALID_ROWS) + 1) + "|"]
    for name, row in picks:
        if row is not None:
            lines.append(f"| {name} | " + " | ".join(fmt_value(row.get(key), pattern)
                                                        for key, _, pattern in VALID_ROWS) + " |")
    return lines


def _content_line(hubert: dict) -> str:
    if hubert.get("teacher"):  # an offline content teacher other than HuBERT, e.g. PocketSphinx phones
        return (f"- Content: `{hubert.get('model')}` ({hubert.get('dim')}-d) — **{hubert['teacher']}**: "
                f"{hubert.get('targets', '')}")
    return (f"- Content: HuBERT `{hubert.get('model')}`, layer {hubert.get('layer')}"
            + (f" — **{hubert['random_init']}**" if hubert.get("random_init") else " (pretrained)"))


def score_table(scores: dict) -> list[str]:
    lines = ["| metric | trained | untrained baseline |", "|---|---|---|"]
    for key, label, pattern in METRIC_ROWS:
        lines.append(f"| {label} | {fmt_value(scores['trained'].get(key), pattern)} | "
                     f"{fmt_value(scores['untrained'].get(key), pattern)} |")
    return lines


CORPUS_TEXT = {
    "bundled": "the bundled TTS corpus (flite and espeak-ng voices)",
    "real": "the real-speech corpus (three professional voices of Debian's Asterisk packages, G.722 16 kHz)",
    "mixed": "the bundled TTS corpus and the real-speech corpus (three voices of Debian's Asterisk packages)",
}


def render(out: Path, teachers: dict, provenance: dict, summary: dict, timings: dict, train_info: dict) -> Path:
    from jaxcodec.data.shards import CONTENT, SPEAKER, by_role, describe_teachers

    curves = plot_curves(out / "workdir", out / "curves.png")
    guidance = summary.get("guidance") or guidance_summary(out / "workdir")
    guidance_png = plot_guidance(out / "workdir", out / "guidance.png")
    valid = validation_rows(out / "workdir")
    validation = plot_validation(valid, summary["trained_step"], out / "validation.png")
    clip = summary["clips"][0]
    wavs = {name: audio.read(out / "samples" / f"{clip}_{suffix}.wav")[0]
            for name, suffix in (("original", "original"), ("reconstruction (trained)", "reconstruction"),
                                 ("reconstruction (untrained baseline)", "untrained"))}
    spectrogram = plot_spectrograms(wavs, audio.SAMPLE_RATE, out / "spectrogram.png")
    provenance = by_role(provenance)
    content, speaker = provenance[CONTENT], provenance[SPEAKER]
    scores = summary["scores"]
    tokens = summary["tokens"]
    corpus = summary.get("corpus", "bundled")
    lines = [
        "# jaxcodec demo report", "",
        f"The tiny codec (configs/cpu.yaml) at step {summary['trained_step']} (its checkpoint with the lowest "
        f"validation mel loss), trained on {CORPUS_TEXT.get(corpus, f'the corpus in `{corpus}`')}, evaluated on "
        f"{summary['test_utterances']} test utterances.", "",
        "## Teachers", "",
        _content_line(content),
        f"- Speaker: `{speaker.get('model')}` ({speaker.get('dim')}-d)"
        + (" — resemblyzer's pretrained GE2E speaker encoder, shipped in its PyPI package (ECAPA-TDNN stand-in)"
           if speaker.get("model") == "resemblyzer" else "") + f"; {describe_teachers(provenance)['speaker']}",
        f"- Why: {teachers['why']}.", "",
    ]
    for group, result in summary.get("groups", {}).items():
        lines += [f"## Reconstruction: {group} ({result['utterances']} utterances)", "", *score_table(result["scores"]),
                  "", f"PESQ scored {result['scores']['trained']['scored_pesq']} of {result['utterances']} clips.", ""]
    if not summary.get("groups"):
        lines += ["## Reconstruction on the test utterances", "", *score_table(scores), ""]
    lines += [
        "A clip PESQ cannot score is left out, not counted as a number. Mel distance: mean |Δ log10 mel|, 80 "
        "bands.", "",
        "## Guidance and its floor", "",
        "Each guidance loss beside the value a constant output reaches on the same batch (`loss/semantic_floor`, "
        "`loss/acoustic_floor` in metrics.jsonl):", "", f"![guidance and floors]({guidance_png.name})", "",
        *guidance_lines(guidance), "",
        "## Training", "",
        f"Validation on the valid speakers' crops ({'PESQ-wb and STOI on 8 crops, ' if valid else ''}mel loss on "
        "all), from the untrained model (step 0) to the end:", "",
        f"![validation curves]({validation.name})", "", *validation_table(valid, summary["trained_step"]), "",
        f"![training curves]({curves.name})", "",
        f"Evaluated step: {summary['trained_step']} (best validation mel); training stopped by the time budget: "
        f"{bool(train_info.get('stopped_early'))}. "
        f"Workdir: `{out / 'workdir'}` (`jaxcodec.load` accepts it).", "",
        "## An original and its reconstructions", "", f"![spectrograms]({spectrogram.name})", "",
        "Listen:", "",
    ]
    for clip_id in summary["clips"]:
        lines.append(f"- `{clip_id}`: samples/{clip_id}_original.wav, samples/{clip_id}_reconstruction.wav, "
                     f"samples/{clip_id}_untrained.wav")
    lines += [
        "", "## Tokens", "",
        f"{tokens['tokens_per_second']:.0f} tokens/s ({tokens['bits_per_second']:.0f} bit/s), "
        f"codebooks of {tokens['codebook_size']}; test-set tokens in `tokens/*.npy` (int16 [n_q, T]).", "",
        "| level | " + " | ".join(str(i + 1) for i in range(len(tokens["used_codes_per_level"]))) + " |",
        "|---" * (len(tokens["used_codes_per_level"]) + 1) + "|",
        "| codes used | " + " | ".join(str(x) for x in tokens["used_codes_per_level"]) + " |",
        "| entropy (bits) | " + " | ".join(str(x) for x in tokens["entropy_bits_per_level"]) + " |", "",
        "The full evaluation of this model (every bitrate, WER, speaker similarity and EER, voice conversion, "
        "probes), which the demo's time budget leaves out:", "",
        f"    jaxcodec eval --checkpoint {out / 'workdir'} --step best --manifest {out / 'manifest.jsonl'} "
        f"-o {out / 'eval'} --labels jaxcodec/data/corpus/speakers.json", "",
        "## Time", "",
        "| stage | seconds |", "|---|---|",
        *[f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()], "",
        "The corpus is synthetic (flite and espeak-ng) and the model tiny; these numbers show that every stage "
        "works, not the paper's quality.", "",
    ]
    report = out / "report.md"
    atomic.write_text(report, "\n".join(lines))
    return report
