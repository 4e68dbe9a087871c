"""What the image study writes besides its results CSV: the summary, the geometry CSV, the AMED paper's table layout
(one row per method, one column per NFE), the quality-against-NFE figure and the sample grids.

Rows come from ResultsFile.rows(): every cell a string, a NOT_MEASURED cell None, a cell the run did not ask for ''.
Both absences print as '–' in the tables and are left out of the figure.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch


def measured(row: dict | None, column: str) -> float | None:
    """The cell as a number, or None when the row is absent, the column was not asked for, or it was not measured."""
    if row is None or row.get(column) in ("", None):
        return None
    return float(row[column])


def write_summary(summary: dict, path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2) + "\n")


def write_geometry(rows: list[dict], path: Path) -> str:
    """The trajectory-geometry rows as a CSV (rewritten each run); returns the sentence the table ends with."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return ("Trajectory geometry (AMED's observation; Heun trajectories, EDM coordinates): share of variance left "
            "outside the top two principal components, 1 - share, mean over trajectories [2.5%, 97.5% quantiles]: "
            + "; ".join(f"{r['model']} {1 - r['mean']:.2e} [{1 - r['q975']:.2e}, {1 - r['q025']:.2e}]"
                        for r in rows if r["k"] == 2) + ".")


# ============================================================================ tables
def _cell(row: dict | None, column: str, digits: int = 2, scientific: bool = False) -> str:
    if row is not None and column == "exact_kl" and (row.get("note") or "").startswith("exact KL refused"):
        return "‡"
    value = measured(row, column)
    if value is None:
        return "–"
    text = f"{value:.2e}" if scientific else f"{value:.{digits}f}"
    se = measured(row, "exact_kl_se") if column == "exact_kl" else None
    if se is not None:
        text = f"{value:.3g} ± {se:.2g}"  # the Monte Carlo standard error (+ rounding)
    return text + ("†" if row.get("afs") == "1" else "")


def format_tables(rows: list[dict], nfes: list[int], floor: float, accuracy: float, ref_self: float,
                  facts: dict) -> str:
    """The AMED paper's layout: one row per method, one column per NFE."""
    by = {(r["sampler"], int(r["nfe"])): r for r in rows}
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    header = "| Method | " + " | ".join(str(n) for n in nfes) + " |\n|---|" + "---|" * len(nfes) + "\n"
    parts = [
        f"U-Net: {facts['parameters']:,} parameters, {facts['step']} training steps "
        f"({facts['seconds']:.0f} s). Classifier held-out accuracy {accuracy:.3f}; "
        f"classifier-FD floor of real images at this sample size {floor:.3f}; reference self-error {ref_self:.2e}.",
        "† AFS (analytical first step) used to reach an odd NFE; – not reachable or not measured; ‡ flow Monte Carlo "
        "refused: the sampler's map has a Jacobian of non-positive determinant at a drawn point (not a "
        "diffeomorphism there, so its output density is not a change of variables); the CSV's note says where.",
    ]
    for column, title, digits, sci in TABLES:
        if not any(measured(r, column) is not None for r in rows):
            if column == "exact_kl":
                notes = {r["note"] for r in rows if r.get("note")}
                parts.append(f"### {title}\n\nmissing: {'; '.join(sorted(notes)) or 'not requested'}")
            continue
        lines = [f"### {title}\n", header.rstrip("\n")]
        for name in names:
            cells = [_cell(by.get((name, n)), column, digits, sci) for n in nfes]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


TABLES = (("classifier_fd", "Classifier-FD (lower is better)", 2, False),
          ("ref_error", "Reference error (RMS pixel distance to the many-step solution)", 3, False),
          ("inception_fid", "Inception FID", 2, False),
          ("exact_kl", "Exact KL on the EM mixture (flow Monte Carlo, ± standard error)", 0, True))


def table_frames(rows: list[dict], nfes: list[int]) -> dict[str, object]:
    """The tables of format_tables as DataFrames for --table (images_<quantity>: one row per method, one column per
    NFE, the same cells), only the quantities this run measured."""
    import pandas as pd

    by = {(r["sampler"], int(r["nfe"])): r for r in rows}
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    frames = {}
    for column, _, digits, sci in TABLES:
        if any(measured(r, column) is not None for r in rows):
            frames[f"images_{column}"] = pd.DataFrame(
                [[name, *(_cell(by.get((name, n)), column, digits, sci) for n in nfes)] for name in names],
                columns=["Method", *(f"NFE {n}" for n in nfes)])
    return frames


# ============================================================================ figures
def write_grid(images: torch.Tensor, path: Path, title: str) -> list[Path]:
    """A square grid of images (pixels in [-1, 1]) with one-pixel white borders, one column wide (PNG, PDF, SVG)."""
    from studies.plotting import SINGLE, paper_style, save_figure, subplots

    images = images.detach().double().cpu().clamp(-1, 1)
    n = images.shape[0]
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    C, H, W = images.shape[1:]
    canvas = torch.ones(C, rows * (H + 1) + 1, cols * (W + 1) + 1)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[:, 1 + r * (H + 1) : 1 + r * (H + 1) + H, 1 + c * (W + 1) : 1 + c * (W + 1) + W] = images[i]
    picture = ((canvas + 1) / 2).permute(1, 2, 0).numpy()
    width = SINGLE * 0.75
    with paper_style():
        fig, axes = subplots(1, 1, width=width, height=width * canvas.shape[1] / canvas.shape[2] + 0.25)
        ax = axes[0][0]
        ax.imshow(picture[:, :, 0] if C == 1 else picture, cmap="gray" if C == 1 else None, vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
        return save_figure(fig, path)


def figure(rows: list[dict], path: Path, floor: float) -> tuple[list[Path], str]:
    """Quality against NFE, one panel per measured quantity (log scale), one line per sampler; the files written
    (PNG, PDF, SVG) and the caption."""
    import matplotlib.pyplot as plt

    from studies.plotting import DOUBLE, legend_below, paper_style, save_figure, subplots

    panels = [("classifier_fd", "classifier-FD"), ("ref_error", "reference error (RMS)"),
              ("exact_kl", r"exact $\mathrm{KL}$, EM mixture")]
    panels = [p for p in panels if any(measured(r, p[0]) is not None for r in rows)]
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    cmap = plt.get_cmap("tab10")
    styles = ["-", "--", ":", "-."]
    markers = "os^vDPX*"
    with paper_style():
        fig, axes = subplots(1, max(1, len(panels)), width=DOUBLE, height=2.2)
        for ax, (column, label) in zip(axes[0], panels):
            for i, name in enumerate(names):
                pts = sorted((int(r["nfe"]), measured(r, column)) for r in rows
                             if r["sampler"] == name and (measured(r, column) or 0) > 0)
                if pts:
                    ax.plot(*zip(*pts), marker=markers[i % len(markers)], label=name, color=cmap(i % 10),
                            ls=styles[(i // 10) % len(styles)])
            if column == "classifier_fd":
                ax.axhline(floor, color="k", ls=":", lw=0.8, label="real-data floor")
            ax.set_yscale("log")
            ax.set_xlabel("NFE")
            ax.set_title(label)
            ax.grid(True, which="both")
        legend_below(fig, list(axes[0]))
        written = save_figure(fig, path)
    text = ("Sample quality of each sampler on the trained U-Net against the number of network evaluations (NFE): "
            + ", ".join(label.replace(r"$\mathrm{KL}$", "KL") for _, label in panels)
            + " (log scale; lower is better). The dotted line in the classifier-FD panel is the distance between "
            "two sets of real images of the same size, the floor no sampler can beat. Points absent from a line "
            "were not reachable at that NFE or not measured (the table says which).")
    return written, text
