"""A study's tables as LaTeX (booktabs) or Markdown, written beside the CSV: `--table latex|markdown`.

Small writers of our own (no jinja2 or tabulate): a cell is the value as the CSV shows it, a float with 4
significant digits, an empty or missing cell as '--' (LaTeX) or an empty cell (Markdown).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Mapping

KINDS = {"latex": ".tex", "markdown": ".md"}

# LaTeX's special characters in text mode and what stands for each.
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          # the marks the studies' tables use, so the file needs no Unicode set-up
          "\u2014": "---", "\u2013": "--", "\u00b1": r"$\pm$", "\u2020": r"$\dagger$", "\u2021": r"$\ddagger$"}


def table_kind(text: str) -> str:
    """The argparse type of --table: latex or markdown, else a one-line error naming the value."""
    if text not in KINDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a table format: use {' or '.join(KINDS)}")
    return text


table_kind.__name__ = "table format"


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}"
    return str(value)


def _rows(frame) -> tuple[list[str], list[list[str]]]:
    header = [str(c) for c in frame.columns]
    body = [[_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    return header, body


def _numeric(column: list[str]) -> bool:
    present = [c for c in column if c]
    try:
        [float(c) for c in present]
    except ValueError:
        return False
    return bool(present)


def to_latex(frame, caption: str | None = None) -> str:
    """A booktabs tabular (\\toprule, \\midrule, \\bottomrule), numeric columns right-aligned, every cell escaped;
    inside a table environment with a caption when one is given."""
    header, body = _rows(frame)
    columns = list(zip(*body)) if body else [() for _ in header]
    align = "".join("r" if _numeric(list(col)) else "l" for col in columns)
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) if c else "--" for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines = [r"\begin{table}", r"\centering", *lines, rf"\caption{{{latex_escape(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def markdown_escape(text: str) -> str:
    return str(text).replace("|", r"\|").replace("\n", " ")


def to_markdown(frame) -> str:
    """A pipe table: header, separator (numeric columns right-aligned), one line per row."""
    header, body = _rows(frame)
    columns = list(zip(*body)) if body else [() for _ in header]
    rule = ["---:" if _numeric(list(col)) else "---" for col in columns]
    lines = ["| " + " | ".join(markdown_escape(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(markdown_escape(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def write_table(frame, path: Path, kind: str, caption: str | None = None) -> Path:
    """`frame` as `kind` at `path` with the kind's suffix; the path written."""
    path = Path(path).with_suffix(KINDS[kind])
    text = to_latex(frame, caption) if kind == "latex" else to_markdown(frame)
    path.write_text(text)
    return path


def export_tables(tables: Mapping[str, object], args: argparse.Namespace,
                  captions: Mapping[str, str] | None = None) -> list[Path]:
    """Each table (name -> DataFrame) as DIR/<name>.tex or .md when --table is given (nothing otherwise); each path
    is printed and returned."""
    kind = getattr(args, "table", None)
    if not kind:
        return []
    written = []
    for name, frame in tables.items():
        path = write_table(frame, Path(args.out) / name, kind, (captions or {}).get(name))
        print(f"table: {path}")
        written.append(path)
    return written
