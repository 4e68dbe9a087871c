"""What every study shares: one CLI vocabulary (flags, one-line errors), clean exits on bad input, a resumable
results file, sweeps that run in this process or on Dask, progress, devices, and the one shape of a study's main()
(`Study`: parse -> setup -> jobs -> sweep -> read the CSV -> summarise -> print -> plot)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import pandas as pd
import torch

from exact import DivergenceError
from samplers.base import SamplerError, get_sampler, sampler_names
from studies.distributed import SchedulerError, scheduler_value
from studies.tables import table_kind
from theory.rates import RateError
from theory.schedules import ScheduleError
from theory.targets import TargetError


class StudyError(ValueError):
    """Bad input that a study finds itself (an output folder it cannot write to, ...)."""


BAD_INPUT = (TargetError, ScheduleError, SamplerError, DivergenceError, RateError, StudyError, SchedulerError)


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

    Two kinds of absent value, never a NaN: an empty cell says the run did not ask for that column (a metric
    switched off); the cell NOT_MEASURED says it was asked for and this row has no value (a metric that does not
    apply to this sampler, an engine that refused: the row's note, where it has one, says why). `rows()` reads the
    file back with NOT_MEASURED as None.
    """

    NOT_MEASURED = "not measured"

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

    def rows(self) -> list[dict[str, str | None]]:
        """Every row written so far, as strings, with a NOT_MEASURED cell as None (an empty cell stays '')."""
        with self.path.open(newline="") as fh:
            return [{c: (None if v == self.NOT_MEASURED else v) for c, v in row.items()} for row in csv.DictReader(fh)]


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


# ---------------------------------------------------------------------------- one CLI vocabulary
class StudyParser(argparse.ArgumentParser):
    """An argument parser whose every error is one line, `prog: error: message`, and exit status 2."""

    def error(self, message: str):  # noqa: D401  (argparse's hook)
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each default, unless the help text already says what the default is or there is none (None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def study_parser(name: str, doc: str | None) -> StudyParser:
    """The parser of `python -m studies.<name>`: the module docstring's first paragraph as description, every
    default shown in --help."""
    summary = (doc or "").strip().split("\n\n")[0]
    return StudyParser(prog=f"python -m studies.{name}", description=summary, formatter_class=_Formatter)


def integer(minimum: int, why: str = "") -> Callable[[str], int]:
    """An argparse type: an integer >= minimum, else a one-line error naming the value (and `why`, if given)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the smallest allowed value {minimum}"
                                             + (f" ({why})" if why else ""))
        return value

    parse.__name__ = f"integer >= {minimum}"
    parse.kind, parse.minimum, parse.inclusive, parse.maximum = int, minimum, True, None
    return parse


def real(minimum: float = 0.0, inclusive: bool = False, maximum: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number above `minimum` (or equal, when inclusive) and at most `maximum`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"{value:g} must be {'>=' if inclusive else '>'} {minimum:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value:g} must be <= {maximum:g}")
        return value

    parse.__name__ = "number"
    parse.kind, parse.minimum, parse.inclusive, parse.maximum = float, minimum, inclusive, maximum
    return parse


def _device_name(text: str) -> str:
    if not (text == "cpu" or text == "cuda" or text.startswith("cuda:") or text == "mps"):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu or cuda")
    return text


# The values of --scheduler besides an address (studies.distributed gives them their meaning).
# The shared flags: name -> (argparse type, help). Each study adds the ones that apply, with its own defaults;
# a list default makes the flag take several values. The same name means the same thing in every study.
FLAGS: dict[str, tuple[Callable[[str], object] | None, str]] = {
    "sampler": (None, "sampler names from the registry, a parametrised name such as amed-plugin:ipndm, or 'all' "
                      "(every sampler the study measures)"),
    "target": (None, "a built-in target name or a JSON target file"),
    "d": (integer(1), "dimension, for targets that take one"),
    "schedule": (None, "grid schedule"),
    "T": (integer(2), "grid sizes in levels (a grid of T levels has T - 1 steps)"),
    "nfe": (integer(1), "budgets of model evaluations"),
    "metric": (None, "error metrics to report"),
    "seed": (integer(0), "seed of every random draw (Monte Carlo, noise, training)"),
    "device": (_device_name, "torch device: cpu or cuda"),
    "threads": (integer(1), "torch intra-op threads (1 is fastest for these small tensors on a shared CPU; "
                            "unset: torch's own choice)"),
    "out": (Path, "output folder (results CSV, tables, figure)"),
    "no_plot": (None, "skip the figure"),
    "table": (table_kind, "also write each of the study's tables as LaTeX (booktabs) or Markdown beside its CSV: "
                          "DIR/<table>.tex or DIR/<table>.md"),
    "scheduler": (scheduler_value, "where measurements run: 'none' (this process, in order), 'local' (a Dask "
                                   "cluster of local processes), 'auto' (this process, handing over to a local "
                                   "cluster once the work left outweighs its start-up) or the address of a running "
                                   "Dask scheduler (tcp://host:8786)"),
    "workers": (integer(1), "worker processes of the local Dask cluster (default: one per core)"),
    "batch": (integer(1), "points per engine batch (a memory budget for the Monte Carlo engines; default: the "
                          "engine's own)"),
}


def add_flags(parser: argparse.ArgumentParser, aliases: dict[str, list[str]] | None = None,
              types: dict[str, Callable[[str], object]] | None = None, several: Iterable[str] = (),
              **defaults) -> None:
    """Add the shared flags named in `defaults` (keyword = flag name, value = the study's default).

    `aliases` maps a flag name to old spellings kept as hidden aliases (e.g. {"sampler": ["--solvers"]}).
    `types` narrows a flag's values for this study, keeping its meaning (e.g. {"d": integer(3)}).
    `several` names flags that take several values although their default is not a list (e.g. a default of None
    that means "each family's own list")."""
    aliases, types, several = aliases or {}, types or {}, set(several)
    for name in [*aliases, *types, *several]:
        if name not in defaults:
            raise KeyError(f"{name!r} is given options but not added: add it with a default")
    for name, default in defaults.items():
        if name not in FLAGS:
            raise KeyError(f"no shared flag {name!r}: known flags are {', '.join(FLAGS)}")
        kind, text = FLAGS[name]
        kind = types.get(name, kind)
        option = "--" + name.replace("_", "-")
        if name == "no_plot":
            parser.add_argument(option, action="store_true", help=text)
            continue
        options: dict = {"default": default, "help": text, "dest": name}
        if kind is not None:
            options["type"] = kind
        if isinstance(default, (list, tuple)) or name in several:
            options["nargs"] = "+"
            options["default"] = list(default) if default is not None else None
        parser.add_argument(option, **options)
        for old in aliases.get(name, []):
            parser.add_argument(old, **{**options, "help": argparse.SUPPRESS})


def sampler_list(names: Sequence[str], everything: Sequence[str] | None = None) -> list[str]:
    """The samplers of --sampler, each name checked (an unknown one raises before any work); 'all' alone means
    every sampler the study measures: `everything`, or else every registered sampler."""
    if list(names) == ["all"]:
        return list(everything) if everything is not None else sampler_names()
    for name in names:
        get_sampler(name)
    return list(names)


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads and resolve --device (a clear error when CUDA is asked for and absent)."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return resolve_device(getattr(args, "device", "cpu"))


# ---------------------------------------------------------------------------- sweeps
@dataclass
class Skip:
    """A job that cannot be measured, with the reason (printed; no row is written)."""

    reason: str


def sweep(jobs: Sequence, work: Callable[[object], list[dict] | Skip], results: ResultsFile, *,
          scheduler: str = "none", workers: int | None = None, desc: str = "") -> None:
    """Run `work(job)` for every job and append each job's rows to `results`.

    `work` must be a module-level function of one picklable argument (the job), so that it can run in another
    process. Rows are written in job order, each job's as soon as every earlier job is written: the file grows as
    the sweep goes (an interrupted sweep resumes from it) and is the same, byte for byte, however many processes ran
    it. A `Skip` is reported on stderr and writes nothing; a bad-input error stops the sweep."""
    jobs = list(jobs)
    if not jobs:
        return
    if scheduler == "none":
        finished = ((i, work(job)) for i, job in enumerate(jobs))
    else:
        from studies import distributed

        finished = distributed.run(jobs, work, scheduler=scheduler, workers=workers)
    waiting: dict[int, list[dict] | Skip] = {}
    next_index = 0
    try:
        for i, outcome in progress(finished, total=len(jobs), desc=desc):
            waiting[i] = outcome
            while next_index in waiting:
                outcome = waiting.pop(next_index)
                if isinstance(outcome, Skip):
                    print(f"skipped: {outcome.reason}", file=sys.stderr)
                else:
                    results.append(outcome)
                next_index += 1
    finally:
        finished.close()  # stops a cluster now, also when a row is refused or on Ctrl-C


# ---------------------------------------------------------------------------- the shape of a study
@dataclass(frozen=True)
class Study:
    """One study's parts; `main` puts them together in the shape every study has:
    parse -> setup -> jobs -> sweep -> read the CSV -> summarise -> print -> plot.

    A job is a picklable value (a frozen dataclass of plain values: names, numbers, paths as strings; never a
    tensor or an open file) whose `row_keys()` gives the key values (`key` columns) of every row it writes; a job
    whose rows are all in the results file already is not run again.
    """

    name: str  # python -m studies.<name>
    build_parser: Callable[[], StudyParser]
    results: str  # the results file, under --out
    columns: Sequence[str]
    key: Sequence[str]
    jobs: Callable[[argparse.Namespace, torch.device], list]  # every job of the command; bad input raises here
    work: Callable[[object], list[dict] | Skip]  # module-level: one job -> its rows
    summarise: Callable[[pd.DataFrame, argparse.Namespace], object]  # the command's rows -> the study's summary
    report: Callable[[pd.DataFrame, object, argparse.Namespace], list[Path]]  # print; write tables; their paths
    plot: Callable[[pd.DataFrame, argparse.Namespace], list[Path]]  # figures written

    def main(self, argv: Sequence[str] | None = None) -> int:
        parser = self.build_parser()
        args = parser.parse_args(argv)
        with clean_exit(parser.prog):
            started = time.perf_counter()
            device = setup(args)
            jobs = self.jobs(args, device)  # every check of the input happens here, before any measurement
            results = self.open_results(args.out)
            pending = [job for job in jobs if not all(results.done(**key) for key in job.row_keys())]
            sweep(pending, self.work, results, scheduler=args.scheduler, workers=args.workers,
                  desc=f"studies.{self.name}")
            frame = rows_of(results.path, [key for job in jobs for key in job.row_keys()])
            summary = self.summarise(frame, args)
            written = [results.path, *self.report(frame, summary, args)]
            if not args.no_plot and len(frame):
                written += self.plot(frame, args)
            print(f"\nwrote {', '.join(str(path) for path in written)} ({time.perf_counter() - started:.1f} s)")
        return 0

    def open_results(self, out: Path) -> ResultsFile:
        if Path(out).exists() and not Path(out).is_dir():
            raise StudyError(f"--out {str(out)!r} is a file, not a folder")
        try:
            return ResultsFile(Path(out) / self.results, self.columns, self.key)
        except OSError as err:
            raise StudyError(f"cannot write results to --out {str(out)!r}: {err.strerror or err}") from None


def rows_of(path: Path, keys: Iterable[dict]) -> pd.DataFrame:
    """The rows of a results file whose key values are among `keys`, in file order (the rows of one command, not
    those that earlier commands with other settings wrote to the same file). Values compare as written."""
    keys = list(keys)
    frame = pd.read_csv(path)
    if not keys:
        return frame.iloc[:0]
    columns = list(keys[0])
    text = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=columns)
    wanted = {tuple(str(key[c]) for c in columns) for key in keys}
    mask = [tuple(row) in wanted for row in text[columns].itertuples(index=False)]
    return frame[pd.Series(mask, index=frame.index, dtype=bool)]
