"""`jaxcodec demo`, shortened: every stage end to end on a 4-speaker slice of the bundled corpus, with the offline
teachers (PocketSphinx phones, resemblyzer), the micro training config and a few steps, so CI catches a broken
stage."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.train.micro import MICRO

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "jaxcodec" / "data" / "corpus"


def slice_corpus(out: Path, speakers: dict[int, str]) -> Path:
    labels = [s for s in json.loads((CORPUS / "speakers.json").read_text()) if s["speaker"] in speakers]
    for label in labels:
        shutil.copytree(CORPUS / str(label["speaker"]), out / str(label["speaker"]))
        label["split"] = speakers[label["speaker"]]
    (out / "speakers.json").write_text(json.dumps(labels))
    return out


def test_shortened_demo_runs_every_stage_and_writes_the_report(tmp_path):
    corpus = slice_corpus(tmp_path / "corpus", {101: "train", 202: "train", 401: "valid", 501: "test"})
    config = tmp_path / "micro.yaml"
    mapping = json.loads(json.dumps(MICRO))
    mapping["train"]["batch_size"] = 4
    mapping["train"]["validate_at_start"] = True
    config.write_text(yaml.safe_dump(mapping))
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "jaxcodec", "demo", "--out", str(out), "--corpus", str(corpus), "--config",
               str(config), "--steps", "4", "--minutes", "10"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user's machine
    env["HF_HUB_OFFLINE"] = "1"  # the offline teachers, whatever the network
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"open {out / 'report.md'}" in done.stdout

    report = (out / "report.md").read_text()
    assert "phones from PocketSphinx, not HuBERT" in report  # the stand-in teacher is labelled
    assert "resemblyzer" in report
    assert "| untrained (step 0) |" in report and "| best (step " in report  # validation from step 0
    for name in ("curves.png", "spectrogram.png", "validation.png", "guidance.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({name})" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trained_step"] == 4 and summary["test_utterances"] == 10
    assert summary["corpus"] == str(corpus) and summary["groups"]["unseen synthetic speakers"]["utterances"] == 10
    # Each guidance loss beside its floor, in the summary and the report.
    for name in ("semantic", "acoustic"):
        assert summary["guidance"][name]["median_floor"] > 0 and summary["guidance"][name]["last_ratio"] > 0
    assert "## Guidance and its floor" in report and "| acoustic |" in report
    for model in ("trained", "untrained"):
        scores = summary["scores"][model]
        assert scores["mel_distance"] > 0 and scores["si_sdr"] is not None
    tokens = sorted((out / "tokens").glob("*.npy"))
    assert len(tokens) == 10
    import numpy as np

    codes = np.load(tokens[0])
    assert codes.shape[0] == MICRO["rvq"]["n_q"] and codes.max() < MICRO["rvq"]["codebook_size"]
    clips = summary["clips"]
    assert all((out / "samples" / f"{c}_{kind}.wav").exists() for c in clips
               for kind in ("original", "reconstruction", "untrained"))
    # The manifest kept the corpus' split; the workdir is a training workdir jaxcodec.load accepts.
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["speaker"]: r["split"] for r in rows} == {"101": "train", "202": "train", "401": "valid",
                                                        "501": "test"}
    assert (out / "workdir" / "checkpoints" / "4").is_dir()


def test_demo_without_its_config_says_where_to_find_one(tmp_path, capsys):
    from jaxcodec.commands import main

    assert main(["demo", "--out", str(tmp_path / "demo"), "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.yaml not found" in err and "--config" in err
    assert not (tmp_path / "demo").exists()  # refused before any stage ran


def test_demo_refuses_a_budget_too_small_for_its_stages(tmp_path, capsys):
    """--minutes 4 cannot hold the teachers, a useful training share and the evaluation: one line that says what
    is needed, before any stage runs (it used to train for a negative budget and evaluate step 1)."""
    from jaxcodec.commands import demo, main

    assert main(["demo", "--out", str(tmp_path / "demo"), "--minutes", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--minutes 4 is too small" in err
    needed = demo.TEACHERS_ESTIMATE_SECONDS + demo.MIN_TRAINING_SECONDS + demo.EVAL_RESERVE_SECONDS
    assert f"need --minutes {needed / 60:g} or more" in err
    assert not (tmp_path / "demo").exists()


def test_training_share_never_drops_below_its_minimum():
    from jaxcodec.commands import demo

    assert demo.training_seconds(15, elapsed=60) == 15 * 60 - 60 - demo.EVAL_RESERVE_SECONDS
    assert demo.training_seconds(6, elapsed=300) == demo.MIN_TRAINING_SECONDS


def test_demo_corpus_real_and_mixed_manifests_from_the_cached_packages(tmp_path, monkeypatch):
    """`--corpus real` builds the real-speech corpus into OUT/real_corpus from the packages (here fake .deb files in
    the cache folder; no apt-get, no network) and keeps its split: held-out utterances of each real speaker;
    `--corpus mixed` adds the bundled voices. Test utterances are scored by group."""
    from jaxcodec.commands import demo
    from tests.data.test_real_corpus import write_debs

    monkeypatch.setenv("JAXCODEC_DEB_CACHE", str(write_debs(tmp_path / "cache")))
    monkeypatch.setenv("PATH", str(tmp_path / "no-apt-get"))
    real = demo.make_manifest("real", tmp_path / "real")
    assert {e["speaker"] for e in real} == {"601", "602", "603"}
    for speaker in ("601", "602", "603"):
        assert {e["split"] for e in real if e["speaker"] == speaker} == {"train", "valid", "test"}
    assert list(demo.test_groups(real)) == [demo.HELD_OUT_GROUP]
    mixed = demo.make_manifest("mixed", tmp_path / "mixed")
    groups = demo.test_groups(mixed)
    assert list(groups) == [demo.UNSEEN_GROUP, demo.HELD_OUT_GROUP]
    assert {e["speaker"] for e in groups[demo.UNSEEN_GROUP]} == {"501", "502", "503"}
    assert len(mixed) == len(real) + 140 and (tmp_path / "mixed" / "real_corpus" / "corpus.json").is_file()


def test_demo_corpus_real_without_its_packages_is_one_line(tmp_path, monkeypatch, capsys):
    from jaxcodec.commands import main

    monkeypatch.setenv("JAXCODEC_DEB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-apt-get"))  # as a machine without apt or without network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--corpus", "real"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the real-speech corpus cannot be built" in err and "apt-get" in err


def test_a_demo_folder_refuses_another_corpus(tmp_path):
    from jaxcodec.commands import demo

    out = tmp_path / "demo"
    out.mkdir()
    assert demo.check_corpus(out, "bundled") == "bundled"
    assert demo.check_corpus(out, "bundled") == "bundled"  # a rerun continues
    with pytest.raises(demo.DemoError, match="holds a demo of --corpus bundled; use another --out for --corpus real"):
        demo.check_corpus(out, "real")


def test_test_groups_cap_each_group_evenly_over_its_speakers():
    """The demo scores at most TEST_UTTERANCES_PER_GROUP of each group, spread by id so every speaker keeps its
    share (141 held-out real utterances of 3 voices → 30, 10 per voice; the 30 synthetic ones all stay)."""
    from jaxcodec.commands import demo

    entries = ([{"id": f"60{s}-1-{i:04d}", "speaker": f"60{s}", "split": "test"} for s in (1, 2, 3)
                for i in range(47)]
               + [{"id": f"50{s}-1-{i:04d}", "speaker": f"50{s}", "split": "test"} for s in (1, 2, 3)
                  for i in range(10)]
               + [{"id": "101-1-0000", "speaker": "101", "split": "train"}])
    groups = demo.test_groups(entries)
    real, synthetic = groups[demo.HELD_OUT_GROUP], groups[demo.UNSEEN_GROUP]
    assert len(real) == demo.TEST_UTTERANCES_PER_GROUP == 30 and len({e["id"] for e in real}) == 30
    assert sorted(sum(e["speaker"] == s for e in real) for s in ("601", "602", "603")) == [10, 10, 10]
    assert len(synthetic) == 30 and all(e["split"] == "test" for e in real + synthetic)
    assert demo.test_groups(list(reversed(entries))) == groups  # by id, not by manifest order
