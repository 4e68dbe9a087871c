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
    for title, column, digits, sci in (("Classifier-FD (lower is better)", "classifier_fd", 2, False),
                                       ("Reference error (RMS pixel distance to the many-step solution)",
                                        "ref_error", 3, False),
                                       ("Inception FID", "inception_fid", 2, False),
                                       ("Exact KL on the EM mixture (flow Monte Carlo, ± standard error)",
                                        "exact_kl", 0, True)):
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


# ============================================================================ figures
def write_grid(images: torch.Tensor, path: Path, title: str) -> None:
    """A square grid of images (pixels in [-1, 1]) with one-pixel white borders, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
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
    fig, ax = plt.subplots(figsize=(4, 4 * canvas.shape[1] / canvas.shape[2] + 0.3))
    ax.imshow(picture[:, :, 0] if C == 1 else picture, cmap="gray" if C == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure(rows: list[dict], path: Path, floor: float) -> None:
    """Quality against NFE, one panel per measured quantity (log scale), one line per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("classifier_fd", "classifier-FD"), ("ref_error", "reference error (RMS)"),
              ("exact_kl", "exact KL, EM mixture")]
    panels = [p for p in panels if any(measured(r, p[0]) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 2.2, 4), squeeze=False)
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    cmap = plt.get_cmap("tab10")
    styles = ["-", "--", ":", "-."]
    markers = "os^vDPX*"
    for ax, (column, label) in zip(axes[0], panels):
        for i, name in enumerate(names):
            pts = sorted((int(r["nfe"]), measured(r, column)) for r in rows
                         if r["sampler"] == name and (measured(r, column) or 0) > 0)
            if pts:
                ax.plot(*zip(*pts), marker=markers[i % len(markers)], ms=3.5, label=name, color=cmap(i % 10),
                        ls=styles[(i // 10) % len(styles)] if i >= 10 else "-", lw=1.2)
        if column == "classifier_fd":
            ax.axhline(floor, color="k", ls=":", lw=1, label="real-data floor")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / fig.get_figwidth(), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
