"""Results keyed by content (studies.common): a rerun into the same --out reuses a row only when everything that
decided its value is the same, and measures anew when the target, the engine, a sampler's options, the grid or the
code changed, with one line on stderr about the rows it ignores; the ignored rows never reach a table.

Every case runs the real CLI in this process (`studies.rates.main`, tiny sweeps on 1-D targets). The assertions are
about behaviour (rows measured again, their values, the printed table, the message), so that on a checkout without
content keys they fail rather than pass: there a rerun finds the old rows by their names and returns them.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import studies.nfe
import studies.rates
from samplers.base import REGISTRY, get_sampler
from samplers.picard import PicardODE
from theory import schedules
from theory.product import product_of
from theory.targets import GaussianMixture

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--T", "8", "16", "--no-plot", "--scheduler", "none"]


def rates(out: Path, capsys, *argv: str, sampler: str = "ode") -> tuple[list[dict], str, str]:
    """Run studies.rates into `out`: (every row of the results file, stdout, stderr)."""
    capsys.readouterr()
    assert studies.rates.main(["--sampler", sampler, "--out", str(out), *SMALL, *argv]) == 0
    captured = capsys.readouterr()
    return read_rows(out / "rates.csv"), captured.out, captured.err


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def values(rows: list[dict]) -> list[tuple[str, str, str]]:
    return [(r["T"], r["metric"], r["value"]) for r in rows]


def ignored_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "measured with another" in line]


def assert_measured_anew(first: list[dict], again: list[dict], fresh: list[dict]) -> list[dict]:
    """The rerun appended a new row per old one, with the fresh folder's values, which differ from the old ones."""
    assert len(again) == 2 * len(first), "the rerun did not measure anew: it reused rows measured otherwise"
    new = again[len(first):]
    assert values(again[: len(first)]) == values(first)  # the old rows stay in the file, untouched
    assert values(new) == values(fresh)
    assert all(a["value"] != b["value"] for a, b in zip(first, new)), "the change did not change the values"
    return new


def assert_one_message(err: str, count: int, part: str) -> None:
    lines = ignored_lines(err)
    assert len(lines) == 1, f"expected one line about ignored rows, got {lines!r}"
    assert lines[0].startswith(f"{count} rows in ") and part in lines[0] and "--fresh" in lines[0], lines[0]


def table_value(rows: list[dict], T: str, metric: str) -> str:
    """A value as the rates table prints it."""
    (row,) = [r for r in rows if r["T"] == T and r["metric"] == metric]
    return f"{float(row['value']):.4e}"


# ---------------------------------------------------------------------------- the stale cases
def test_an_edited_target_file_is_measured_anew(tmp_path, capsys):
    target = tmp_path / "two-modes.json"
    spec = {"weights": [0.3, 0.7], "means": [[-1.5], [1.0]], "covs": [[[0.2]], [[0.3]]]}
    target.write_text(json.dumps(spec))
    first, _, _ = rates(tmp_path / "out", capsys, "--target", str(target))
    spec["weights"] = [0.6, 0.4]  # the same file, the same name: another law
    target.write_text(json.dumps(spec))
    again, table, err = rates(tmp_path / "out", capsys, "--target", str(target))
    fresh, _, _ = rates(tmp_path / "fresh", capsys, "--target", str(target))
    new = assert_measured_anew(first, again, fresh)
    assert_one_message(err, len(first), "target")
    # The table shows the new values and not the old ones, and the fits are the fresh folder's: the ignored rows
    # are not mixed in.
    assert table_value(new, "16", "tv") in table and table_value(first, "16", "tv") not in table
    assert (tmp_path / "out" / "orders.csv").read_bytes() == (tmp_path / "fresh" / "orders.csv").read_bytes()


def test_another_method_into_the_same_folder_is_measured_anew(tmp_path, capsys):
    first, _, _ = rates(tmp_path / "out", capsys)  # auto: grid-1d-flow
    again, _, err = rates(tmp_path / "out", capsys, "--method", "flow-mc")
    fresh, _, _ = rates(tmp_path / "fresh", capsys, "--method", "flow-mc")
    new = assert_measured_anew(first, again, fresh)
    assert {r["method"] for r in first} == {"grid-1d-flow"} and {r["method"] for r in new} == {"flow-mc"}
    assert_one_message(err, len(first), "engine")


def test_another_sampler_option_under_the_same_name_is_measured_anew(tmp_path, capsys, monkeypatch):
    """The registry's entry for a name builds a sampler with other options (Picard's sweeps): the rows' sampler
    column is the same, the sampler is not."""
    monkeypatch.setitem(REGISTRY, "keys-picard", lambda: PicardODE(1, 4))
    first, _, _ = rates(tmp_path / "out", capsys, sampler="keys-picard")
    monkeypatch.setitem(REGISTRY, "keys-picard", lambda: PicardODE(3, 4))
    again, _, err = rates(tmp_path / "out", capsys, sampler="keys-picard")
    fresh, _, _ = rates(tmp_path / "fresh", capsys, sampler="keys-picard")
    assert {r["sampler"] for r in again} == {"keys-picard"}
    assert_measured_anew(first, again, fresh)
    assert_one_message(err, len(first), "sampler")


def test_a_changed_schedule_parameter_is_measured_anew(tmp_path, capsys, monkeypatch):
    """The li2023 schedule with another c1: the rows' schedule column is the same, the grid's levels are not."""
    first, _, _ = rates(tmp_path / "out", capsys)
    default = schedules.SCHEDULES["li2023"]
    monkeypatch.setitem(schedules.SCHEDULES, "li2023", lambda T, **params: default(T, **{"c1": 3.0, **params}))
    again, _, err = rates(tmp_path / "out", capsys)
    fresh, _, _ = rates(tmp_path / "fresh", capsys)
    assert_measured_anew(first, again, fresh)
    assert_one_message(err, len(first), "grid")


EDITED = '''
from samplers.base import register
from samplers.li2023 import ODE


@register("keys-edited")
class EditedODE(ODE):
    """The deterministic sampler with its output scaled: a stand-in for a sampler whose code is edited."""

    def run(self, model, grid, x, noise):
        return super().run(model, grid, x, noise) * {scale}
'''


def test_edited_sampler_code_is_measured_anew(tmp_path, capsys, monkeypatch):
    """The sampler's module is edited on disk and reloaded: same name, same class, same options, other code."""
    module_path = tmp_path / "code" / "keys_edited_sampler.py"
    module_path.parent.mkdir()
    module_path.write_text(EDITED.format(scale="1.0"))
    monkeypatch.syspath_prepend(str(module_path.parent))
    monkeypatch.setitem(REGISTRY, "keys-edited", None)  # removed again after the test
    monkeypatch.delitem(sys.modules, "keys_edited_sampler", raising=False)
    module = importlib.import_module("keys_edited_sampler")
    first, _, _ = rates(tmp_path / "out", capsys, sampler="keys-edited")
    module_path.write_text(EDITED.format(scale="1.02"))
    later = module_path.stat().st_mtime + 5
    os.utime(module_path, (later, later))
    importlib.reload(module)
    again, _, err = rates(tmp_path / "out", capsys, sampler="keys-edited")
    fresh, _, _ = rates(tmp_path / "fresh", capsys, sampler="keys-edited")
    assert_measured_anew(first, again, fresh)
    assert_one_message(err, len(first), "code")
    monkeypatch.delitem(sys.modules, "keys_edited_sampler")


def test_another_engine_option_in_the_nfe_study_is_measured_anew(tmp_path, capsys):
    """studies.nfe --G (the 1-D flow engine's nodes): same names, another engine."""
    def nfe(out: Path, G: str) -> tuple[list[dict], str]:
        capsys.readouterr()
        assert studies.nfe.main(["--sampler", "euler", "--nfe", "3", "4", "--no-amed", "--no-grid-table", "--G", G,
                                 "--out", str(out), "--no-plot", "--scheduler", "none"]) == 0
        return read_rows(out / "nfe.csv"), capsys.readouterr().err

    first, _ = nfe(tmp_path / "out", "256")
    again, err = nfe(tmp_path / "out", "1024")
    fresh, _ = nfe(tmp_path / "fresh", "1024")
    assert len(again) == 2 * len(first)
    kl = [r["kl"] for r in again[len(first):]]
    assert kl == [r["kl"] for r in fresh] and kl != [r["kl"] for r in first]
    assert_one_message(err, len(first), "engine")


# ---------------------------------------------------------------------------- what must not measure anew
def test_an_identical_rerun_reuses_every_row(tmp_path, capsys):
    first, _, _ = rates(tmp_path / "out", capsys, "--metric", "tv", "kl")
    before = (tmp_path / "out" / "rates.csv").read_bytes()
    again, _, err = rates(tmp_path / "out", capsys, "--metric", "tv", "kl")
    assert (tmp_path / "out" / "rates.csv").read_bytes() == before, "an identical rerun measured again"
    assert not ignored_lines(err)
    # A subset of the metrics is the same measurement: reused too.
    rates(tmp_path / "out", capsys, "--metric", "tv")
    assert (tmp_path / "out" / "rates.csv").read_bytes() == before


def test_batch_changes_neither_the_values_nor_the_key(tmp_path, capsys):
    """--batch is a memory budget: a Monte Carlo engine gives the same numbers for any batch, so the rows of one
    batch are reused by a run with another."""
    rates(tmp_path / "out", capsys, "--method", "flow-mc")
    before = (tmp_path / "out" / "rates.csv").read_bytes()
    rates(tmp_path / "out", capsys, "--method", "flow-mc", "--batch", "1500")
    assert (tmp_path / "out" / "rates.csv").read_bytes() == before
    rates(tmp_path / "batched", capsys, "--method", "flow-mc", "--batch", "1500")
    assert (tmp_path / "batched" / "rates.csv").read_bytes() == before


def test_the_key_is_the_same_in_another_process(tmp_path, capsys):
    """Another interpreter with another hash seed writes the same file, content keys included."""
    rates(tmp_path / "here", capsys)
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "studies.rates", "--sampler", "ode", "--out", str(tmp_path / "there"),
                    *SMALL], check=True, capture_output=True, env=env, cwd=ROOT)
    here = (tmp_path / "here" / "rates.csv").read_bytes()
    assert b"content_key" in here.splitlines()[0]
    assert (tmp_path / "there" / "rates.csv").read_bytes() == here


# ---------------------------------------------------------------------------- old files and --fresh
def test_fresh_starts_over_and_keeps_the_old_file_as_bak(tmp_path, capsys):
    target = tmp_path / "t.json"
    target.write_text(json.dumps({"weights": [0.5, 0.5], "means": [[-1.0], [1.0]], "covs": [[[0.2]], [[0.2]]]}))
    first, _, _ = rates(tmp_path / "out", capsys, "--target", str(target))
    old = (tmp_path / "out" / "rates.csv").read_bytes()
    target.write_text(json.dumps({"weights": [0.4, 0.6], "means": [[-1.0], [1.0]], "covs": [[[0.2]], [[0.2]]]}))
    again, _, err = rates(tmp_path / "out", capsys, "--target", str(target), "--fresh")
    fresh, _, _ = rates(tmp_path / "fresh", capsys, "--target", str(target))
    assert (tmp_path / "out" / "rates.csv.bak").read_bytes() == old
    assert values(again) == values(fresh) and not ignored_lines(err)


def test_a_file_from_before_content_keys_is_one_line_that_names_fresh(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    columns = studies.rates.COLUMNS
    (out / "rates.csv").write_text(",".join(columns) + "\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        studies.rates.main(["--sampler", "ode", "--out", str(out), *SMALL])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and "--fresh" in lines[0], lines
    rows, _, _ = rates(out, capsys, "--fresh")
    assert len(rows) == 4 and (out / "rates.csv.bak").exists()


@pytest.mark.parametrize("name", ["rates", "dimension", "nfe", "score_error", "tightness", "geometry", "images"])
def test_every_study_takes_fresh(name):
    parser = importlib.import_module(f"studies.{name}").build_parser()
    assert "--fresh" in {option for action in parser._actions for option in action.option_strings}
    assert parser.parse_args(["--fresh"]).fresh and not parser.parse_args([]).fresh


# ---------------------------------------------------------------------------- fingerprints: content, not names
finite = st.floats(-3, 3, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 1), finite, st.floats(0.01, 2)), min_size=1, max_size=4),
       st.integers(0, 2), st.integers(0, 2))
def test_a_target_fingerprint_is_its_parameters_and_not_its_name(components, which, part):
    weights = [w for w, _, _ in components]
    weights = [w / sum(weights) for w in weights]
    means = [[m] for _, m, _ in components]
    covs = [[[v]] for _, _, v in components]
    one = GaussianMixture(weights, means, covs, name="a")
    assert GaussianMixture(weights, means, covs, name="b").fingerprint() == one.fingerprint()
    assert product_of(one, 3, "p").fingerprint() == product_of(one, 3, "q").fingerprint()
    assert product_of(one, 3, "p").fingerprint() != product_of(one, 2, "p").fingerprint()
    # The smallest change of one parameter (the next float64) is another target.
    k = which % len(components)
    moved = [list(map(list, means)), [[list(c[0])] for c in covs]]
    if part == 0:
        moved[0][k][0] = math.nextafter(moved[0][k][0], math.inf)
    else:
        moved[1][k][0][0] = math.nextafter(moved[1][k][0][0], math.inf)
    other = GaussianMixture(weights, moved[0], moved[1], name="a")
    assert other.fingerprint() != one.fingerprint()


def test_a_grid_fingerprint_is_its_levels():
    grid = schedules.make_grid("li2023", 16)
    assert schedules.Grid(grid.abar.clone(), "another name").fingerprint() == grid.fingerprint()
    assert schedules.make_grid("li2023", 16, c1=3.0).fingerprint() != grid.fingerprint()
    assert schedules.make_grid("li2023", 17).fingerprint() != grid.fingerprint()


def test_a_sampler_fingerprint_is_its_options():
    assert PicardODE(2, 4).fingerprint() == PicardODE(2, 4).fingerprint()
    assert PicardODE(2, 4).fingerprint() != PicardODE(2, 8).fingerprint()
    assert get_sampler("expint:2").fingerprint() != get_sampler("expint:3").fingerprint()


def test_fingerprints_refuse_values_nested_deeper_than_the_limit_counting_every_level():
    """digest(values) encodes the tuple of its arguments at level 0, each container one level further: a value
    nested MAX_DEPTH - 1 lists deep (the innermost at level MAX_DEPTH) is encoded, one list more is refused; a
    dataclass is a level and its field mapping another, so half as many nested dataclasses reach the limit."""
    import dataclasses

    from theory.fingerprint import MAX_DEPTH, digest

    def lists(n):
        value = 1
        for _ in range(n):
            value = [value]
        return value

    @dataclasses.dataclass(frozen=True)
    class Box:
        inner: object

    def boxes(n):
        value = 1
        for _ in range(n):
            value = Box(value)
        return value

    digest(lists(MAX_DEPTH - 1))
    with pytest.raises(TypeError, match="nested deeper"):
        digest(lists(MAX_DEPTH))
    digest(boxes(MAX_DEPTH // 2 - 1))
    with pytest.raises(TypeError, match="nested deeper"):
        digest(boxes(MAX_DEPTH // 2))
