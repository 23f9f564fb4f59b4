"""rnnlab-report over seeds: the mean, sd and 95 % interval per configuration and backend, and the backends paired
by seed, checked against values worked out by hand (t quantiles from a printed table)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rnnlab.report.seeds import interval, over_seeds, paired_backends, t975

pytestmark = pytest.mark.unit

# Student's t, 0.975 quantile, from a printed table (degrees of freedom: value).
T_TABLE = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 29: 2.045}


def runs(rows: list[tuple[str, str, int, str, float]]) -> pd.DataFrame:
    """(setting, backend, seed, status, test/nll) rows as collect_runs would give them."""
    return pd.DataFrame([{"run": f"{s}/{b}/{seed}", "setting_hash": s, "backend": b, "seed": seed, "status": st,
                          "task": "polyphonic", "cell": "lstm", "hidden_size": 8, "monitor": "val/nll",
                          "val/nll_best": v - 0.1, "test/nll": v} for s, b, seed, st, v in rows])  # fmt: skip


@pytest.mark.parametrize("dof", sorted(T_TABLE))
def test_t_quantile_matches_the_printed_table(dof: int) -> None:
    assert t975(dof + 1) == pytest.approx(T_TABLE[dof], abs=5e-4)
    assert math.isnan(t975(1))


def test_interval_of_three_values() -> None:
    got = interval(pd.Series([8.0, 9.0, 10.0, float("nan")]))  # the NaN is left out: n = 3
    assert got["n"] == 3
    assert got["mean"] == pytest.approx(9.0)
    assert got["sd"] == pytest.approx(1.0)
    assert got["ci_low"] == pytest.approx(9.0 - 4.303 / math.sqrt(3), abs=1e-3)
    assert got["ci_high"] == pytest.approx(9.0 + 4.303 / math.sqrt(3), abs=1e-3)


def test_over_seeds_groups_configuration_and_backend_and_skips_unfinished() -> None:
    frame = runs([("a", "torch", 1, "completed", 8.4), ("a", "torch", 2, "completed", 8.6),
                  ("a", "torch", 3, "failed", 99.0), ("a", "numpy", 1, "completed", 8.5),
                  ("b", "torch", 1, "completed", 9.0)])  # fmt: skip
    table = over_seeds(frame).set_index(["setting_hash", "backend"])
    assert sorted(table.index) == [("a", "numpy"), ("a", "torch"), ("b", "torch")]
    row = table.loc[("a", "torch")]
    assert row["seeds"] == "1,2"
    assert row["n"] == 2
    assert row["test/nll mean"] == pytest.approx(8.5)
    assert row["test/nll sd"] == pytest.approx(math.sqrt(0.02))
    assert row["test/nll ci_high"] - row["test/nll mean"] == pytest.approx(12.706 * math.sqrt(0.02) / math.sqrt(2),
                                                                           rel=1e-4)  # fmt: skip
    assert row["val/nll_best mean"] == pytest.approx(8.4)
    assert math.isnan(table.loc[("a", "numpy"), "test/nll sd"])  # one seed: no spread


def test_paired_backends_use_common_seeds_only() -> None:
    frame = runs([("a", "torch", 1, "completed", 8.40), ("a", "torch", 2, "completed", 8.60),
                  ("a", "torch", 3, "completed", 8.50), ("a", "numpy", 1, "completed", 8.45),
                  ("a", "numpy", 2, "completed", 8.61), ("a", "numpy", 4, "completed", 7.00),
                  ("b", "torch", 1, "completed", 9.0)])  # fmt: skip
    table = paired_backends(frame)
    assert list(table["setting_hash"]) == ["a"]  # b has one backend only
    row = table.iloc[0]
    assert row["seeds"] == "1,2"
    assert row["pairs"] == 2
    assert row["test/nll numpy"] == pytest.approx(8.53)
    assert row["test/nll torch"] == pytest.approx(8.50)
    assert row["test/nll diff"] == pytest.approx(0.03)  # differences 0.05 and 0.01
    assert row["test/nll diff sd"] == pytest.approx(math.sqrt(0.0008))
    half = 12.706 * math.sqrt(0.0008) / math.sqrt(2)
    assert row["test/nll diff ci_low"] == pytest.approx(0.03 - half, rel=1e-4)
