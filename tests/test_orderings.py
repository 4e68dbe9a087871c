"""How samplers' exact errors are ordered on random 1-D mixtures (hypothesis), and an ordering that is not universal.

Universal here means: hypothesis did not find a counterexample among random mixtures at T = 64 on the li2023 grid.
The ddpm-accel / ddpm ordering in TV is not universal: hypothesis found a three-mode mixture where the accelerated
sampler's TV is larger at T <= 64 (its KL is still smaller), pinned below; the README reports it.
"""

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from exact import measure
from samplers import get_sampler
from tests.strategies import mixtures
from theory.schedules import make_grid
from theory.targets import GaussianMixture

ONE_D = mixtures(d=st.just(1), kinds=("full",), min_var=0.01)
QUICK = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _errors(target, name, T=64):
    return measure(target, get_sampler(name), make_grid("li2023", T))


def _clearly_below(a, b) -> bool:
    """a < b by more than both numerical errors."""
    return a.value + a.numerical_error < b.value - b.numerical_error


@QUICK
@given(ONE_D)
def test_accelerated_ode_beats_ddim(target):
    fast, base = _errors(target, "ode-accel"), _errors(target, "ddim")
    assert _clearly_below(fast["tv"], base["tv"]) and _clearly_below(fast["kl"], base["kl"])


@QUICK
@given(ONE_D)
def test_ddim_beats_the_taylor_ode_sampler(target):
    exponential, taylor = _errors(target, "ddim"), _errors(target, "ode")
    assert _clearly_below(exponential["tv"], taylor["tv"])


# Found by hypothesis (random 1-D mixtures, T = 64); kept with full precision so the finding is reproducible.
REVERSAL = GaussianMixture(
    [0.4274547515130955, 0.3316532789168645, 0.24089196957003994],
    [[3.1611467733204757], [-1.7185659793300463], [0.40095315069723947]],
    [[[0.3611076243939284]], [[0.46286884888111424]], [[0.1867995262037141]]],
    name="ddpm-accel-tv-reversal",
)


def test_ddpm_accel_beating_ddpm_in_tv_is_not_universal():
    """At T = 64 ddpm-accel has the larger TV on this mixture although its KL is smaller; by T = 128 the TV
    ordering is back to the usual one (0.01956 against 0.01978, each with a numerical error below 4e-7; at T = 96
    it is not yet)."""
    accel, plain = _errors(REVERSAL, "ddpm-accel"), _errors(REVERSAL, "ddpm")
    assert _clearly_below(plain["tv"], accel["tv"])
    assert _clearly_below(accel["kl"], plain["kl"])
    accel, plain = _errors(REVERSAL, "ddpm-accel", 128), _errors(REVERSAL, "ddpm", 128)
    assert _clearly_below(accel["tv"], plain["tv"])


@pytest.mark.slow
def test_hypothesis_finds_a_tv_reversal_on_its_own():
    """Opt-in (minutes): search random mixtures for a case where ddpm-accel's TV exceeds ddpm's at T = 64."""
    found = find(ONE_D, lambda t: _errors(t, "ddpm-accel")["tv"].value > _errors(t, "ddpm")["tv"].value,
                 settings=settings(max_examples=60, deadline=None, database=None))
    assert found.K >= 1
