"""Fingerprints: a stable hex digest of a value's content, the same in every process and on every machine.

    digest("GaussianMixture", weights, means, covs)   # sha256 of a canonical encoding, as 64 hex characters

Studies key their results by what decided them (studies.common, "content keys"): a target's parameters, a
sampler's options, a grid's levels. Python's own hash() is salted per process and cannot serve; this encodes a
value canonically instead and hashes the bytes:

- None, bool, int, str as tagged text; a float as its exact binary value (float.hex), so 0.1 and 0.1 + 1e-17
  differ exactly when their float64 values do;
- a tensor or array as float64 (or int64 for integer dtypes) bytes in C order, with its shape, on the CPU;
- list and tuple in order, dict with its keys sorted, a dataclass as its type name and fields;
- an object with a `fingerprint()` method by what that returns (targets, grids, samplers define one);
- a function or class by its qualified name (its code is keyed apart, by the source of its module);
- a torch module (a trained network) by its state_dict;
- any other object by its type's qualified name and its public attributes (those not starting with '_'), with
  the version of the package it comes from when that package is not this project's.

Anything else (a generator, an open file) raises TypeError: a fingerprint that silently dropped a part of the value
would let a changed value pass for the old one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
from typing import Any

import numpy as np
import torch

PROJECT = ("theory", "samplers", "exact", "studies", "figures", "benchmarks", "diffrates")
MAX_DEPTH = 12  # nested objects deeper than this are a cycle or a mistake


def digest(*values: Any) -> str:
    """sha256 of the canonical encoding of `values` (64 hex characters)."""
    h = hashlib.sha256()
    _encode(values, h, 0, set())
    return h.hexdigest()


def _put(h, tag: str, text: str | bytes = b"") -> None:
    data = text.encode() if isinstance(text, str) else text
    h.update(f"{tag}{len(data)}:".encode())
    h.update(data)


def _encode(value: Any, h, depth: int, seen: set[int]) -> None:
    if depth > MAX_DEPTH:
        raise TypeError(f"cannot fingerprint {type(value).__qualname__}: nested deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, (bool, int, str)):
        _put(h, type(value).__name__[0], repr(value))
        return
    if isinstance(value, float):
        _put(h, "f", value.hex() if math.isfinite(value) else repr(value))
        return
    module = type(value).__module__ or ""
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        _array(value, h)
        return
    if isinstance(value, (list, tuple)):
        _put(h, "L" if isinstance(value, list) else "T", str(len(value)))
        for item in value:
            _encode(item, h, depth + 1, seen)
        return
    if isinstance(value, dict):
        _put(h, "D", str(len(value)))
        for key in sorted(value, key=repr):
            _encode(key, h, depth + 1, seen)
            _encode(value[key], h, depth + 1, seen)
        return
    if isinstance(value, (set, frozenset)):
        _encode(sorted(value, key=repr), h, depth + 1, seen)
        return
    fingerprint = getattr(value, "fingerprint", None)
    if callable(fingerprint) and not isinstance(value, type):
        _put(h, "F", fingerprint())
        return
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        _put(h, "C", f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}")
        return
    if id(value) in seen:
        raise TypeError(f"cannot fingerprint {type(value).__qualname__}: it refers to itself")
    seen = seen | {id(value)}
    _put(h, "O", f"{module}.{type(value).__qualname__}")
    top = module.split(".")[0]
    if top and top not in PROJECT:
        _put(h, "V", str(getattr(sys.modules.get(top), "__version__", "")))
    if dataclasses.is_dataclass(value):
        _encode({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, h, depth + 1, seen)
        return
    state_dict = getattr(value, "state_dict", None)
    if callable(state_dict) and hasattr(value, "parameters"):  # a torch module: its weights and buffers
        _encode(dict(state_dict()), h, depth + 1, seen)
        return
    try:
        attributes = vars(value)
    except TypeError:
        raise TypeError(f"cannot fingerprint a {type(value).__qualname__}: it has no content to encode") from None
    _encode({k: v for k, v in attributes.items() if not k.startswith("_")}, h, depth + 1, seen)


def _array(value: Any, h) -> None:
    array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    if array.dtype.kind in "biu":
        array = array.astype(np.int64)
    elif array.dtype.kind == "f":
        array = array.astype(np.float64)
    elif array.dtype.kind == "c":
        array = array.astype(np.complex128)
    else:
        raise TypeError(f"cannot fingerprint an array of dtype {array.dtype}")
    _put(h, "A", f"{array.dtype.str}{array.shape}")
    h.update(np.ascontiguousarray(array).tobytes())
