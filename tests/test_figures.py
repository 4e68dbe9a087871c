"""The paper figures: studies.plotting (style, PNG + PDF + SVG, the fitted order over its window, the marks) and
`python -m figures` (lists without running; writes under an output folder; touches figures/ only with
--update-docs)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import math

import numpy as np
import pytest

from figures import __main__ as figures
from studies import plotting
from studies.plotting import drawable, paper_style, save_figure
from theory.bounds import THEOREMS, theorems_for
from theory.rates import fit_order

# ---------------------------------------------------------------------------- studies.plotting


def test_importing_the_style_changes_no_setting_and_the_block_restores_them():
    """Every setting but the backend (the block selects Agg, which needs no display, as the studies always did)."""
    import matplotlib

    def settings():
        return {k: v for k, v in matplotlib.rcParams.items() if not k.startswith("backend")}

    before = settings()
    importlib.reload(plotting)
    assert settings() == before
    with plotting.paper_style():
        assert matplotlib.rcParams["font.size"] == 8
        assert matplotlib.rcParams["figure.constrained_layout.use"] is True
        assert matplotlib.get_backend().lower() == "agg"
    assert settings() == before


def test_save_figure_writes_png_pdf_and_svg_with_one_stem_and_the_same_bytes_twice(tmp_path):
    def draw(stem):
        with paper_style():
            fig, axes = plotting.subplots(1, 1, width=plotting.SINGLE)
            axes[0][0].plot([1, 2, 4], [1, 0.5, 0.25], label=r"$T^{-1}$")
            axes[0][0].legend()
            return save_figure(fig, tmp_path / stem / "figure.png")

    first, second = draw("a"), draw("b")
    assert [p.name for p in first] == ["figure.png", "figure.pdf", "figure.svg"]
    assert first[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first[1].read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in first[2].read_bytes()[:2000]
    for a, b in zip(first[1:], second[1:]):  # no dates or random ids in the vector files
        assert a.read_bytes() == b.read_bytes(), a.name


def test_the_fitted_line_spans_its_window_only_and_follows_the_fit():
    """On an exact power law e = 3 T^-2 the drawn line lies on the data over the fit window and nowhere else."""
    import matplotlib.pyplot as plt

    T = np.array([8.0, 16, 32, 64, 128, 256])
    fit = fit_order(T, 3 * T**-2.0, window=3)
    with paper_style():
        fig, ax = plt.subplots()
        line = plotting.draw_fit(ax, fit, decreasing=True, symbol="T")
        x, y = line.get_data()
        plt.close(fig)
    assert x.min() == pytest.approx(64) and x.max() == pytest.approx(256)
    assert np.allclose(y, 3 * x**-2.0, rtol=1e-9)
    assert line.get_label() == "fit: 2.00 [2.00, 2.00], $T$ = 64..256"
    # against a step size the order is the slope itself (decreasing=False)
    h = 1 / T
    fit_h = fit_order(h, 5 * h**1.5, decreasing=False, window=4)
    with paper_style():
        fig, ax = plt.subplots()
        x, y = plotting.draw_fit(ax, fit_h, decreasing=False, symbol="h").get_data()
        plt.close(fig)
    assert x.max() == pytest.approx(h[2]) and np.allclose(y, 5 * x**1.5, rtol=1e-9)


def test_a_fit_without_an_interval_draws_nothing():
    import matplotlib.pyplot as plt

    two = fit_order([8.0, 16.0], [0.1, 0.05])
    assert not math.isfinite(two.high) and not drawable(two) and not drawable(None)
    with paper_style():
        fig, ax = plt.subplots()
        assert plotting.draw_fit(ax, two) is None and not ax.lines
        plt.close(fig)


def test_every_theorem_label_names_the_theorem_and_its_order():
    for theorem in THEOREMS:
        label = plotting.theorem_label(theorem, "ode")
        assert label.startswith(theorem.id + ": ") and f"T^{{-{theorem.order:g}}}" in label
        assert label.count("$") % 2 == 0, label  # mathtext balanced


# ---------------------------------------------------------------------------- a study figure, end to end
def _rates_figure(tmp_path, monkeypatch, Ts):
    """Run studies.rates tiny; return the legend texts of its figure, the files written and what it printed."""
    from studies import rates

    seen = {}
    real_save = plotting.save_figure

    def capture(fig, path, formats=plotting.FORMATS):
        seen["legend"] = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        return real_save(fig, path, formats)

    monkeypatch.setattr(plotting, "save_figure", capture)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert rates.main(["--sampler", "ddim", "--T", *map(str, Ts), "--metric", "tv", "--scheduler", "none",
                           "--out", str(tmp_path)]) == 0
    return seen["legend"], out.getvalue()


def test_rates_figure_has_theorem_ids_the_fit_and_the_capped_mark_in_legend_and_caption(tmp_path, monkeypatch):
    # T = 8 and 16 are capped (h = 0.5 for both), so the step-size window of the 3 smallest h needs T = 64 to hold
    # 3 distinct h (with 2 it abstains, theory.rates.MIN_POINTS, and draws no line)
    legend, printed = _rates_figure(tmp_path, monkeypatch, (8, 16, 32, 64))
    for kind in ("png", "pdf", "svg"):
        assert (tmp_path / f"rates.{kind}").is_file()
    for theorem in theorems_for("ddim", "tv"):
        assert any(text.startswith(theorem.id + ":") for text in legend), (theorem.id, legend)
    fits = sorted(text for text in legend if text.startswith("ddim TV fit: "))
    # against T the window is the last 3 of 4 T; against h the 3 smallest steps
    assert len(fits) == 2 and fits[0].endswith("$T$ = 16..64") and "$h$ = " in fits[1], legend
    # li2023 caps beta at small T: the mark is in the legend and the caption says what it means
    assert any("capped" in text for text in legend), legend
    caption = printed[printed.index("caption:"):]
    assert "Hollow squares" in caption and "0.5" in caption


def test_rates_figure_draws_no_fit_where_the_fit_has_no_interval(tmp_path, monkeypatch):
    legend, printed = _rates_figure(tmp_path, monkeypatch, (16, 32))
    assert not any(" fit: " in text for text in legend), legend
    assert "abstain" in printed[printed.index("caption:"):]


# ---------------------------------------------------------------------------- python -m figures
def _main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = figures.main(argv)
    return status, out.getvalue(), err.getvalue()


def test_no_names_lists_every_figure_and_runs_nothing(monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("the listing ran a study")

    monkeypatch.setattr(figures, "build", refuse)
    monkeypatch.setattr(importlib, "import_module", refuse)
    status, out, _ = _main([])
    assert status == 0
    for name, figure in figures.FIGURES.items():
        assert f"  {name}: {figure.timing()}" in out
        assert f"python -m {figure.module}" in out


def test_an_unknown_name_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        figures.main(["rates", "nope"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1 and "'nope'" in err


def test_every_figure_is_a_valid_study_command_with_a_time_that_names_its_machine(tmp_path):
    for name, figure in figures.FIGURES.items():
        module = importlib.import_module(figure.module)
        module.build_parser().parse_args([*figure.args, "--out", str(tmp_path)])  # exits 2 on a bad argument
        assert all(source.endswith(".png") and target.endswith(".png") for source, target in figure.outputs.items())
        assert figure.seconds is None or (figure.seconds > 0 and figure.machine), name


def _tracked():
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in figures.HERE.iterdir() if p.is_file()}


def test_a_figure_goes_to_its_output_folder_and_into_figures_only_with_update_docs(tmp_path, monkeypatch):
    tiny = figures.Figure("studies.rates", ("--sampler", "ddim", "--T", "8", "16", "--metric", "tv",
                                            "--scheduler", "none"), {"rates.png": "tiny-rates.png"})
    monkeypatch.setattr(figures, "FIGURES", {"tiny": tiny})
    before = _tracked()
    status, _, err = _main(["tiny", "--out", str(tmp_path / "results")])
    assert status == 0
    assert _tracked() == before, "python -m figures without --update-docs changed figures/"
    folder = tmp_path / "results" / "tiny"
    assert all((folder / f"rates.{kind}").is_file() for kind in ("png", "pdf", "svg"))
    assert str(folder / "rates.pdf") in err
    docs = tmp_path / "docs"
    docs.mkdir()
    monkeypatch.setattr(figures, "HERE", docs)
    assert _main(["tiny", "--out", str(tmp_path / "results"), "--update-docs"])[0] == 0
    assert sorted(p.name for p in docs.iterdir()) == ["tiny-rates.png"]
    assert (docs / "tiny-rates.png").read_bytes() == (folder / "rates.png").read_bytes()


@pytest.mark.parametrize("labels", [["ode", "ddim"], [f"li2023-ode: $T^{{-1}}\\,\\log^4 T$ (sampler {i})" for i in range(9)],
                                    ["x" * 70, "short", "TV $d^{0.5}$: chen2022-ddpm, benton2023-ddpm,\n    ddpm2025-kl"]])
def test_the_figure_legend_fits_the_figure_width(labels):
    import matplotlib.pyplot as plt

    with paper_style():
        fig, axes = plotting.subplots(1, 2, width=plotting.DOUBLE, height=2.0)
        for i, label in enumerate(labels):
            axes[0][i % 2].plot([1, 2], [i, i + 1], label=label)
        legend = plotting.legend_below(fig, list(axes[0]))
        fig.canvas.draw()
        box, page = legend.get_window_extent(), fig.bbox
        plt.close(fig)
    assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, (box, page)
    assert len(legend.get_texts()) == len(labels)


def test_the_dimension_figure_draws_every_covering_theorem_at_its_d_power():
    from studies.dimension import theorem_powers

    for sampler in ("ode", "ddim", "ddpm", "ode-accel", "ddpm-accel"):
        for metric in ("tv", "kl"):
            drawn = {th: power for power, ids in theorem_powers([sampler], metric).items() for th in ids}
            for theorem in theorems_for(sampler):
                if theorem.metric == metric:
                    assert drawn[theorem.id] == theorem.d_power
                elif theorem.metric == "kl" and metric == "tv":  # through Pinsker: TV <= sqrt(KL / 2)
                    assert drawn[theorem.id] == theorem.d_power / 2
                else:
                    assert theorem.id not in drawn


@pytest.mark.parametrize("lo, hi, most", [(0.02, 0.9, 9), (1e-3, 2.0, 12), (3e-6, 4e5, 7), (1e-12, 1.0, 7)])
def test_log_ticks_label_a_few_values_inside_the_axis(lo, hi, most):
    """However wide the axis, its labels are few (at most about six powers of ten past four decades, 1-2-5 values
    below), increasing, inside the view, and at least three where the axis spans enough for them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    plotting.log_ticks_125(ax.yaxis)
    ticks = [t for t in ax.yaxis.get_majorticklocs() if lo <= t <= hi]
    plt.close(fig)
    assert 2 <= len(ticks) <= most and ticks == sorted(ticks)
