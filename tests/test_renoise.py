"""`ode-renoise` against Jain & Zhang's Algorithm 1 (samplers.renoise) and its grid (theory.schedules, jainzhang):
the grid law h_k = c min{1, t_k} with t_0 = delta recovered by the sampler, the one-step Gaussian law in OU time,
the O(h^3) local KL of the frozen-score jump, exactness on N(0, I) data, one evaluation a step counted by running,
and KL(data || sampler) of order 2 in K on a Gaussian target (additive over independent coordinates)."""

from __future__ import annotations

import math

import pytest
import torch

from exact import measure
from samplers import CountingModel, ExactModel, RecordingNoise, SamplerError, get_sampler
from samplers.renoise import overshoot_levels
from theory import solver_grids
from theory.bounds import BY_ID
from theory.catalog import get_target
from theory.rates import fit_order
from theory.schedules import Grid, ScheduleError, jainzhang_times, make_grid
from theory.targets import gaussian

DTYPE = torch.float64


def ou(abar: torch.Tensor) -> torch.Tensor:
    return -0.5 * torch.log(abar)


# ---------------------------------------------------------------------------- the grid
@pytest.mark.parametrize("T, delta, T_end", [(5, 2e-6, 4.382104753571002), (8, 1e-3, 3.0), (40, 2e-6, 4.382104753571002), (300, 1e-2, 6.0),
                                             (1000, 1e-4, 2.0)])
def test_jainzhang_steps_are_c_min_1_t_and_the_last_step_overshoots_to_delta(T, delta, T_end):
    """t_(K+1) = T_end, every step h_k = t_k - t_(k-1) = c min{1, t_k} (k = 2 .. K+1 on the grid's levels), and the
    sampler's point below the output time is t_0 = delta with h_1 = c min{1, t_1}: the paper's grid, extra point
    included. (T = 5: the last-but-one level lies above t = 1, where the continuation is not geometric.)"""
    grid = make_grid("jainzhang", T, delta=delta, T_end=T_end)
    c = grid.params["c"]
    t = ou(grid.abar).flip(0)  # t_1, ..., t_(K+1)
    assert grid.T == T and 0 < c < 1
    assert abs(float(t[-1]) - T_end) < 1e-12 * T_end
    h = t[1:] - t[:-1]
    law = c * torch.clamp(t[1:], max=1.0)
    # abar near 1 stores t to about 1e-16 absolute: the tolerance is relative to the step plus that floor
    assert torch.allclose(h, law, rtol=1e-9, atol=1e-14), float((h - law).abs().max())
    t0 = float(ou(overshoot_levels(grid)[-1]))
    assert abs(t0 - delta) < 1e-8 * delta, (t0, delta)
    assert abs((float(t[0]) - t0) - c * min(1.0, float(t[0]))) < 1e-9 * float(t[0])
    # the constant steps above t = 1 and the geometric ones below are both present on the long grids
    if T >= 300:
        assert (t[1:] > 1).any() and (t[1:] < 1).any()


def test_jainzhang_step_constant_falls_as_log_horizon_over_K():
    """c ~ (log(1/delta) + T_end - 1) / (K + 1) for large K (the count of geometric steps below 1 is
    log(1/delta) / -log(1 - c), the constant ones above (T_end - 1) / c)."""
    for K in (500, 2000):
        c = make_grid("jainzhang", K + 1, delta=1e-3, T_end=5.0).params["c"]
        assert abs(c * (K + 1) / (math.log(1e3) + 4.0) - 1) < 2 * c + 2 / K, (K, c)
    assert jainzhang_times(3, 0.5, 0.1) == [0.1, 0.2, 0.4, 0.8, 1.3]


def test_jainzhang_refuses_bad_end_points_and_too_few_levels_in_one_line():
    for params in ({"delta": 0.0}, {"delta": 5.0, "T_end": 4.0}, {"T_end": float("inf")}):
        with pytest.raises(ScheduleError, match="delta") as caught:
            make_grid("jainzhang", 50, **params)
        assert "\n" not in str(caught.value)
    with pytest.raises(ScheduleError, match="T = 3 levels cannot reach"):
        make_grid("jainzhang", 3, T_end=4.0)


def test_jainzhang_is_the_recommended_grid():
    assert solver_grids.recommended_grid("ode-renoise") == ("jainzhang", {})


# ---------------------------------------------------------------------------- the rule
def test_a_run_is_the_papers_two_formulas_in_ou_time():
    """Written afresh from the paper's times t_k (jainzhang_times, not the grid's abar) and the recorded draws: for
    k = K+1 .. 2, x_(k-1/2) = e^(h_k + h_(k-1)) x_k + (e^(h_k + h_(k-1)) - 1) s(x_k, t_k), then
    x_(k-1) = e^(-h_(k-1)) x_(k-1/2) + sqrt(1 - e^(-2 h_(k-1))) eta_k; the run returns x_1."""
    target = get_target("mix1d")
    grid = make_grid("jainzhang", 12, delta=1e-3, T_end=3.0)
    K = grid.T - 1
    times = jainzhang_times(K, grid.params["c"], 1e-3)  # t_0 .. t_(K+1)
    x0 = torch.linspace(-3, 3, 9, dtype=DTYPE)[:, None]
    noise = RecordingNoise(5)
    got = get_sampler("ode-renoise")(ExactModel(target), grid, x0, noise)
    x = x0
    for step, k in enumerate(range(K + 1, 1, -1)):
        H = times[k] - times[k - 2]
        h = times[k - 1] - times[k - 2]
        score = target.score(x, torch.tensor(math.exp(-2 * times[k]), dtype=DTYPE))
        half = math.exp(H) * x + math.expm1(H) * score
        x = math.exp(-h) * half + math.sqrt(-math.expm1(-2 * h)) * noise.draws[step]
    assert len(noise.draws) == K
    assert torch.allclose(got, x, rtol=1e-9, atol=1e-9), float((got - x).abs().max())


def test_one_step_law_is_gaussian_with_the_stated_mean_and_covariance():
    """Given x_k the step's output is N(e^(-h) (e^H x + (e^H - 1) s(x, t_k)), (1 - e^(-2h)) I): a run on many copies
    of one point has exactly that mean and, over 4000 draws in d = 2, that covariance (within 5 standard errors)."""
    target = get_target("gaussian", 2)
    t = torch.tensor([1.3, 0.9], dtype=DTYPE)  # t_k, t_(k-1); the overshoot t_(k-2) comes from the last step's law
    grid = Grid(torch.exp(-2 * t), "two-levels")
    t0 = float(ou(overshoot_levels(grid)[-1]))
    H, h = 1.3 - t0, 0.9 - t0
    x = torch.tensor([[0.4, -1.1]], dtype=DTYPE)
    mean = math.exp(-h) * (math.exp(H) * x + math.expm1(H) * target.score(x, torch.exp(-2 * t[0])))
    n = 4000
    out = get_sampler("ode-renoise")(ExactModel(target), grid, x.expand(n, 2).clone(), RecordingNoise(2))
    var = -math.expm1(-2 * h)
    assert torch.allclose(out.mean(0), mean[0], atol=5 * math.sqrt(var / n))
    cov = torch.cov(out.T)
    assert torch.allclose(cov, var * torch.eye(2, dtype=DTYPE), atol=5 * var * math.sqrt(2 / n))
    steps = list(get_sampler("ode-renoise").transitions(CountingModel(ExactModel(target)), grid))
    assert torch.allclose(steps[0].map(x), mean, rtol=1e-13) and abs(float(steps[0].std) ** 2 - var) < 1e-14


def _exact_flow_1d(x, m, v, t_from, t_to):
    """The probability-flow map of N(m, v) data from OU time t_from to t_to: affine, matching the noised means and
    standard deviations (m_t = e^(-t) m, v_t = e^(-2t) v + 1 - e^(-2t))."""
    def law(t):
        return math.exp(-t) * m, math.exp(-2 * t) * v - math.expm1(-2 * t)
    (ma, va), (mb, vb) = law(t_from), law(t_to)
    return mb + math.sqrt(vb / va) * (x - ma)


def test_step_kl_is_third_order_in_the_step():
    """The spec's 'why': the exact step (the true flow over the same two intervals, then the same OU) has the same
    covariance, so the step KL is e^(-2h) |x_half - xhat_half|^2 / (2 (1 - e^(-2h))); the frozen-score jump's error
    is O(h^2), so this KL is O(h^3): fitted order 3 within 0.1 on a 1-D Gaussian at a fixed point."""
    m, v, x, t_k = 0.7, 0.5, 1.9, 0.8
    target = gaussian(torch.tensor([m], dtype=DTYPE), torch.tensor([[v]], dtype=DTYPE))
    hs, kls = [], []
    for h in (0.02, 0.01, 0.005, 0.0025):
        t = torch.tensor([t_k, t_k - h, t_k - 2 * h], dtype=DTYPE)
        grid = Grid(torch.exp(-2 * t), "uniform-ou")
        step = next(get_sampler("ode-renoise").transitions(CountingModel(ExactModel(target)), grid))
        point = torch.tensor([[x]], dtype=DTYPE)
        got_mean = float(step.map(point))
        exact_mean = math.exp(-h) * _exact_flow_1d(x, m, v, t_k, t_k - 2 * h)
        var = float(step.std) ** 2
        assert abs(var + math.expm1(-2 * h)) < 1e-12
        hs.append(h)
        kls.append((got_mean - exact_mean) ** 2 / (2 * var))
    fit = fit_order(hs, kls, decreasing=False, window=len(hs))
    assert abs(fit.order - 3) < 0.1, (fit, kls)


def test_exact_on_standard_normal_data_and_not_on_other_gaussians():
    """On N(0, I) data s(x, t) = -x at every t: the jump is the identity, the OU step keeps N(0, I), so from the
    paper's start N(0, I) the output law is exact (KL both ways at rounding level, d = 3). On N(0, 0.25 I) the
    frozen score is not the flow: the KL is positive."""
    grid = make_grid("jainzhang", 30, delta=1e-3, T_end=3.0)
    sampler = get_sampler("ode-renoise")
    zero = torch.zeros(3, dtype=DTYPE)
    exact = measure(gaussian(zero, torch.eye(3, dtype=DTYPE)), sampler, grid, init="gaussian", method="gaussian")
    assert exact["kl_reverse"].value < 1e-13 and exact["kl"].value < 1e-13
    narrow = measure(gaussian(zero, 0.25 * torch.eye(3, dtype=DTYPE)), sampler, grid, method="gaussian")
    assert narrow["kl_reverse"].value > 1e-4


def test_one_evaluation_a_step_counted_by_running():
    target, grid = get_target("mix1d"), make_grid("jainzhang", 25)
    sampler = get_sampler("ode-renoise")
    model = CountingModel(ExactModel(target))
    sampler(model, grid, torch.zeros(7, 1, dtype=DTYPE), RecordingNoise(0))
    assert model.nfe == grid.steps == sampler.nfe(grid) == 24


def test_last_step_refuses_a_continuation_below_zero():
    """A last step with c min{1, t_1} >= t_1 (here t_2 = 2.5 -> t_1 = 0.5: c = 2) has no point below the output
    time: a one-line refusal naming c."""
    grid = Grid(torch.exp(-2 * torch.tensor([2.5, 0.5], dtype=DTYPE)), "steep")
    with pytest.raises(SamplerError, match="c = 2.0") as caught:
        get_sampler("ode-renoise").nfe(grid)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------- the theorem's rate
def _kl_reverse(target, K):
    return measure(target, get_sampler("ode-renoise"), make_grid("jainzhang", K + 1), method="gaussian")["kl_reverse"]


def test_kl_data_to_sampler_is_second_order_in_K_on_a_gaussian():
    """Theorem 3.1's d^2 c^3 K ~ 1/K^2 in KL(data || sampler) (the engines' kl_reverse), in the regime
    K > d (log(1/delta) + T_end) = 35 for d = 2: fitted order 2 within 0.1 over K = 144, 288, 576."""
    target = get_target("gaussian", 2)
    Ks = (144, 288, 576)
    values = [_kl_reverse(target, K) for K in Ks]
    assert all(v.numerical_error < 1e-3 * v.value for v in values)
    fit = fit_order(Ks, [v.value for v in values], window=3)
    assert abs(fit.order - 2) < 0.1, fit


def test_kl_is_additive_over_independent_coordinates():
    """The rule acts on each coordinate alone: on N(m 1, v I_d) its kl_reverse is d times the 1-D one (d = 1, 3, 6),
    so on such targets the dimension exponent is exactly 1, below the theorem's d^2."""
    K = 120
    one = _kl_reverse(gaussian(torch.tensor([0.5], dtype=DTYPE), torch.tensor([[0.25]], dtype=DTYPE)), K).value
    for d in (3, 6):
        many = _kl_reverse(gaussian(torch.full((d,), 0.5, dtype=DTYPE), 0.25 * torch.eye(d, dtype=DTYPE)), K).value
        assert abs(many / (d * one) - 1) < 1e-8, (d, many, one)


@pytest.mark.slow
def test_kl_order_in_K_at_larger_K_in_d_8():
    """Slow: d = 8, K from twice the regime's lower end (141) to 4512: order 2 within 0.03."""
    target = get_target("gaussian", 8)
    Ks = (282, 564, 1128, 2256, 4512)
    fit = fit_order(Ks, [_kl_reverse(target, K).value for K in Ks], window=5)
    assert abs(fit.order - 2) < 0.03, fit


def test_theorem_entry_reads_kl_data_to_sampler_and_its_conditions():
    theorem = BY_ID["jainzhang2025-kl"]
    assert theorem.metric == "kl_reverse" and theorem.order == 2.0 and theorem.d_power == 2.0
    assert "K > d (log(1/delta) + T_end)" in theorem.statement
    assert get_sampler("ode-renoise").info.theorems == ("jainzhang2025-kl",)


def test_jainzhang_defaults_are_the_practical_grids_ends():
    """By default the grid starts at the level of sigma_max = 80 (abar = 1 / (1 + 80^2)) and its last step overshoots
    to delta, the OU time of sigma_min = 0.002 (abar = 1 / (1 + 0.002^2)), the ends of theory.solver_grids."""
    grid = make_grid("jainzhang", 64)
    assert float(grid.abar[0]) == pytest.approx(1 / (1 + 80.0**2), rel=1e-12)
    t = -0.5 * torch.log(grid.abar)
    c = grid.params["c"]
    delta = float(t[-1]) - c * min(1.0, float(t[-1]))
    assert delta == pytest.approx(0.5 * math.log1p(0.002**2), rel=1e-9)
