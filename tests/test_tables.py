"""Every study's tables as LaTeX (booktabs) and Markdown (`--table latex|markdown`, studies.tables).

The writers: a LaTeX table has its three booktabs rules in order, one line per data row between \\midrule and
\\bottomrule, and no LaTeX special character left unescaped; a Markdown table has a header, its separator and one
line per data row, with as many cells on each line. The flag: for every study, a tiny run with --table latex
writes DIR/<table>.tex beside the CSV (the rows of a table that mirrors a CSV are that CSV's rows), prints each
path, and a rerun into the same folder with --table markdown writes the .md files from the rows already there.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studies import tables
from studies.tables import export_tables, latex_escape, table_kind, to_latex, to_markdown

SPECIAL = set("\\&%$#_{}~^")


def _body(latex: str) -> list[str]:
    lines = latex.splitlines()
    top, mid, bottom = lines.index(r"\toprule"), lines.index(r"\midrule"), lines.index(r"\bottomrule")
    assert top < mid < bottom, latex
    return lines[mid + 1 : bottom]


def _unescaped(text: str) -> set[str]:
    """LaTeX special characters in `text` that no escape accounts for (the escapes removed first)."""
    stripped = re.sub(r"\\textbackslash\{\}|\\textasciitilde\{\}|\\textasciicircum\{\}|\\[&%$#_{}]", "", text)
    return set(stripped) & SPECIAL


def _cells(line: str) -> int:
    """Cells of a Markdown table line: pipes not preceded by a backslash, less one."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def test_latex_has_booktabs_rules_and_escapes_underscores_and_percent_signs():
    frame = pd.DataFrame({"ci_low": [0.5, 1.25], "share": ["50%", "a_b & c"], "theorem": ["li2023-ode", "x#y"]})
    latex = to_latex(frame)
    assert latex.startswith(r"\begin{tabular}{rll}") and latex.rstrip().endswith(r"\end{tabular}")
    body = _body(latex)
    assert len(body) == len(frame)
    assert r"ci\_low" in latex and r"50\%" in latex and r"a\_b \& c" in latex and r"x\#y" in latex
    for line in latex.splitlines():
        if not line.startswith("\\"):
            assert _unescaped(line.replace(" & ", " ").replace(r" \\", "")) == set(), line
    for line in body:
        assert len(re.findall(r"(?<!\\)&", line)) == frame.shape[1] - 1, line


def test_latex_caption_wraps_a_table_environment():
    latex = to_latex(pd.DataFrame({"a": [1]}), caption="orders of 5% samplers")
    assert latex.startswith(r"\begin{table}") and r"\caption{orders of 5\% samplers}" in latex


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30))
def test_latex_escape_leaves_no_special_character_bare(text):
    assert _unescaped(latex_escape(text)) == set()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="ab|_ %x", max_size=6), st.floats(-1e6, 1e6, allow_nan=False)),
                min_size=0, max_size=8))
def test_markdown_has_the_header_separator_and_one_line_per_row(rows):
    frame = pd.DataFrame(rows, columns=["name", "value"])
    lines = to_markdown(frame).splitlines()
    assert len(lines) == 2 + len(frame)
    assert re.fullmatch(r"\| (---:?) \| (---:?) \|", lines[1]), lines[1]
    assert all(_cells(line) == 2 for line in lines), lines


def test_numeric_columns_are_right_aligned():
    frame = pd.DataFrame({"sampler": ["ode", "ddim"], "order": [1.0, 2.0]})
    assert to_markdown(frame).splitlines()[1] == "| --- | ---: |"
    assert to_latex(frame).splitlines()[0] == r"\begin{tabular}{lr}"


def test_the_flag_refuses_another_format_naming_it():
    with pytest.raises(argparse.ArgumentTypeError, match="'html'"):
        table_kind("html")
    assert {table_kind(kind) for kind in tables.KINDS} == {"latex", "markdown"}


def test_no_flag_writes_nothing(tmp_path):
    assert export_tables({"t": pd.DataFrame({"a": [1]})}, argparse.Namespace(out=tmp_path, table=None)) == []
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------- the flag, study by study
# study -> (tiny arguments, {table written: the CSV whose rows it mirrors, or None})
TINY = {
    "rates": (["--sampler", "ddim", "--T", "8", "16", "32", "--metric", "tv"],
              {"rates": "rates.csv", "orders": "orders.csv"}),
    "dimension": (["--family", "gaussian", "--sampler", "ddim", "--d", "1", "2", "4", "--T", "16", "--samples", "200"],
                  {"exponents": "exponents.csv"}),
    "score_error": (["--sampler", "ddim", "--amplitudes", "0.01", "0.1", "--omegas", "4", "--T", "16"],
                    {"score_error": None, "floors": "floors.csv"}),
    "nfe": (["--sampler", "ddim", "ddpm", "--nfe", "4", "6", "--no-grid-table", "--no-amed"],
            {"nfe_kl": None, "nfe_tv": None}),
    "geometry": (["--target", "gaussian", "--d", "3", "4", "--trajectories", "4", "--steps", "8"],
                 {"geometry": "geometry.csv"}),
    "tightness": (["--sampler", "ddim", "--T", "8", "16", "--budget", "2", "--starts", "2"],
                  {"constants": "constants.csv"}),
    "isotropic": (["--target", "isotropic:2?sigma2=0.2", "--d", "2", "4", "8", "--T", "8", "--sampler", "ddim",
                   "--samples", "100"],
                  {"exponents": "exponents.csv"}),
    "papers": (["--dk", "6,3", "--T", "21", "81", "--draws", "1", "--ddpm-T", "17", "65", "--ddpm-d", "2", "4",
                "--ddpm-at", "17"], {"claims": "claims.csv"}),
}


def _run(name: str, argv: list[str]) -> str:
    import importlib

    module = importlib.import_module(f"studies.{name}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert module.main(argv) == 0
    return out.getvalue()


@pytest.fixture(scope="module", params=list(TINY))
def latex_run(request, tmp_path_factory):
    """One tiny run of each study with --table latex (no figure), shared by the tests below."""
    name = request.param
    out = tmp_path_factory.mktemp(name)
    argv, _ = TINY[name]
    printed = _run(name, [*argv, "--scheduler", "none", "--no-plot", "--table", "latex", "--out", str(out)])
    return name, out, printed


def test_table_latex_writes_every_table_beside_the_csv(latex_run):
    name, out, printed = latex_run
    for table, csv in TINY[name][1].items():
        path = out / f"{table}.tex"
        assert path.is_file(), f"studies.{name} --table latex wrote no {path}: {sorted(p.name for p in out.iterdir())}"
        assert f"table: {path}" in printed
        body = _body(path.read_text())
        assert body, f"{path} has no data row"
        if csv is not None:
            assert len(body) == len(pd.read_csv(out / csv)), f"{path}: rows differ from {csv}"


def test_table_markdown_on_a_finished_folder_writes_the_same_tables(latex_run):
    name, out, _ = latex_run
    argv, expected = TINY[name]
    printed = _run(name, [*argv, "--scheduler", "none", "--no-plot", "--table", "markdown", "--out", str(out)])
    for table in expected:
        md, tex = out / f"{table}.md", out / f"{table}.tex"
        assert f"table: {md}" in printed
        lines = md.read_text().splitlines()
        assert re.fullmatch(r"\|( ---:? \|)+", lines[1]), lines[1]
        assert len(lines) - 2 == len(_body(tex.read_text())), f"{md} and {tex} differ in rows"


def test_the_images_tables_export_one_row_per_method(tmp_path):
    """The image study (its own CLI: a run trains a network, tests/test_images.py runs it end to end) builds its
    --table files from table_frames: one row per method, one column per NFE, the quantities measured only."""
    from studies.images import cli
    from studies.images.report import table_frames

    assert cli.build_parser().parse_args(["--table", "latex"]).table == "latex"
    rows = [{"sampler": s, "nfe": str(n), "classifier_fd": str(1.0 + n), "ref_error": "", "inception_fid": "",
             "exact_kl": None, "exact_kl_se": None, "afs": "0", "note": ""} for s in ("euler", "ddpm") for n in (4, 5)]
    frames = table_frames(rows, [4, 5])
    assert list(frames) == ["images_classifier_fd"]
    written = export_tables(frames, argparse.Namespace(out=tmp_path, table="latex"))
    assert written == [tmp_path / "images_classifier_fd.tex"]
    assert len(_body(written[0].read_text())) == 2
