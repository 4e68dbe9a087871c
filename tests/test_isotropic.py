"""The isotropic-mixture family (theory.subspace.isotropic_mixture, `isotropic:<H>`) and studies.isotropic."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from exact import measure
from samplers import get_sampler
from studies import isotropic as study
from theory.bounds import BY_ID
from theory.catalog import get_target, known_targets
from theory.schedules import make_grid
from theory.subspace import SubspaceTarget, isotropic_mixture
from theory.targets import DTYPE, GaussianMixture, TargetError


def _explicit(target: SubspaceTarget, H: int, sigma2: float) -> GaussianMixture:
    """(1/H) sum_h N(B m_h, sigma^2 I_d), written out from its definition (not through to_mixture)."""
    d = target.d
    means = target.core.means @ target.basis.T
    covs = sigma2 * torch.eye(d, dtype=DTYPE).expand(H, d, d).clone()
    return GaussianMixture(torch.full((H,), 1.0 / H, dtype=DTYPE), means, covs, "explicit")


@pytest.mark.parametrize("H, k, sigma2", [(3, 1, 0.05), (2, 2, 1.0), (1, 1, 2.0), (5, 2, 0.3)])
def test_the_family_is_its_mixture_form(H, k, sigma2):
    target = get_target(f"isotropic:{H}?k={k}&sigma2={sigma2}", d=3)
    explicit = _explicit(target, H, sigma2)
    assert torch.allclose(target.core.covs, sigma2 * torch.eye(k, dtype=DTYPE).expand(H, k, k), atol=0)
    x = torch.randn(7, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(1)) * 2
    for abar in (1.0, 0.9, 0.5, 0.05, 1e-3):
        assert torch.allclose(target.log_prob(x, abar), explicit.log_prob(x, abar), rtol=0, atol=1e-10)
        assert torch.allclose(target.score(x, abar), explicit.score(x, abar), rtol=0, atol=1e-10)


def test_the_means_lie_in_a_seeded_k_dimensional_span():
    a, b = isotropic_mixture(64, 6, k=2, seed=3), isotropic_mixture(64, 6, k=2, seed=3)
    means = a.core.means @ a.basis.T
    assert torch.equal(means, b.core.means @ b.basis.T)  # seeded
    assert torch.linalg.matrix_rank(means) == 2  # 6 means in a 2-dimensional span
    assert not torch.equal(means, isotropic_mixture(64, 6, k=2, seed=4).core.means @ isotropic_mixture(64, 6, k=2,
                                                                                                       seed=4).basis.T)


@pytest.mark.parametrize("name, d, needle", [
    ("isotropic:0", 8, "H must be an integer >= 1, got 0"),
    ("isotropic:x", 8, "got 'x'"),
    ("isotropic:2?sigma2=0", 8, "sigma2 must be a finite number > 0, got 0.0"),
    ("isotropic:2?sigma2=-1", 8, "got -1.0"),
    ("isotropic:2?sigma2=nan", 8, "got nan"),
    ("isotropic:2?k=8", 8, "d > k = 8, got d = 8"),
    ("isotropic:2?k=0", 8, "k must be an integer >= 1, got 0"),
    ("isotropic:2?k=1.5", 8, "option k must be int, got '1.5'"),
    ("isotropic:2?spread=1", 8, "unknown option 'spread=1'"),
])
def test_bad_parameters_are_one_line_naming_the_value(name, d, needle):
    with pytest.raises(TargetError) as err:
        get_target(name, d=d)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_catalog_lists_the_family():
    assert any(name.startswith("isotropic:<H>") for name in known_targets())


@pytest.mark.parametrize("sampler", ["ddpm-posterior", "ddim"])
def test_kl_is_affine_in_d_with_one_complement_coordinate_law(sampler):
    """KL(d) = KL_core + (d - k) KL_1: the complement's coordinates all carry the law N(0, sigma^2) and the same 1-D
    map, so KL's increments in d are proportional to the increments of d (the d-exponent tends to 1 unless KL_1 = 0)."""
    grid = make_grid("li2023", 8)
    kl, core, one = {}, {}, {}
    for d in (3, 5, 9):
        result = measure(get_target("isotropic:3?sigma2=0.2", d=d), get_sampler(sampler), grid, init="exact",
                         method="subspace", samples=200, seed=0)
        kl[d] = result["kl"].value
        core[d] = result["kl"].details["kl_core"]
        one[d] = result["kl"].details["kl_gaussian_part"] / (d - 1)
    assert core[3] == pytest.approx(core[9], rel=1e-12) and one[3] == pytest.approx(one[9], rel=1e-9)
    assert kl[9] - kl[5] == pytest.approx(2 * (kl[5] - kl[3]), rel=1e-9)
    assert kl[5] > kl[3] > 0  # no sampler here is exact on N(0, sigma^2): KL_1 > 0


def test_the_new_theorems_shapes_have_their_stated_powers():
    for tid in ("jiaozhouli2025-kl", "jiaozhouli2025-tv", "jiaozhouli2025-kl-lower"):
        t = BY_ID[tid]
        assert math.log2(t.shape(64, 2048) / t.shape(64, 1024)) == pytest.approx(t.d_power, abs=1e-12)
        logs = 0.0 if math.isnan(t.log_power) else t.log_power
        T1, T2 = 1024, 2048
        measured = -math.log(t.shape(T2, 8) / t.shape(T1, 8)) + logs * math.log(math.log(T2) / math.log(T1))
        assert measured / math.log(2) == pytest.approx(t.order, abs=1e-12)
        assert "ddpm" in t.samplers
    assert BY_ID["jiaozhouli2025-kl-lower"].bound == "lower"


def _capture_legends(monkeypatch) -> dict:
    """Record the legend texts (figure and panel legends) of every figure studies.plotting.save_figure writes."""
    from studies import plotting

    seen: dict = {}
    real_save = plotting.save_figure

    def capture(fig, path, formats=plotting.FORMATS):
        texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        texts += [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        seen["legend"] = texts
        return real_save(fig, path, formats)

    monkeypatch.setattr(plotting, "save_figure", capture)
    return seen


def test_the_study_runs_end_to_end_and_a_rerun_measures_nothing(tmp_path, capsys, monkeypatch):
    argv = ["--target", "isotropic:2?sigma2=0.2", "--d", "2", "4", "8", "--T", "8", "--sampler", "ddim",
            "ddpm-posterior", "--samples", "100", "--scheduler", "none", "--out", str(tmp_path)]
    assert study.main(argv) == 0
    frame = pd.read_csv(tmp_path / "isotropic.csv")
    assert set(frame["metric"]) == {"tv", "kl", "kl_reverse"}  # kl_reverse from the stochastic sampler
    assert len(frame[frame["sampler"] == "ddim"]) == 3 * 2  # tv, kl at every d (no kl_reverse for an ODE on H > 1)
    kl = frame[frame["metric"] == "kl"]
    assert (kl["scaled"] - 64 * kl["value"]).abs().max() < 1e-12 * kl["value"].max()  # T^2 KL, T = 8
    exponents = pd.read_csv(tmp_path / "exponents.csv")
    assert {"ddim", "ddpm-posterior"} <= set(exponents["sampler"])
    assert ((exponents["ci_low"] <= exponents["exponent"]) & (exponents["exponent"] <= exponents["ci_high"])).all()
    assert (tmp_path / "isotropic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "isotropic.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in (tmp_path / "isotropic.svg").read_bytes()[:2000]
    before = (tmp_path / "isotropic.csv").read_text()
    seen = _capture_legends(monkeypatch)
    capsys.readouterr()
    assert study.main(argv) == 0
    assert (tmp_path / "isotropic.csv").read_text() == before  # every row reused
    legend, printed = seen["legend"], capsys.readouterr().out
    # the reference lines carry the ids of the theorems that predict them, with the d-power theory.bounds gives
    for tid in ("jiaozhouli2025-kl", "jiaozhouli2025-kl-lower", "jiaozhouli2025-tv", "licaiwei2025-ddpm-gmm"):
        power = f"$d^{{{BY_ID[tid].d_power:g}}}$"
        assert any(tid in text and power in text for text in legend), (tid, power, legend)
    # each fitted exponent of the table in the figure's metrics (kl and tv; 3 d: the all-d fit) is drawn, with its
    # interval and window, and no other
    drawn = exponents[exponents["metric"].isin(["kl", "tv"])]
    fits = [text for text in legend if " fit: " in text]
    assert len(drawn) and len(fits) == len(drawn), (fits, drawn)
    for row in drawn.itertuples():
        label = (f"{row.sampler} {row.metric.upper()} all-$d$ fit: {row.exponent:.2f} "
                 f"[{row.ci_low:.2f}, {row.ci_high:.2f}]")
        assert any(label in text and text.endswith("$d$ = 2..8") for text in fits), (label, fits)
    caption = printed[printed.index("caption:"):]
    for tid in ("jiaozhouli2025-kl", "jiaozhouli2025-kl-lower", "jiaozhouli2025-tv", "licaiwei2025-ddpm-gmm"):
        assert tid in caption
    assert "95% interval" in caption


def test_the_study_refuses_a_target_outside_the_family(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        study.main(["--target", "gaussian", "--d", "4", "--T", "8", "--out", str(tmp_path), "--no-plot"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "'gaussian'" in err[0], err


def _synthetic(values_tv, values_kl, d, T=8) -> pd.DataFrame:
    rows = []
    for metric, values in (("tv", values_tv), ("kl", values_kl)):
        for di, v in zip(d, values):
            rows.append({"target": "isotropic:2?sigma2=1", "H": 2, "sigma2": 1.0, "k": 1, "sampler": "ddim",
                         "d": di, "T": T, "metric": metric, "value": v, "scaled": (T if metric == "tv" else T**2) * v})
    return pd.DataFrame(rows)


def test_the_figure_marks_saturated_tv_and_draws_no_fit_where_too_few_d_are_usable(tmp_path, monkeypatch):
    """TV at or above 0.5 is left out of the fits: with two of four d saturated the TV panel has too few points for
    a fit (no line), its saturated points carry the hollow-square mark, and the caption says so; the KL fit, over
    the three largest d of an exact d^1 law, is drawn with exponent 1 over d = 4..16."""
    seen = _capture_legends(monkeypatch)
    d = [2, 4, 8, 16]
    written, text = study.plot(_synthetic([0.2, 0.4, 0.6, 0.9], [1e-3 * x for x in d], d), tmp_path / "iso.png")
    assert [p.name for p in written] == ["iso.png", "iso.pdf", "iso.svg"] and all(p.is_file() for p in written)
    fits = [t for t in seen["legend"] if " fit: " in t]
    assert fits == [r"$H$ = 2, $\sigma^2$ = 1: ddim KL large-$d$ fit: 1.00 [1.00, 1.00], $d$ = 4..16"], fits
    assert study.MARKS["capped"] in seen["legend"]
    assert "Hollow squares" in text and "No broad line" in text
    # nothing saturated, every fit drawn: neither the mark nor the abstention is claimed
    seen.clear()
    _, text = study.plot(_synthetic([0.01 * x**0.5 for x in d], [1e-3 * x for x in d], d), tmp_path / "iso2.png")
    assert sum(" fit: " in t for t in seen["legend"]) == 2
    assert study.MARKS["capped"] not in seen["legend"] and "Hollow squares" not in text and "No broad line" not in text
