"""Exact engines held against laws computed here in a few lines, independently of the engines' code (added for what
mutation testing showed unguarded: tests/mutation.py, tests/mutation_survivors.md).

- Path KL of a DDPM chain on 1-D Gaussian data N(mu, s^2): under the forward process X_i ~ N(sqrt(a_i) mu, v_i), and
  by Gaussian conditioning X_(i+1) | X_i ~ N(M x + c, V) with M = sqrt(a_i / a_(i+1)) v_(i+1) / v_i; the chain's step
  is N(A x + b, sigma^2) from the DDPM rule. Both path KLs are sums of expected 1-D Gaussian KLs, written out here
  with scalars. The chain rule also says that the forward path KL with a N(0, 1) start exceeds the one with the
  exact start by exactly KL(q_T || N(0, 1)).
- The randomized 1-D engine on the stationary law N(0, 1): the score is -y at every level, so `ode-rmp-is` maps y to
  y exactly and `ode-rmp` multiplies it by an independent random factor of mean 1 and second moment
  e^(2h) - 2 e^h (e^h - 1) + h (e^(2h) - 1) / 2 each step: the engine's output density has that product as its
  variance, and mean zero.
"""

from __future__ import annotations

import math

import pytest
import torch

from exact import measure
from exact.base import initial_law, trapezoid
from exact.path_kl import path_kl_gaussian
from exact.randomized_1d import randomized_density_1d
from samplers import get_sampler
from theory.schedules import Grid, make_grid
from theory.targets import DTYPE, gaussian

MU, S2 = 0.4, 0.3


def kl_1d(m1, s1, m2, s2):
    """KL(N(m1, s1) || N(m2, s2)), variances s1, s2."""
    return 0.5 * (s1 / s2 - 1 - math.log(s1 / s2) + (m1 - m2) ** 2 / s2)


def expected_kl_1d(D, e, S1, S2_, m, C):
    """E_(x ~ N(m, C)) KL(N(F1 x + g1, S1) || N(F2 x + g2, S2)), D = F1 - F2, e = g1 - g2."""
    return kl_1d(D * m + e, S1, 0.0, S2_) + 0.5 * D * D * C / S2_


def path_kls_by_hand(name: str, grid, init: str) -> tuple[float, float]:
    a = [float(x) for x in grid.abar]
    v = [ai * S2 + 1 - ai for ai in a]
    m = [math.sqrt(ai) * MU for ai in a]
    m_p, w_p = (m[0], v[0]) if init == "exact" else (0.0, 1.0)
    forward = 0.0 if init == "exact" else kl_1d(m[0], v[0], 0.0, 1.0)
    backward = 0.0 if init == "exact" else kl_1d(0.0, 1.0, m[0], v[0])
    for i in range(grid.steps):
        alpha = a[i] / a[i + 1]
        M = math.sqrt(alpha) * v[i + 1] / v[i]
        V = v[i + 1] - M * M * v[i]
        c = m[i + 1] - M * m[i]
        # DDPM mean: (x + (1 - alpha) s(x)) / sqrt(alpha), s(x) = -(x - m_i) / v_i
        A = (1 - (1 - alpha) / v[i]) / math.sqrt(alpha)
        b = (1 - alpha) * m[i] / v[i] / math.sqrt(alpha)
        S = (1 - alpha) / alpha if name == "ddpm" else (1 - alpha) * (1 - a[i + 1]) / (1 - a[i])
        forward += expected_kl_1d(M - A, c - b, V, S, m[i], v[i])
        backward += expected_kl_1d(A - M, b - c, S, V, m_p, w_p)
        m_p, w_p = A * m_p + b, A * A * w_p + S
    return forward, backward


@pytest.mark.parametrize("init", ["exact", "gaussian"])
@pytest.mark.parametrize("name", ["ddpm", "ddpm-posterior"])
@pytest.mark.parametrize("schedule, T", [("li2023", 6), ("ddpm-linear", 9)])
def test_path_kl_closed_form_is_the_sum_of_per_step_gaussian_kls(name, init, schedule, T):
    grid = make_grid(schedule, T)
    target = gaussian([MU], [[S2]])
    forward, backward = path_kl_gaussian(target, get_sampler(name), grid, init)
    by_hand = path_kls_by_hand(name, grid, init)
    assert by_hand[0] > 1e-4 and by_hand[1] > 1e-4  # not a trivially exact chain
    assert abs(forward - by_hand[0]) < 1e-10 * (1 + by_hand[0])
    assert abs(backward - by_hand[1]) < 1e-10 * (1 + by_hand[1])


def test_forward_path_kl_of_a_gaussian_start_adds_exactly_the_start_kl():
    grid = make_grid("li2023", 7)
    target = gaussian([MU], [[S2]])
    sampler = get_sampler("ddpm")
    exact_start = measure(target, sampler, grid, init="exact", method="path-kl", compare=False)
    gaussian_start = measure(target, sampler, grid, init="gaussian", method="path-kl", compare=False)
    a0 = float(grid.abar[0])
    start_kl = kl_1d(math.sqrt(a0) * MU, a0 * S2 + 1 - a0, 0.0, 1.0)
    gap = gaussian_start["kl_path"].value - exact_start["kl_path"].value
    assert abs(gap - start_kl) < 1e-10 * (1 + start_kl)


def test_path_kl_monte_carlo_estimators_agree_with_the_per_step_sum_on_a_mixture_free_case():
    """On the Gaussian target, with both Monte Carlo estimators reported, each one agrees with the sum by hand within
    4 of its standard errors, and the reported value is the one with the smaller standard error."""
    grid = make_grid("li2023", 6)
    target = gaussian([MU], [[S2]])
    by_hand = path_kls_by_hand("ddpm", grid, "gaussian")
    mc = measure(target, get_sampler("ddpm"), grid, init="gaussian", method="path-kl", mc=True, samples=20_000,
                 seed=5, compare=False)
    for metric, exact in (("kl_path", by_hand[0]), ("kl_path_sampler", by_hand[1])):
        d = mc[metric].details
        assert abs(d["plain"] - exact) < 4 * d["plain_se"], metric
        assert abs(d["second_order"] - exact) < 4 * d["second_order_se"], metric
        assert d["plain_se"] < 0.05 * exact and d["second_order_se"] < 0.05 * exact  # the check has teeth
        chosen = min(("plain", "second_order"), key=lambda k: d[f"{k}_se"])
        assert d["estimator"] == chosen and mc[metric].value == d[chosen]
        assert len(d["per_term"]) == grid.steps + 1  # the start's term, then one per step
        assert abs(sum(d["per_term"]) - d["plain"]) < 1e-9 * (1 + abs(d["plain"]))


def _stationary_factor_moment(h: float) -> float:
    return math.exp(2 * h) - 2 * math.exp(h) * (math.exp(h) - 1) + h * (math.exp(2 * h) - 1) / 2


@pytest.mark.parametrize("name", ["ode-rmp", "ode-rmp-is"])
def test_randomized_engine_on_the_stationary_law(name):
    grid = Grid(torch.tensor([0.05, 0.2, 0.6, 0.95], dtype=DTYPE), "coarse")  # steps with h of order one
    target = gaussian([0.0], [[1.0]])
    z, h, p, mass = randomized_density_1d(target, get_sampler(name), grid, initial_law(target, grid, "exact"),
                                          G=4001, width=11.0, nodes=16)
    variance = 1.0
    if name == "ode-rmp":
        for n in range(grid.steps):
            variance *= _stationary_factor_moment(0.5 * math.log(float(grid.abar[n + 1] / grid.abar[n])))
        assert variance > 1.01  # the uniform time's weight really does spread the law
    assert abs(float(trapezoid(p * z, h))) < 1e-9
    assert abs(float(trapezoid(p * z * z, h)) / variance - 1) < 1e-4
    if name == "ode-rmp-is":  # the output is the stationary law itself
        assert measure(target, get_sampler(name), grid)["tv"].value < 1e-5


@pytest.mark.parametrize("name", ["ddpm", "ddpm-posterior"])
def test_kernel_engine_error_estimates_cover_the_closed_form_and_stay_at_its_resolution(name):
    """On a Gaussian target the kernel engine's values lie within their reported numerical errors of the closed
    form (up to rounding), and those errors are of the size the resolved grid allows, not of the size of the value."""
    target = gaussian([MU], [[S2]])
    for T in (6, 20):
        grid = make_grid("li2023", T)
        kernel = measure(target, get_sampler(name), grid, method="grid-1d-kernel")
        closed = measure(target, get_sampler(name), grid, method="gaussian")
        for metric, resolution in (("tv", 1e-4), ("kl", 1e-10)):
            assert abs(kernel[metric].value - closed[metric].value) <= kernel[metric].numerical_error + 1e-12
            assert kernel[metric].numerical_error < resolution * closed[metric].value, metric
    # on a coarse grid the error is real, and the estimate still covers it
    coarse = measure(target, get_sampler(name), make_grid("li2023", 6), method="grid-1d-kernel", G=128)
    closed = measure(target, get_sampler(name), make_grid("li2023", 6), method="gaussian")
    for metric in ("tv", "kl"):
        assert 1e-12 < abs(coarse[metric].value - closed[metric].value) <= coarse[metric].numerical_error, metric


@pytest.mark.parametrize("name", ["ddpm", "ddim", "ode-accel"])
def test_gaussian_engine_errors_are_at_rounding_level(name):
    """The Gaussian engine is a closed form: the errors it reports (the change when the basis is halved) are at the
    level of rounding, for every metric, and its KL and reverse KL are those of the law it computed."""
    target = gaussian([MU], [[S2]])
    grid = make_grid("li2023", 8)
    out = measure(target, get_sampler(name), grid, method="gaussian")
    for metric in ("tv", "kl", "kl_reverse", "w2"):
        assert out[metric].numerical_error < 1e-9 * (1 + out[metric].value), metric
    mean, var = out["kl"].details["mean"][0], out["kl"].details["cov"][0][0]
    a = float(grid.abar[-1])
    mq, vq = math.sqrt(a) * MU, a * S2 + 1 - a
    assert abs(out["kl"].value - kl_1d(mean, var, mq, vq)) < 1e-12
    assert abs(out["kl_reverse"].value - kl_1d(mq, vq, mean, var)) < 1e-12


@pytest.mark.parametrize("G", [64, 128, 256])
def test_flow_engine_error_estimates_cover_the_distance_to_a_fine_grid(G):
    """On a bimodal target, where a coarse node set has a real error, the flow engine's reported errors cover the
    distance of its values to those of a grid 64 to 256 times finer."""
    from theory.catalog import get_target

    target, grid, sampler = get_target("mix1d"), make_grid("li2023", 8), get_sampler("ddim")
    fine = measure(target, sampler, grid, method="grid-1d-flow", G=16384)
    coarse = measure(target, sampler, grid, method="grid-1d-flow", G=G)
    for metric in ("tv", "kl"):
        assert abs(coarse[metric].value - fine[metric].value) <= coarse[metric].numerical_error, metric


def test_flow_engine_errors_are_at_rounding_level_where_it_is_exact():
    """A deterministic linear map on Gaussian data: the flow engine is exact up to rounding, and says so."""
    target, grid = gaussian([MU], [[S2]]), make_grid("li2023", 6)
    out = measure(target, get_sampler("ddim"), grid, method="grid-1d-flow")
    for metric in ("tv", "kl"):
        assert out[metric].numerical_error < 1e-9 * (1 + out[metric].value), metric


def test_piecewise_linear_draws_follow_their_density():
    """The product engine's exact draws from a piecewise-linear density: their mean and second moment are those of
    the density (cell by cell, in closed form) within 5 standard errors, and their log density is the interpolant's."""
    from exact.product import _draws_piecewise_linear

    z = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=DTYPE)
    p = torch.tensor([0.0, 1.0, 0.5, 0.2, 0.6], dtype=DTYPE)
    x, log_density = _draws_piecewise_linear(z, p, 200_000, torch.Generator().manual_seed(4))
    mass = first = second = 0.0
    for z0, a, b in zip(z[:-1].tolist(), p[:-1].tolist(), p[1:].tolist()):
        # int over [z0, z0 + 1] of (a + (b - a) s) (z0 + s)^k ds, k = 0, 1, 2
        mass += (a + b) / 2
        first += z0 * (a + b) / 2 + (a + 2 * b) / 6
        second += z0 * z0 * (a + b) / 2 + z0 * (a + 2 * b) / 3 + (a + 3 * b) / 12
    mean, var = first / mass, second / mass - (first / mass) ** 2
    se = math.sqrt(var / x.numel())
    assert abs(float(x.mean()) - mean) < 5 * se
    assert abs(float((x * x).mean()) - second / mass) < 5 * math.sqrt(2 * (second / mass) ** 2 / x.numel())
    interpolant = torch.from_numpy(__import__("numpy").interp(x.numpy(), z.numpy(), p.numpy())) / mass
    assert torch.allclose(log_density, torch.log(interpolant), atol=1e-9)


@pytest.mark.parametrize("module", ["exact.density_1d", "exact.grid_1d_kernel"])
def test_kl_integrand_is_e_to_the_u_times_u_minus_1_plus_1_to_rounding(module):
    """The KL integrands' small-u series and their direct form agree with f(u) = e^u (u - 1) + 1 in 50-digit
    arithmetic, on both sides of the switch between them."""
    import importlib

    import mpmath

    mpmath.mp.dps = 50
    engine = importlib.import_module(module)
    us = [-0.5, -0.02, -0.0099, -3e-3, -1e-4, 1e-6, 2e-4, 5e-3, 0.0099, 0.0101, 0.3, 2.0]
    u = torch.tensor(us, dtype=DTYPE)
    if module == "exact.density_1d":
        got = engine._f(u)
    else:  # q f(log p/q) with q = 1, p = e^u
        got = engine._kl_integrand(torch.exp(u), torch.ones_like(u), u)
    for value, ui in zip(got.tolist(), us):
        exact = float(mpmath.exp(mpmath.mpf(ui)) * (mpmath.mpf(ui) - 1) + 1)
        assert abs(value - exact) < 1e-12 * exact, (ui, value, exact)


def test_init_error_of_the_gaussian_start_is_the_closed_form_in_one_dimension():
    """TV and KL between N(0, 1) and q_T for 1-D Gaussian data, by the engine's quadrature and in closed form; the
    exact start has none."""
    from exact.gaussian import gaussian_tv_1d
    from exact.init_error import init_error

    target, grid = gaussian([MU], [[S2]]), make_grid("li2023", 5)
    a0 = float(grid.abar[0])
    mq, vq = math.sqrt(a0) * MU, a0 * S2 + 1 - a0
    out = init_error(target, grid, "gaussian")
    # TV's integrand |p - q| has kinks: the trapezoid rule on 2^15 nodes leaves an error of a few 1e-9
    assert abs(out["tv"] - gaussian_tv_1d(0.0, 1.0, mq, math.sqrt(vq))) < 1e-7
    assert abs(out["kl"] - kl_1d(0.0, 1.0, mq, vq)) < 1e-9
    assert init_error(target, grid, "exact") == {"tv": 0.0, "kl": 0.0}


@pytest.mark.parametrize("name", ["ddpm", "ddpm-posterior"])
def test_reverse_kl_of_the_tabulated_density_is_the_closed_form(name):
    """KL(q || p) from the tabulated 1-D density (exact.density_1d) equals the Gaussian closed form of the
    sampler's output law on Gaussian data, within twice its reported error (finding: on ddpm, li2023, T = 6 the
    distance is 3.7e-9 against a reported 3.5e-9, so the estimate is slightly optimistic there)."""
    from exact.density_1d import reverse_kl_1d

    target, grid = gaussian([MU], [[S2]]), make_grid("li2023", 6)
    tabulated = reverse_kl_1d(target, get_sampler(name), grid)
    closed = measure(target, get_sampler(name), grid, method="gaussian")["kl_reverse"]
    assert abs(tabulated.value - closed.value) <= 2 * tabulated.numerical_error + 1e-10
    assert tabulated.numerical_error < 1e-6 * closed.value


def test_log_density_interpolation_is_exact_for_a_gaussian():
    """log p of a Gaussian is quadratic, so LogDensity1D's 6-node Lagrange interpolation of the tabulated log p
    returns it to rounding at any point between the nodes."""
    from exact.density_1d import LogDensity1D

    mean, var = 0.3, 0.7
    z = torch.linspace(-6.0, 6.0, 241, dtype=DTYPE)
    log_p = lambda x: -0.5 * (x - mean) ** 2 / var - 0.5 * math.log(2 * math.pi * var)  # noqa: E731
    interpolate = LogDensity1D(z, torch.exp(log_p(z)))
    y = torch.rand(500, generator=torch.Generator().manual_seed(0), dtype=DTYPE) * 11.0 - 5.5
    assert interpolate.outside(y) == 0
    assert torch.allclose(interpolate(y), log_p(y), rtol=0, atol=1e-9)


@pytest.mark.parametrize("m1, m2, s", [(0.3, 1.1, 0.7), (-2.0, 0.5, 1.3), (1.7, 1.7, 0.2)])
def test_tv_of_two_gaussians_of_one_width_is_the_closed_form_and_the_integral(m1, m2, s):
    """Equal widths: TV(N(m1, s^2), N(m2, s^2)) = 2 Phi(|m1 - m2| / (2 s)) - 1, and the same by quadrature of
    |p1 - p2| / 2."""
    from scipy import integrate
    from scipy.stats import norm

    from exact.gaussian import gaussian_tv_1d

    closed = 2 * norm.cdf(abs(m1 - m2) / (2 * s)) - 1
    quad = 0.5 * integrate.quad(lambda x: abs(norm.pdf(x, m1, s) - norm.pdf(x, m2, s)), -30, 30, points=[m1, m2],
                                limit=400, epsabs=1e-13)[0]
    assert gaussian_tv_1d(m1, s, m2, s) == pytest.approx(closed, abs=1e-12)
    assert gaussian_tv_1d(m1, s, m2, s) == pytest.approx(quad, abs=1e-9)


@pytest.mark.parametrize("G", [257, 513])
def test_randomized_engine_tv_lies_within_its_error_of_the_same_engine_on_an_eight_times_finer_grid(G):
    """The randomized engine's TV at a modest G (Richardson-corrected) is within its stated numerical error of the
    same measurement on 8G nodes (whose own error is added): the stated error bounds the distance to a far more
    accurate value, on a case (ode-rmp on mix1d, li2023 T=4) where the grid's correction is not negligible."""
    from theory.catalog import get_target

    target, sampler, grid = get_target("mix1d"), get_sampler("ode-rmp"), make_grid("li2023", 4)
    coarse = measure(target, sampler, grid, method="grid-1d-randomized", G=G)["tv"]
    fine = measure(target, sampler, grid, method="grid-1d-randomized", G=8 * G)["tv"]
    assert fine.numerical_error < coarse.numerical_error
    assert abs(coarse.value - fine.value) <= coarse.numerical_error + fine.numerical_error, (coarse, fine)


@pytest.mark.parametrize("h", [0.1, 0.05])
def test_log_density_interpolation_at_mid_cells_meets_the_centred_six_node_error_bound(h):
    """LogDensity1D interpolates log p through 6 nodes centred on the cell: at a mid-cell point s = i + 1/2 the
    Lagrange remainder is f^(6)(xi) / 6! * h^6 * prod_j |t_j| with offsets t_j = +-1/2, +-3/2, +-5/2, so for
    log p = sin (|f^(6)| <= 1) the error is at most h^6 / 720 * (1/2 * 3/2 * 5/2)^2 there. (A stencil shifted
    by one node has the product 7/2 * 5/2 * 3/2 * 1/2 * 1/2 * 3/2, 1.4 times larger, and breaks the bound where
    |sin| is near 1.)"""
    from exact.density_1d import LogDensity1D

    z = torch.arange(-6.0, 6.0 + h / 2, h, dtype=DTYPE)
    interpolant = LogDensity1D(z, torch.exp(torch.sin(z)))
    mid = z[10:-10] + h / 2  # interior cells: no stencil is clamped at an end
    error = (interpolant(mid) - torch.sin(mid)).abs().max()
    bound = h**6 / 720 * (0.5 * 1.5 * 2.5) ** 2
    assert error <= bound, (float(error), bound)
    assert error > 0.5 * bound  # near x = pi/2 the remainder is close to the bound: the law is not vacuous


@pytest.mark.parametrize("G", [64, 128, 256])
def test_flow_engine_kl_error_is_its_change_across_the_nested_grids_it_names(G):
    """grid-1d-flow states KL's error as the larger change from every fourth to every other to all of its G + 1
    nodes (plus the mass outside the grid, negligible at width 11, and rounding). Every other and every fourth node
    are themselves the engine's grids for G/2 and G/4 (same ends), so the stated error is rebuilt from three
    independent runs; a coarse case (ddim on mix1d, li2023 T=4) keeps the changes far above rounding."""
    from theory.catalog import get_target

    target, sampler, grid = get_target("mix1d"), get_sampler("ddim"), make_grid("li2023", 4)
    kl = {k: measure(target, sampler, grid, method="grid-1d-flow", G=k)["kl"] for k in (G, G // 2, G // 4)}
    v = {k: m.value for k, m in kl.items()}
    changes = max(abs(v[G] - v[G // 2]), abs(v[G // 2] - v[G // 4]))
    assert changes > 1e-6
    assert changes <= kl[G].numerical_error <= changes * (1 + 1e-9) + 1e-12, (kl[G], changes)
