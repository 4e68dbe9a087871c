"""Laws of the verdict code: the order fit and its interval (coverage on noisy power laws, identities, invariances),
the abstentions (too few points, intervals that do not settle the question), the trend words, the theorem shapes
of theory.bounds, and the verdicts that studies.rates and studies.tightness read from them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from theory.bounds import BY_ID, THEOREMS, check_bound
from theory.rates import (
    AGREEMENT,
    FITTED,
    MIN_POINTS,
    ORDER_MARGIN,
    TOO_FEW,
    TREND_MARGIN,
    TRENDS,
    UNDECIDED,
    RateError,
    fit_order,
    local_slopes,
    order_verdict,
    t_quantile,
    trend,
    trend_verdict,
)

POWERS_OF_TWO = np.array([8, 16, 32, 64, 128, 256, 512, 1024], float)


def _band(n: int, rate: float = 0.95, z: float = 4.0) -> tuple[float, float]:
    """Binomial acceptance band for an empirical rate over n independent replicates (z standard deviations)."""
    half = z * math.sqrt(rate * (1 - rate) / n)
    return rate - half, rate + half


# ---------------------------------------------------------------------------- the interval covers at its rate
@pytest.mark.parametrize("points,replicates", [(3, 600), (4, 600), (8, 1000)])
def test_interval_covers_the_true_order_at_its_stated_rate(points, replicates):
    """e = C T^-p times log-normal noise of known sigma, fitted over all `points` T: the 95% interval covers p in
    95% of seeded replicates (binomial band). The same replicates with a normal quantile (1.96 instead of Student's
    t), a standard error missing its square root, or (at 8 points) a residual variance not divided by n - 2 fall
    outside the band: the band tells those mistakes apart."""
    rng = np.random.default_rng(1000 + points)
    T = POWERS_OF_TWO[-points:]
    p, C, sigma = 1.3, 2.5, 0.1
    covered, normal, no_sqrt, no_dof = 0, 0, 0, 0
    q = t_quantile(points - 2)
    for _ in range(replicates):
        e = C * T**-p * np.exp(sigma * rng.standard_normal(points))
        fit = fit_order(T, e, window=points)
        assert fit.points == points and fit.has_interval
        half = (fit.high - fit.low) / 2
        assert abs((fit.low + fit.high) / 2 - fit.order) < 1e-12  # symmetric about the estimate
        stderr = half / q
        miss = abs(fit.order - p)
        covered += miss <= half
        normal += miss <= 1.959964 * stderr
        no_sqrt += miss <= q * stderr**2
        no_dof += miss <= q * stderr * math.sqrt(points - 2)
    low, high = _band(replicates)
    assert low <= covered / replicates <= high, (covered / replicates, low, high)
    assert not low <= normal / replicates <= high
    assert not low <= no_sqrt / replicates <= high
    if points - 2 >= 6:  # with fewer degrees of freedom sqrt(n - 2) is too close to one for 600 replicates
        assert not low <= no_dof / replicates <= high


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 9), st.floats(-3, 3), st.floats(-4, 4), st.integers(0, 2**32 - 1))
def test_interval_is_the_closed_form_t_interval(points, p, log_c, seed):
    """Slope and 95% interval equal the textbook ones: least squares of log e on log T, standard error
    sqrt(RSS / (n - 2) / Sxx), Student's t quantile with n - 2 degrees of freedom (scipy.stats)."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    T = np.sort(rng.choice(np.arange(2, 5000), size=points, replace=False)).astype(float)
    e = np.exp(log_c) * T**-p * np.exp(0.3 * rng.standard_normal(points))
    fit = fit_order(T, e, window=points)
    x, y = np.log(T), np.log(e)
    A = np.vstack([x, np.ones_like(x)]).T
    (slope, intercept), rss, *_ = np.linalg.lstsq(A, y, rcond=None)
    rss = float(rss[0]) if rss.size else float(np.sum((A @ [slope, intercept] - y) ** 2))
    se = math.sqrt(rss / (points - 2) / np.sum((x - x.mean()) ** 2))
    half = stats.t.ppf(0.975, points - 2) * se
    assert fit.order == pytest.approx(-slope, abs=1e-9)
    assert fit.intercept == pytest.approx(intercept, abs=1e-8)
    assert fit.low == pytest.approx(-slope - half, abs=1e-8) and fit.high == pytest.approx(-slope + half, abs=1e-8)


# ---------------------------------------------------------------------------- fit laws
_errors = st.lists(st.floats(1e-6, 1e3), min_size=3, max_size=10)


@settings(max_examples=60, deadline=None)
@given(_errors, st.floats(1e-3, 1e3), st.floats(0.25, 4.0))
def test_fit_is_invariant_under_scaling_and_divides_under_powers(errors, scale, power):
    """Scaling e by a constant leaves order and interval and shifts log C by log(scale); scaling T by a constant
    leaves the order; T -> T^a divides order and interval by a; x = h with decreasing=False is the same fit with
    the sign turned, low and high swapped."""
    n = len(errors)
    T, e = POWERS_OF_TWO[:n] if n <= 8 else 2.0 ** np.arange(3, 3 + n), np.array(errors)
    base = fit_order(T, e)
    scaled = fit_order(T, scale * e)
    assert scaled.order == pytest.approx(base.order, abs=1e-9)
    assert scaled.high - scaled.low == pytest.approx(base.high - base.low, abs=1e-8)
    assert scaled.intercept == pytest.approx(base.intercept + math.log(scale), abs=1e-8)
    assert fit_order(scale * T, e).order == pytest.approx(base.order, abs=1e-9)
    powered = fit_order(T**power, e)
    assert powered.order == pytest.approx(base.order / power, abs=1e-9)
    assert powered.high - powered.low == pytest.approx((base.high - base.low) / power, abs=1e-8)
    rising = fit_order(T, e, decreasing=False, asymptotic="large")
    assert rising.order == pytest.approx(-base.order, abs=1e-9)
    assert rising.low == pytest.approx(-base.high, abs=1e-9) and rising.high == pytest.approx(-base.low, abs=1e-9)


@pytest.mark.parametrize("n", range(2, 13))
@settings(max_examples=8, deadline=None)
@given(st.data())
def test_default_window_is_the_asymptotic_half_and_ignores_the_rest(n, data):
    """The default window is the largest max(MIN_POINTS, ceil(n / 2)) T (the smallest h when decreasing=False):
    changing the errors outside it changes nothing, and the window's abscissae are exactly those."""
    T = 2.0 ** np.arange(3, 3 + n)
    e = np.array(data.draw(st.lists(st.floats(1e-4, 1.0), min_size=n, max_size=n)))
    k = min(max(MIN_POINTS, (n + 1) // 2), n)
    fit = fit_order(T, e)
    assert fit.points == k and fit.window == pytest.approx(tuple(T[-k:]))
    other = e.copy()
    other[: n - k] *= 7.0
    again = fit_order(T, other)
    assert again.order == pytest.approx(fit.order, abs=1e-12)
    h = 1.0 / T
    in_h = fit_order(h, e, decreasing=False)
    assert in_h.window == pytest.approx(tuple(sorted(h[-k:])))
    assert in_h.order == pytest.approx(fit.order, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-6, 1e3), min_size=2, max_size=10), st.floats(1e-3, 1e3), st.floats(0.25, 4.0))
def test_local_slopes_sign_convention_and_invariances(errors, scale, power):
    """local_slopes is -d log e / d log T between neighbours (+ for decreasing=False), exactly; it is unchanged by
    scaling e or T by a constant and divided by a under T -> T^a; on e = C T^-p it is p everywhere."""
    n = len(errors)
    T, e = 2.0 ** np.arange(3, 3 + n), np.array(errors)
    slopes = local_slopes(T, e)
    np.testing.assert_allclose(slopes, -np.diff(np.log(e)) / np.diff(np.log(T)), atol=1e-12)
    np.testing.assert_allclose(local_slopes(T, e, decreasing=False), -slopes, atol=1e-12)
    np.testing.assert_allclose(local_slopes(T, scale * e), slopes, atol=1e-9)
    np.testing.assert_allclose(local_slopes(scale * T, e), slopes, atol=1e-9)
    np.testing.assert_allclose(local_slopes(T**power, e), slopes / power, atol=1e-9)
    np.testing.assert_allclose(local_slopes(T, scale * T**-power), power, atol=1e-9)


def test_fit_refuses_what_it_cannot_fit():
    for x, e in (([1, 2, 3], [1.0, 0.0, 0.5]), ([1, 2, 3], [1.0, -1.0, 0.5]), ([0, 2, 3], [1.0, 1.0, 0.5]),
                 ([1, 2, 3], [1.0, float("nan"), 0.5]), ([1, 2], [1.0, 0.5, 0.2]), ([4], [1.0])):
        with pytest.raises(RateError):
            fit_order(x, e)
    with pytest.raises(RateError, match="share one abscissa"):
        fit_order([0.5, 0.5, 0.5], [1.0, 0.9, 0.8], decreasing=False)


# ---------------------------------------------------------------------------- abstentions
@settings(max_examples=40, deadline=None)
@given(st.integers(1, MIN_POINTS - 1), st.floats(0.1, 3.0), st.integers(0, 2**32 - 1))
def test_short_sweeps_abstain(n, p, seed):
    """Below MIN_POINTS the order and trend verdicts say too few, with no word of either vocabulary, and a 2-point
    fit never carries a finite (let alone zero-width) interval."""
    rng = np.random.default_rng(seed)
    T = POWERS_OF_TWO[:n]
    e = T**-p * np.exp(0.01 * rng.standard_normal(n))
    for verdict in (order_verdict(T, e), order_verdict(T, e, expected=p), trend_verdict(T, e)):
        assert verdict.decision == TOO_FEW and not verdict.decided
        assert verdict.points == n
        assert str(verdict).startswith("too few T to decide") and "[" not in str(verdict)
    assert trend(T, e) == TOO_FEW
    if n == 2:
        fit = fit_order(T, e)
        assert not fit.has_interval and fit.low == -math.inf and fit.high == math.inf
        assert "no interval" in str(fit)


def test_the_minimum_is_inclusive_and_counts_distinct_abscissae():
    """Exactly MIN_POINTS distinct T decide; MIN_POINTS - 1 do not; a window of MIN_POINTS points of which two
    share one step size (capped steps) does not; an explicit window below the minimum does not."""
    T = POWERS_OF_TWO[:MIN_POINTS]
    exact = 3.0 * T**-1.0
    assert order_verdict(T, exact, expected=1.0).decision == "agrees"
    assert order_verdict(T[1:], exact[1:], expected=1.0).decision == TOO_FEW
    h = np.array([0.5] * 2 + [0.5 / 2**k for k in range(1, MIN_POINTS - 1)])
    capped = order_verdict(h, 2.0 * h * np.array([1.1] + [1.0] * (MIN_POINTS - 1)), decreasing=False, expected=1.0,
                           subject="h")
    assert capped.decision == TOO_FEW and f"{MIN_POINTS - 1} distinct h" in capped.reason
    assert trend_verdict(POWERS_OF_TWO, POWERS_OF_TWO**0.5, window=MIN_POINTS - 1).decision == TOO_FEW
    assert trend_verdict(POWERS_OF_TWO, POWERS_OF_TWO**0.5, window=MIN_POINTS).decision == "rising"
    same_h = order_verdict([0.5] * 3, [1.0, 0.9, 0.8], decreasing=False, expected=1.0, subject="h")
    assert same_h.decision == TOO_FEW and same_h.fit is None
    assert order_verdict(T[:2], [0.1, 0.0]).decision == TOO_FEW  # refused values among too few points
    assert order_verdict(T, [0.1, 0.0, 0.05]).decision == UNDECIDED  # refused values among enough points


def test_one_power_of_log_T_is_not_steady_on_the_default_sweep():
    """The margin's reason (module docstring): a constant that grows like log T over the default window T = 128 ...
    1024 (local slope 1 / log T, 0.14 to 0.21) is rising, not steady; a constant one is steady."""
    assert trend_verdict(POWERS_OF_TWO, np.log(POWERS_OF_TWO)).decision == "rising"
    assert trend_verdict(POWERS_OF_TWO, np.full(8, 3.0)).decision == "steady"


# ---------------------------------------------------------------------------- decision words
@settings(max_examples=60, deadline=None)
@given(st.floats(-2, 2), st.floats(1e-3, 1e3), st.integers(MIN_POINTS, 8))
def test_trend_words_on_exact_power_laws(slope, scale, n):
    """Noise-free constants c = A T^s: the interval is (numerically) the point s, so the word is decided by s
    against the margin: rising above it, falling below minus it, steady within."""
    assume(abs(abs(slope) - TREND_MARGIN) > 1e-6)
    T = POWERS_OF_TWO[-n:]
    verdict = trend_verdict(T, scale * T**slope, window=n)
    expected = "rising" if slope > TREND_MARGIN else "falling" if slope < -TREND_MARGIN else "steady"
    assert verdict.decision == expected and verdict.decided
    assert verdict.fit.order == pytest.approx(slope, abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(st.floats(-1, 1), st.floats(0.0, 0.8), st.integers(MIN_POINTS, 8), st.integers(0, 2**32 - 1))
def test_a_trend_word_is_given_only_when_the_interval_excludes_the_others(slope, sigma, n, seed):
    """Whatever the data: 'rising' only with the whole interval above +margin, 'falling' only below -margin,
    'steady' only within [-margin, margin], and 'undecided' exactly when the interval straddles a margin."""
    rng = np.random.default_rng(seed)
    T = POWERS_OF_TWO[-n:]
    verdict = trend_verdict(T, 2.0 * T**slope * np.exp(sigma * rng.standard_normal(n)), window=n)
    fit, m = verdict.fit, TREND_MARGIN
    assert verdict.decision in (*TRENDS, UNDECIDED)
    assert (verdict.decision == "rising") == (fit.low > m)
    assert (verdict.decision == "falling") == (fit.high < -m)
    assert (verdict.decision == "steady") == (-m <= fit.low and fit.high <= m)
    straddles = fit.low < -m <= fit.high or fit.low <= m < fit.high
    assert (verdict.decision == UNDECIDED) == (straddles and not (-m <= fit.low and fit.high <= m))


@pytest.mark.parametrize("true_slope,wrong", [(0.4, ("steady", "falling")), (-0.4, ("steady", "rising")),
                                              (0.0, ("rising", "falling"))])
def test_a_wrong_trend_word_is_rare_on_noisy_data(true_slope, wrong):
    """Seeded noisy constants with a known slope (3 and 4 points, noise large enough that most intervals are
    wide): a word that the true slope contradicts appears in at most 2.5% of replicates plus the binomial band
    (the old rule, 'steady' unless rising or falling is established, would say steady most of the time here)."""
    rng = np.random.default_rng(7)
    replicates = 400
    for n in (3, 4):
        T = POWERS_OF_TWO[-n:]
        words = [trend_verdict(T, T**true_slope * np.exp(0.3 * rng.standard_normal(n)), window=n).decision
                 for _ in range(replicates)]
        share = sum(w in wrong for w in words) / replicates
        assert share <= 0.025 + 4 * math.sqrt(0.025 * 0.975 / replicates), (n, share)
        if true_slope:
            assert words.count(UNDECIDED) > replicates / 2  # wide intervals abstain


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 4.0), st.floats(-1.0, 1.0), st.floats(0.0, 0.3), st.integers(0, 2**32 - 1))
def test_agreement_with_an_expected_order(expected, offset, sigma, seed):
    """order_verdict against an expected order: 'agrees' only with the interval inside expected +- ORDER_MARGIN,
    'above' / 'below' only with it clear of that band, otherwise undecided; without an expectation, FITTED (an
    order, not a finding); on exact data the word follows the offset."""
    rng = np.random.default_rng(seed)
    T = POWERS_OF_TWO
    p = expected + offset
    e = 0.7 * T**-p * np.exp(sigma * rng.standard_normal(T.size))
    verdict = order_verdict(T, e, expected=expected)
    fit, m = verdict.fit, ORDER_MARGIN
    assert verdict.decision in (*AGREEMENT, UNDECIDED) and verdict.reference == expected
    assert (verdict.decision == "above") == (fit.low > expected + m)
    assert (verdict.decision == "below") == (fit.high < expected - m)
    assert (verdict.decision == "agrees") == (expected - m <= fit.low and fit.high <= expected + m)
    assert order_verdict(T, e).decision == FITTED and not order_verdict(T, e).decided
    if abs(abs(offset) - m) > 1e-6:
        exact = order_verdict(T, 0.7 * T**-p, expected=expected).decision
        assert exact == ("above" if offset > m else "below" if offset < -m else "agrees")


def test_verdict_text_says_points_window_and_word():
    T = POWERS_OF_TWO
    verdict = trend_verdict(T, T**0.5)
    assert verdict.points == 4 and verdict.window == pytest.approx((128.0, 256.0, 512.0, 1024.0))
    assert str(verdict).endswith(": rising") and "4 points, T = 128 ... 1024" in str(verdict)
    few = order_verdict(T[:2], T[:2] ** -1.0, subject="d")
    assert few.word == "too few d to decide" and few.window == (8.0, 16.0) and "holds 2 points" in few.reason
    assert order_verdict([8.0], [0.1]).window == ()


# ---------------------------------------------------------------------------- theorem shapes
def _log_slope(theorem, T: float, d: float, factor: float = 2.0) -> float:
    return math.log(theorem.shape(factor * T, d) / theorem.shape(T, d)) / math.log(factor)


@pytest.mark.parametrize("theorem", THEOREMS, ids=[t.id for t in THEOREMS])
def test_each_shape_has_its_stated_order_log_power_and_d_power(theorem):
    """For large T, shape(2T) / shape(T) = 2^-order times the log factor's (log 2T / log T)^log_power (none when
    the log power is unknown: the shape leaves the polylog out); shape(T, 2d) / shape(T, d) = 2^d_power at large
    T (the leading term)."""
    T, d = 1e14, 3.0
    logs = theorem.log_power if math.isfinite(theorem.log_power) else 0.0
    expected = -theorem.order + logs * math.log(math.log(2 * T) / math.log(T)) / math.log(2)
    assert _log_slope(theorem, T, d) == pytest.approx(expected, abs=1e-4)
    d_slope = math.log(theorem.shape(T, 2 * d) / theorem.shape(T, d)) / math.log(2)
    assert d_slope == pytest.approx(theorem.d_power, abs=1e-4)
    assert theorem.metric in ("tv", "kl", "kl_reverse") and theorem.bound in ("upper", "lower")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(THEOREMS), st.floats(2.0, 1e6), st.integers(1, 4096), st.floats(1e-8, 1e8))
def test_needed_constant_is_measured_over_shape(theorem, T, d, c):
    """needed_constant(T, d, c shape(T, d)) = c, and check_bound's constants are value / shape at each T."""
    assert theorem.needed_constant(T, d, c * theorem.shape(T, d)) == pytest.approx(c, rel=1e-12)
    Ts = [T, 2 * T, 4 * T]
    values = [c * theorem.shape(t, d) for t in Ts]
    check = check_bound(theorem, Ts, d, values)
    assert check.constants == pytest.approx((c, c, c), rel=1e-12) and check.last == pytest.approx(c, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(THEOREMS), st.sampled_from([-0.5, 0.0, 0.5]), st.integers(1, 64))
def test_check_bound_reads_the_constants_trend(theorem, drift, d):
    """Data on the theorem's shape times T^drift: the needed constant is steady (drift 0), rising (0.5: the data
    decay more slowly than the shape) or falling (-0.5: the bound is loose); two T are too few."""
    Ts = list(POWERS_OF_TWO)
    values = [0.3 * theorem.shape(T, d) * T**drift for T in Ts]
    check = check_bound(theorem, Ts, d, values)
    assert check.trend == {-0.5: "falling", 0.0: "steady", 0.5: "rising"}[drift]
    assert check.verdict.points == 4
    assert check_bound(theorem, Ts[:2], d, values[:2]).trend == TOO_FEW
    assert check_bound(theorem, Ts, d, values, window=len(Ts)).verdict.points == len(Ts)


# ---------------------------------------------------------------------------- studies.tightness
def test_tightness_classifies_tight_loose_violated_and_abstains():
    from studies.tightness import classify, verdict_text

    Ts = [16, 64, 256]
    assert classify(Ts, [2.0, 2.0, 2.0]).decision == "steady"
    assert classify(Ts, [2.0 * T**-0.5 for T in Ts]).decision == "falling"
    assert classify(Ts, [2.0 * T**0.5 for T in Ts]).decision == "rising"
    wide = classify(Ts, [2.0, 3.0, 2.2])
    assert wide.decision == UNDECIDED and verdict_text(wide).startswith("undecided: slope")
    assert classify(Ts[:2], [2.0, 3.0]).decision == TOO_FEW
    assert verdict_text(classify(Ts[:2], [2.0, 3.0])).startswith("too few T to decide")
    assert "loose in T" in verdict_text(classify(Ts, [2.0 * T**-0.5 for T in Ts]))
    assert "contradicted" in verdict_text(classify(Ts, [2.0 * T**0.5 for T in Ts]))
    assert verdict_text(classify(Ts, [2.0] * 3), "lower").startswith("a lower bound: a worst-case search does not")
    # every T enters the fit (not a window of the largest half)
    assert classify([8, 16, 32, 64, 128], [1.0, 1.0, 1.0, 1.0, 1.0]).points == 5


def test_tightness_summary_on_constructed_worst_values():
    """summarise on a frame whose worst values follow li2024-sharp-ode's shape d / T times T^drift: that theorem's
    trend is steady, rising or falling with the drift; each row carries the points of its fit."""
    import argparse

    from studies import tightness

    Ts = [8, 16, 32]
    args = argparse.Namespace(min_var=0.01, d=1, seed=0, schedule="li2023")
    shape = BY_ID["li2024-sharp-ode"].shape
    for drift, word in ((0.0, "steady"), (0.6, "rising"), (-0.6, "falling")):
        frame = pd.DataFrame({"sampler": "ddim", "metric": "tv", "T": Ts,
                              "value": [0.4 * shape(T, 1) * T**drift for T in Ts]})
        table = tightness.summarise(frame, args)
        mine = table[table["theorem"] == "li2024-sharp-ode"]
        assert set(mine["trend"]) == {word} and set(mine["points"]) == {3}, mine
        assert mine["worst_constant"].to_numpy() == pytest.approx([0.4 * T**drift for T in Ts], rel=1e-12)


# ---------------------------------------------------------------------------- studies.rates
def _frame(sampler: str, values, Ts, steps=None, metric: str = "tv", flagged=None) -> pd.DataFrame:
    Ts = list(Ts)
    return pd.DataFrame({"sampler": sampler, "d": 1, "metric": metric, "T": Ts, "value": list(values),
                         "max_step": list(steps) if steps is not None else [1.0 / T for T in Ts],
                         "flagged": flagged if flagged is not None else [False] * len(Ts)})


def test_rates_verdict_reads_orders_agreement_and_trends_from_one_object():
    """ddim (declared order 1) with e = 0.2 h^p on h = 1/T: the step-size verdict agrees for p = 1, is above for
    p = 1.5 and below for p = 0.6; li2024-sharp-ode's constant (shape d / T) is steady for p = 1, falling for 1.5,
    rising for 0.6; orders.csv and the verdict line say the same, with points and window."""
    from studies.rates import fit_orders, metric_verdicts

    for p, agreement, constant in ((1.0, "agrees", "steady"), (1.5, "above", "falling"), (0.6, "below", "rising")):
        frame = _frame("ddim", 0.2 * POWERS_OF_TWO**-p, POWERS_OF_TWO)
        (v,) = metric_verdicts(frame, None)
        assert v.in_step.decision == agreement and v.in_T.decision == FITTED
        sharp = next(t for t in v.theorems if t.theorem.id == "li2024-sharp-ode")
        assert sharp.check.trend == constant
        orders, lines = fit_orders(frame, None)
        step = orders[orders["against"] == "max_step"].iloc[0]
        assert step["decision"] == agreement and step["points"] == 4
        assert step["window_low"] == pytest.approx(1 / 1024) and step["window_high"] == pytest.approx(1 / 128)
        row = orders[orders["theorem"] == "li2024-sharp-ode"].iloc[0]
        assert row["decision"] == constant == row["constant_trend"]
        assert f"(declared 1: {agreement})" in lines[0] and "4 points, T = 128 ... 1024" in lines[0]
        assert f"li2024-sharp-ode proves 1, needed constant {0.2 * 1024 ** (1 - p):.3g} ({constant})" in lines[0]
    (v,) = metric_verdicts(_frame("ddim", 0.2 / POWERS_OF_TWO, POWERS_OF_TWO), 8)  # --window reaches every fit
    assert v.in_T.points == v.in_step.points == 8 and all(t.check.verdict.points == 8 for t in v.theorems)


def test_rates_verdict_divides_log_factors_and_measures_the_polylog():
    """liyan2024-ddpm's shape d log^3 T / T: data on it have order 1 after dividing log^3 T; ode-accel data equal to
    li2023-accel-ode's shape times log^2.5 T have a rising constant whose polylog note says log^2.5 T."""
    from studies.rates import metric_verdicts

    theorem = BY_ID["liyan2024-ddpm"]
    (v,) = metric_verdicts(_frame("ddpm", [0.1 * theorem.shape(T, 1) for T in POWERS_OF_TWO], POWERS_OF_TWO), None)
    t = next(t for t in v.theorems if t.theorem.id == "liyan2024-ddpm")
    assert t.against == "T/log^3" and t.order.fit.order == pytest.approx(1.0, abs=1e-9)
    assert t.check.trend == "steady"
    accel = BY_ID["li2023-accel-ode"]
    values = [0.1 * accel.shape(T, 1) * math.log(T) ** 2.5 for T in POWERS_OF_TWO]
    (v,) = metric_verdicts(_frame("ode-accel", values, POWERS_OF_TWO), None)
    t = next(t for t in v.theorems if t.theorem.id == "li2023-accel-ode")
    assert t.check.trend == "rising" and "the data need log^2.5 T" in t.note
    (v,) = metric_verdicts(_frame("ode-accel", [0.1 * accel.shape(T, 1) for T in POWERS_OF_TWO], POWERS_OF_TWO), None)
    t = next(t for t in v.theorems if t.theorem.id == "li2023-accel-ode")
    assert t.check.trend == "steady" and t.note == ""  # the polylog note only where the constant rises


def test_rates_short_sweep_abstains_with_no_order_presented():
    """Two trustworthy T (the others flagged): the verdict says too few T to decide, with no order, interval or trend
    word, and orders.csv carries no order for it; three distinct T decide; capped equal step sizes abstain in h."""
    from studies.rates import fit_orders

    Ts = [8, 16, 32, 64]
    frame = _frame("ddim", [0.2 / T for T in Ts], Ts, flagged=[True, True, False, False])
    orders, lines = fit_orders(frame, None)
    assert lines == ["verdict ddim: TV: too few T to decide (the fit window holds 2 points; an interval needs 3)"]
    assert list(orders["decision"]) == [TOO_FEW] and orders["order"].iloc[0] == "" and orders["points"].iloc[0] == 2
    for word in (*TRENDS, *AGREEMENT, UNDECIDED, "["):
        assert word not in lines[0]
    frame = _frame("ddim", [0.2 / T for T in Ts[1:]], Ts[1:], steps=[0.5, 0.5, 0.25])
    orders, lines = fit_orders(frame, None)
    assert "in step size too few h to decide" in lines[0] and "TV order 1.00 [1.00, 1.00] in T" in lines[0]
    assert orders[orders["against"] == "max_step"]["decision"].iloc[0] == TOO_FEW


def test_rates_flagged_rows_are_left_out_of_the_fit():
    """Flagging a row gives the fit of the frame without that row."""
    from studies.rates import metric_verdicts

    rng = np.random.default_rng(3)
    values = POWERS_OF_TWO**-1.2 * np.exp(0.05 * rng.standard_normal(8))
    flagged = [False] * 7 + [True]
    (with_flag,) = metric_verdicts(_frame("ddim", values, POWERS_OF_TWO, flagged=flagged), None)
    (without,) = metric_verdicts(_frame("ddim", values[:7], POWERS_OF_TWO[:7]), None)
    assert with_flag.in_T.fit == without.in_T.fit and with_flag.Ts == tuple(POWERS_OF_TWO[:7])


def test_rates_holds_kl_path_against_the_kl_upper_bounds_only():
    """kl_path rows are read against the theorems that bound KL, lower bounds left out (a lower bound on the output
    KL says nothing about the path KL's shape)."""
    from studies.rates import metric_verdicts
    from theory.bounds import theorems_for

    (v,) = metric_verdicts(_frame("ddpm", 0.3 / POWERS_OF_TWO, POWERS_OF_TWO, metric="kl_path"), None)
    expected = [t.id for t in theorems_for("ddpm", "kl") if t.bound != "lower"]
    assert [t.theorem.id for t in v.theorems] == expected and "benton2023-ddpm" in expected


def test_rates_kl_expects_twice_the_declared_order_and_ignores_zero_values():
    """A KL row is held against twice the sampler's declared (TV) order; rows with a zero value are left out of the
    fit, as flagged ones are."""
    from studies.rates import metric_verdicts

    steps = 1.0 / POWERS_OF_TWO
    (v,) = metric_verdicts(_frame("ddim", 0.2 * steps**2, POWERS_OF_TWO, metric="kl"), None)
    assert v.declared == 2.0 and v.in_step.decision == "agrees"
    values = 0.2 * steps**2
    values[-1] = 0.0
    (z,) = metric_verdicts(_frame("ddim", values, POWERS_OF_TWO, metric="kl"), None)
    assert z.Ts == tuple(POWERS_OF_TWO[:-1]) and z.in_T.fit.order == pytest.approx(2.0, abs=1e-9)


# ---------------------------------------------------------------------------- studies.score_error
def _score_frame(exponent: float, sizes, baseline: float = 0.01, error: float = 1e-9) -> pd.DataFrame:
    rows = [{"target": "t", "d": 1, "sampler": "ddim", "stochastic": False, "metric": "tv", "field": "none",
             "eps_score": 0.0, "eps_jacobi": 0.0, "value": baseline, "numerical_error": error}]
    for size in sizes:
        for field, column in (("smooth", "eps_score"), ("high-frequency", "eps_jacobi")):
            rows.append({"target": "t", "d": 1, "sampler": "ddim", "stochastic": False, "metric": "tv",
                         "field": field, "eps_score": size if column == "eps_score" else 0.001,
                         "eps_jacobi": size if column == "eps_jacobi" else 0.001,
                         "value": baseline + 0.5 * size**exponent, "numerical_error": error})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("exponent,word", [(1.0, "agrees"), (2.0, "above"), (0.5, "below")])
def test_score_error_exponent_of_the_excess_and_its_decision(exponent, word):
    """Excess error 0.5 size^a over the exact-score baseline: the fitted exponent is a, its decision against 1 follows
    a, and each row counts its points."""
    from studies.score_error import floors

    table = floors(_score_frame(exponent, [0.01, 0.03, 0.1]))
    assert len(table) == 2 and set(table["decision"]) == {word} and set(table["points"]) == {3}
    assert table["exponent"].to_numpy() == pytest.approx([exponent, exponent], abs=1e-9)


def test_score_error_with_an_excess_below_the_noise_has_too_few_points():
    """Sizes whose excess is not clear of three numerical errors do not count: two usable sizes are too few, and no
    exponent is given."""
    from studies.score_error import floors

    frame = _score_frame(1.0, [1e-9, 0.03, 0.1], error=1e-8)
    table = floors(frame)
    assert set(table["points"]) == {2} and set(table["decision"]) == {TOO_FEW} and table["exponent"].isna().all()


def test_score_error_exponent_is_fitted_over_every_usable_size():
    """With five usable sizes the exponent is the least-squares slope over all five (not an asymptotic window)."""
    from studies.score_error import floors

    sizes = [0.001, 0.003, 0.01, 0.03, 0.1]
    frame = _score_frame(1.0, sizes)
    bend = frame["field"].ne("none") & (frame[["eps_score", "eps_jacobi"]].max(axis=1) > 0.02)
    frame.loc[bend, "value"] = 0.01 + 0.5 * frame.loc[bend, ["eps_score", "eps_jacobi"]].max(axis=1) ** 2 * 10
    table = floors(frame)
    excess = frame[frame["field"] == "smooth"].sort_values("eps_score")
    slope = np.polyfit(np.log(excess["eps_score"]), np.log(excess["value"] - 0.01), 1)[0]
    assert set(table["points"]) == {5} and table["exponent"].to_numpy() == pytest.approx([slope, slope], abs=1e-9)


def test_margins_are_inclusive_for_the_middle_word():
    """An interval that touches a margin from inside is within it (steady, agrees); one that clears it is not."""
    from theory.rates import OrderFit, _side

    def fit(low, high):
        return OrderFit((low + high) / 2, low, high, 0.0, (1.0, 2.0, 4.0), 3)

    m = TREND_MARGIN
    assert _side(fit(m, m), 0.0, m, TRENDS) == "steady" and _side(fit(-m, -m), 0.0, m, TRENDS) == "steady"
    assert _side(fit(-m, m), 0.0, m, TRENDS) == "steady"
    assert _side(fit(np.nextafter(m, 1), 1.0), 0.0, m, TRENDS) == "rising"
    assert _side(fit(-1.0, np.nextafter(-m, -1)), 0.0, m, TRENDS) == "falling"
    assert _side(fit(-m, np.nextafter(m, 1)), 0.0, m, TRENDS) == UNDECIDED
    assert _side(fit(2 - ORDER_MARGIN, 2 + ORDER_MARGIN), 2.0, ORDER_MARGIN, AGREEMENT) == "agrees"


# ---------------------------------------------------------------------------- studies.dimension
def _dimension_frame(ds, Ts, a: float = 1.0, p: float = 2.0) -> pd.DataFrame:
    return pd.DataFrame([{"family": "gaussian", "sampler": "ddim", "metric": "kl", "T": T, "d": d, "k": "",
                          "value": 0.01 * d**a * (T / 16) ** -p, "flagged": False} for T in Ts for d in ds])


def test_dimension_exponents_of_the_error_and_of_T_star():
    """KL = 0.01 d^a (T / 16)^-p: the error's d-exponent is a at every T and the T needed for a fixed KL grows
    like d^(a / p), each with its points; fewer than MIN_POINTS values of d give no exponent."""
    from studies.dimension import fit_exponents

    table = fit_exponents(_dimension_frame([1, 2, 4, 8], [16, 32, 64, 128], a=1.0, p=2.0), 0.05, 0.005)
    at_T = table[table["kind"] == "error_at_T"]
    assert len(at_T) == 4 and at_T["exponent"].to_numpy() == pytest.approx([1.0] * 4, abs=1e-9)
    assert set(at_T["points"]) == {4}
    star = table[table["kind"] == "T_star"].iloc[0]
    assert star["exponent"] == pytest.approx(0.5, abs=1e-9) and star["points"] == 4
    few = fit_exponents(_dimension_frame([1, 2], [16, 32, 64, 128]), 0.05, 0.005)
    assert few.empty
    three = fit_exponents(_dimension_frame([1, 2, 4], [16, 32, 64, 128]), 0.05, 0.005)
    assert set(three["points"]) == {MIN_POINTS}
