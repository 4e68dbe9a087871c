"""Li & Jiao's sampler as the paper states it (samplers.lijiao; shared/spec/frontier.md section 1): one test per
pitfall of a naive reconstruction (shared draws across overlapping rounds, the last noise injection, the grid
below t = 1, NFE = 2T), the inner update's two forms, exactness where the scheme is exact, seeded draws, options
and refusals, the per-draw measurement by the existing engines, and the KL order in T on the paper's App. A target."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from exact import choose_method, measure
from samplers import CountingModel, ExactModel, Noise, SamplerError, get_sampler, sampler_names
from samplers.base import sampler_grid, schedule_label
from samplers.lijiao import LiJiaoRMP, inner_update, make_schedule, noise_injection, picard_update
from theory.bounds import BY_ID, theorems_for
from theory.catalog import get_target
from theory.rates import fit_order
from theory.schedules import make_grid
from theory.targets import DTYPE, gaussian


class LevelRecorder:
    """A model that answers like `target` and records the noise level tau = 1 - abar of every call."""

    def __init__(self, target):
        self.model, self.taus = ExactModel(target), []

    def eps(self, x, abar):
        self.taus.append(float(1 - abar))
        return self.model.eps(x, abar)


class CountingNoise(Noise):
    def __init__(self, seed):
        super().__init__(seed)
        self.calls = 0

    def __call__(self, like):
        self.calls += 1
        return super().__call__(like)


def app_a_target(d: int, k: int, seed: int = 0):
    """Li & Jiao App. A: zero mean, diagonal covariance, the first k variances Uniform[0, 10] (seeded), the rest 0."""
    var = torch.zeros(d, dtype=DTYPE)
    var[:k] = 10 * torch.rand(k, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))
    return gaussian(torch.zeros(d, dtype=DTYPE), torch.diag(var), name=f"appA({d},{k})")


# ---------------------------------------------------------------------------- the grid and the draw
def test_the_grid_runs_N_over_2_indices_below_t_1_by_the_papers_recursion():
    T, K, c0, c1 = 100, 10, 1.0, 4.0
    s = make_schedule(T, K, c0, c1, draw=0)
    N, h = s.N, c1 * math.log(T) / T
    assert N == 20 and s.tauhat.numel() == T + 2 + N // 2  # indices -N/2 .. T+1
    assert math.isclose(1 - float(s.hat(T + 1)), T**-c0, rel_tol=1e-12)
    # ahat's own recursion, ahat_(t-1) = ahat_t + c1 ahat_t (1 - ahat_t) log T / T, in ahat where ahat is not near 1
    for t in range(T + 1, -N // 2, -1):
        ahat, before = 1 - float(s.hat(t)), 1 - float(s.hat(t - 1))
        assert math.isclose(before, ahat + h * ahat * (1 - ahat), rel_tol=1e-12, abs_tol=1e-15)
    # the spec's worked figure: T = 100, K = 10, c0 = 1, c1 = 4 give 1 - ahat_1 = 3.7e-7
    assert 3.65e-7 < float(s.hat(1)) < 3.75e-7
    assert float(s.hat(-N // 2)) < float(s.hat(0)) < float(s.hat(1))
    # the last round reaches index 1 - N/2 (N/2 cells below t = 1) and evaluates the model there
    taus, hats = s.round_levels(K - 1)
    assert float(taus[-1]) == float(s.drawn(1 - N // 2)) and float(hats[-1]) == float(s.hat(1 - N // 2))
    target, sampler = get_target("gaussian", 2), LiJiaoRMP(K, c0, c1, draw=0)
    grid = sampler.own_grid(T + 1)
    recorder = LevelRecorder(target)
    sampler(recorder, grid, torch.zeros(1, 2, dtype=DTYPE), Noise(0))
    below = [tau for tau in recorder.taus if tau < float(s.drawn(1)) * (1 - 1e-9)]
    assert len(below) == N // 2 - 1  # g at tau_(K-1,n), n = N/2+1 .. N-1, all below tau_1


def test_every_drawn_level_lies_in_its_cell_and_the_grid_ends_at_the_drawn_abar_1():
    s = make_schedule(40, 10, 2.0, 5.0, draw=3)
    for t in range(-s.N // 2 + 1, s.T + 2):
        assert float(s.hat(t - 1)) < float(s.drawn(t)) < float(s.hat(t))  # abar_t in (ahat_t, ahat_(t-1))
    grid = LiJiaoRMP(10, 2.0, 5.0, draw=3).own_grid(41)
    assert grid.T == 41 and float(1 - grid.abar[-1]) == pytest.approx(float(s.drawn(1)), rel=1e-6)
    assert float(1 - grid.abar[0]) == pytest.approx(float(s.drawn(41)), rel=1e-12)


def test_overlapping_rounds_reuse_the_same_draws():
    """tau_(k+1,n) = tau_(k,n+N/2) and tauhat likewise; and the model sees those shared levels twice."""
    s = make_schedule(60, 5, 2.0, 5.0, draw=1)
    half = s.N // 2
    for k in range(s.K - 1):
        taus, hats = s.round_levels(k)
        taus_next, hats_next = s.round_levels(k + 1)
        assert torch.equal(taus_next[: half + 1], taus[half:])
        assert torch.equal(hats_next[:half], hats[half:])
    recorder = LevelRecorder(get_target("gaussian", 1))
    sampler = LiJiaoRMP(5, 2.0, 5.0, draw=1)
    sampler(recorder, sampler.own_grid(61), torch.zeros(1, 1, dtype=DTYPE), Noise(0))
    rounds = [recorder.taus[k * s.N : (k + 1) * s.N] for k in range(s.K)]
    for k in range(s.K - 1):
        assert rounds[k + 1][:half] == pytest.approx(rounds[k][half:], rel=1e-12)


def test_the_same_draw_gives_the_same_schedule_and_another_draw_another():
    a, b = get_sampler("lijiao-rmp?draw=4"), get_sampler("lijiao-rmp?draw=4")
    c = get_sampler("lijiao-rmp?draw=5")
    assert torch.equal(a.own_grid(81).abar, b.own_grid(81).abar)
    assert not torch.equal(a.own_grid(81).abar, c.own_grid(81).abar)
    assert torch.equal(a.with_draw(5).own_grid(81).abar, c.own_grid(81).abar)
    target = get_target("mix1d")
    x = target.sample(5, a.own_grid(81).abar[0], torch.Generator().manual_seed(0))
    assert torch.equal(a(target, a.own_grid(81), x, Noise(2)), b(target, b.own_grid(81), x, Noise(2)))
    assert not torch.allclose(a(target, a.own_grid(81), x, Noise(2)), a(target, a.own_grid(81), x, Noise(3)))


# ---------------------------------------------------------------------------- costs and noise
@pytest.mark.parametrize("T, K", [(11, 10), (21, 10), (41, 5), (13, 4), (3, 1)])
def test_nfe_is_twice_the_papers_T_counted_by_running(T, K):
    sampler = get_sampler(f"lijiao-rmp?K={K}&c1=0.5")
    grid = sampler_grid(sampler, T, "li2023")
    assert sampler.nfe(grid) == 2 * (T - 1) == 2 * grid.steps
    assert sampler.sequential_rounds(grid) == sampler.nfe(grid)
    assert sampler.info.evals_per_step == 2 and schedule_label(sampler, "li2023") == "own-grid"


@pytest.mark.parametrize("M", [1, 3])
def test_the_parallel_variant_counts_M_rounds_per_round(M):
    sampler = get_sampler(f"lijiao-rmp-parallel?K=5&M={M}")
    grid = sampler.own_grid(41)  # paper's T = 40, N = 16
    N = 16
    assert sampler.nfe(grid) == 5 * (1 + M * (N - 1))
    assert sampler.sequential_rounds(grid) == 5 * M


def test_noise_is_injected_after_every_round_the_last_included():
    sampler = get_sampler("lijiao-rmp?K=5")
    grid = sampler.own_grid(51)
    s = sampler.schedule(51)
    noise = CountingNoise(0)
    sampler(get_target("mix1d"), grid, torch.zeros(2, 1, dtype=DTYPE), noise)
    assert noise.calls == s.K
    steps = list(sampler.transitions(CountingModel(ExactModel(get_target("mix1d"))), grid))
    taus, _ = s.round_levels(s.K - 1)
    _, std = noise_injection(taus[-1], s.drawn(1))  # from tau_(K-1,N) up to tau_(K,0) = tau_1, N/2 cells
    assert len(steps) == s.K and steps[-1].std == pytest.approx(float(std), rel=1e-14) and steps[-1].std > 0
    # the exact forward transition: from q at tau_(k,N), the injection gives q at tau_(k+1,0) (a Gaussian target)
    target = get_target("gaussian", 1)
    scale, std = noise_injection(taus[-1], s.drawn(1))
    var_from = target.covariance(1 - taus[-1])[0, 0]
    mean_from = target.mean(1 - taus[-1])[0]
    assert float(scale**2 * var_from + std**2) == pytest.approx(float(target.covariance(1 - s.drawn(1))[0, 0]),
                                                                rel=1e-13)
    assert float(scale * mean_from) == pytest.approx(float(target.mean(1 - s.drawn(1))[0]), rel=1e-13)


# ---------------------------------------------------------------------------- the inner update
def test_the_incremental_form_equals_the_sum_form():
    """u_n = u_(n-1) + g_(n-1) (tauhat_(n-2) - tau_n) - g_(n-2) (tauhat_(n-2) - tau_(n-1)), u_1 = u_0 + g_0 (tau_0 -
    tau_1), on a nonlinear score (two-component mixture in 2-D)."""
    target = get_target("mix2d")
    s = make_schedule(80, 10, 2.0, 5.0, draw=7)
    taus, hats = s.round_levels(3)
    model = CountingModel(ExactModel(target))
    y0 = target.sample(6, 1 - taus[0], torch.Generator().manual_seed(1))
    states = inner_update(model, y0, taus, hats)

    def g(y, tau):
        return -model.eps(y, 1 - tau) / (2 * torch.sqrt(tau) * (1 - tau) ** 1.5)

    us = [y0 / torch.sqrt(1 - taus[0])]
    gs = [g(y0, taus[0])]
    us.append(us[0] + gs[0] * (taus[0] - taus[1]))
    for n in range(2, s.N + 1):
        gs.append(g(torch.sqrt(1 - taus[n - 1]) * us[n - 1], taus[n - 1]))
        us.append(us[n - 1] + gs[n - 1] * (hats[n - 2] - taus[n]) - gs[n - 2] * (hats[n - 2] - taus[n - 1]))
    for n in range(1, s.N + 1):
        assert torch.allclose(states[n - 1], torch.sqrt(1 - taus[n]) * us[n], rtol=1e-12, atol=1e-12), n


class ConstantDrift:
    """A model whose ODE integrand g = s / (2 (1 - tau)^1.5) is the constant vector b (s = 2 (1 - tau)^1.5 b)."""

    def __init__(self, b):
        self.b = b

    def eps(self, x, abar):
        tau = 1 - abar
        return -torch.sqrt(tau) * 2 * (1 - tau) ** 1.5 * self.b.expand_as(x)


def test_the_update_is_exact_for_a_drift_constant_in_tau_whatever_the_draw():
    """The cell lengths telescope: with g constant, u_n = u_0 + b (tau_(k,0) - tau_(k,n)) exactly, the ODE's own
    solution, for every draw and every n (sequential, and Picard with any number of sweeps)."""
    b = torch.tensor([[0.3, -1.2]], dtype=DTYPE)
    model = CountingModel(ConstantDrift(b))
    for draw in range(3):
        s = make_schedule(50, 5, 2.0, 5.0, draw)
        taus, hats = s.round_levels(2)
        y0 = torch.tensor([[0.5, 2.0], [-1.0, 0.1]], dtype=DTYPE)
        u0 = y0 / torch.sqrt(1 - taus[0])
        for states in (inner_update(model, y0, taus, hats), picard_update(model, y0, taus, hats, 2)):
            for n in range(1, s.N + 1):
                exact = torch.sqrt(1 - taus[n]) * (u0 + b * (taus[0] - taus[n]))
                assert torch.allclose(states[n - 1], exact, rtol=1e-13, atol=1e-15), (draw, n)


def test_picard_with_at_least_N_sweeps_is_the_sequential_sampler():
    target = get_target("mix2d")
    sequential = get_sampler("lijiao-rmp?K=5&draw=2")
    grid = sequential.own_grid(31)  # N = 12
    x = target.sample(4, grid.abar[0], torch.Generator().manual_seed(0))
    reference = sequential(target, grid, x, Noise(1))
    parallel = get_sampler("lijiao-rmp-parallel?K=5&M=12&draw=2")
    assert torch.equal(parallel.own_grid(31).abar, grid.abar)
    assert torch.allclose(parallel(target, grid, x, Noise(1)), reference, rtol=1e-12, atol=1e-12)
    fewer = get_sampler("lijiao-rmp-parallel?K=5&M=3&draw=2")(target, grid, x, Noise(1))
    assert not torch.allclose(fewer, reference, rtol=1e-6)


# ---------------------------------------------------------------------------- options and refusals
def test_options_in_query_form_and_their_defaults_in_the_name():
    sampler = get_sampler("lijiao-rmp")
    assert sampler.info.name == "lijiao-rmp?K=10&c0=2&c1=5&draw=0"
    assert get_sampler(sampler.info.name).info.name == sampler.info.name
    other = get_sampler("lijiao-rmp?c1=4.5&K=4&draw=2&c0=1")
    assert (other.K, other.c0, other.c1, other.draw) == (4, 1.0, 4.5, 2)
    assert other.info.name == "lijiao-rmp?K=4&c0=1&c1=4.5&draw=2"
    assert get_sampler("lijiao-rmp-parallel").info.name == "lijiao-rmp-parallel?K=10&M=4&c0=2&c1=5&draw=0"
    assert "lijiao-rmp" not in sampler_names()  # a family with its own grid: not run on every schedule's grid
    assert theorems_for(sampler.info.name) == theorems_for("lijiao-rmp?K=4") == [BY_ID["lijiao2024-rmp"]]


@pytest.mark.parametrize("name, shown", [
    ("lijiao-rmp?K=0", "0"), ("lijiao-rmp?K=1.5", "1.5"), ("lijiao-rmp?K=true", "True"), ("lijiao-rmp?c0=-1", "-1"),
    ("lijiao-rmp?c1=0", "0"), ("lijiao-rmp?c1=big", "'big'"), ("lijiao-rmp?draw=-2", "-2"), ("lijiao-rmp?N=4", "'N'"),
    ("lijiao-rmp?K=2&K=3", "'K'"), ("lijiao-rmp?K", "'K'"), ("lijiao-rmp-parallel?M=0", "0"),
    ("lijiao-rmp?M=2", "'M'"),
])
def test_bad_options_raise_one_line_naming_the_value(name, shown):
    with pytest.raises(SamplerError, match=shown) as info:
        get_sampler(name)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, T, shown", [
    ("lijiao-rmp", 16, "N = 3"),  # paper's T = 15, K = 10
    ("lijiao-rmp?K=4", 11, "N = 5"),  # N odd
    ("lijiao-rmp?K=1", 2, "T = 1"),  # log T = 0
    ("lijiao-rmp", 11, "c1 = 5"),  # c1 log 10 / 10 = 1.15: the grid would leave (0, 1)
])
def test_a_T_without_a_valid_grid_is_refused_naming_it(name, T, shown):
    with pytest.raises(SamplerError, match=shown) as info:
        get_sampler(name).own_grid(T)
    assert "\n" not in str(info.value)


def test_another_grid_is_refused():
    sampler, target = get_sampler("lijiao-rmp"), get_target("mix1d")
    with pytest.raises(SamplerError, match="own grid"):
        sampler(target, make_grid("li2023", 21), torch.zeros(1, 1, dtype=DTYPE), Noise(0))
    with pytest.raises(SamplerError, match="own grid"):
        sampler(target, get_sampler("lijiao-rmp?draw=1").own_grid(21), torch.zeros(1, 1, dtype=DTYPE), Noise(0))


# ---------------------------------------------------------------------------- measured per draw
def test_given_the_draw_the_engines_measure_it_in_any_d():
    """Per draw the sampler is a chain of Gaussian transitions: the Gaussian engine's output law is the law of
    seeded runs (Monte Carlo mean and variance within 5 standard errors), in d = 3; the 1-D kernel, product and
    subspace engines take it too."""
    sampler = get_sampler("lijiao-rmp?K=5&draw=1")
    grid = sampler.own_grid(41)
    target = app_a_target(3, 2)
    assert choose_method(target, sampler) == "gaussian"
    law = measure(target, sampler, grid)["kl"].details
    mean, cov = torch.tensor(law["mean"], dtype=DTYPE), torch.tensor(law["cov"], dtype=DTYPE)
    n = 40_000
    x = target.sample(n, grid.abar[0], torch.Generator().manual_seed(0))
    y = sampler(target, grid, x, Noise(11))
    se = torch.sqrt(torch.diagonal(cov) / n)
    assert torch.all((y.mean(0) - mean).abs() < 5 * se)
    var_se = torch.diagonal(cov) * math.sqrt(2 / n)
    assert torch.all((y.var(0) - torch.diagonal(cov)).abs() < 5 * var_se)
    assert choose_method(get_target("mix1d"), sampler) == "grid-1d-kernel"
    assert choose_method(get_target("product-mix1d", 4), sampler) == "product"
    assert choose_method(get_target("subspace-product:2", 6), sampler) == "subspace"
    tv = measure(get_target("mix1d"), sampler, grid)["tv"]
    assert 0 < tv.value < 1 and tv.numerical_error < 0.1 * tv.value


def _median_kls(target, Ts, draws, name="lijiao-rmp"):
    base = get_sampler(name)
    medians = []
    for T in Ts:
        kls = [measure(target, base.with_draw(r), base.with_draw(r).own_grid(T), method="gaussian",
                       mc_samples=1000)["kl"].value for r in range(draws)]
        medians.append(statistics.median(kls))
    return medians


def test_kl_per_draw_falls_faster_than_a_first_order_sampler_on_the_app_a_target():
    """Small sizes: App. A target (d, k) = (4, 3), median KL over 9 draws at the paper's T = 80 and 320: it falls by
    more than 4^2 (a first-order sampler's KL falls like T^-2; the paper claims log^4 T / T^3)."""
    at_80, at_320 = _median_kls(app_a_target(4, 3), (81, 321), 9)
    assert at_320 < at_80 / 16, (at_80, at_320)


@pytest.mark.slow
def test_kl_order_per_draw_on_the_app_a_target_is_near_three():
    """The paper's App. A, (d, k) = (10, 10), median KL over 24 draws for the paper's T = 80 .. 1280: its claim is
    KL ~ log^4 T / T^3 (order just under 3 at these T); the fitted order's 95% interval lies within [2, 4]."""
    Ts = (81, 161, 321, 641, 1281)
    medians = _median_kls(app_a_target(10, 10), Ts, 24)
    fit = fit_order([T - 1 for T in Ts], medians, window=len(Ts))
    assert 2.0 < fit.low and fit.high < 4.0, fit


def test_the_theorem_entry_is_the_full_texts():
    theorem = BY_ID["lijiao2024-rmp"]
    assert (theorem.metric, theorem.order, theorem.log_power, theorem.d_power) == ("tv", 1.5, 4.0, 1.5)
    assert not theorem.recalled and theorem.source == ""
    # the shape is read at the paper's T = grid levels - 1
    assert theorem.shape(101, 10) == pytest.approx(10**1.5 * math.log(100) ** 4 / 100**1.5)
    assert theorems_for("lijiao-rmp-parallel?K=10&M=4") == []  # Theorem 2 counts rounds: not a shape in T


def test_rates_draws_gives_every_draw_its_rows_and_their_median_and_worst(tmp_path):
    """studies.rates --draws R: draw r = --seed + r, each draw a sampler named with all its options and draw, its
    own rows; draws.csv holds the median and the largest value over the draws of each T and metric."""
    import pandas as pd

    from studies import rates

    out = tmp_path / "draws"
    assert rates.main(["--sampler", "lijiao-rmp?K=5", "--target", "gaussian", "--d", "2", "--T", "21", "41",
                       "--draws", "3", "--seed", "4", "--metric", "kl", "--no-plot", "--scheduler", "none",
                       "--out", str(out)]) == 0
    rows = pd.read_csv(out / "rates.csv")
    names = [f"lijiao-rmp?K=5&c0=2&c1=5&draw={r}" for r in (4, 5, 6)]
    assert sorted(set(rows["sampler"])) == names and len(rows) == 6
    assert set(rows["schedule"]) == {"own-grid"} and set(rows["nfe"]) == {40, 80}
    spread = pd.read_csv(out / "draws.csv").set_index("T")
    for T, group in rows.groupby("T"):
        assert spread.loc[T, "sampler"] == "lijiao-rmp?K=5&c0=2&c1=5" and spread.loc[T, "draws"] == 3
        assert spread.loc[T, "median"] == pytest.approx(group["value"].median(), rel=1e-12)
        assert spread.loc[T, "worst"] == pytest.approx(group["value"].max(), rel=1e-12)
