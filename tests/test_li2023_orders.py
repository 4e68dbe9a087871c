"""Declared orders of Li et al.'s samplers on the default target (mix1d), against the largest step size.

The local order between T = 256 and T = 512 (deterministic samplers) or T = 64 and T = 128 (stochastic ones, whose
engine costs more) on the li2023 grid must be within 0.1 of the declared one. The stochastic pairs were T = 128 and
256 (3.4 s each); at 64 and 128 the local orders are 0.991 (ddpm), 1.049 (ddpm-accel) and 1.011 (ddpm-posterior)
against 0.986, 1.024 and 0.998, so the same 0.1 tolerance still decides (the closest is 0.05 inside it) at half
the cost; ode-accel is 1.87 at 128/256, not yet within 0.1 of 2, and keeps 256/512. Li et al.'s
Taylor-form `ode` is the exception, recorded as a finding rather than hidden: its local order in h is still about
0.82 there and rising slowly (0.81 at T = 128, 0.84 at T = 1024), i.e. it is not yet asymptotic at T = 1024.
"""

import math

import pytest

from exact import measure
from samplers import get_sampler
from theory.catalog import get_target
from theory.schedules import make_grid


def _local_order(name: str, metric: str, T_small: int = 256, T_large: int = 512) -> float:
    target, sampler = get_target("mix1d"), get_sampler(name)
    grids = [make_grid("li2023", T) for T in (T_small, T_large)]
    values = [measure(target, sampler, grid)[metric].value for grid in grids]
    return math.log(values[1] / values[0]) / math.log(grids[1].max_step / grids[0].max_step)


@pytest.mark.parametrize("name,T_small", [("ddim", 256), ("ode-accel", 256), ("ddpm", 64), ("ddpm-accel", 64),
                                          ("ddpm-posterior", 64)])
def test_declared_tv_order_in_step_size(name, T_small):
    declared = get_sampler(name).info.order
    assert abs(_local_order(name, "tv", T_small, 2 * T_small) - declared) < 0.1


def test_taylor_form_ode_is_first_order_only_slowly():
    early, late = _local_order("ode", "tv", 64, 128), _local_order("ode", "tv", 256, 512)
    assert 0.7 < late < 0.9, late  # the recorded shortfall: well below its declared order 1 at T = 512
    assert late > early - 0.02, (early, late)  # and not getting worse as the steps shrink
