"""Order fitting, the theorems table, and studies.rates end to end (bad input, resumption, outputs)."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from theory.bounds import BY_ID, check_bound, theorems_for
from theory.rates import RateError, fit_order, local_slopes


def test_fit_recovers_a_known_order_and_its_interval_covers_it():
    T = np.array([8, 16, 32, 64, 128, 256], float)
    exact = fit_order(T, 3.0 * T**-1.5)
    assert abs(exact.order - 1.5) < 1e-10
    rng = np.random.default_rng(0)
    noisy = fit_order(T, 3.0 * T**-1.5 * np.exp(0.05 * rng.standard_normal(T.size)), window=6)
    assert noisy.low < 1.5 < noisy.high and noisy.high - noisy.low < 0.3
    np.testing.assert_allclose(local_slopes(T, T**-2.0), 2.0)
    steps = 1 / T
    assert abs(fit_order(steps, 5 * steps**2, decreasing=False).order - 2.0) < 1e-10


def test_fit_refuses_non_positive_errors():
    with pytest.raises(RateError):
        fit_order([1, 2, 3], [1.0, 0.0, 0.5])


def test_needed_constant_is_flat_exactly_when_the_shape_is_right():
    theorem = BY_ID["liyan2024-ddpm"]
    Ts = [64, 128, 256, 512, 1024]
    on_shape = [7.0 * theorem.shape(T, 3) for T in Ts]
    assert check_bound(theorem, Ts, 3, on_shape).trend == "steady"
    assert check_bound(theorem, Ts, 3, [v / math.sqrt(T) for v, T in zip(on_shape, Ts)]).trend == "falling"
    assert check_bound(theorem, Ts, 3, [v * T for v, T in zip(on_shape, Ts)]).trend == "rising"
    assert {t.id for t in theorems_for("ddpm")} >= {"li2023-ddpm", "liyan2024-ddpm", "benton2023-ddpm"}
    assert [t.id for t in theorems_for("ddpm", "kl")] == ["benton2023-ddpm", "ddpm2025-kl", "ddpm2025-kl-lower"]


def _run(args, cwd):
    return subprocess.run([sys.executable, "-m", "studies.rates", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(_repo()), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def _run_here(args, capsys) -> tuple[int, str]:
    """`python -m studies.rates ARGS` in this process (exit status, stderr): bad input must stop before any work, so
    an interpreter start per case (3 to 4 s, mostly importing torch) would be the whole cost of these tests; the
    end-to-end tests below still run the module as its own process."""
    from studies import rates

    try:
        rates.main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--sampler", "nope"], "unknown sampler 'nope'"),
        (["--T", "1"], "argument --T: 1 is below the smallest allowed value 2"),
        (["--schedule", "weird"], "unknown schedule 'weird'"),
        (["--target", "missing.json"], "target file not found"),
        (["--metric", "w3"], "metric 'w3' is not available"),
        (["--sampler", "ddim", "--metric", "kl_path"], "kl_path needs a sampler written as Gaussian transitions"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_rows(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    code, stderr = _run_here([*args, "--T", "8", "--out", str(out), "--no-plot"] if "--T" not in args else
                             [*args, "--out", str(out), "--no-plot"], capsys)
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and needle in lines[0], stderr
    csv = out / "rates.csv"
    assert not csv.exists() or len(pd.read_csv(csv)) == 0


def test_bad_weights_in_a_json_target(tmp_path, capsys):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"weights": [0.5, 0.6], "means": [[0.0], [1.0]], "covs": [[[1.0]], [[1.0]]]}))
    code, stderr = _run_here(["--target", str(path), "--T", "8", "--out", str(tmp_path / "o"), "--no-plot"], capsys)
    assert code == 2 and "sum to one" in stderr


def test_a_small_sweep_writes_tidy_rows_resumes_and_plots(tmp_path, capsys):
    """The first run is `python -m studies.rates` as its own process (the README's command, default scheduler and
    figure); the resumption is the same arguments through main() in this process, which reads the same file by the
    same code: the law (no row recomputed or duplicated, the same numbers) does not depend on a second interpreter."""
    from studies import rates

    out = tmp_path / "out"
    args = ["--sampler", "ddim", "ddpm", "--T", "16", "32", "64", "--out", str(out)]
    first = _run(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    frame = pd.read_csv(out / "rates.csv")
    for column in ["sampler", "schedule", "target", "d", "T", "nfe", "metric", "value", "numerical_error", "method"]:
        assert column in frame.columns
    assert len(frame) == 2 * 3 * 2 and frame["value"].notna().all() and (frame["value"] > 0).all()
    assert set(frame["method"]) == {"grid-1d-flow", "grid-1d-kernel"}
    assert (frame["nfe"] == frame["T"] - 1).all()
    assert (out / "rates.png").stat().st_size > 10_000 and (out / "orders.csv").exists()
    assert "verdict ddim: TV order" in first.stdout and "verdict ddpm:" in first.stdout
    # a second run finds every row done: nothing is recomputed or duplicated, and the numbers are the same
    assert rates.main(args) == 0
    assert "verdict ddim: TV order" in capsys.readouterr().out
    again = pd.read_csv(out / "rates.csv")
    pd.testing.assert_frame_equal(frame, again)


def test_monte_carlo_methods_follow_the_seed(tmp_path):
    """flow Monte Carlo in d = 2: the same seed gives the same numbers, another seed other numbers. Through main()
    in this process: the seed reaches the engine by the same code as from the command line, and three interpreter
    starts (about 4 s each, mostly importing torch) were all of this test's time. Each run starts from the seed
    alone (the engine makes its own generator from it), so runs in one process are as independent as in three."""
    from studies import rates

    runs = {}
    for label, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert rates.main(["--sampler", "ddim", "--target", "mix2d", "--T", "8", "16", "--seed", seed,
                           "--out", str(tmp_path / label), "--no-plot", "--scheduler", "none"]) == 0
        runs[label] = pd.read_csv(tmp_path / label / "rates.csv")
    assert set(runs["a"]["method"]) == {"flow-mc"}
    pd.testing.assert_series_equal(runs["a"]["value"], runs["b"]["value"])
    assert not runs["a"]["value"].equals(runs["c"]["value"])


def test_path_kl_rows_bound_the_output_kl_and_follow_the_seed(tmp_path, capsys):
    """--metric kl_path kl_path_sampler: closed-form rows on a Gaussian target (method path-kl-gaussian), Monte
    Carlo rows with their standard error on mix1d; kl_path_sampler >= kl (data processing, KL(P || Q) direction);
    the verdict abstains on two T; the same seed gives the same Monte Carlo numbers."""
    from studies import rates

    frames = {}
    for label, target in (("g", "gaussian"), ("m", "mix1d"), ("m2", "mix1d")):
        out = tmp_path / label
        rates.main(["--sampler", "ddpm", "--target", target, "--d", "1", "--T", "8", "16", "--metric", "kl",
                    "kl_path", "kl_path_sampler", "--out", str(out), "--no-plot", "--scheduler", "none"])
        frames[label] = pd.read_csv(out / "rates.csv")
    stdout = capsys.readouterr().out
    # two T are too few for an order (the verdict's reading of kl_path against the KL theorems is in test_verdicts)
    assert "KL_PATH: too few T to decide" in stdout and "proves" not in stdout
    for label, method in (("g", "path-kl-gaussian"), ("m", "path-kl-mc")):
        frame = frames[label]
        wide = frame.pivot(index="T", columns="metric", values="value")
        assert set(frame[frame["metric"] == "kl_path"]["method"]) == {method}
        errors = frame.pivot(index="T", columns="metric", values="numerical_error")
        assert (wide["kl_path_sampler"] + 3 * errors["kl_path_sampler"] >= wide["kl"]).all(), wide
        assert (errors["kl_path"] > 0).all()
    pd.testing.assert_frame_equal(frames["m"], frames["m2"])


def test_a_T_at_which_the_map_folds_is_not_measured_and_the_sweep_goes_on(tmp_path, capsys, monkeypatch):
    """A sampler whose map folds at T = 8 (the exact engine refuses it) and not at T = 32: the T = 8 rows say "not
    measured" with the reason, T = 32 is measured, and the run ends normally. (The sampler is DDIM mirrored,
    x -> -x, on grids of fewer than 16 levels: a map that is not increasing there.)"""
    from samplers.base import REGISTRY, Sampler, SamplerInfo, get_sampler
    from studies import rates
    from studies.common import ResultsFile

    class FoldsOnCoarseGrids(Sampler):
        info = SamplerInfo("folds-on-coarse-grids", stochastic=False, evals_per_step=1, order=1.0, reference="test")

        def run(self, model, grid, x, noise=None):
            out = get_sampler("ddim").run(model, grid, x, noise)
            return -out if grid.T < 16 else out

    monkeypatch.setitem(REGISTRY, "folds-on-coarse-grids", FoldsOnCoarseGrids)
    out = tmp_path / "fold"
    assert rates.main(["--sampler", "folds-on-coarse-grids", "--T", "8", "32", "--metric", "tv", "--out", str(out),
                       "--no-plot", "--scheduler", "none"]) == 0
    text = pd.read_csv(out / "rates.csv", dtype=str, keep_default_na=False).set_index("T")
    assert text.loc["8", "value"] == ResultsFile.NOT_MEASURED and "not increasing" in text.loc["8", "method"]
    assert float(text.loc["32", "value"]) > 0
    assert "folds-on-coarse-grids at T=8: not measured" in capsys.readouterr().out
