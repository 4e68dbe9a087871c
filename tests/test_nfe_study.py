"""studies.nfe at equal evaluation budgets: the budget rule for samplers of any evaluations per step, and rows that
say 'off-budget' (never a value) where no grid spends the budget exactly."""

from __future__ import annotations

import pandas as pd
import pytest

from studies import nfe


@pytest.mark.parametrize("e,budget,afs,expected", [
    (1, 5, True, (6, False)),
    (2, 6, True, (4, False)),
    (2, 5, True, (4, True)),     # the analytic first step saves one evaluation
    (2, 5, False, (None, False)),  # no AFS variant: an odd budget cannot be spent exactly
    (3, 6, True, (3, False)),
    (3, 4, True, (None, False)),
    (4, 8, False, (3, False)),
])
def test_budget_spends_exactly_the_evaluations_or_says_it_cannot(e, budget, afs, expected):
    assert nfe.budget(e, budget, afs=afs) == expected


def test_new_samplers_run_at_equal_nfe_and_off_budget_rows_carry_no_value(tmp_path):
    out = tmp_path / "nfe"
    nfe.main(["--sampler", "ddim", "expint:3", "ddpm", "--nfe", "4", "6", "--no-grid-table", "--no-amed",
              "--no-plot", "--scheduler", "none", "--out", str(out)])
    frame = pd.read_csv(out / "nfe.csv").set_index(["sampler", "nfe"])
    for key in [("ddim", 4), ("ddim", 6), ("ddpm", 4), ("ddpm", 6)]:
        assert frame.loc[key, "status"] == "ok", frame.loc[key]
        assert frame.loc[key, "tv"] > 0
    # three evaluations a step: two steps (T = 3 levels) spend 6; on the EDM grid's first huge step its map folds,
    # which the exact engine reports rather than measures
    assert frame.loc[("expint:3", 6), "T"] == 3
    assert frame.loc[("expint:3", 6), "status"] in ("ok", "not-invertible")
    off = frame.loc[("expint:3", 4)]
    assert off["status"] == "off-budget" and pd.isna(off["tv"]) and pd.isna(off["kl"])
