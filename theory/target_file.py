"""Target files: the JSON formats a target is read from, every field checked with a one-line message naming the
field and its bad value. Plain Python (json, math): no torch, so a command line can be refused before torch loads.

    {"weights": [0.5, 0.5], "means": [[-1.0], [1.0]], "covs": [[[0.1]], [[0.2]]]}     a mixture in R^d
    {"product": {"weights": ..., "means": ..., "covs": ...}, "d": 8}                   d copies of a 1-D mixture

A mixture has K components: `weights` K non-negative numbers summing to one, `means` K lists of d numbers (one
flat list of d numbers when K = 1), `covs` K symmetric d x d matrices with non-negative diagonals. Whether each
matrix is positive semi-definite takes an eigendecomposition, which theory.targets.GaussianMixture does (with the
same one-line TargetError). No other keys are allowed: a misspelt key is refused rather than ignored.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


class TargetError(ValueError):
    """An unknown target name, a malformed target file, or target parameters that do not define a distribution."""


MIXTURE_KEYS = ("weights", "means", "covs")
PRODUCT_KEYS = ("product", "d")
WEIGHT_TOLERANCE = 1e-9  # |sum of weights - 1| allowed (the same as GaussianMixture's)
SYMMETRY_TOLERANCE = 1e-10  # relative asymmetry allowed (the same as GaussianMixture's)


def _show(value) -> str:
    """A value as JSON would write it, cut to one short line (the field it belongs to is named beside it)."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _number(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TargetError(f"{field} must be a number, got {_kind(value)} {_show(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise TargetError(f"{field} must be finite, got {_show(value)}")
    return value


def _list(value, field: str, length: int | None = None, what: str = "entries") -> list:
    if not isinstance(value, list):
        raise TargetError(f"{field} must be a list, got {_kind(value)} {_show(value)}")
    if not value:
        raise TargetError(f"{field} must not be empty")
    if length is not None and len(value) != length:
        raise TargetError(f"{field} must have {length} {what}, got {len(value)}: {_show(value)}")
    return value


def check_mixture(spec, where: str = "") -> dict[str, list]:
    """The fields of a JSON mixture, checked: {"weights": [K], "means": [K][d], "covs": [K][d][d]} as floats.

    `where` prefixes every field name (e.g. "product: "). Raises TargetError naming the first bad field."""
    if not isinstance(spec, dict):
        raise TargetError(f"{where}a mixture must be an object with {', '.join(MIXTURE_KEYS)}, got {_kind(spec)} "
                          f"{_show(spec)}")
    unknown = [key for key in spec if key not in MIXTURE_KEYS]
    if unknown:
        raise TargetError(f"{where}unknown key {unknown[0]!r}: a mixture has exactly {', '.join(MIXTURE_KEYS)}")
    missing = [key for key in MIXTURE_KEYS if key not in spec]
    if missing:
        raise TargetError(f"{where}lacks {', '.join(missing)} (a mixture has {', '.join(MIXTURE_KEYS)})")

    weights = [_number(w, f"{where}weights[{i}]")
               for i, w in enumerate(_list(spec["weights"], f"{where}weights"))]
    for i, w in enumerate(weights):
        if w < 0:
            raise TargetError(f"{where}weights[{i}] must be >= 0, got {_show(w)}")
    total = math.fsum(weights)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise TargetError(f"{where}weights must sum to one, got sum {total!r} for {_show(spec['weights'])}")
    K = len(weights)

    raw_means = _list(spec["means"], f"{where}means")
    if K == 1 and all(not isinstance(m, list) for m in raw_means):
        raw_means = [raw_means]  # one component may give its mean as a flat list
    _list(raw_means, f"{where}means", K, what=f"rows (one per weight, K = {K})")
    means: list[list[float]] = []
    for k, row in enumerate(raw_means):
        row = _list(row, f"{where}means[{k}]", len(raw_means[0]) if k else None,
                    what="numbers, as many as means[0] (every mean has the same dimension d)")
        means.append([_number(v, f"{where}means[{k}][{j}]") for j, v in enumerate(row)])
    d = len(means[0])

    raw_covs = _list(spec["covs"], f"{where}covs", K, what=f"matrices (one per weight, K = {K})")
    covs: list[list[list[float]]] = []
    for k, matrix in enumerate(raw_covs):
        rows = _list(matrix, f"{where}covs[{k}]", d, what=f"rows (a d x d matrix, d = {d} from means)")
        covs.append([[_number(v, f"{where}covs[{k}][{i}][{j}]")
                      for j, v in enumerate(_list(row, f"{where}covs[{k}][{i}]", d, what=f"numbers (d = {d})"))]
                     for i, row in enumerate(rows)])
    for k, C in enumerate(covs):
        scale = max(1.0, max(abs(v) for row in C for v in row))
        for i in range(d):
            if C[i][i] < 0:
                raise TargetError(f"{where}covs[{k}][{i}][{i}] is a variance and must be >= 0, got {_show(C[i][i])}")
            for j in range(i):
                if abs(C[i][j] - C[j][i]) > SYMMETRY_TOLERANCE * scale:
                    raise TargetError(f"{where}covs[{k}] must be symmetric: [{i}][{j}] = {_show(C[i][j])} but "
                                      f"[{j}][{i}] = {_show(C[j][i])}")
                if C[i][j] ** 2 > C[i][i] * C[j][j] * (1 + 1e-12) + SYMMETRY_TOLERANCE * scale:
                    # a 2 x 2 principal minor below zero: not positive semi-definite, said here at no cost
                    raise TargetError(f"{where}covs[{k}] is not positive semi-definite: |[{i}][{j}]| = "
                                      f"{_show(abs(C[i][j]))} exceeds sqrt([{i}][{i}] [{j}][{j}])")
    return {"weights": weights, "means": means, "covs": covs}


def check_product(spec, where: str = "") -> tuple[dict[str, list], int]:
    """The fields of a JSON product {"product": <1-D mixture>, "d": d}, checked: (the 1-D mixture, d)."""
    unknown = [key for key in spec if key not in PRODUCT_KEYS]
    if unknown:
        raise TargetError(f"{where}unknown key {unknown[0]!r}: a product has exactly {', '.join(PRODUCT_KEYS)}")
    if "d" not in spec:
        raise TargetError(f"{where}a product lacks d (the number of independent coordinates)")
    d = spec["d"]
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise TargetError(f"{where}a product needs an integer d >= 1, got {_kind(d)} {_show(d)}")
    marginal = check_mixture(spec["product"], where=f"{where}product: ")
    if len(marginal["means"][0]) != 1:
        raise TargetError(f"{where}product: must be a 1-D mixture (means K x 1), got means of dimension "
                          f"{len(marginal['means'][0])}")
    return marginal, d


def read_target_file(path: str | Path) -> dict:
    """A target file's content, every field checked: {"kind": "mixture", "weights", "means", "covs"} or
    {"kind": "product", "marginal": {...}, "d": d}. Raises TargetError (one line, naming the file and the field)."""
    path = Path(path)
    where = f"target file {str(path)!r}: "
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TargetError(f"target file not found: {str(path)!r}") from None
    except IsADirectoryError:
        raise TargetError(f"target file {str(path)!r} is a folder, not a JSON file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TargetError(f"cannot read target file {str(path)!r}: {getattr(err, 'strerror', None) or err}") from None
    return parse_target(text, where)


def parse_target(text: str, where: str = "") -> dict:
    """The checked content of a target file's text (see read_target_file); `where` prefixes every message."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise TargetError(f"{where}malformed JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except RecursionError:
        raise TargetError(f"{where}malformed JSON: nested too deeply") from None
    if not isinstance(spec, dict):
        raise TargetError(f"{where}must hold an object (a mixture with {', '.join(MIXTURE_KEYS)}, or a product with "
                          f"{', '.join(PRODUCT_KEYS)}), got {_kind(spec)} {_show(spec)}")
    if "product" in spec:
        marginal, d = check_product(spec, where)
        return {"kind": "product", "marginal": marginal, "d": d}
    return {"kind": "mixture", **check_mixture(spec, where)}
