"""Order fitting (shared/spec/metrics.md, "Rates").

An error e measured at T = T_1 < T_2 < ... has order p in T when e ~ C T^(-p); against the grid's largest step
size h it has order p when e ~ C h^p. Reported: local slopes between neighbours, and a least-squares order with a
95% interval over the asymptotic window (the last points). Li et al.'s step sizes carry log T factors, so an order
is also fitted after dividing a theorem's log factor out of the error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


class RateError(ValueError):
    """Too few or non-positive points to fit an order."""


@dataclass(frozen=True)
class OrderFit:
    order: float
    low: float  # 95% interval
    high: float
    intercept: float  # log C
    window: tuple[float, ...]  # the abscissae used
    points: int

    def __str__(self) -> str:
        if math.isfinite(self.low):
            return f"{self.order:.2f} [{self.low:.2f}, {self.high:.2f}]"
        return f"{self.order:.2f} [interval needs 3 points]"


def _logs(x: Sequence[float], e: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    e = np.asarray(e, dtype=float)
    if x.shape != e.shape or x.ndim != 1:
        raise RateError(f"abscissae and errors must be 1-D of one length, got {x.shape} and {e.shape}")
    if np.any(~np.isfinite(e)) or np.any(e <= 0) or np.any(x <= 0):
        raise RateError("orders need positive, finite errors and abscissae")
    return np.log(x), np.log(e)


def local_slopes(x: Sequence[float], e: Sequence[float], decreasing: bool = True) -> np.ndarray:
    """Order between neighbours: -d log e / d log x (decreasing=True, x = T) or +d log e / d log x (x = h)."""
    lx, le = _logs(x, e)
    slope = np.diff(le) / np.diff(lx)
    return -slope if decreasing else slope


def _linregress(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least squares y = slope x + intercept and the slope's standard error, by the formulas of
    scipy.stats.linregress (same numbers, without importing scipy.stats)."""
    n = x.size
    ssxm, ssxym, _, ssym = np.cov(x, y, bias=1).flat
    slope = ssxym / ssxm
    intercept = np.mean(y, None) - slope * np.mean(x, None)
    if n == 2:
        return slope, intercept, 0.0
    r = 0.0 if ssxm == 0.0 or ssym == 0.0 else min(max(ssxym / np.sqrt(ssxm * ssym), -1.0), 1.0)
    return slope, intercept, float(np.sqrt((1 - r**2) * ssym / ssxm / (n - 2)))


def fit_order(x: Sequence[float], e: Sequence[float], decreasing: bool = True, window: int | None = None,
              asymptotic: str | None = None) -> OrderFit:
    """Least-squares order over the asymptotic `window` (the largest T, or the smallest h when decreasing=False;
    default: half the points, at least 3) with a 95% interval from Student's t. `asymptotic` ('large' or 'small')
    overrides which end of x the window sits at."""
    lx, le = _logs(x, e)
    n = lx.size
    if n < 2:
        raise RateError(f"an order needs at least two points, got {n}")
    k = window if window is not None else max(3, (n + 1) // 2)
    k = min(max(k, 2), n)
    at_large = decreasing if asymptotic is None else asymptotic == "large"
    order = np.argsort(lx)
    lx, le = (lx[order][-k:], le[order][-k:]) if at_large else (lx[order][:k], le[order][:k])
    if np.ptp(lx) == 0:
        raise RateError("the points of the fit window share one abscissa (e.g. capped steps of equal size)")
    fitted_slope, intercept, stderr = _linregress(lx, le)
    slope = -fitted_slope if decreasing else fitted_slope
    if k >= 3:
        from scipy.special import stdtrit  # Student's t quantile; scipy.stats would cost ~1.5 s of import

        half = stdtrit(k - 2, 0.975) * stderr
    else:
        half = float("inf")
    return OrderFit(float(slope), float(slope - half), float(slope + half), float(intercept),
                    tuple(float(v) for v in np.exp(lx)), k)


def trend(x: Sequence[float], c: Sequence[float], window: int | None = None) -> str:
    """Describe a needed constant over the largest T: 'steady' (bound tight in shape), 'falling' (bound loose) or
    'rising' (the data decay more slowly than the bound's shape). The slope of log c against log T decides, with
    0.1 as the margin and the 95% interval required to clear it."""
    fit = fit_order(x, c, decreasing=False, window=window, asymptotic="large")
    if fit.low > 0.1:
        return "rising"
    if fit.high < -0.1:
        return "falling"
    return "steady"
