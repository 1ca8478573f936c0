"""scripts/ablate.py's summary over seeds, by hand: mean ± sample standard deviation per variant and the guided
variants' distance from recon-only in standard deviations."""

from scripts import ablate


def metrics(pesq: float, phone_level_1: float) -> dict:
    return {"bitrates": [{"pesq": pesq}], "probes": {"phone": {"level 1": {"accuracy": phone_level_1}}}}


def test_summary_table_by_hand():
    results = {"recon-only": [metrics(1.1, 0.1), metrics(1.3, 0.2)],
               "semantic": [metrics(1.0, 0.5), metrics(1.0, 0.7)]}
    rows = ablate.summary_rows(results)
    assert rows["probe: phone, level 1 ↑"] == {"recon-only": [0.1, 0.2], "semantic": [0.5, 0.7]}
    table = ablate.summary_table(rows, ["recon-only", "semantic"]).splitlines()
    phone = next(line for line in table if line.startswith("| probe: phone, level 1"))
    # sd (ddof 1): 0.0707 and 0.1414; (0.6 − 0.15) / 0.1414 = 3.18
    assert phone == "| probe: phone, level 1 ↑ | 0.150 ± 0.071 | 0.600 ± 0.141 | +3.2 |"
    pesq = next(line for line in table if line.startswith("| PESQ-wb"))
    assert pesq == "| PESQ-wb ↑ | 1.200 ± 0.141 | 1.000 ± 0.000 | -1.4 |"  # (1.0 − 1.2) / 0.1414


def test_wer_and_per_of_level_1_alone_get_their_own_rows():
    def run(per_level_1: float, per_full: float) -> dict:
        return {"bitrates": [{"n_q": 1, "wer": 0.9, "per": per_level_1}, {"n_q": 8, "wer": 0.4, "per": per_full}]}

    rows = ablate.summary_rows({"recon-only": [run(0.8, 0.3), run(0.7, 0.3)], "semantic": [run(0.5, 0.3)]})
    assert rows["PER, level 1 only ↓"] == {"recon-only": [0.8, 0.7], "semantic": [0.5]}
    assert rows["WER, level 1 only ↓"] == {"recon-only": [0.9, 0.9], "semantic": [0.9]}
    assert rows["PER ↓"] == {"recon-only": [0.3, 0.3], "semantic": [0.3]}  # the full bitrate, as before
    # An evaluation without n_q = 1 (--n-q 8) has no level-1 row.
    assert "PER, level 1 only ↓" not in ablate.summary_rows({"full": [{"bitrates": [{"n_q": 8, "per": 0.3}]}]})


def test_guidance_rows_are_each_runs_loss_over_floor_at_the_end(tmp_path):
    import json

    workdir = tmp_path / "W"
    workdir.mkdir()
    rows = [{"step": s, "loss/total": 1.0, "loss/semantic": 0.5, "loss/semantic_floor": 0.5,
             "loss/acoustic": 0.3 if s >= 5 else 1.0, "loss/acoustic_floor": 0.6} for s in range(10)]
    rows.insert(3, {"step": 3, "valid_mel": 0.4})  # validation rows are not training steps
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table: dict = {}
    ablate.guidance_rows(table, "acoustic", workdir)
    assert table["acoustic loss / its floor, last 5 log steps ↓"] == {"acoustic": [0.5]}  # 0.3 / 0.6
    assert table["semantic loss / its floor, last 5 log steps ↓"] == {"acoustic": [1.0]}
    assert ablate.VARIANTS["acoustic-uncalibrated"] == ["loss.lambda_semantic=0", "loss.acoustic_standardize=false",
                                                        "loss.acoustic_temperature=1"]
