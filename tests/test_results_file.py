"""studies.common.ResultsFile: rows appended as they finish, resumable, never a NaN; 'not measured' is a cell of its
own, distinct from an empty one, and reads back as None."""

from __future__ import annotations

import csv
import math

import pytest

from exact import DivergenceError
from studies.common import ResultsFile

COLUMNS = ["sampler", "T", "value", "extra"]
KEY = ["sampler", "T"]


def test_not_measured_is_written_as_the_marker_and_read_back_as_none(tmp_path):
    results = ResultsFile(tmp_path / "r.csv", COLUMNS, KEY)
    results.append([{"sampler": "ddim", "T": 4, "value": 0.25},
                    {"sampler": "ddpm", "T": 4, "value": ResultsFile.NOT_MEASURED}])
    with (tmp_path / "r.csv").open(newline="") as fh:
        raw = list(csv.DictReader(fh))
    # In the file: the marker where a value was asked for and not measured, an empty cell where nothing was asked.
    assert raw[1]["value"] == ResultsFile.NOT_MEASURED and raw[1]["extra"] == "" and raw[0]["extra"] == ""
    rows = results.rows()
    assert rows[0]["value"] == "0.25" and rows[1]["value"] is None
    assert rows[0]["extra"] == "" and rows[1]["extra"] == ""
    # A fresh reader of the same file (a resumed run) sees the same rows and the same keys as done.
    again = ResultsFile(tmp_path / "r.csv", COLUMNS, KEY)
    assert again.rows() == rows
    assert again.done(sampler="ddpm", T=4) and not again.done(sampler="ddpm", T=8)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused_and_nothing_is_written(tmp_path, bad):
    results = ResultsFile(tmp_path / "r.csv", COLUMNS, KEY)
    with pytest.raises(DivergenceError, match="non-finite value"):
        results.append([{"sampler": "ddim", "T": 4, "value": 1.0}, {"sampler": "ode", "T": 4, "value": bad}])
    assert results.rows() == [] and not results.done(sampler="ddim", T=4)


def test_a_file_with_other_columns_is_refused(tmp_path):
    ResultsFile(tmp_path / "r.csv", COLUMNS, KEY)
    with pytest.raises(DivergenceError, match="has columns"):
        ResultsFile(tmp_path / "r.csv", COLUMNS[:-1], KEY)
