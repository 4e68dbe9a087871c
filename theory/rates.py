"""Order fitting and the verdicts read from it (shared/spec/metrics.md, "Rates").

An error e measured at T = T_1 < T_2 < ... has order p in T when e ~ C T^(-p); against the grid's largest step
size h it has order p when e ~ C h^p. Reported: local slopes between neighbours, and a least-squares order with a
95% interval over the asymptotic window (the last points). Li et al.'s step sizes carry log T factors, so an order
is also fitted after dividing a theorem's log factor out of the error.

A verdict (`Verdict`) is a fit read against a question, and it abstains whenever the fit cannot settle it:

- **How many points.** The interval is Student's t with n - 2 degrees of freedom on the residual scatter of
  log e about the fitted line. It needs a residual, so at least `MIN_POINTS` = 3 points with distinct abscissae in
  the fit window; with 2 a line passes through both exactly, there is nothing to measure the scatter with, no
  interval is given (never a zero-width one), and the verdict says "too few T to decide". Three suffice: for
  independent Gaussian scatter of log e (log-normal noise on e) the t interval covers the true order at its stated
  rate from one degree of freedom on (tests/test_verdicts.py checks the coverage at 3, 4 and 8 points), so a larger
  minimum would buy no validity, only abstentions. What one degree of freedom costs is width: the quantile is 12.71
  (4.30 at 2, 2.45 at 6, 1.96 in the limit), so a 3-point fit decides only when its points lie almost on a line, and
  otherwise its verdict is "undecided". (A minimum of 4 would also abstain on every 3-value sweep the studies
  default to: studies.tightness's T = 16, 64, 256 and the subspace family's d = 16, 256, 4096.)
- **What the interval excludes.** A decision word is given only when the whole interval lies on its side of a
  margin: 'rising' when it lies above +margin, 'falling' below -margin, 'steady' within [-margin, +margin]; an
  interval that straddles a margin is 'undecided', however close its centre is to zero. The same reading compares
  a measured order with an expected one ('above', 'below', 'agrees').
- **Margins.** `TREND_MARGIN` = 0.1 for the slope of a needed constant in log T: a factor 2^0.1 = 1.07 per doubling
  of T, below the local slope 1 / log T (0.14 to 0.48 for T = 8 ... 1024) of one missing power of log T, so a shape
  that is off by a log factor is not called steady. `ORDER_MARGIN` = 0.25 for an order against an expected one:
  half the distance between adjacent half-integer orders, so 'agrees' says the data are nearer this order than the
  half-orders on either side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MIN_POINTS = 3  # points with distinct abscissae a fit window needs for an interval (module docstring)
TREND_MARGIN = 0.1  # a needed constant's slope in log T that counts as moving
ORDER_MARGIN = 0.25  # distance from an expected order that still agrees with it
TOO_FEW = "too few"
UNDECIDED = "undecided"
FITTED = "fitted"
TRENDS = ("falling", "steady", "rising")
AGREEMENT = ("below", "agrees", "above")


class RateError(ValueError):
    """Too few or non-positive points to fit an order."""


@dataclass(frozen=True)
class OrderFit:
    order: float
    low: float  # 95% interval; -inf and inf when the window has fewer than MIN_POINTS distinct abscissae
    high: float
    intercept: float  # log C: the fitted line is log e = intercept - order log x (T), + order log x (h)
    window: tuple[float, ...]  # the abscissae used, ascending
    points: int

    @property
    def distinct(self) -> int:
        """Distinct abscissae in the window (capped steps can share one step size)."""
        return len(set(self.window))

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def __str__(self) -> str:
        if self.has_interval:
            return f"{self.order:.2f} [{self.low:.2f}, {self.high:.2f}]"
        return f"{self.order:.2f} [no interval from {self.distinct} distinct points]"


def _logs(x: Sequence[float], e: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    e = np.asarray(e, dtype=float)
    if x.shape != e.shape or x.ndim != 1:
        raise RateError(f"abscissae and errors must be 1-D of one length, got {x.shape} and {e.shape}")
    if np.any(~np.isfinite(e)) or np.any(e <= 0) or np.any(~np.isfinite(x)) or np.any(x <= 0):
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
        return slope, intercept, float("nan")  # no residual: no standard error
    r = 0.0 if ssxm == 0.0 or ssym == 0.0 else min(max(ssxym / np.sqrt(ssxm * ssym), -1.0), 1.0)
    return slope, intercept, float(np.sqrt((1 - r**2) * ssym / ssxm / (n - 2)))


def t_quantile(dof: int, level: float = 0.95) -> float:
    """Two-sided Student's t quantile: the half-width of a `level` interval in standard errors."""
    from scipy.special import stdtrit  # scipy.stats would cost ~1.5 s of import

    return float(stdtrit(dof, 0.5 + level / 2))


def fit_order(x: Sequence[float], e: Sequence[float], decreasing: bool = True, window: int | None = None,
              asymptotic: str | None = None) -> OrderFit:
    """Least-squares order over the asymptotic `window` (the largest T, or the smallest h when decreasing=False;
    default: half the points, at least MIN_POINTS) with a 95% interval from Student's t with points - 2 degrees of
    freedom; with fewer than MIN_POINTS distinct abscissae in the window the interval is (-inf, inf).
    `asymptotic` ('large' or 'small') overrides which end of x the window sits at."""
    lx, le = _logs(x, e)
    n = lx.size
    if n < 2:
        raise RateError(f"an order needs at least two points, got {n}")
    k = window if window is not None else max(MIN_POINTS, (n + 1) // 2)
    k = min(max(k, 2), n)
    at_large = decreasing if asymptotic is None else asymptotic == "large"
    order = np.argsort(lx, kind="stable")
    kept = order[-k:] if at_large else order[:k]
    lx, le, xs = lx[kept], le[kept], np.asarray(x, dtype=float)[kept]
    if np.ptp(lx) == 0:
        raise RateError("the points of the fit window share one abscissa (e.g. capped steps of equal size)")
    fitted_slope, intercept, stderr = _linregress(lx, le)
    slope = -fitted_slope if decreasing else fitted_slope
    if np.unique(lx).size >= MIN_POINTS:
        half = t_quantile(k - 2) * stderr
    else:
        half = float("inf")
    return OrderFit(float(slope), float(slope - half), float(slope + half), float(intercept),
                    tuple(float(v) for v in np.sort(xs)), k)


# ---------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class Verdict:
    """A fit read against one question, or an abstention: what tables, printed lines and figures all show.

    question: 'order' (a fitted order, compared with `reference` when one is expected) or 'trend' (the slope of a
    needed constant in log T). decision: TOO_FEW, UNDECIDED, FITTED (an order with nothing to compare it with), a
    word of AGREEMENT or a word of TRENDS. reason: one line saying why. subject: what the abscissae are ('T', 'd',
    'step sizes'), for the text."""

    question: str
    decision: str
    reason: str
    fit: OrderFit | None
    points: int  # points in the fit window (or given, when there was no fit)
    subject: str = "T"
    reference: float | None = None
    margin: float | None = None

    @property
    def decided(self) -> bool:
        """A finding: neither an abstention nor an order without a question."""
        return self.decision not in (TOO_FEW, UNDECIDED, FITTED)

    @property
    def window(self) -> tuple[float, ...]:
        return self.fit.window if self.fit is not None else ()

    @property
    def word(self) -> str:
        """The decision as the verdict says it."""
        return f"too few {self.subject} to decide" if self.decision == TOO_FEW else self.decision

    @property
    def span(self) -> str:
        """How many points and where: '4 points, T = 128 ... 1024'."""
        if not self.window:
            return _points(self.points)
        low, high = self.window[0], self.window[-1]
        return f"{_points(self.points)}, {self.subject} = {low:.4g} ... {high:.4g}"

    def __str__(self) -> str:
        if self.decision == TOO_FEW or self.fit is None:
            return f"{self.word} ({self.reason})"
        shown = f"{self.fit} ({self.span})"
        return shown if self.decision == FITTED else f"{shown}: {self.word}"


def _points(n: int) -> str:
    return f"{n} point" if n == 1 else f"{n} points"


def _too_few(question: str, reason: str, points: int, subject: str, fit: OrderFit | None = None,
             reference: float | None = None, margin: float | None = None) -> Verdict:
    return Verdict(question, TOO_FEW, reason, fit, points, subject, reference, margin)


def _fit_or_abstain(question: str, x, e, subject: str, reference, margin, **options) -> OrderFit | Verdict:
    """The fit, or the abstention that replaces it: fewer than MIN_POINTS points (or distinct abscissae) in the
    window; other refusals (non-positive values) are undecided, with the fit's own reason."""
    n = len(x)
    try:
        fit = fit_order(x, e, **options)
    except RateError as err:
        if n < MIN_POINTS or "share one abscissa" in str(err):
            return _too_few(question, f"{_points(n)}; an interval needs {MIN_POINTS}", n, subject,
                            reference=reference, margin=margin)
        return Verdict(question, UNDECIDED, str(err), None, n, subject, reference, margin)
    if fit.points < MIN_POINTS or fit.distinct < MIN_POINTS:
        shown = _points(fit.points) if fit.distinct == fit.points else \
            f"{_points(fit.points)}, {fit.distinct} distinct {subject}"
        return _too_few(question, f"the fit window holds {shown}; an interval needs {MIN_POINTS}", fit.points,
                        subject, fit, reference, margin)
    return fit


def _side(fit: OrderFit, reference: float, margin: float, words: tuple[str, str, str]) -> str:
    """words[2] when the interval lies above reference + margin, words[0] below reference - margin, words[1]
    within [reference - margin, reference + margin], UNDECIDED when it straddles a margin."""
    if fit.low > reference + margin:
        return words[2]
    if fit.high < reference - margin:
        return words[0]
    if reference - margin <= fit.low and fit.high <= reference + margin:
        return words[1]
    return UNDECIDED


def order_verdict(x: Sequence[float], e: Sequence[float], decreasing: bool = True, window: int | None = None,
                  asymptotic: str | None = None, expected: float | None = None, margin: float = ORDER_MARGIN,
                  subject: str = "T") -> Verdict:
    """The order of e in x (fit_order's arguments) as a verdict: TOO_FEW below MIN_POINTS; FITTED when nothing is
    expected; otherwise 'agrees' (the interval within expected +- margin), 'above', 'below' (the interval clear of
    that band) or UNDECIDED (it straddles an end of the band)."""
    fit = _fit_or_abstain("order", x, e, subject, expected, margin if expected is not None else None,
                          decreasing=decreasing, window=window, asymptotic=asymptotic)
    if isinstance(fit, Verdict):
        return fit
    if expected is None:
        return Verdict("order", FITTED, "no order to compare with", fit, fit.points, subject)
    decision = _side(fit, expected, margin, AGREEMENT)
    reason = (f"interval [{fit.low:.2f}, {fit.high:.2f}] against {expected:g} +- {margin:g}")
    return Verdict("order", decision, reason, fit, fit.points, subject, expected, margin)


def trend_verdict(x: Sequence[float], c: Sequence[float], window: int | None = None, margin: float = TREND_MARGIN,
                  subject: str = "T") -> Verdict:
    """How a needed constant c moves as x (T) grows, over the largest x: the slope of log c in log x with its 95%
    interval, 'rising' (above +margin), 'falling' (below -margin), 'steady' (within +-margin), UNDECIDED when the
    interval straddles a margin, TOO_FEW below MIN_POINTS."""
    fit = _fit_or_abstain("trend", x, c, subject, 0.0, margin, decreasing=False, window=window,
                          asymptotic="large")
    if isinstance(fit, Verdict):
        return fit
    decision = _side(fit, 0.0, margin, TRENDS)
    reason = f"slope {fit} in log {subject} against +-{margin:g}"
    return Verdict("trend", decision, reason, fit, fit.points, subject, 0.0, margin)


def trend(x: Sequence[float], c: Sequence[float], window: int | None = None) -> str:
    """The decision of trend_verdict: 'steady' (bound tight in shape), 'falling' (bound loose), 'rising' (the data
    decay more slowly than the bound's shape), UNDECIDED or TOO_FEW."""
    return trend_verdict(x, c, window).decision
