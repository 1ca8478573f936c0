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
