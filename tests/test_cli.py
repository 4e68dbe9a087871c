"""One CLI vocabulary for every study (studies/__main__.py lists them): each invalid value of a numeric flag, and
each bad name (sampler, target, schedule, dimension, device, scheduler), ends in one line on stderr naming the flag
or value, exit status 2, before any measurement starts and without writing a results file."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from samplers import sampler_names
from studies.__main__ import STUDIES, summary
from studies.common import FLAGS, ResultsFile, rows_of

ROOT = Path(__file__).resolve().parents[1]


def _parser(name: str):
    module = importlib.import_module(f"studies.{name}")
    assert callable(getattr(module, "build_parser", None)), f"studies.{name} has no build_parser()"
    assert callable(getattr(module, "main", None)), f"studies.{name} has no main(argv)"
    return module, module.build_parser()


def _options(parser) -> dict[str, object]:
    """Option string -> its argparse action, hidden aliases included."""
    return {option: action for action in parser._actions for option in action.option_strings}


def _kind(value_type) -> type | None:
    """int or float for a numeric flag (typed values declare it; a bare int or float is numeric too)."""
    kind = getattr(value_type, "kind", value_type)
    return kind if kind in (int, float) else None


def _accepts(value_type, text: str) -> bool:
    """Whether a typed value accepts `text`, decided from its declared bounds (never by calling it)."""
    try:
        value = float(text)
    except ValueError:
        return False
    if _kind(value_type) is int and not float(value).is_integer():
        return False
    low, inclusive, high = value_type.minimum, value_type.inclusive, value_type.maximum
    above = value > low or (value == low and inclusive)
    return math.isfinite(value) and above and (high is None or value <= high)


def _one_line_exit(module, argv, capsys) -> str:
    """Run main(argv); it must exit with status 2 and exactly one line on stderr, which is returned."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        module.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, f"{argv}: exit {stop.value.code!r}, stderr {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{argv}: stderr is not one line: {err!r}"
    return lines[0]


def test_every_study_is_listed_with_its_docstring():
    for name in STUDIES:
        line = summary(name)
        assert line and not line.startswith("("), f"studies.{name}: {line}"


@pytest.mark.parametrize("name", STUDIES)
def test_numeric_flags_refuse_invalid_values_with_one_line(name, capsys, tmp_path):
    module, parser = _parser(name)
    numeric = {option: action for option, action in _options(parser).items() if _kind(action.type)}
    assert numeric, f"studies.{name} has no numeric flag: nothing to check"
    checked = 0
    for option, action in numeric.items():
        assert hasattr(action.type, "minimum"), (
            f"studies.{name} {option} is a bare {_kind(action.type).__name__}: give it integer(..) or real(..)")
        for value in ("0", "-1", "x"):
            if _accepts(action.type, value):
                continue  # e.g. --seed 0: a value the flag accepts would start a measurement
            line = _one_line_exit(module, [option, value, "--out", str(tmp_path / "out")], capsys)
            assert f"argument {option}: " in line, line
            named = line.split(f"argument {option}: ", 1)[1].split()[0].strip("'\"")
            assert named == value, f"{option} {value}: the message names {named!r}: {line}"
            checked += 1
    assert checked >= len(numeric), f"studies.{name}: fewer checks than numeric flags"
    assert not (tmp_path / "out").exists()


# (arguments, text the one error line must contain, flags the study must have for the case to apply)
BAD_NAMES = [
    (["--sampler", "nope"], "'nope'", {"--sampler"}),
    (["--sampler", "picard:0,4"], "got '0'", {"--sampler"}),  # a family's bad argument, not only a bad name
    (["--target", "nope"], "'nope'", {"--target"}),
    (["--target", "gaussian", "--d", "-3"], "-3", {"--target", "--d"}),
    (["--target", "mix1d", "--d", "5"], "mix1d", {"--target", "--d"}),
    (["--schedule", "weird"], "'weird'", {"--schedule"}),
    (["--device", "tpu"], "'tpu'", {"--device"}),
    (["--scheduler", "nowhere"], "'nowhere'", {"--scheduler"}),
]
if not torch.cuda.is_available():
    BAD_NAMES.append((["--device", "cuda"], "CUDA is not available", {"--device"}))


@pytest.mark.parametrize("name", STUDIES)
def test_bad_names_exit_2_with_one_line_before_any_work(name, capsys, tmp_path):
    module, parser = _parser(name)
    options = _options(parser)
    applied = 0
    for argv, needle, needs in BAD_NAMES:
        if not needs <= options.keys():
            continue
        out = tmp_path / f"out{applied}"
        line = _one_line_exit(module, [*argv, "--out", str(out)], capsys)
        assert needle in line, f"{argv}: {line}"
        assert not out.exists() or not any(out.rglob("*.csv")), f"{argv} wrote {list(out.rglob('*'))}"
        applied += 1
    assert applied >= 3, f"studies.{name}: only {applied} of the bad-name cases apply"


@pytest.mark.parametrize("name", STUDIES)
def test_shared_flags_mean_the_same_everywhere(name):
    """A shared flag has the same kind of value in every study; every study has the common ones, and every study
    that sweeps measurements (a `STUDY` skeleton) takes --scheduler and --workers."""
    module, parser = _parser(name)
    options = _options(parser)
    for flag in ("--seed", "--device", "--out", "--no-plot"):
        assert flag in options, f"studies.{name} lacks {flag}"
    if hasattr(module, "STUDY"):
        assert {"--scheduler", "--workers"} <= options.keys(), f"studies.{name} sweeps without --scheduler"
    for flag, (value_type, _) in FLAGS.items():
        option = "--" + flag.replace("_", "-")
        if option in options:
            assert _kind(options[option].type) == _kind(value_type), f"studies.{name} {option} changes kind"
    parser.format_help()  # every help text renders (a stray % would break it)


def test_old_spellings_stay_as_hidden_aliases():
    nfe = _parser("nfe")[1].parse_args(["--solvers", "euler", "heun"])
    assert nfe.sampler == ["euler", "heun"]
    geometry = _parser("geometry")[1].parse_args(["--targets", "mixture"])
    assert geometry.target == ["mixture"]


SWEEPING = [name for name in STUDIES if name != "images"]  # the studies built on studies.common.Study


@pytest.mark.parametrize("name", SWEEPING)
def test_jobs_are_plain_values_that_travel_to_another_process(name, tmp_path):
    """Each job of the default command pickles to an equal job made of plain values, and `work` pickles by
    reference (a module-level function), as a Dask worker needs."""
    module, parser = _parser(name)
    args = parser.parse_args(["--out", str(tmp_path)])
    jobs = module.STUDY.jobs(args, torch.device("cpu"))
    assert jobs, f"studies.{name}: the default command has no jobs"
    plain = (str, int, float, bool, type(None))
    for job in jobs:
        for field, value in vars(job).items():
            values = value if isinstance(value, tuple) else (value,)
            assert all(isinstance(v, plain) for v in values), f"studies.{name} job {field} = {value!r} is not plain"
        assert pickle.loads(pickle.dumps(job)) == job
        assert job.row_keys() and all(set(key) == set(module.STUDY.key) for key in job.row_keys())
    assert pickle.loads(pickle.dumps(module.STUDY.work)) is module.STUDY.work
    assert len(set(jobs)) == len(jobs), f"studies.{name}: a job appears twice"


@pytest.mark.parametrize("name", SWEEPING)
def test_an_out_that_is_a_file_is_one_line(name, capsys, tmp_path):
    module, _ = _parser(name)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = _one_line_exit(module, ["--out", str(blocker)], capsys)
    assert "--out" in line and str(blocker) in line, line


def test_rows_of_keeps_one_commands_rows_in_file_order(tmp_path):
    path = tmp_path / "r.csv"
    results = ResultsFile(path, ["sampler", "T", "value"], ["sampler", "T"])
    results.append([{"sampler": "ddim", "T": 8, "value": 0.5}, {"sampler": "ddpm", "T": 8, "value": 0.25},
                    {"sampler": "ddim", "T": 16, "value": 0.125}, {"sampler": "ddim", "T": 32, "value": 1e-3}])
    rows = rows_of(path, [{"sampler": "ddim", "T": 32}, {"sampler": "ddim", "T": 8}])
    assert rows["value"].tolist() == [0.5, 1e-3]
    assert rows_of(path, []).empty


@pytest.mark.parametrize("name", SWEEPING)
def test_sampler_all_means_every_sampler_the_study_measures(name, tmp_path):
    module, parser = _parser(name)
    if "--sampler" not in _options(parser):
        pytest.skip(f"studies.{name} has no --sampler")
    args = parser.parse_args(["--sampler", "all", "--out", str(tmp_path)])
    names = {job.sampler for job in module.STUDY.jobs(args, torch.device("cpu"))}
    if name == "nfe":
        expected = set(module.SOLVERS)
    elif name == "tightness":  # the samplers some theorem covers
        expected = set(module.samplers_with_theorems())
    else:
        expected = set(sampler_names())
    assert expected <= names, f"studies.{name} --sampler all leaves out {expected - names}"


# ---------------------------------------------------------------------------- the front door (studies.front)
def test_the_front_door_index_is_generated_from_the_registries_and_parsers():
    from studies import front

    assert front.load_index() == json.loads(json.dumps(front.build_index())), (
        f"{front.INDEX_PATH.name} is stale: run `{front.REGENERATE}`")


@pytest.mark.parametrize("name", STUDIES)
def test_the_front_door_rebuilds_each_study_parser_exactly(name, monkeypatch):
    """The parser rebuilt from the index (without torch) prints the study's own --help and parses as it does."""
    from studies import front

    monkeypatch.setenv("COLUMNS", "100")
    _, parser = _parser(name)
    rebuilt = front.rebuild_parser(json.loads(json.dumps(front.parser_spec(parser))))  # as read from the file
    assert rebuilt.format_help() == parser.format_help()
    assert vars(rebuilt.parse_args(["--out", "x"])).keys() == vars(parser.parse_args(["--out", "x"])).keys()


@pytest.mark.parametrize("name", STUDIES)
def test_list_prints_every_registered_name_with_one_line_each(name, capsys):
    from samplers.base import REGISTRY
    from theory.bounds import THEOREMS
    from theory.catalog import PARAMETRISED, TARGETS
    from theory.schedules import SCHEDULES

    module, _ = _parser(name)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        module.main(["--list"])
    assert stop.value.code in (0, None)
    out = capsys.readouterr().out
    listed = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    names = [*REGISTRY, *TARGETS, *(f + ":" for f in PARAMETRISED), *SCHEDULES, *(t.id for t in THEOREMS)]
    for registered in names:
        assert registered in listed, f"studies.{name} --list leaves out {registered!r}"
        assert len(listed[registered].split()) > 1, f"{registered!r} is listed without a description"


def _run_without_torch(argv: list[str]) -> tuple[int, str, list[str]]:
    """`python -X importtime -m studies.<...> argv` in a subprocess: exit status, stdout, and the stderr lines that
    are not import timings; fails if torch (or any torch.* module) was imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", *argv], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert imported, "no import timings: -X importtime did not run"
    heavy = [module for module in imported if module.split(".")[0] in ("torch", "numpy", "pandas")]
    assert not heavy, f"{argv} imported {heavy[:5]}"
    return done.returncode, done.stdout, [line for line in done.stderr.splitlines()
                                          if not line.startswith("import time:")]


@pytest.mark.parametrize("name", STUDIES)
def test_help_and_list_answer_before_torch_is_imported(name, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # the width the subprocess formats with
    module, parser = _parser(name)
    code, out, err = _run_without_torch([f"studies.{name}", "--help"])
    assert code == 0 and not err, err
    with contextlib.redirect_stdout(io.StringIO()) as real, pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert out == real.getvalue()  # the door's help is the study's own help
    code, out, err = _run_without_torch([f"studies.{name}", "--list"])
    assert code == 0 and not err, err
    assert "samplers" in out and "theorems" in out


REFUSED_EARLY = [  # (argv, the flag it needs, what the one line says)
    (["--sampler", "no-such-sampler"], "--sampler", "unknown sampler 'no-such-sampler'"),
    (["--sampler", "all", "ddim"], "--sampler", "unknown sampler 'all'"),
    (["--target", "no-such-target"], "--target", "unknown target 'no-such-target'"),
    (["--schedule", "no-such-schedule"], "--schedule", "unknown schedule 'no-such-schedule'"),
    (["--seed", "-1"], "--seed", "-1 is below"),
    (["--T", "x"], "--T", "'x' is not an integer"),
    (["--no-such-flag"], "--out", "unrecognized arguments"),
]


@pytest.mark.parametrize("name", STUDIES)
def test_refusals_answer_before_torch_with_the_studys_own_words(name, capsys, tmp_path):
    """Each bad name or number is refused in a process that never imports torch, with one line and exit status 2,
    and the study itself (run in this process, registries loaded) refuses it with the same line."""
    module, parser = _parser(name)
    options = _options(parser)
    applied = 0
    for argv, needs, needle in REFUSED_EARLY:
        if needs not in options:
            continue
        argv = [*argv, "--out", str(tmp_path / "out")]
        code, _, err = _run_without_torch([f"studies.{name}", *argv])
        assert code == 2 and len(err) == 1, f"{argv}: exit {code}, stderr {err}"
        assert needle in err[0], err[0]
        assert err[0] == _one_line_exit(module, argv, capsys), f"{argv}: the door and the study disagree"
        applied += 1
    assert applied >= 3, f"studies.{name}: only {applied} of the early refusals apply"


@pytest.mark.parametrize("name", STUDIES)
def test_the_door_lets_every_valid_command_through(name, tmp_path):
    """The door returns (the study goes on) for the default command and for valid names of every form it judges:
    parametrised samplers and targets, a JSON file, a study's own target."""
    from studies import front

    index = front.load_index()
    _, parser = _parser(name)
    options = _options(parser)
    target_file = tmp_path / "t.json"
    target_file.write_text(json.dumps({"weights": [1.0], "means": [[0.0]], "covs": [[[1.0]]]}))
    commands = [[]]
    if "--sampler" in options:
        commands += [["--sampler", "all"], ["--sampler", "ddim", "amed-plugin:ipndm", "expint:2"]]
    if "--target" in options:
        commands += [["--target", str(target_file)], ["--target", "subspace:2"], ["--target", "mix1d"]]
        commands += [["--target", extra] for extra in getattr(parser, "extra_names", {}).get("target", [])]
    if "--schedule" in options:
        commands += [["--schedule", schedule] for schedule, _ in index["schedules"]]
    for argv in commands:
        assert front.front_door(name, [*argv, "--out", str(tmp_path)], index) is None


def test_a_stale_index_never_refuses_what_the_study_might_accept(tmp_path):
    """After an edit to a study's parser sources the door refuses nothing (the study decides), and a name missing
    from the index but written in the registries' sources is left to the study; a fresh index still refuses."""
    import copy

    from studies import front

    index = front.load_index()
    argv = ["--T", "1", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as stop:
        front.front_door("rates", argv, index)
    assert stop.value.code == 2
    stale = copy.deepcopy(index)
    stale["studies"]["rates"]["sources"] = "an older digest"
    assert front.front_door("rates", argv, stale) is None
    assert front.front_door("rates", ["--sampler", "no-such-sampler", "--out", str(tmp_path)], stale) is None
    missing = copy.deepcopy(index)
    missing["samplers"] = [entry for entry in missing["samplers"] if entry[0] != "ddim"]
    assert front.front_door("rates", ["--sampler", "ddim", "--out", str(tmp_path)], missing) is None
    with pytest.raises(SystemExit):
        front.front_door("rates", ["--sampler", "no-such-sampler", "--out", str(tmp_path)], missing)
