"""Values pinned from the engines as they stood before the speed-up (tests/data/pinned_main.json, written by running
`exact.measure` on the old main for each case below): a faster engine must give the same numbers.

Every value must agree to 1e-12 relative, Monte Carlo ones included (same seed, same draws). The cases cover every
method: the 1-D flow engine (one-step, multistep and EDM-coordinate solvers), the 1-D kernel engine (both Markov
samplers), the Gaussian engine (closed forms and its Monte Carlo TV in d = 3), the product engine (exact KL sum and
Monte Carlo TV) and flow Monte Carlo (a rotated mixture in d = 2 and a diagonal one in d = 8).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exact import measure
from samplers import get_sampler
from theory.catalog import get_target
from theory.schedules import make_grid

PINNED = json.loads((Path(__file__).parent / "data" / "pinned_main.json").read_text())
RELATIVE = 1e-12


def _case_id(case: dict) -> str:
    return f"{case['target']}{'' if case['d'] is None else case['d']}-{case['sampler']}-{case['schedule']}-T{case['T']}"


@pytest.mark.parametrize("case", PINNED, ids=_case_id)
def test_engine_reproduces_the_pinned_values(case):
    target = get_target(case["target"], d=case["d"])
    result = measure(target, get_sampler(case["sampler"]), make_grid(case["schedule"], case["T"]), **case["options"])
    assert result["kl"].method == case["method"]
    for metric, pinned in case["values"].items():
        got = result[metric].value
        assert abs(got - pinned) <= RELATIVE * abs(pinned), (metric, got, pinned, abs(got / pinned - 1))
