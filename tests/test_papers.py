"""studies.papers: the published experiments' target, the near-singular KL, the diagonal route, the study end to end."""

from __future__ import annotations

import mpmath
import numpy as np
import pandas as pd
import pytest
import torch

from exact.base import DivergenceError, initial_law
from exact.gaussian import diagonal_kl_terms, diagonal_output_law, gaussian_kl, gaussian_output_law
from samplers import get_sampler, sampler_grid
from samplers.base import MarkovSampler, SamplerInfo, Transition
from studies import papers
from theory.catalog import appendix_a_gaussian, get_target
import theory.rates as rates_theory
from theory.targets import DTYPE, TargetError


# ---------------------------------------------------------------------------- the App. A target
def test_appendix_a_target_is_seeded_uniform_with_an_exact_zero_block():
    target = appendix_a_gaussian(100, 10, seed=3)
    cov = target.covs[0]
    v = torch.diagonal(cov)
    assert torch.equal(cov, torch.diag(v)) and target.diagonal and target.is_gaussian
    assert torch.equal(target.means[0], torch.zeros(100, dtype=DTYPE))
    assert bool((v[:10] > 0).all() and (v[:10] < 10).all())
    assert bool((v[10:] == 0).all())  # exactly zero, not small
    assert torch.equal(v, torch.diagonal(appendix_a_gaussian(100, 10, seed=3).covs[0]))  # seeded
    assert not torch.equal(v[:10], torch.diagonal(appendix_a_gaussian(100, 10, seed=4).covs[0])[:10])
    # the first k draws of the seed: a larger k extends a smaller one, and k = d is the default (no zero block)
    assert torch.equal(torch.diagonal(appendix_a_gaussian(500, 100, seed=3).covs[0])[:10], v[:10])
    assert bool((torch.diagonal(appendix_a_gaussian(20).covs[0]) > 0).all())
    assert get_target("diag-uniform:10", d=100).fingerprint() == appendix_a_gaussian(100, 10).fingerprint()
    assert get_target("diag-uniform", d=7).fingerprint() == appendix_a_gaussian(7).fingerprint()


@pytest.mark.parametrize("d, k", [(5, 6), (5, -1), (0, 0)])
def test_appendix_a_target_refuses_bad_sizes(d, k):
    with pytest.raises(TargetError, match=str(k) if d else str(d)):
        appendix_a_gaussian(d, k)


# ---------------------------------------------------------------------------- the near-singular KL
def _kl_1d_mp(m1, v1, m2, v2) -> float:
    """KL(N(m1, v1) || N(m2, v2)) at 50 digits from the textbook formula."""
    with mpmath.workdps(50):
        m1, v1, m2, v2 = (mpmath.mpf(float(x)) for x in (m1, v1, m2, v2))
        return float((v1 / v2 - 1 - mpmath.log(v1 / v2) + (m1 - m2) ** 2 / v2) / 2)


@pytest.mark.parametrize("tau", [1e-6, 1e-10, 1e-14])
@pytest.mark.parametrize("x", [1e-3, 1e-6, -2e-7])
def test_diagonal_kl_keeps_relative_accuracy_at_tiny_variances(tau, x):
    v2 = torch.tensor([tau, 4.0], dtype=DTYPE)
    v1 = v2 * (1 + torch.tensor([x, 0.5 * x], dtype=DTYPE))
    m1, m2 = torch.tensor([0.0, 1e-3], dtype=DTYPE), torch.zeros(2, dtype=DTYPE)
    terms = diagonal_kl_terms(m1, v1, m2, v2)
    for j in range(2):
        exact = _kl_1d_mp(m1[j], v1[j], m2[j], v2[j])
        assert abs(float(terms[j]) - exact) <= 1e-9 * exact
    # the sum is KL of the product law: the general d-dimensional route agrees where it is accurate (x = 1e-3)
    if x == 1e-3:
        full = gaussian_kl(m1, torch.diag(v1), m2, torch.diag(v2))
        assert abs(full - float(terms.sum())) <= 1e-6 * full


def _reference_zero_coordinate(schedule, v: float) -> tuple[float, float]:
    """Li & Jiao's chain on one coordinate of variance v (score -y / ((1 - tau) v + tau)), written again from the
    sum form of spec frontier.md section 1 at 40 digits: the output variance and q's at tau_1, both from the draw."""
    with mpmath.workdps(40):
        def g_factor(tau):  # g = factor * y
            return -1 / (((1 - tau) * v + tau) * 2 * (1 - tau) ** mpmath.mpf(1.5))

        N, K = schedule.N, schedule.K
        tau_top = mpmath.mpf(float(schedule.drawn(schedule.T + 1)))
        var = (1 - tau_top) * v + tau_top  # q at the first drawn level
        for k in range(K):
            taus, hats = schedule.round_levels(k)
            taus = [mpmath.mpf(float(t)) for t in taus]
            hats = [mpmath.mpf(float(h)) for h in hats]
            ys = [mpmath.mpf(1)]  # Y_(k,n) per unit Y_(k,0)
            for n in range(1, N + 1):
                u = ys[0] / mpmath.sqrt(1 - taus[0]) + g_factor(taus[0]) * ys[0] * (taus[0] - hats[0])
                for i in range(1, n):
                    u += g_factor(taus[i]) * ys[i] * (hats[i - 1] - hats[i])
                u += g_factor(taus[n - 1]) * ys[n - 1] * (hats[n - 1] - taus[n])
                ys.append(mpmath.sqrt(1 - taus[n]) * u)
            up = taus[N // 2]
            scale2, noise2 = (1 - up) / (1 - taus[N]), (up - taus[N]) / (1 - taus[N])
            var = scale2 * ys[N] ** 2 * var + noise2
        tau_1 = mpmath.mpf(float(schedule.drawn(1)))
        return var, (1 - tau_1) * v + tau_1


@pytest.mark.parametrize("T", [21, 81, 321])
def test_zero_variance_coordinates_lose_nothing_against_a_40_digit_recursion(T):
    target = appendix_a_gaussian(3, 1, seed=0)  # one variance in [0, 10], two exact zeros
    sampler = get_sampler("lijiao-rmp?K=10&draw=1")
    grid = sampler_grid(sampler, T, "li2023")
    start = initial_law(target, grid, "exact")
    mean, var, _, _ = diagonal_output_law(target, sampler, grid, start.means[0], torch.diagonal(start.covs[0]))
    mq, vq = papers.output_variance_of_q(target, grid)
    terms = diagonal_kl_terms(mean, var, mq, vq)
    schedule = sampler.schedule(T)
    tau_1 = float(schedule.drawn(1))
    assert float(vq[1]) < 1e-5 and float(vq[1]) == pytest.approx(tau_1, rel=1e-15)  # nearly singular, from tau
    # The only digits float64 cannot keep: the model is handed abar = 1 - tau, which knows tau to 2^-53 absolute,
    # a relative 2^-53 / tau_1 at the output level. Nothing else may be lost (the KL terms included).
    seam = 2.0**-53 / tau_1
    for j, v in ((0, float(torch.diagonal(target.covs[0])[0])), (1, 0.0)):
        out, q = _reference_zero_coordinate(schedule, v)
        with mpmath.workdps(40):
            r = out / q
            exact, x = float((r - 1 - mpmath.log(r)) / 2), float(r - 1)
        assert abs(float(var[j]) - float(out)) <= seam * float(out)
        assert abs(float(terms[j]) - exact) <= (abs(x) + seam) * seam + 1e-12 * exact
    assert float(terms[1]) == float(terms[2])  # the zero block: identical coordinates


# ---------------------------------------------------------------------------- the diagonal route is the Gaussian engine
@pytest.mark.parametrize("name, T", [("lijiao-rmp?K=10&draw=2", 21), ("ddpm", 12), ("ddim", 12)])
def test_diagonal_route_equals_the_full_gaussian_engine(name, T):
    target = appendix_a_gaussian(6, 3, seed=1)
    sampler = get_sampler(name)
    grid = sampler_grid(sampler, T, "li2023")
    start = initial_law(target, grid, "exact")
    mean, var, gap, nfe = diagonal_output_law(target, sampler, grid, start.means[0], torch.diagonal(start.covs[0]))
    full_mean, full_cov = gaussian_output_law(target, sampler, grid, start.means[0], start.covs[0])
    assert gap <= 1e-12
    assert nfe == sampler.nfe(grid)
    assert torch.allclose(mean, full_mean, atol=1e-12)
    off = full_cov - torch.diag(torch.diagonal(full_cov))
    assert float(off.abs().max()) <= 1e-12 * float(full_cov.abs().max())
    assert torch.allclose(var, torch.diagonal(full_cov), rtol=1e-9, atol=1e-15)


class _Swap(MarkovSampler):
    """A chain whose map mixes coordinates (reverses their order): no coordinate-wise route."""

    info = SamplerInfo("swap", stochastic=True, evals_per_step=0, order=0.0, reference="test")

    def transitions(self, model, grid):
        for _ in range(grid.steps):
            yield Transition(lambda y: y.flip(-1), 0.1)


def test_diagonal_route_refuses_a_sampler_that_mixes_coordinates():
    target = appendix_a_gaussian(4, 4)
    grid = sampler_grid(None, 5, "li2023")
    with pytest.raises(DivergenceError, match="coordinate-wise"):
        diagonal_output_law(target, _Swap(), grid, torch.zeros(4, dtype=DTYPE), torch.ones(4, dtype=DTYPE))
    with pytest.raises(DivergenceError, match="diagonal"):
        diagonal_output_law(get_target("gaussian", d=3), get_sampler("ddpm"), grid, torch.zeros(3, dtype=DTYPE),
                            torch.ones(3, dtype=DTYPE))


# ---------------------------------------------------------------------------- verdicts
T_SWEEP = np.array([20.0, 40, 80, 160, 320, 640, 1280])


def _claim_verdict(values, claimed=3.0):
    return papers._claim("c", "s", "set", "m", T_SWEEP[: len(values)], values, claimed)["verdict"]


def test_verdict_agrees_disagrees_and_abstains():
    """The claim table reads the suite's order verdict (theory.rates.order_verdict): an exact T^-3 agrees with 3,
    an exact T^-2 disagrees (its interval is clear of 3 +- 0.25), a noisy T^-3 whose interval straddles the band is
    undecided, and two points are too few."""
    assert _claim_verdict(T_SWEEP**-3.0) == "agree"
    assert _claim_verdict(T_SWEEP**-2.0) == "disagree"
    assert _claim_verdict(T_SWEEP**-3.0 * np.exp([0.0, 0.4, -0.4, 0.4, -0.4, 0.4, -0.4])) == "undecided"
    assert _claim_verdict(T_SWEEP[:2] ** -3.0) == "undecided"
    assert papers.verdict(rates_theory.order_verdict(T_SWEEP, T_SWEEP**-3.0, expected=3.0)) == "agree"


# ---------------------------------------------------------------------------- the study end to end
TINY = ["--dk", "6,3", "--T", "21", "81", "321", "--draws", "2", "--ddpm-T", "17", "65", "257", "--ddpm-d", "2", "4",
        "8", "--ddpm-at", "33", "--no-plot"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("papers")
    assert papers.main([*TINY, "--out", str(out)]) == 0
    return out


def test_study_writes_the_claim_table(tiny_run, capsys):
    claims = pd.read_csv(tiny_run / "claims.csv")
    assert list(claims.columns) == papers.CLAIM_COLUMNS
    # Li & Jiao: median and worst; Jiao, Zhou & Li: against T and against d, each in both directions
    assert sorted(claims["claimed_order"]) == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    assert set(claims["verdict"]) <= {"agree", "disagree", "undecided"}
    assert set(claims["source"]) == {papers.LIJIAO_SOURCE, papers.JZL_SOURCE}
    assert (claims["points"] == 3).all()
    text = (tiny_run / "claims.md").read_text().splitlines()
    assert text[0].startswith("| claim |") and len(text) == 2 + len(claims)
    rows = pd.read_csv(tiny_run / "papers.csv")
    assert len(rows) == 2 * (3 * 2 + 3 + 3)  # two metrics per measurement
    assert (rows["method"] == papers.METHOD).all()
    lijiao = rows[rows["experiment"] == papers.LIJIAO]
    assert (lijiao["nfe"] == 2 * lijiao["paper_T"]).all()  # NFE = 2T', counted
    # a rerun measures nothing again
    before = (tiny_run / "papers.csv").read_bytes()
    assert papers.main([*TINY, "--out", str(tiny_run)]) == 0
    assert (tiny_run / "papers.csv").read_bytes() == before


def test_laws_of_the_measured_kl(tiny_run):
    rows = pd.read_csv(tiny_run / "papers.csv")
    spread = papers.over_draws(rows)
    median = spread[spread["metric"] == "kl"].sort_values("paper_T")["median"].to_numpy()
    assert (median[1:] < median[:-1]).all()  # Li & Jiao's median KL falls with T
    ddpm_T = rows[(rows["experiment"] == papers.DDPM_T) & (rows["metric"] == "kl")].sort_values("T")["value"]
    assert (ddpm_T.diff().dropna() < 0).all()
    # KL is a sum over coordinates and the variances of a larger d extend a smaller d's: KL grows with d
    ddpm_d = rows[(rows["experiment"] == papers.DDPM_D) & (rows["metric"] == "kl_reverse")].sort_values("d")["value"]
    assert (ddpm_d.diff().dropna() > 0).all()
    zero = rows[(rows["experiment"] == papers.LIJIAO)]
    assert ((zero["zero_block"] >= 0) & (zero["zero_block"] <= zero["value"])).all()


BAD = [(["--dk", "3,5"], "3,5"), (["--T", "22"], "T = 21 (grid levels - 1)"), (["--ddpm-at", "2"], "2")]


@pytest.mark.parametrize("argv, word", BAD)
def test_bad_input_is_one_line_and_exit_2(argv, word, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        papers.main([*argv, "--out", str(tmp_path), "--no-plot"])
    assert err.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and word in message


def test_the_figure_is_written_in_three_formats_with_the_claims_in_its_legend_and_a_caption(tiny_run, tmp_path,
                                                                                           monkeypatch, capsys):
    import argparse

    from studies import plotting

    seen = {}
    real_save = plotting.save_figure

    def capture(fig, path, formats=plotting.FORMATS):
        seen["legend"] = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        seen["axes"] = [ax.get_legend() for ax in fig.axes]
        return real_save(fig, path, formats)

    monkeypatch.setattr(plotting, "save_figure", capture)
    frame = pd.read_csv(tiny_run / "papers.csv")
    written = papers.plot(frame, argparse.Namespace(out=tmp_path))
    assert [p.name for p in written] == ["papers.png", "papers.pdf", "papers.svg"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and written[1].read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in written[2].read_bytes()[:2000]
    legend = seen["legend"]
    assert seen["axes"] == [None, None, None]  # one legend, under the panels
    # each claim line names the paper it comes from, and every claim of the claim table has its line
    claims = [text for text in legend if " claim: " in text]
    assert sorted(text.split(" claim: ")[0] for text in claims) == sorted(
        [papers.LIJIAO_SOURCE, papers.JZL_SOURCE, papers.JZL_SOURCE])
    assert any(r"{T'}^{3}" in text for text in claims) and any("T^{2}" in text for text in claims)
    assert any(r"\propto d" in text for text in claims)
    # the measured series: median and worst per (d, k), both KL directions of the DDPM experiment
    assert "$d$ = 6, $k$ = 3: median over draws" in legend and "$d$ = 6, $k$ = 3: worst draw" in legend
    assert {f"ddpm: {label}" for label in papers.METRIC_LABELS.values()} <= set(legend)
    caption = capsys.readouterr().out
    caption = caption[caption.index("caption:"):]
    assert "2410.13738" in caption and "2510.27562" in caption and "dashed" in caption and "dotted" in caption
