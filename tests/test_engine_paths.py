"""The fast paths of the engines (issue 9): the mixture score's written-out derivatives, the batched Jacobian rows,
and the batch path of the Monte Carlo engines (same numbers with a tiny batch as with one big batch; a bad batch
refused by name)."""

from __future__ import annotations

import pytest
import torch

from exact import DivergenceError, measure
from exact.base import BATCHED_ROWS_FROM, map_and_jacobian
from exact.gaussian import gaussian_tv_mc
from samplers import get_sampler
from samplers.base import CountingModel, ExactModel
from theory.catalog import get_target
from theory.schedules import make_grid
from theory.targets import DTYPE


@pytest.mark.parametrize("name,d", [("mix1d", None), ("mix2d", None), ("mixture-diag", 4)])
def test_score_and_eps_derivatives_in_the_level_match_finite_differences(name, d):
    """d score / d abar and d eps / d abar (forward and reverse mode) against central differences, step 1e-6:
    agreement to 1e-7 relative (the differences' own error is ~1e-10 here)."""
    target = get_target(name, d=d)
    x = target.sample(6, 0.4, torch.Generator().manual_seed(0))
    level, step = torch.tensor(0.4, dtype=DTYPE), 1e-6
    weights = torch.randn(x.shape, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    for fn in (target.score, target.eps):
        numeric = (fn(x, level + step) - fn(x, level - step)) / (2 * step)
        _, forward = torch.func.jvp(lambda a, fn=fn: fn(x, a), (level,), (torch.ones_like(level),))
        assert torch.allclose(forward, numeric, rtol=1e-7, atol=1e-7 * float(numeric.abs().max()))
        a = level.clone().requires_grad_(True)
        (reverse,) = torch.autograd.grad((fn(x, a) * weights).sum(), a)
        assert abs(float(reverse) - float((numeric * weights).sum())) <= 1e-7 * float((numeric * weights).abs().sum())


def test_score_derivative_in_x_is_the_score_jacobian_in_every_mode():
    """Forward mode, reverse mode and vmap over many tangents give J v with J = score_jacobian (a rotated mixture)."""
    target = get_target("mix2d")
    x = target.sample(5, 0.3, torch.Generator().manual_seed(2))
    level = torch.tensor(0.3, dtype=DTYPE)
    J = target.score_jacobian(x, level)
    v = torch.randn(x.shape, dtype=DTYPE, generator=torch.Generator().manual_seed(3))
    expected = torch.einsum("nij,nj->ni", J, v)
    _, forward = torch.func.jvp(lambda p: target.score(p, level), (x,), (v,))
    points = x.clone().requires_grad_(True)
    (reverse,) = torch.autograd.grad((target.score(points, level) * v).sum(), points)
    eye = torch.eye(2, dtype=DTYPE)[:, None, :].expand(2, 5, 2)
    _, columns = torch.func.vmap(lambda u: torch.func.jvp(lambda p: target.score(p, level), (x,), (u,)))(eye)
    for got in (forward, reverse):
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(columns.permute(1, 2, 0), J, rtol=1e-12, atol=1e-12)


def test_batched_jacobian_rows_equal_one_backward_pass_per_row():
    """From d = BATCHED_ROWS_FROM on the rows come from one vmapped pullback; they equal the row-by-row ones."""
    d = BATCHED_ROWS_FROM + 1
    target, grid, sampler = get_target("mixture-diag", d), make_grid("li2023", 6), get_sampler("ode-accel")
    model = CountingModel(ExactModel(target))
    x = target.sample(3, grid.abar[0], torch.Generator().manual_seed(4))
    run = lambda p: sampler.run(model, grid, p, None)  # noqa: E731
    y, J = map_and_jacobian(run, x)
    for i in range(3):
        row_by_row = torch.autograd.functional.jacobian(lambda p: run(p[None])[0], x[i])
        assert torch.allclose(J[i], row_by_row, rtol=1e-12, atol=1e-12)
    assert torch.allclose(y, run(x), rtol=0, atol=1e-14)


def _values(result):
    return {k: m.value for k, m in result.items()}


def _close(a: dict, b: dict, rel: float = 1e-13) -> bool:
    return all(abs(a[k] - b[k]) <= rel * abs(b[k]) for k in b)


def test_flow_mc_with_a_tiny_batch_gives_the_numbers_of_one_big_batch():
    target, grid = get_target("mixture-diag", 3), make_grid("li2023", 8)
    one = measure(target, get_sampler("ode-accel"), grid, method="flow-mc", samples=300, seed=5, batch=300)
    tiny = measure(target, get_sampler("ode-accel"), grid, method="flow-mc", samples=300, seed=5, batch=7)
    assert _close(_values(tiny), _values(one))
    assert tiny["kl"].details["batch"] == 7


def test_product_tv_with_a_tiny_batch_gives_the_numbers_of_one_big_batch():
    target, grid = get_target("product-bimodal", 3), make_grid("li2023", 8)
    one = measure(target, get_sampler("ddim"), grid, samples=500, seed=2, batch=10_000)
    tiny = measure(target, get_sampler("ddim"), grid, samples=500, seed=2, batch=3)
    assert one["tv"].method == "product-mc" and _close(_values(tiny), _values(one))


def test_gaussian_monte_carlo_tv_with_a_tiny_batch_gives_the_numbers_of_one_big_batch():
    target, grid = get_target("gaussian", 3), make_grid("li2023", 8)
    one = measure(target, get_sampler("ddpm"), grid, mc_samples=2000, seed=1)
    tiny = measure(target, get_sampler("ddpm"), grid, mc_samples=2000, seed=1, batch=13)
    assert one["tv"].method == "gaussian-mc" and _close(_values(tiny), _values(one))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_a_bad_batch_is_refused_by_name(bad):
    m = torch.zeros(2, dtype=DTYPE)
    with pytest.raises(DivergenceError, match=f"batch must be an integer >= 1.*got {bad!r}"):
        gaussian_tv_mc(m, torch.eye(2, dtype=DTYPE), m, torch.eye(2, dtype=DTYPE), n=10, batch=bad)
    with pytest.raises(DivergenceError, match="batch must be an integer >= 1"):
        measure(get_target("mix2d"), get_sampler("ddim"), make_grid("li2023", 4), method="flow-mc", samples=10,
                batch=bad)


def test_reverse_mode_slopes_equal_forward_mode_for_every_registered_sampler():
    """The 1-D engines take F' from one reverse-mode pass; torch.no_grad inside a sampler would stop reverse mode
    (not forward mode) silently where it detaches part of the run. For every registered deterministic sampler the
    reverse-mode slope equals forward mode's (torch.func.jvp), and so does every Markov sampler's transition map."""
    from exact.base import map_and_slope
    from samplers import sampler_names
    from samplers.base import MarkovSampler

    target, grid = get_target("mix1d"), make_grid("li2023", 8)
    x = torch.linspace(-3.0, 3.0, 9, dtype=DTYPE)
    model = CountingModel(ExactModel(target))
    for name in sampler_names():
        sampler = get_sampler(name)
        if isinstance(sampler, MarkovSampler):
            maps = [step.map for step in sampler.transitions(model, grid) if step.map is not None]
            runs = [lambda p, m=m: m(p[:, None])[:, 0] for m in maps]
        elif not sampler.info.stochastic:
            runs = [lambda p, s=sampler: s.run(model, grid, p[:, None], None)[:, 0]]
        else:
            continue
        for run in runs:
            _, reverse = map_and_slope(run, x)
            _, forward = torch.func.jvp(run, (x,), (torch.ones_like(x),))
            assert torch.allclose(reverse, forward, rtol=1e-12, atol=1e-14), name


@pytest.mark.parametrize("name", ["ipndm", "unipc"])
def test_flow_engine_tv_is_within_its_estimate_of_tv_at_bisected_roots(name, monkeypatch):
    """At T = 8 (steps so large that r is rough on the grid) the flow engine's TV, from interpolated roots and a
    second-order correction, lies within its error estimate of TV at the true roots (55 bisections of the true r,
    each a run of the sampler), and within 1e-7 relative."""
    from exact import grid_1d_flow as flow

    target, grid, sampler = get_target("mix1d"), make_grid("li2023", 8), get_sampler(name)
    got = measure(target, sampler, grid)["tv"]
    found = {}

    def bisected(x, r, log_ratio, cdf_init, cdf_target, density_init):
        negative = r < 0
        cross = torch.nonzero(negative[1:] != negative[:-1]).flatten()
        a, b, left_negative = x[cross], x[cross + 1], negative[cross]
        for _ in range(55):
            mid = 0.5 * (a + b)
            same = (log_ratio(mid)[1] < 0) == left_negative
            a, b = torch.where(same, mid, a), torch.where(same, b, mid)
        roots = 0.5 * (a + b)
        F_roots = log_ratio(roots)[0]
        ends = torch.tensor([0.0, 1.0], dtype=DTYPE)
        P = torch.cat([ends[:1], cdf_init(roots), ends[1:]])
        Q = torch.cat([ends[:1], cdf_target(F_roots), ends[1:]])
        inside = torch.tensor([(k % 2 == 0) == bool(negative[0]) for k in range(cross.numel() + 1)])
        found["tv"] = float(((P[1:] - P[:-1]) - (Q[1:] - Q[:-1]))[inside].sum())
        return found["tv"], found["tv"]

    monkeypatch.setattr(flow, "_tv_on_roots", bisected)
    measure(target, sampler, grid)
    assert abs(got.value - found["tv"]) <= got.numerical_error
    assert abs(got.value - found["tv"]) <= 1e-7 * found["tv"]
