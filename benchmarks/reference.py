"""The plain reference that `python -m benchmarks` measures its speed-ups against: the engines' inner steps as they
were before the speed-up (issue 9), kept here and switched in by `reference_engines()`, so that the ratio between
the two is measured in one run on the same machine.

What the reference replaces (the engines' outer code, their numbers and error estimates are shared):
- the mixture score: the op-by-op evaluation (n, K, d layout, softmax, einsum) that every transform traces;
- grid_1d_flow.flow_map_1d and product's copy of it: F' by forward mode (torch.func.jvp);
- grid_1d_flow._tv_on_roots: three regula falsi refinements, each a run of the sampler on the roots;
- grid_1d_kernel._pushforward (and _pushforward_together, which pushes the fine and the half-resolution grid at
  once): each grid alone, m and m' by torch.func.jvp at the grid and at every Newton iterate (started from the
  linear inverse), and the Lagrange weights as an order^2 loop of column updates;
- flow_mc.flow_and_logdet: the d x d Jacobian from d forward-mode tangents (vmap of jvp).

    python -m benchmarks.reference rates --sampler ode-accel      # a study, whole process, on the reference
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Callable, Iterator

import torch
from torch import Tensor

from exact import flow_mc, grid_1d_flow, grid_1d_kernel, product
from exact.base import DivergenceError
from samplers.base import CountingModel
from theory.targets import GaussianMixture, ScoreDerived


def reference_score(self: GaussianMixture, x: Tensor, abar) -> Tensor:
    """grad log q_abar(x) = sum_k r_k(x) ( -C_k^{-1} (x - m_k) ), one tensor operation at a time."""
    x = self._check_points(x)
    y, c = self._whitened(x, abar)
    logits = self.log_weights - 0.5 * ((y * y / c).sum(-1) + torch.log(c).sum(-1))
    r = torch.softmax(logits, dim=-1)
    per_component = self._from_eigenbasis(-y / c)  # (n, K, d)
    return torch.einsum("nk,nkd->nd", r, per_component)


def reference_flow_map_1d(sampler, model, grid, x: Tensor) -> tuple[Tensor, Tensor]:
    counting = CountingModel(model)

    def run(points: Tensor) -> Tensor:
        return sampler.run(counting, grid, points[:, None], None)[:, 0]

    return torch.func.jvp(run, (x,), (torch.ones_like(x),))


def reference_tv_on_roots(x, r, log_ratio, cdf_init, cdf_target, density_init=None,
                          refinements: int = 3) -> tuple[float, float]:
    negative = r < 0
    cross = torch.nonzero(negative[1:] != negative[:-1]).flatten()
    a, b = x[cross], x[cross + 1]
    ra, rb = r[cross], r[cross + 1]
    one = torch.ones(1, dtype=x.dtype, device=x.device)
    mask = torch.tensor([(k % 2 == 0) == bool(negative[0]) for k in range(cross.numel() + 1)], device=x.device)

    def tv_at(roots: Tensor, F_roots: Tensor) -> float:
        P = torch.cat([0 * one, cdf_init(roots), one])
        Q = torch.cat([0 * one, cdf_target(F_roots), one])
        return float(((P[1:] - P[:-1]) - (Q[1:] - Q[:-1]))[mask].sum())

    if cross.numel() == 0:
        value = tv_at(x[:0], x[:0])
        return value, value
    values = []
    for _ in range(refinements):
        roots = a - ra * (b - a) / (rb - ra)
        F_roots, rr = log_ratio(roots)
        values.append(tv_at(roots, F_roots))
        left = torch.sign(rr) == torch.sign(ra)
        a, ra = torch.where(left, roots, a), torch.where(left, rr, ra)
        b, rb = torch.where(left, b, roots), torch.where(left, rb, rr)
    return values[-1], values[-2]


def reference_lagrange_interpolate(values: Tensor, lo: float, h: float, u: Tensor, order: int = 8) -> Tensor:
    G = values.numel()
    s = (u - lo) / h
    start = (torch.floor(s) - (order // 2 - 1)).long().clamp(0, G - order)
    nodes = start[:, None] + torch.arange(order, device=u.device)
    t = s[:, None] - nodes.to(s.dtype)
    weights = torch.ones_like(t)
    for j in range(order):
        for k in range(order):
            if j != k:
                weights[:, j] *= t[:, k] / (j - k)
    return (weights * values[nodes]).sum(-1)


def reference_pushforward(p: Tensor, z: Tensor, lo: float, h: float, m: Callable[[Tensor], Tensor], what: str):
    run = lambda pts: m(pts[:, None])[:, 0]  # noqa: E731
    mz, dmz = torch.func.jvp(run, (z,), (torch.ones_like(z),))
    if torch.any(dmz <= 0):
        where = float(z[torch.nonzero(dmz <= 0)[0, 0]])
        raise DivergenceError(f"{what}: the transition's mean map is not increasing at x = {where:.4g}")
    inside = (z > mz[0]) & (z < mz[-1])
    target_z = z[inside]
    idx = torch.searchsorted(mz, target_z).clamp(1, z.numel() - 1)
    frac = (target_z - mz[idx - 1]) / (mz[idx] - mz[idx - 1])
    u = z[idx - 1] + frac * (z[idx] - z[idx - 1])
    for _ in range(8):
        mu, dmu = torch.func.jvp(run, (u,), (torch.ones_like(u),))
        step = (mu - target_z) / dmu
        u = u - step
        if float(step.abs().max()) < 1e-13 * max(1.0, float(u.abs().max())):
            break
    out = torch.zeros_like(p)
    out[inside] = (reference_lagrange_interpolate(p, lo, h, u) / dmu).clamp_min(0.0)
    return out


def reference_pushforward_together(densities, m, what):
    """The old engine pushed each grid separately; per grid the numbers are those of a separate pass."""
    return [reference_pushforward(p, z, lo, h, m, what) for p, z, lo, h in densities]


def reference_flow_and_logdet(sampler, model, grid, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    n, d = x.shape
    counting = model if isinstance(model, CountingModel) else CountingModel(model)

    def run(points: Tensor) -> Tensor:
        return sampler.run(counting, grid, points, None)

    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    Y, dY = torch.func.vmap(lambda v: torch.func.jvp(run, (x,), (v,)))(eye[:, None, :].expand(d, n, d))
    J = dY.permute(1, 2, 0)
    sign, logdet = torch.linalg.slogdet(J)
    return (Y[0] if Y.ndim == 3 else Y), sign, logdet


REPLACEMENTS = [
    (GaussianMixture, "score", reference_score),
    (GaussianMixture, "eps", ScoreDerived.eps),
    (grid_1d_flow, "flow_map_1d", reference_flow_map_1d),
    (product, "flow_map_1d", reference_flow_map_1d),
    (grid_1d_flow, "_tv_on_roots", reference_tv_on_roots),
    (grid_1d_kernel, "_pushforward", reference_pushforward),
    (grid_1d_kernel, "_pushforward_together", reference_pushforward_together),
    (flow_mc, "flow_and_logdet", reference_flow_and_logdet),
]


@contextlib.contextmanager
def reference_engines() -> Iterator[None]:
    """Run the engines on the reference inner steps inside the block (the product engine's 1-D cache is cleared on
    the way in and out, so neither side reuses the other's work)."""
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in REPLACEMENTS]
    product._CACHE.clear()
    try:
        for owner, name, replacement in REPLACEMENTS:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
        product._CACHE.clear()


def main(argv=None) -> None:
    """`python -m benchmarks.reference <study> [study arguments]`: the study's main on the reference engines."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise SystemExit("usage: python -m benchmarks.reference <study name> [arguments of python -m studies.<name>]")
    study = importlib.import_module(f"studies.{argv[0]}")
    with reference_engines():
        study.main(argv[1:])


if __name__ == "__main__":
    main()
