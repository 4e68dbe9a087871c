"""The named targets: every built-in target by name, and JSON files by path.

    get_target("mix1d"), get_target("gaussian", d=8), get_target("product-bimodal", d=256), get_target("t.json"),
    get_target("subspace:2", d=4096)

A target family is a factory `d -> target` in TARGETS (register one with `@register_target(name)`); a family with a
parameter in its name (`family:arg`, e.g. the subspace dimension k of `subspace:<k>`) is a factory `(d, arg) ->
target` in PARAMETRISED. The mixture classes themselves live in theory.targets (GaussianMixture), theory.product
(ProductTarget) and theory.subspace (SubspaceTarget).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from theory.product import ProductTarget, product_of
from theory.subspace import SubspaceTarget, isotropic_mixture, subspace_family
from theory.target_file import read_target_file
from theory.targets import DTYPE, GaussianMixture, TargetError, from_json, gaussian


def _mix1d(d: int | None) -> GaussianMixture:
    """Three separated modes of different widths in 1-D: the default multimodal target."""
    return GaussianMixture(
        [0.3, 0.5, 0.2], [[-2.0], [0.5], [2.5]], [[[0.25]], [[0.09]], [[0.36]]], "mix1d"
    )


def _mix2d(d: int | None) -> GaussianMixture:
    """Four anisotropic, rotated components in the plane."""
    def rot(theta: float, a: float, b: float) -> list[list[float]]:
        c, s = math.cos(theta), math.sin(theta)
        R = torch.tensor([[c, -s], [s, c]], dtype=DTYPE)
        return (R @ torch.diag(torch.tensor([a, b], dtype=DTYPE)) @ R.T).tolist()

    return GaussianMixture(
        [0.25, 0.25, 0.3, 0.2],
        [[-2.0, -1.0], [2.0, -1.0], [0.0, 2.0], [0.5, 0.0]],
        [rot(0.3, 0.3, 0.05), rot(-0.6, 0.2, 0.08), rot(1.2, 0.4, 0.1), rot(0.0, 0.05, 0.05)],
        "mix2d",
    )


def _gaussian(d: int | None) -> GaussianMixture:
    """A d-dimensional Gaussian with a spread spectrum (variances from 0.1 to 2) in a fixed rotated basis."""
    d = 1 if d is None else d
    gen = torch.Generator().manual_seed(1234)
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=DTYPE, generator=gen))
    variances = torch.linspace(0.1, 2.0, d, dtype=DTYPE) if d > 1 else torch.tensor([0.5], dtype=DTYPE)
    mean = torch.linspace(-0.5, 1.0, d, dtype=DTYPE) if d > 1 else torch.tensor([0.7], dtype=DTYPE)
    return gaussian(mean, Q @ torch.diag(variances) @ Q.T, name="gaussian")


def _points1d(d: int | None) -> GaussianMixture:
    """Two point masses in 1-D: the singular extreme (covariances zero)."""
    return GaussianMixture([0.5, 0.5], [[-1.0], [1.0]], [[[0.0]], [[0.0]]], "points1d")


TARGETS: dict[str, Callable[[int | None], GaussianMixture]] = {
    "mix1d": _mix1d,
    "mix2d": _mix2d,
    "gaussian": _gaussian,
    "points1d": _points1d,
}


def register_target(name: str):
    def decorate(factory: Callable[[int | None], GaussianMixture]):
        TARGETS[name] = factory
        return factory

    return decorate


# ---------------------------------------------------------------------------- a general-mixture family
@register_target("mixture-diag")
def _mixture_diag(d: int | None) -> GaussianMixture:
    """Four components with diagonal covariances in R^d, means at distance 2 from the origin along fixed random
    sign patterns: multimodal at every d, yet no product (only flow Monte Carlo measures it for d > 1)."""
    d = 1 if d is None else int(d)
    if d < 1:
        raise TargetError(f"mixture-diag needs a dimension d >= 1, got {d!r}")
    gen = torch.Generator().manual_seed(2024)
    signs = torch.randint(0, 2, (4, d), generator=gen).to(DTYPE) * 2 - 1
    means = 2.0 * signs / math.sqrt(d)
    variances = 0.15 + 0.6 * torch.rand(4, d, dtype=DTYPE, generator=gen)
    target = GaussianMixture([0.4, 0.3, 0.2, 0.1], means, torch.diag_embed(variances), "mixture-diag")
    # eigh orders eigenvalues, so for unsorted diagonal covariances it returns a permutation, not I, and the target
    # would take its O(d^2) rotated path. U = I with the diagonal as eigenvalues is an equally valid decomposition.
    target.eigvals = variances.clone()
    target.eigvecs = torch.eye(d, dtype=DTYPE).expand(4, d, d).clone()
    target.diagonal = True
    return target


# ---------------------------------------------------------------------------- named product targets
def _bimodal_1d() -> GaussianMixture:
    # Two unequal modes of unequal widths: the simplest non-Gaussian marginal.
    return GaussianMixture([0.4, 0.6], [[-1.0], [1.0]], [[[0.16]], [[0.36]]], "bimodal1d")


@register_target("product-bimodal")
def _product_bimodal(d: int | None) -> ProductTarget:
    """d copies of a two-mode 1-D mixture (2^d modes in all)."""
    return product_of(_bimodal_1d(), 1 if d is None else d, "product-bimodal")


@register_target("product-mix1d")
def _product_mix1d(d: int | None) -> ProductTarget:
    """d copies of mix1d, the three-mode 1-D target (3^d modes in all)."""
    return product_of(_mix1d(None), 1 if d is None else d, "product-mix1d")


@register_target("std-normal")
def _std_normal(d: int | None) -> ProductTarget:
    """N(0, I_d): the stationary law of the VP process (the exact probability-flow velocity is zero)."""
    return product_of(GaussianMixture([1.0], [[0.0]], [[[1.0]]], "N(0,1)"), 1 if d is None else d, "std-normal")


# ---------------------------------------------------------------------------- low-dimensional targets in R^d
def _subspace_k(name: str, arg: str) -> int:
    try:
        return int(arg)
    except ValueError:
        raise TargetError(f"target {name!r}: the subspace dimension k must be an integer, got {arg!r}") from None


@register_target("subspace")
def _subspace(d: int | None) -> SubspaceTarget:
    """A three-mode line (k = 1) in R^d, randomly rotated, floor sigma^2 = 0.01 (theory.subspace)."""
    return subspace_family(d, 1)


@register_target("subspace-product")
def _subspace_product(d: int | None) -> SubspaceTarget:
    """A two-mode line (k = 1, the product core with one factor) in R^d, randomly rotated, floor 0.01."""
    return subspace_family(d, 1, product_core=True)


def _subspace_of(d: int | None, arg: str) -> SubspaceTarget:
    """`subspace:<k>`: a k-dimensional three-component mixture (not a product for k > 1) embedded in R^d."""
    return subspace_family(d, _subspace_k("subspace:" + arg, arg))


def _subspace_product_of(d: int | None, arg: str) -> SubspaceTarget:
    """`subspace-product:<k>`: k copies of a two-mode line embedded in R^d (every sampler is exact on it)."""
    return subspace_family(d, _subspace_k("subspace-product:" + arg, arg), True)


ISOTROPIC_OPTIONS = {"k": int, "sigma2": float, "scale": float, "seed": int}


def _isotropic_of(d: int | None, arg: str) -> SubspaceTarget:
    """`isotropic:<H>[?k=1&sigma2=0.1&scale=2&seed=11]`: (1/H) sum_h N(mu_h, sigma^2 I_d), means in a seeded k-dim span."""
    count, _, query = arg.partition("?")
    name = "isotropic:" + arg
    try:
        H = int(count)
    except ValueError:
        raise TargetError(f"target {name!r}: the number of components H must be an integer, got {count!r}") from None
    options = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if key not in ISOTROPIC_OPTIONS or not eq:
            raise TargetError(f"target {name!r}: unknown option {part!r} (options: "
                              f"{', '.join(k + '=' for k in ISOTROPIC_OPTIONS)})")
        try:
            options[key] = ISOTROPIC_OPTIONS[key](value)
        except ValueError:
            raise TargetError(f"target {name!r}: option {key} must be {ISOTROPIC_OPTIONS[key].__name__}, "
                              f"got {value!r}") from None
    return isotropic_mixture(d, H, **options)


# ---------------------------------------------------------------------------- the published experiments' Gaussian
APPENDIX_A_HIGH = 10.0  # variances Uniform[0, 10] (Li & Jiao App. A; Jiao, Zhou & Li App. A)
APPENDIX_A_SEED = 0  # the seed of the variance draw


def appendix_a_gaussian(d: int, k: int | None = None, seed: int = APPENDIX_A_SEED) -> GaussianMixture:
    """The zero-mean diagonal Gaussian of the published experiments: variances v_1..v_k drawn Uniform[0, 10] from a
    torch generator seeded with `seed` (the first k draws of that generator, so a larger k extends a smaller one),
    v_(k+1)..v_d exactly 0 (a point mass in those coordinates; q at level abar has variance 1 - abar there).
    k = d (the default) is Jiao, Zhou & Li's target; k < d Li & Jiao's. Named `diag-uniform:<k>` (with --d) and
    `diag-uniform` (k = d)."""
    k = d if k is None else k
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise TargetError(f"the App. A Gaussian needs a dimension d >= 1, got {d!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= d:
        raise TargetError(f"the App. A Gaussian needs 0 <= k <= d = {d}, got k = {k!r}")
    variances = torch.zeros(d, dtype=DTYPE)
    gen = torch.Generator().manual_seed(seed)
    variances[:k] = APPENDIX_A_HIGH * torch.rand(k, dtype=DTYPE, generator=gen)
    name = "diag-uniform" if k == d else f"diag-uniform:{k}"
    return gaussian(torch.zeros(d, dtype=DTYPE), torch.diag(variances), name=name)


@register_target("diag-uniform")
def _diag_uniform(d: int | None) -> GaussianMixture:
    """Zero-mean diagonal Gaussian, variances Uniform[0, 10] (seed 0): the target of Jiao, Zhou & Li's App. A."""
    return appendix_a_gaussian(1 if d is None else int(d))


def _diag_uniform_of(d: int | None, arg: str) -> GaussianMixture:
    """`diag-uniform:<k>`: the first k variances Uniform[0, 10] (seed 0), the other d - k exactly 0 (Li & Jiao
    App. A)."""
    try:
        k = int(arg)
    except ValueError:
        raise TargetError(f"target 'diag-uniform:{arg}': k (the number of nonzero variances) must be an integer, "
                          f"got {arg!r}") from None
    return appendix_a_gaussian(k if d is None else int(d), k)


PARAMETRISED: dict[str, Callable[[int | None, str], object]] = {
    "subspace": _subspace_of,
    "subspace-product": _subspace_product_of,
    "isotropic": _isotropic_of,
    "diag-uniform": _diag_uniform_of,
}
PARAMETER_NAMES = {"isotropic": "<H>[?k=&sigma2=&scale=&seed=]"}  # what follows `family:` (default <k>)


def _from_file(name: str):
    """A JSON target: a mixture {"weights", "means", "covs"}, or d independent copies of a 1-D mixture
    {"product": {"weights", "means", "covs"}, "d": d} (a product target, measured by the product engine). Every field
    is checked by theory.target_file (one line naming the file, the field and its value)."""
    path = Path(name)
    spec = read_target_file(path)
    if spec["kind"] == "mixture":
        return from_json(path)
    marginal = spec["marginal"]
    try:
        one = GaussianMixture(marginal["weights"], marginal["means"], marginal["covs"], name=path.stem)
    except TargetError as err:  # what only an eigendecomposition sees
        raise TargetError(f"target file {name!r}: product: {err}") from None
    return product_of(one, spec["d"], path.stem)


def known_targets() -> list[str]:
    return sorted(TARGETS) + [f"{family}:{PARAMETER_NAMES.get(family, '<k>')}"
                                  for family in sorted(PARAMETRISED)]


def get_target(name: str, d: int | None = None, device: str | torch.device = "cpu") -> GaussianMixture:
    """A built-in target by name (with dimension d where it has one), a parametrised family `family:arg`, or a JSON
    file by path."""
    family, _, arg = name.partition(":")
    if name in TARGETS:
        target = TARGETS[name](d)
    elif arg and family in PARAMETRISED:
        target = PARAMETRISED[family](d, arg)
    elif name.endswith(".json") or Path(name).is_file():
        target = _from_file(name)
    else:
        raise TargetError(f"unknown target {name!r}: known targets are {', '.join(known_targets())}, or a JSON path")
    if (name in TARGETS or (arg and family in PARAMETRISED)) and d is not None and target.d != d:
        raise TargetError(f"target {name!r} has fixed dimension {target.d}, not d = {d}")
    return target.to(device) if str(device) != "cpu" else target
