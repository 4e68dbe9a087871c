"""Bad input, all of it: every field of a target file is checked with one line naming the field; a sampler list
that an engine cannot measure in full is refused before any work, naming the samplers and why; a reason for "not
measured" is written whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from exact import DivergenceError, choose_method
from samplers import get_sampler, sampler_names
from studies import nfe, rates
from studies.common import ResultsFile, why_unmeasurable
from tests.strategies import mixtures
from theory.catalog import get_target
from theory.target_file import MIXTURE_KEYS, TargetError, parse_target

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- target files
def _positions(spec: dict) -> list[tuple]:
    """Every number's path in a mixture spec: ('weights', i), ('means', k, j), ('covs', k, i, j)."""
    out = [("weights", i) for i in range(len(spec["weights"]))]
    out += [("means", k, j) for k, row in enumerate(spec["means"]) for j in range(len(row))]
    out += [("covs", k, i, j) for k, C in enumerate(spec["covs"]) for i in range(len(C)) for j in range(len(C[i]))]
    return out


def _set(spec: dict, path: tuple, value) -> None:
    node = spec[path[0]]
    for step in path[1:-1]:
        node = node[step]
    node[path[-1]] = value


def _label(path: tuple) -> str:
    return path[0] + "".join(f"[{i}]" for i in path[1:])


BAD_NUMBERS = ["0.5", None, True, [], {}, float("nan"), float("inf"), -float("inf")]


@st.composite
def broken_targets(draw):
    """A valid mixture's JSON text with one mutation that makes it invalid, and what the message must name."""
    spec = draw(mixtures()).to_dict()
    mutation = draw(st.sampled_from(["drop", "unknown", "ragged", "not a number", "negative variance", "weights",
                                     "empty", "nested", "top level"]))
    if mutation == "drop":
        field = draw(st.sampled_from(MIXTURE_KEYS))
        del spec[field]
        needle = field
    elif mutation == "unknown":
        field = draw(st.sampled_from(["covariances", "variances", "weight", "Means", "d", "name"]))
        spec[field] = spec["covs"]
        needle = repr(field)
    elif mutation == "ragged":
        k = draw(st.integers(0, len(spec["means"]) - 1))
        spec["means"][k].append(0.25)  # one mean longer than the others (or than the covariances, when K = 1)
        needle = "means" if len(spec["means"]) > 1 else "covs"
    elif mutation == "not a number":
        path = draw(st.sampled_from(_positions(spec)))
        _set(spec, path, draw(st.sampled_from(BAD_NUMBERS)))
        needle = _label(path)
    elif mutation == "negative variance":
        k = draw(st.integers(0, len(spec["covs"]) - 1))
        i = draw(st.integers(0, len(spec["covs"][k]) - 1))
        spec["covs"][k][i][i] = -abs(spec["covs"][k][i][i]) - draw(st.floats(1e-6, 10.0))
        needle = f"covs[{k}][{i}][{i}]"
    elif mutation == "weights":
        spec["weights"][0] = spec["weights"][0] * draw(st.floats(1.01, 3.0)) + 0.01
        needle = "weights must sum to one"
    elif mutation == "empty":
        field = draw(st.sampled_from(MIXTURE_KEYS))
        spec[field] = []
        needle = f"{field} must not be empty"
    elif mutation == "nested":
        field = draw(st.sampled_from(MIXTURE_KEYS))
        spec[field] = [spec[field]]  # one level of nesting too many
        needle = field
    else:
        return json.dumps(draw(st.sampled_from([[spec], 1.0, "mix1d", None]))), "must hold an object"
    return json.dumps(spec), needle


@settings(max_examples=300, deadline=None)
@given(broken_targets())
def test_every_broken_target_file_is_one_line_naming_the_field(case):
    text, needle = case
    with pytest.raises(TargetError) as refused:
        parse_target(text, "target file 'mine.json': ")
    message = str(refused.value)
    assert "\n" not in message, message
    assert message.startswith("target file 'mine.json': "), message
    assert needle in message, f"{needle!r} not in {message!r}"


@settings(max_examples=60, deadline=None)
@given(mixtures())
def test_a_valid_target_file_reads_back_as_written(target):
    spec = target.to_dict()
    read = parse_target(json.dumps(spec))
    assert read == {"kind": "mixture", **spec}
    product = parse_target(json.dumps({"product": get_target("mix1d").to_dict(), "d": 3}))
    assert product["kind"] == "product" and product["d"] == 3


@pytest.mark.parametrize("d, needle", [(0, "d >= 1"), (-2, "d >= 1"), (1.5, "d >= 1"), ("8", "d >= 1"),
                                       (True, "d >= 1"), (None, "d >= 1")])
def test_a_product_target_needs_an_integer_d(d, needle):
    with pytest.raises(TargetError, match=needle):
        parse_target(json.dumps({"product": get_target("mix1d").to_dict(), "d": d}))


def test_a_product_of_a_2d_mixture_or_with_stray_keys_is_refused():
    with pytest.raises(TargetError, match="product: must be a 1-D mixture"):
        parse_target(json.dumps({"product": get_target("mix2d").to_dict(), "d": 2}))
    with pytest.raises(TargetError, match="unknown key 'dims'"):
        parse_target(json.dumps({"product": get_target("mix1d").to_dict(), "d": 2, "dims": 2}))
    with pytest.raises(TargetError, match="product: lacks covs"):
        parse_target(json.dumps({"product": {"weights": [1.0], "means": [[0.0]]}, "d": 2}))


NOT_PSD = [[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]]  # every 2 x 2 minor positive, determinant < 0


def test_a_covariance_that_is_not_psd_is_one_line_from_get_target(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"weights": [1.0], "means": [[0.0, 0.0, 0.0]], "covs": [NOT_PSD]}))
    with pytest.raises(TargetError) as refused:
        get_target(str(path))
    assert "positive semi-definite" in str(refused.value) and str(path) in str(refused.value)
    assert "\n" not in str(refused.value)


def _rates(argv: list[str], out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "studies.rates", *argv, "--T", "8", "16", "--no-plot",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


CLI_CASES = {  # file name -> (its text, what the one line says)
    "ragged.json": ('{"weights": [0.5, 0.5], "means": [[-1.0], [1.0, 2.0]], "covs": [[[0.1]], [[0.2]]]}', "means[1]"),
    "nan.json": ('{"weights": [0.5, 0.5], "means": [[-1.0], [NaN]], "covs": [[[0.1]], [[0.2]]]}', "means[1][0]"),
    "text.json": ("weights: 0.5, 0.5", "malformed JSON"),
    "negative.json": ('{"weights": [1.0], "means": [[0.0]], "covs": [[[-0.1]]]}', "covs[0][0][0]"),
    "product.json": ('{"product": {"weights": [1.0], "means": [[0.0]], "covs": [[[1.0]]]}, "d": 0}', "d >= 1"),
}


@pytest.mark.parametrize("name", [*CLI_CASES, "missing.json"])
def test_a_bad_target_file_on_the_command_line_is_exit_2_and_one_line(name, tmp_path):
    path = tmp_path / name
    if name in CLI_CASES:
        path.write_text(CLI_CASES[name][0])
    needle = CLI_CASES[name][1] if name in CLI_CASES else "target file not found"
    done = _rates(["--target", str(path)], tmp_path / "out")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m studies.rates: error: ") and needle in lines[0], lines[0]
    assert not (tmp_path / "out" / "rates.csv").exists()


def test_what_only_an_eigendecomposition_sees_is_one_line_too(capsys, tmp_path):
    """A covariance that is not PSD although every 2 x 2 minor is: found once torch is loaded (the door only checks
    the file's structure), still one line and exit 2 before any work (in this process: torch is loaded already)."""
    path = tmp_path / "psd.json"
    path.write_text(json.dumps({"weights": [1.0], "means": [[0.0] * 3], "covs": [NOT_PSD]}))
    line = _refused(rates, ["--target", str(path), "--T", "8"], tmp_path / "out", capsys)
    assert "positive semi-definite" in line and str(path) in line, line


# ---------------------------------------------------------------------------- samplers an engine cannot measure
def _refused(module, argv: list[str], out: Path, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        module.main([*argv, "--no-plot", "--scheduler", "none", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert not out.exists() or not list(out.rglob("*.csv")), "a refused command wrote results"
    return err[0]


@pytest.mark.parametrize("argv, named, measurable", [
    (["--sampler", "ode", "ddpm", "ode-rmp", "--method", "grid-1d-flow"], ["ddpm", "ode-rmp"], ["ode"]),
    (["--sampler", "ddpm", "ode", "--method", "grid-1d-kernel"], ["ode"], ["ddpm"]),
    (["--sampler", "ddim", "ode-rmp", "--target", "mix2d"], ["ode-rmp"], ["ddim"]),
    (["--sampler", "ddpm", "ddim", "--target", "mix2d", "--method", "flow-mc"], ["ddpm"], ["ddim"]),
    (["--sampler", "ddpm", "ode", "--metric", "kl_path"], ["ode"], ["ddpm"]),
])
def test_rates_refuses_a_sampler_list_it_cannot_measure_in_full(argv, named, measurable, capsys, tmp_path):
    line = _refused(rates, [*argv, "--T", "8", "16"], tmp_path / "out", capsys)
    head, _, reasons = line.partition(": error: ")[2].partition(":")
    for name in named:
        assert name in head.replace(",", " ").split(), line
        assert f"{name}: " in reasons, f"no reason given for {name}: {line}"
    for name in measurable:
        assert name not in head.replace(",", " ").split(), line


def test_the_other_studies_refuse_unmeasurable_samplers_before_any_work(capsys, tmp_path):
    from studies import dimension, score_error

    line = _refused(dimension, ["--family", "gaussian", "--d", "2", "--sampler", "ddim", "ode-rmp", "--T", "16"],
                    tmp_path / "dim", capsys)
    assert "ode-rmp" in line and "ddim," not in line, line
    line = _refused(nfe, ["--target", "mix2d", "--sampler", "euler", "ddpm", "--nfe", "4"], tmp_path / "nfe", capsys)
    assert "ddpm" in line, line
    line = _refused(score_error, ["--target", "mix2d", "--d", "2", "--sampler", "ddim", "ddpm"], tmp_path / "se",
                    capsys)
    assert "ddpm" in line, line


TARGETS = [("mix1d", None), ("mix2d", None), ("gaussian", 3), ("product-bimodal", 2), ("std-normal", 2),
           ("subspace", 4), ("points1d", None)]


@pytest.mark.parametrize("name, d", TARGETS)
def test_the_method_auto_picks_is_never_refused_when_named(name, d):
    """why_unmeasurable's requirements of each named method agree with exact.choose_method: the method auto picks
    for a pair is accepted by name, and auto refuses exactly the pairs choose_method refuses."""
    target = get_target(name, d=d)
    for sampler_name in sampler_names():
        sampler = get_sampler(sampler_name)
        try:
            method = choose_method(target, sampler)
        except DivergenceError:
            assert why_unmeasurable(target, sampler, "auto"), sampler_name
            continue
        assert why_unmeasurable(target, sampler, "auto") is None
        assert why_unmeasurable(target, sampler, method) is None, f"{sampler_name} on {name}: {method} refused"


# ---------------------------------------------------------------------------- reasons written whole
LONG_REASON = ("the 1-D map of 'ddim' on li2023 T=8 is not increasing at x = -3.2, 1.7, 2.9, where the change of "
               "variables has no density; a longer explanation, with commas, semicolons; and quotes \"like this\", "
               + "that goes on " * 20 + "to the end")


def test_a_not_measured_reason_is_written_whole(monkeypatch, tmp_path):
    assert len(LONG_REASON) > 300 and "," in LONG_REASON

    def refuse(*args, **kwargs):
        raise DivergenceError(LONG_REASON)

    monkeypatch.setattr(rates, "measure", refuse)
    args = rates.build_parser().parse_args(["--sampler", "ddim", "--T", "8", "--out", str(tmp_path)])
    job = rates.jobs(args, torch.device("cpu"))[0]
    rows = rates.work(job)
    assert rows and all(row["method"] == "not measured: " + LONG_REASON for row in rows)
    results = ResultsFile(tmp_path / "r.csv", rates.COLUMNS, rates.KEY)
    results.append(rows)
    assert all(row["method"] == "not measured: " + LONG_REASON for row in results.rows())

    monkeypatch.setattr(nfe, "measure", refuse)
    args = nfe.build_parser().parse_args(["--sampler", "euler", "--nfe", "4", "--no-amed", "--no-grid-table",
                                          "--out", str(tmp_path)])
    row, = nfe.work(nfe.jobs(args, torch.device("cpu"))[0])
    assert row["status"] == "not-invertible" and row["method"] == LONG_REASON


def test_a_covariance_asymmetric_beyond_rounding_is_refused_and_one_within_it_is_not():
    """Symmetry is checked to a relative 1e-10 (rounding in a written file passes; a real asymmetry does not), and
    a 2 x 2 minor below zero is refused as not positive semi-definite, each in one line naming the entry."""
    from theory.target_file import TargetError, check_mixture

    def spec(c01, c10, c00=1.0, c11=1.0):
        return {"weights": [1.0], "means": [[0.0, 0.0]], "covs": [[[c00, c01], [c10, c11]]]}

    check_mixture(spec(0.3, 0.3 + 1e-13))
    for bad in (spec(0.3, 0.3 + 1e-6), spec(0.3, 0.5)):
        with pytest.raises(TargetError, match="symmetric") as err:
            check_mixture(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(TargetError, match="positive semi-definite"):
        check_mixture(spec(1.5, 1.5))
