"""What every study shares: clean exits on bad input, a resumable results file, progress, devices."""

from __future__ import annotations

import contextlib
import csv
import math
import sys
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from samplers.base import SamplerError
from theory.divergences import DivergenceError
from theory.rates import RateError
from theory.schedules import ScheduleError
from theory.targets import TargetError

BAD_INPUT = (TargetError, ScheduleError, SamplerError, DivergenceError, RateError)


@contextlib.contextmanager
def clean_exit(prog: str) -> Iterator[None]:
    """Turn a known bad-input error into one line on stderr and exit status 2."""
    try:
        yield
    except BAD_INPUT as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SamplerError(f"device {name!r} requested but CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SamplerError(f"unknown device {name!r}: use cpu or cuda") from None


class ResultsFile:
    """A CSV that rows are appended to as soon as they are finished, so an interrupted sweep loses nothing.

    `key` names the columns that identify one measurement; `done(key)` says whether a row with those values exists
    (a re-run skips it). Rows with a non-finite value are refused.
    """

    def __init__(self, path: Path, columns: Sequence[str], key: Sequence[str]):
        self.path = Path(path)
        self.columns = list(columns)
        self.key = list(key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._done: set[tuple[str, ...]] = set()
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames != self.columns:
                    raise DivergenceError(
                        f"{self.path} has columns {reader.fieldnames}, expected {self.columns}: move it or use --out"
                    )
                for row in reader:
                    self._done.add(tuple(str(row[k]) for k in self.key))
        else:
            with self.path.open("w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)

    def _key_of(self, row: dict) -> tuple[str, ...]:
        return tuple(str(row[k]) for k in self.key)

    def done(self, **key_values) -> bool:
        return tuple(str(key_values[k]) for k in self.key) in self._done

    def append(self, rows: Iterable[dict]) -> None:
        rows = list(rows)
        for row in rows:
            for column, value in row.items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise DivergenceError(f"refusing to write a non-finite {column} ({value}) to {self.path}")
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns)
            for row in rows:
                writer.writerow({c: row.get(c, "") for c in self.columns})
                self._done.add(self._key_of(row))


def progress(iterable, total: int | None = None, desc: str = ""):
    """A progress bar on stderr (tqdm)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.5)


def with_intervals(table, column: str = "exponent"):
    """A copy of a fitted-exponent table with `column` shown as 'value [low, high]' and the interval columns gone."""
    show = table.copy()
    show[column] = [f"{e:.2f} [{lo:.2f}, {hi:.2f}]" if math.isfinite(e) else "n/a"
                    for e, lo, hi in zip(show[column], show["ci_low"], show["ci_high"])]
    return show.drop(columns=["ci_low", "ci_high"])


def powers_of_two(lo: int, hi: int) -> list[int]:
    return [2**k for k in range(int(math.log2(lo)), int(math.log2(hi)) + 1)]
