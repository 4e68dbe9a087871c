"""The look of every study figure: a style for a two-column paper, one way to save (PNG, PDF and SVG side by side),
and the few marks the studies share (a fitted order over its window, theorem lines, capped or flagged points).

    with paper_style():
        fig, axes = subplots(1, 2, width=DOUBLE)
        ...
        paths = save_figure(fig, out / "rates.png")   # rates.png, rates.pdf, rates.svg

The style is an rcParams dict applied inside `paper_style()` (matplotlib.rc_context): importing this module changes
nothing, and matplotlib itself is imported only when a figure is drawn (a study that skips its figure never pays
for it).
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from pathlib import Path
from typing import Iterator, Sequence

SINGLE = 3.3  # inches: one column of a two-column paper
DOUBLE = 6.9  # inches: the full text width
FORMATS = ("png", "pdf", "svg")

# 8 pt text, 7 pt ticks and legends, thin lines; serif text with matching mathtext; constrained layout; vector
# files whose text stays text (PDF TrueType fonts) and whose bytes do not change from run to run (fixed SVG salt).
PAPER_STYLE: dict[str, object] = {
    "font.family": "serif",
    "font.serif": ["DejaVu Serif"],
    "mathtext.fontset": "dejavuserif",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 8,
    "figure.labelsize": 8,
    "lines.linewidth": 1.0,
    "lines.markersize": 3.0,
    "errorbar.capsize": 1.5,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.3,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "legend.frameon": False,
    "legend.handlelength": 1.8,
    "legend.borderaxespad": 0.3,
    "legend.columnspacing": 1.0,
    "figure.constrained_layout.use": True,
    "figure.dpi": 100,
    "savefig.dpi": 300,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.hashsalt": "diffrates",
}

# Marks of points that are drawn but not fitted, or that sit outside the regime the fit describes.
CAPPED_MARK = {"marker": "s", "markerfacecolor": "none", "markersize": 5.5, "markeredgewidth": 0.8, "ls": "none"}
FLAGGED_MARK = {"marker": "x", "markersize": 5.0, "markeredgewidth": 0.9, "ls": "none"}
FIT_LINE = {"lw": 3.0, "alpha": 0.35, "solid_capstyle": "butt"}


@contextlib.contextmanager
def paper_style(extra: dict | None = None) -> Iterator[None]:
    """Draw inside this block with the paper style (and `extra` rcParams on top); the Agg backend, so no display is
    needed. The previous rcParams come back on exit."""
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({**PAPER_STYLE, **(extra or {})}):
        yield


def subplots(rows: int = 1, cols: int = 1, width: float = DOUBLE, height: float | None = None, **options):
    """plt.subplots at a paper width (SINGLE or DOUBLE); height defaults to panels of aspect 4:3 capped at 9 in.
    Always a 2-D array of axes."""
    import matplotlib.pyplot as plt

    if height is None:
        height = min(9.0, rows * (width / cols) * 0.75 + 0.35)
    return plt.subplots(rows, cols, figsize=(width, height), squeeze=False, **options)


def save_figure(fig, path: Path | str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write `fig` as PNG, PDF and SVG with the stem of `path` (its suffix is ignored) and close it; the paths, in
    `formats` order. Dates are left out of the vector files so that the same figure gives the same bytes."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in formats:
        target = path.with_suffix("." + kind)
        metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(kind, {})
        fig.savefig(target, format=kind, metadata=metadata)
        written.append(target)
        if fig.get_layout_engine() is not None:
            # the layout is settled by the first file; the others reuse it (it costs as much as a drawing)
            fig.set_layout_engine("none")
    plt.close(fig)
    return written


def drawable(fit) -> bool:
    """Whether a fit gives a line to draw: a fit that exists and has a finite interval. A fit the analysis abstains
    on (too few points: an infinite interval; or None when fit_order refused) draws only its points."""
    if fit is None:
        return False
    if getattr(fit, "decided", True) is False:  # an explicit abstention, should the fit carry one
        return False
    return all(math.isfinite(float(v)) for v in (fit.order, fit.low, fit.high, fit.intercept))


def fit_label(fit, symbol: str = "T", prefix: str = "fit") -> str:
    """'fit: 1.98 [1.95, 2.01], $T$ = 128..1024' -- the order, its 95% interval and the window's ends."""
    lo, hi = min(fit.window), max(fit.window)
    return (f"{prefix}: {fit.order:.2f} [{fit.low:.2f}, {fit.high:.2f}], "
            f"${symbol}$ = {_number(lo)}..{_number(hi)}")


def _number(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() and abs(v) >= 1 else f"{v:.3g}"


def draw_fit(ax, fit, decreasing: bool = True, symbol: str = "T", prefix: str = "fit", **style):
    """The fitted power law over its window only (log C + slope log x, the order's sign as fit_order fits it), as a
    broad translucent line labelled with fit_label. Nothing is drawn, and None returned, when the fit abstains."""
    if not drawable(fit):
        return None
    import numpy as np

    x = np.geomspace(min(fit.window), max(fit.window), 32)
    slope = -fit.order if decreasing else fit.order
    y = np.exp(fit.intercept) * x**slope
    (line,) = ax.plot(x, y, label=fit_label(fit, symbol, prefix), **{**FIT_LINE, **style})
    return line


def theorem_label(theorem, sampler: str | None = None) -> str:
    """A theorem line's legend entry: its id (theory.bounds), its proven order and kind, e.g.
    'li2023-ode: $T^{-1}$' or 'lower-bound-x: $T^{-0.5}$ (lower)'."""
    order = f"{theorem.order:g}"
    logs = getattr(theorem, "log_power", 0.0)
    log_part = ""
    if isinstance(logs, float) and math.isnan(logs):
        log_part = r"\,\mathrm{polylog}\,T"
    elif logs:
        log_part = rf"\,\log^{{{logs:g}}} T"
    text = f"{theorem.id}: $T^{{-{order}}}{log_part}$"
    if getattr(theorem, "bound", "upper") == "lower":
        text += " (lower)"
    if sampler:
        text += f" ({sampler})"
    return text


def mark_points(ax, x, y, mask, kind: str, colour=None):
    """Overdraw the points where `mask` holds with the mark of `kind` ('capped' or 'flagged'); returns the artist,
    or None when no point is marked."""
    import numpy as np

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    style = CAPPED_MARK if kind == "capped" else FLAGGED_MARK
    (line,) = ax.plot(np.asarray(x, float)[mask], np.asarray(y, float)[mask], color=colour or "k", **style)
    return line


def mark_handles(kinds: Sequence[str], texts: dict[str, str]) -> tuple[list, list[str]]:
    """Grey legend entries explaining the marks used (one per kind in `kinds`, in order)."""
    from matplotlib.lines import Line2D

    handles, labels = [], []
    for kind in dict.fromkeys(kinds):
        style = CAPPED_MARK if kind == "capped" else FLAGGED_MARK
        handles.append(Line2D([], [], color="0.3", **style))
        labels.append(texts[kind])
    return handles, labels


def legend_below(fig, axes, extra: tuple[list, list[str]] = ([], []), ncol: int | None = None):
    """One legend for the whole figure, under the panels: every labelled artist of `axes` once (by label), then
    `extra` (handles, labels). As many columns (at most 6) as fit in the figure's width, measured on the rendered
    labels (or `ncol`); the figure grows by the legend's height, so the panels keep theirs."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    for handle, label in zip(*extra):
        seen.setdefault(label, handle)
    if not seen:
        return None
    renderer = fig.canvas.get_renderer()
    columns = ncol or min(len(seen), 6)
    while True:
        legend = fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=columns)
        box = legend.get_window_extent(renderer)
        if ncol or columns == 1 or box.width <= fig.bbox.width * 0.98:
            break
        legend.remove()
        columns -= 1
    fig.set_figheight(fig.get_figheight() + box.height / fig.dpi + 0.05)
    return legend


def log_ticks_125(axis) -> None:
    """Label a log axis (after its data are drawn) at a few round values -- powers of ten, else 1 and 3, else 1, 2
    and 5 times them, the coarsest set that gives three labels -- written plainly (0.02, 300), with unlabelled minor ticks;
    an axis wider than four decades gets powers of ten only, at most about six, as 10^k.
    Matplotlib's default labels every minor tick of an axis spanning about one decade, and they overlap at paper
    sizes."""
    import matplotlib.ticker as ticker

    lo, hi = sorted(axis.get_view_interval())
    if not (lo > 0 and hi > lo):
        return
    if math.log10(hi / lo) > 4:  # a wide axis: powers of ten only, at most about 6 of them (10^k in mathtext)
        first, last = math.ceil(math.log10(lo)), math.floor(math.log10(hi))
        step = max(1, math.ceil((last - first + 1) / 6))
        axis.set_major_locator(ticker.FixedLocator([10.0**k for k in range(first, last + 1, step)]))
        axis.set_major_formatter(ticker.LogFormatterSciNotation())
        axis.set_minor_formatter(ticker.NullFormatter())
        return
    powers = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks: list[float] = []
    for subs in ((1,), (1, 3), (1, 2, 5), (1, 2, 3, 5, 7), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0**k for k in powers for m in subs if lo <= m * 10.0**k <= hi]
        if len(ticks) >= 3:
            break
    axis.set_major_locator(ticker.FixedLocator(ticks))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}" if 1e-4 <= v < 1e5 else f"{v:.0e}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def caption(text: str) -> str:
    """The 'caption:' paragraph a study prints under its table: the text wrapped at 110 columns."""
    return textwrap.fill("caption: " + " ".join(text.split()), width=110)
