"""studies.tightness: the searched class, the search's guarantee (never below its first start, mix1d rescaled),
the worst targets as files that --target accepts, and the product class in d > 1."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from exact import measure
from samplers import get_sampler
from studies import tightness
from theory.catalog import get_target
from theory.product import ProductTarget
from theory.schedules import make_grid


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=9, max_size=9), st.floats(0.001, 0.5))
def test_every_search_point_is_in_the_class(theta, min_var):
    """Any theta stands for a mixture with E x^2 = 1 exactly and every variance at least the floor."""
    m = tightness.mixture_from_params(np.array(theta), 3, min_var)
    w, mu, var = m.weights.numpy(), m.means[:, 0].numpy(), m.covs[:, 0, 0].numpy()
    assert abs(float(np.sum(w * (mu**2 + var))) - 1.0) < 1e-12
    assert (var >= min_var * (1 - 1e-12)).all()


def _run(tmp_path, *extra, T=("8", "16", "32"), budget="4"):
    out = tmp_path / "tight"
    tightness.main(["--sampler", "ddim", "--T", *T, "--budget", budget, "--starts", "2", "--no-plot",
                    "--scheduler", "none", "--out", str(out), *extra])
    return out, pd.read_csv(out / "constants.csv"), pd.read_csv(out / "tightness.csv")


def test_worst_constant_is_never_below_the_rescaled_mix1d_and_the_winner_is_a_target_file(tmp_path):
    out, constants, rows = _run(tmp_path)
    assert set(constants["theorem"]) >= {"li2023-ode", "li2024-sharp-ode"}
    # the first start of every search is mix1d rescaled, so the worst constant found is at least its constant
    assert (constants["worst_constant"] >= constants["mix1d_constant"] * (1 - 1e-9)).all(), constants
    row = rows[(rows["source_T"] == 16) & (rows["T"] == 16)].iloc[0]
    target = get_target(str(out / "worst-ddim-tv-T16.json"))
    again = measure(target, get_sampler("ddim"), make_grid("li2023", 16))["tv"]
    assert abs(again.value - row["value"]) <= 1e-12 + again.numerical_error


def test_product_class_in_d_gt_1_saves_product_targets(tmp_path):
    out, constants, rows = _run(tmp_path, "--d", "4", T=("8", "16"), budget="2")
    assert (rows["d"] == 4).all() and set(rows["method"]) <= {"product", "product-mc"}
    spec = json.loads((out / "worst-ddim-tv-T8.json").read_text())
    assert spec["d"] == 4 and len(spec["product"]["weights"]) == 3
    target = get_target(str(out / "worst-ddim-tv-T8.json"))
    assert isinstance(target, ProductTarget) and target.d == 4
    # E|x|^2 = d on the class: each coordinate has second moment one
    one = target.marginals[0]
    second = float((one.weights * (one.means[:, 0] ** 2 + one.covs[:, 0, 0])).sum())
    assert abs(second - 1.0) < 1e-12
    # the theorem's d enters the constants: li2023-ode's shape at d = 4 is larger than at d = 1
    from theory.bounds import BY_ID

    row = constants[(constants["theorem"] == "li2023-ode") & (constants["T"] == 8)].iloc[0]
    assert abs(row["shape"] - BY_ID["li2023-ode"].shape(8, 4)) < 1e-12 * row["shape"]
    assert torch.isfinite(torch.tensor(row["worst_constant"]))
