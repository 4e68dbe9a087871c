"""The declared order of every registered deterministic sampler, measured the diffrax way: one parametrised test
fits the slope of log TV against log h (h = 1/(T-1), T levels of a fixed-endpoint grid) where the answer is exact,
and compares it with `info.order`. Parametrised families (expint:p) are listed by member; the randomized samplers
have a parallel (slow) test through the 1-D randomized engine at the end.

Setting: the 1-D Gaussian target (`gaussian`, d = 1), started from q_T exactly, errors from the closed-form
Gaussian engine (the output of any sampler is exactly Gaussian there, so the TV is exact to rounding and tiny
errors stay measurable). Each sampler runs on its recommended grid (theory.solver_grids.RECOMMENDED); the Li et al.
samplers, whose own li2023 grid moves its end point with T and carries log T factors, run on the polynomial grid.
T = 129, 257, 513 is in the asymptotic regime for every sampler here (UniPC is not yet at T = 65).

Findings recorded, not hidden (SHORTFALLS): two solvers do not reach their nominal order on exact targets.
- dpmpp-3m measures 2, not 3: the reference update's D2 = (D1_0 - D1_1)/(r0 + r1) approximates h^2 m''/2, while the
  exact exponential integral needs phi3 h^2 m'' (samplers.solvers.dpmpp_update); with d2_factor = 2 the order is >= 3
  (test_dpmpp_3m_taylor_coefficient_restores_order_3). A tiny warm-start step does not change the 2 (checked), so it
  is not the lower-order start.
- ipndm measures 2, not 4, on EDM's polynomial grid: equal-step Adams-Bashforth weights on unequal steps leave an
  h^3 local error; on a uniform sigma grid it gets close to 4 (test_ipndm_reaches_4_on_uniform_steps).
"""

from __future__ import annotations

import math

import pytest
import torch

from exact import measure
from samplers import RandomizedSampler, get_sampler, sampler_names
from theory import solver_grids
from theory.catalog import get_target
from theory.schedules import make_grid

T_VALUES = (129, 257, 513)
TOLERANCE = 0.25  # |fitted - declared|
SHORTFALLS = {  # sampler: (measured order on exact targets, reason)
    "dpmpp-3m": (2.0, "reference D2 coefficient is half the Taylor value (local error h^3)"),
    "ipndm": (2.0, "equal-step Adams-Bashforth weights on the unequal polynomial grid (local error h^3)"),
}


def order_grid(name: str, T: int, **overrides):
    schedule, params = solver_grids.recommended_grid(name)
    if schedule == "li2023":
        schedule, params = "polynomial", {}
    params = {**params, **overrides}
    return make_grid(schedule, T, **params)


def fitted_order(name: str, T_values=T_VALUES, sampler=None, **grid_overrides) -> tuple[float, list[float]]:
    """Least-squares slope of log TV against log h, h = 1/(T - 1)."""
    target = get_target("gaussian", 1)
    sampler = sampler or get_sampler(name)
    logs_h, logs_e, errors = [], [], []
    for T in T_values:
        grid = order_grid(name, T, **grid_overrides)
        result = measure(target, sampler, grid, init="exact", method="gaussian")["tv"]
        assert result.numerical_error < 0.01 * result.value, f"{name} T={T}: TV {result.value} not resolved"
        logs_h.append(math.log(1.0 / (T - 1)))
        logs_e.append(math.log(result.value))
        errors.append(result.value)
    mh, me = sum(logs_h) / len(logs_h), sum(logs_e) / len(logs_e)
    slope = sum((a - mh) * (b - me) for a, b in zip(logs_h, logs_e)) / sum((a - mh) ** 2 for a in logs_h)
    return slope, errors


# Parametrised families are not listed by sampler_names: their members are named here. Picard members: one sweep
# over long blocks (furthest from DDIM), and sweeps over short blocks; both first order, as DDIM, their fixed point.
FAMILY_MEMBERS = ["expint:1", "expint:2", "expint:3", "expint:4", "picard:1,8", "picard:2,4"]
DETERMINISTIC = sampler_names(stochastic=False) + FAMILY_MEMBERS
# High orders leave the resolvable range (TV ~ 1e-12) at the default sizes: they are fitted at smaller T.
T_OVERRIDES = {"expint:3": (33, 65, 129), "expint:4": (33, 65, 129)}


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_declared_order_is_measured(name):
    """Every registered deterministic sampler converges at its declared order, or at the recorded shortfall."""
    order, errors = fitted_order(name, T_values=T_OVERRIDES.get(name, T_VALUES))
    declared = get_sampler(name).info.order
    if name in SHORTFALLS:
        measured, reason = SHORTFALLS[name]
        assert abs(order - measured) < TOLERANCE, (
            f"{name}: fitted order {order:.3f}, recorded shortfall {measured} ({reason}); errors {errors}")
        assert order < declared - 0.5, f"{name} now reaches {order:.3f}: remove it from SHORTFALLS"
    else:
        assert abs(order - declared) < TOLERANCE, f"{name}: fitted order {order:.3f}, declared {declared}; {errors}"


def test_dpmpp_3m_taylor_coefficient_restores_order_3():
    """With D2 doubled (the Taylor-consistent coefficient) DPM-Solver++(3M) is at least third order."""
    from samplers.solvers import DPMSolverPP3M

    order, _ = fitted_order("dpmpp-3m", sampler=DPMSolverPP3M(d2_factor=2.0), T_values=(33, 65, 129))
    assert order > 3 - TOLERANCE, order


def test_ipndm_reaches_4_on_uniform_steps():
    """On a uniform sigma grid (polynomial rho = 1, sigma in [0.5, 5]) iPNDM's fixed weights are right: order ~4."""
    order, _ = fitted_order("ipndm", T_values=(33, 65, 129), rho=1.0, sigma_min=0.5, sigma_max=5.0)
    assert order > 3.5, order


def test_afs_costs_one_evaluation_and_keeps_convergence():
    """AFS saves exactly one NFE; its analytic first output has an O(1/sigma_max^2)-small error that vanishes as the
    first step shrinks, so the error still decreases with T (at least first order)."""
    grid = make_grid("polynomial", 9)
    assert get_sampler("afs:heun").nfe(grid) == get_sampler("heun").nfe(grid) - 1
    order, _ = fitted_order("heun", sampler=get_sampler("afs:heun"))
    assert order > 1 - TOLERANCE, order


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in DETERMINISTIC if n not in ("ode", "ddim", "ode-accel")])
def test_order_on_mixture(name):
    """The same fit on the 1-D mixture mix1d with the exact grid-1d-flow engine (slow: a 1-D density per run)."""
    target = get_target("mix1d")
    sampler = get_sampler(name)
    T_values = (65, 129, 257)
    logs = []
    for T in T_values:
        result = measure(target, sampler, order_grid(name, T), init="exact", G=4096)["tv"]
        logs.append(math.log(result.value))
    slope = (logs[0] - logs[-1]) / math.log((T_values[-1] - 1) / (T_values[0] - 1))
    expected = SHORTFALLS.get(name, (get_sampler(name).info.order,))[0]
    assert abs(slope - expected) < 2 * TOLERANCE, f"{name}: slope {slope:.3f} on mix1d, expected {expected}"


# ---------------------------------------------------------------------------- randomized samplers
RANDOMIZED = sampler_names(stochastic=True)
RANDOMIZED = [n for n in RANDOMIZED if isinstance(get_sampler(n), RandomizedSampler)]
# ddpm-rmp is pre-asymptotic at T = 9 (local slope 2.35 from T = 9 to 17, 2.16 from 17 to 33): fitted one size on.
# lijiao-rmp is pre-asymptotic at T = 9, 17 (TV 0.067, 0.069: not yet falling; its Euler-in-tau first piece per
# block has large relative steps there): it is fitted at larger T.
RANDOMIZED_T = {"ddpm-rmp": (17, 33, 65), "lijiao-rmp": (33, 65, 129)}


@pytest.mark.slow
@pytest.mark.parametrize("name", RANDOMIZED)
def test_declared_order_of_randomized_samplers(name):
    """The same fit for the randomized (random-time) samplers, through the 1-D randomized engine, which integrates
    the output mixture over the random times: 1-D Gaussian target, uniform sigma grid in [0.5, 5] (polynomial,
    rho = 1, as the iPNDM check above), T = 9, 17, 33, G = 512 (the target is wide). Slow: every step pushes the
    density through 4 + 4 + 3 quadrature nodes' maps (measured 25-30 s per sampler on an idle core, minutes
    on a busy one; ddpm-rmp draws a normal too, 36 + 36 + 25 maps a step at T = 17, 33, 65: about 6 minutes on a
    busy core). Measured: ode-rmp 2.09 [1.83, 2.36], ode-rmp-is 2.03 [1.94, 2.12], ddpm-rmp 2.11 [1.77, 2.45];
    lijiao-rmp (T = 33, 65, 129) 0.97 [0.87, 1.07]."""
    target = get_target("gaussian", 1)
    sampler = get_sampler(name)
    logs_h, logs_e = [], []
    for T in RANDOMIZED_T.get(name, (9, 17, 33)):
        grid = make_grid("polynomial", T, rho=1.0, sigma_min=0.5, sigma_max=5.0)
        result = measure(target, sampler, grid, init="exact", G=512)["tv"]
        assert result.method == "grid-1d-randomized"
        assert result.numerical_error < 0.01 * result.value, f"{name} T={T}: TV {result.value} not resolved"
        logs_h.append(math.log(1.0 / (T - 1)))
        logs_e.append(math.log(result.value))
    mh, me = sum(logs_h) / 3, sum(logs_e) / 3
    slope = sum((a - mh) * (b - me) for a, b in zip(logs_h, logs_e)) / sum((a - mh) ** 2 for a in logs_h)
    declared = sampler.info.order
    assert abs(slope - declared) < TOLERANCE, f"{name}: fitted order {slope:.3f}, declared {declared}"
