"""What every study shares: one CLI vocabulary (flags, one-line errors), clean exits on bad input, a resumable
results file whose rows are keyed by content, sweeps that run in this process or on Dask, progress, devices, and
the one shape of a study's main() (`Study`: parse -> setup -> jobs -> sweep -> read the CSV -> summarise -> print
-> plot).

Content keys. A row is found again on a rerun by its names (the study's KEY columns: sampler, T, seed, ...) AND by
its content key (the column KEY_COLUMN), a digest of everything that decided its value, in five parts (KEY_PARTS):

- target: the target's own fingerprint (theory: a digest of its float64 parameters and structure, never its name
  or file), so an edited JSON file under the same path is a new target;
- sampler: the sampler object's fingerprint (samplers.base.Sampler.fingerprint: class, metadata, options);
- grid: the grid's levels (theory.schedules.Grid.fingerprint), so a changed schedule parameter is caught;
- engine: the exact method that measures and the options that change its value (seed, draws, grid nodes G, init,
  the device's kind: a CUDA generator draws other numbers than the CPU's); never options that do not change it
  (--batch: the Monte Carlo engines give the same numbers for any batch);
- code: the source text of the modules that compute the value (code_digest: the sampler's and the engine's
  modules and every theory/samplers/exact module they import, transitively, read from disk).

Each part is the first PART_DIGITS hex digits of its sha256 (theory.fingerprint, the same in every process), and
the key is the five joined by '-', so a row measured with other settings says which part differs. The code part is
a hash of source text rather than the project's version: a version number changes with every release (every row
measured again, although most modules did not change) and not with an edit between releases (a changed sampler
would pass for the old one); a source hash changes whenever the text of the code that computed the value does (a
comment edit too: a needless re-measurement, never a stale number) and not when unrelated code (a study's verdict
or plot, another sampler) changes. Installed packages (torch, diffusers) are not hashed: a foreign object in a
sampler's options carries its package's version instead (theory.fingerprint). Its cost is reading a few dozen
small files once per process (cached by file size and modification time).

A job gives its ingredients (`ingredients(names)`: the parts above, as plain values and fingerprints); the study
framework computes the key in the main process, before any measurement, writes it with every row, reuses a row
only when its names and key both match, and reports the rows of the same names under another key once on stderr;
they are never read into tables or fits. `--fresh` starts the results file over (the old file is moved to
<file>.bak). A results file written before content keys (no KEY_COLUMN) is refused with a one-line error that
says so (rerun with --fresh, or use another --out): its rows cannot be told current or stale.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import hashlib
import importlib.util
import inspect
import math
import os
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import pandas as pd
import torch

from exact import DivergenceError
from samplers.base import SamplerError, get_sampler, sampler_names
from studies.distributed import SchedulerError, scheduler_value
from studies.front import LIST_HELP, ListAction, StudyParser, _Formatter, integer, real  # noqa: F401  (re-exported)
from studies.front import device_name as _device_name
from studies.tables import table_kind
from theory.fingerprint import digest
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

    A study's file is keyed by content (the module docstring): KEY_COLUMN is one of its columns and one of `key`.
    `fresh` starts the file over, moving an old one to <file>.bak (an older .bak is replaced).
    """

    NOT_MEASURED = "not measured"

    def __init__(self, path: Path, columns: Sequence[str], key: Sequence[str], fresh: bool = False):
        self.path = Path(path)
        self.columns = list(columns)
        self.key = list(key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._done: set[tuple[str, ...]] = set()
        if fresh and self.path.exists():
            os.replace(self.path, backup_of(self.path))
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames != self.columns:
                    if KEY_COLUMN in self.columns and KEY_COLUMN not in (reader.fieldnames or []):
                        raise DivergenceError(
                            f"{self.path} was written before results were keyed by content (it has no {KEY_COLUMN} "
                            f"column): rerun with --fresh (it moves the file to {backup_of(self.path).name}) or use "
                            "another --out")
                    raise DivergenceError(
                        f"{self.path} has columns {reader.fieldnames}, expected {self.columns}: move it, use --out "
                        "or --fresh"
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

    def others(self, expected: Iterable[dict]) -> tuple[int, list[str]]:
        """Rows with the names of an expected row but another content key: (how many, the key parts that differ,
        in KEY_PARTS order). `expected` are the rows' names with their KEY_COLUMN, as `done` takes them."""
        names = [k for k in self.key if k != KEY_COLUMN]
        wanted: dict[tuple[str, ...], set[str]] = {}
        for row in expected:
            wanted.setdefault(tuple(str(row[k]) for k in names), set()).add(str(row[KEY_COLUMN]))
        count, parts = 0, set()
        with self.path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                keys = wanted.get(tuple(str(row[k]) for k in names))
                if keys is None or row[KEY_COLUMN] in keys:
                    continue
                count += 1
                for key in keys:
                    parts.update(differing_parts(row[KEY_COLUMN], key))
        return count, [part for part in KEY_PARTS if part in parts]

    def report_others(self, expected: Iterable[dict], out=None) -> int:
        """One line on stderr when rows of these names were measured with other content (see `others`); returns
        how many."""
        count, parts = self.others(expected)
        if count:
            what = "/".join(PART_WORDS[p] for p in parts) or "content"
            rows, were, are = ("row", "was", "is") if count == 1 else ("rows", "were", "are")
            print(f"{count} {rows} in {self.path.parent} {were} measured with another {what} and {are} ignored; "
                  "--fresh starts over", file=out or sys.stderr)
        return count


def backup_of(path: Path) -> Path:
    """Where --fresh moves an old results file: <file>.bak beside it."""
    return path.with_name(path.name + ".bak")


# ---------------------------------------------------------------------------- content keys
KEY_COLUMN = "content_key"  # the column of a row's content key
KEY_PARTS = ("target", "sampler", "grid", "engine", "code")  # what decided a row's value, in the key's order
PART_WORDS = {"target": "target", "sampler": "sampler", "grid": "grid", "engine": "engine", "code": "code version"}
PART_DIGITS = 8  # hex digits per part: a chance of 2^-32 that a change goes unseen in that part


def content_key(ingredients: dict) -> str:
    """The content key of a row from its ingredients ({part: value}, parts from KEY_PARTS; an absent part counts as
    None): each part's digest (theory.fingerprint), shortened to PART_DIGITS, joined by '-'."""
    unknown = set(ingredients) - set(KEY_PARTS)
    if unknown:
        raise KeyError(f"unknown content-key parts {sorted(unknown)}: the parts are {', '.join(KEY_PARTS)}")
    return "-".join(digest(part, ingredients.get(part))[:PART_DIGITS] for part in KEY_PARTS)


def differing_parts(old: str, new: str) -> list[str]:
    """The parts in which two content keys differ (every part when one of them is not a key of this shape)."""
    a, b = str(old).split("-"), str(new).split("-")
    if len(a) != len(KEY_PARTS) or len(b) != len(KEY_PARTS):
        return list(KEY_PARTS)
    return [part for part, x, y in zip(KEY_PARTS, a, b) if x != y]


PROJECT_PACKAGES = ("theory", "samplers", "exact")  # the floors whose code computes values; studies only ask
_SOURCES: dict[str, tuple[tuple[int, int], str, tuple[str, ...]]] = {}  # path -> (stat, sha256, imported modules)


def code_digest(*objects) -> str:
    """A digest of the source text of the code behind `objects` (modules, classes, functions or instances): the
    module each is defined in (for a class or instance, every class of its method resolution order) and every
    module of theory/, samplers/ and exact/ that those import, transitively, at any depth of their code (ast). A
    function of a study (outside those floors) counts by its own source text only.

    Read from disk, each file once per process until its size or modification time changes, so an edited module
    changes the digest of every row that rests on it, and only of those."""
    modules: set[str] = set()
    own: list[tuple[str, str]] = []
    for obj in objects:
        if isinstance(obj, types.ModuleType):
            modules.add(obj.__name__)
            continue
        if inspect.isroutine(obj) and obj.__module__.split(".")[0] not in PROJECT_PACKAGES:
            # A study's own function (a search, a trajectory): its source text alone, so that editing the study's
            # report or verdict code does not invalidate its measurements. The lower floors it calls are named
            # beside it by the caller.
            own.append((f"{obj.__module__}.{obj.__qualname__}", inspect.getsource(obj)))
            continue
        classes = obj.__mro__ if isinstance(obj, type) else (
            () if inspect.isroutine(obj) else type(obj).__mro__)
        if inspect.isroutine(obj):
            modules.add(obj.__module__)
        modules.update(c.__module__ for c in classes if c.__module__ not in ("builtins", "abc", "typing"))
    seen: dict[str, str] = {}
    todo = sorted(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            seen[name] = ""
            continue
        sha, imported = _source(path)
        seen[name] = sha
        todo.extend(m for m in imported if m not in seen)
    return digest(sorted(seen.items()), sorted(own))


def _module_file(name: str) -> str | None:
    """The source file of a module that is not installed with Python or in its site-packages (torch, numpy: those
    are versioned apart), or None."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return None
    installed = (sys.prefix, sys.base_prefix, sys.exec_prefix)
    if "site-packages" in Path(origin).parts or any(origin.startswith(p + os.sep) for p in installed):
        return None
    return origin


def _source(path: str) -> tuple[str, tuple[str, ...]]:
    """(sha256 of the file's text, the project modules it imports), cached by the file's size and mtime."""
    stat = os.stat(path)
    stamp = (stat.st_size, stat.st_mtime_ns)
    cached = _SOURCES.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1], cached[2]
    text = Path(path).read_bytes()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)  # a submodule, where it is one
    project = tuple(sorted(m for m in imported if m.split(".")[0] in PROJECT_PACKAGES and _module_file(m)))
    sha = hashlib.sha256(text).hexdigest()
    _SOURCES[path] = (stamp, sha, project)
    return sha, project


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
def study_parser(name: str, doc: str | None) -> StudyParser:
    """The parser of `python -m studies.<name>`: the module docstring's first paragraph as description, every
    default shown in --help, and --list (the registries' names, one line each)."""
    summary = (doc or "").strip().split("\n\n")[0]
    parser = StudyParser(prog=f"python -m studies.{name}", description=summary, formatter_class=_Formatter)
    parser.add_argument("--list", action=ListAction, help=LIST_HELP)
    return parser


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
    "draws": (integer(1), "schedule draws of a sampler whose schedule is random (lijiao-rmp): draw r = seed + r "
                          "(or the name's draw= + r), each draw a sampler of its own with its own rows"),
    "device": (_device_name, "torch device: cpu or cuda"),
    "threads": (integer(1), "torch intra-op threads (1 is fastest for these small tensors on a shared CPU; "
                            "unset: torch's own choice)"),
    "out": (Path, "output folder (results CSV, tables, figure)"),
    "no_plot": (None, "skip the figure"),
    "fresh": (None, "start the results file over: the old one is moved to <file>.bak beside it (an older .bak is "
                    "replaced) and every row is measured anew; without it a rerun reuses each row whose names and "
                    "content key (target, sampler, grid, engine, code) match, and ignores the others"),
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
        if name in ("no_plot", "fresh"):
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


def why_unmeasurable(target, sampler, method: str = "auto") -> str | None:
    """Why `method` cannot measure `sampler` on `target` (None when it can), decided from what the engines require
    without running anything: 'auto' asks exact.choose_method; a named method is held to its own requirements."""
    from exact import choose_method
    from exact.subspace import as_subspace, unsupported
    from samplers.base import MarkovSampler, RandomizedSampler

    if method == "auto":
        try:
            choose_method(target, sampler)
        except DivergenceError as err:
            return str(err)
        return None
    stochastic, markov = sampler.info.stochastic, isinstance(sampler, MarkovSampler)
    randomized = isinstance(sampler, RandomizedSampler)
    d = target.d
    if method in ("grid-1d-flow", "grid-1d-kernel", "grid-1d-randomized") and d != 1:
        return f"{method} measures 1-D targets only, {target.name!r} has d = {d}"
    if method in ("grid-1d-flow", "flow-mc") and stochastic:
        return f"it is stochastic and {method} pushes points through a deterministic map"
    if method == "grid-1d-kernel" and not markov:
        return "grid-1d-kernel needs a sampler written as Gaussian transitions (a Markov sampler)"
    if method == "grid-1d-randomized" and not randomized:
        return "grid-1d-randomized needs a randomized (random-time) sampler"
    if method == "gaussian":
        if not target.is_gaussian:
            return f"the gaussian method needs a one-component target, {target.name!r} is not Gaussian"
        if stochastic and not markov:
            return "the gaussian method needs a deterministic sampler or one written as Gaussian transitions"
    if method == "product":
        if not getattr(target, "factorises", False):
            return f"the product method needs a product target, {target.name!r} does not factorise"
        if stochastic and not markov:
            return "the product method needs a deterministic sampler or one written as Gaussian transitions"
    if method == "subspace":
        found = as_subspace(target)
        if found is None:
            return f"{target.name!r} has no subspace structure (k < d, shared isotropic floor)"
        return unsupported(found, sampler)
    return None


def refuse_unmeasurable(target, samplers: dict, method: str = "auto") -> None:
    """Refuse, before any work, a sampler list in which some sampler cannot be measured on `target` by `method`:
    one line naming every such sampler and why (a DivergenceError)."""
    reasons = {name: why_unmeasurable(target, sampler, method) for name, sampler in samplers.items()}
    bad = {name: why for name, why in reasons.items() if why}
    if bad:
        shown = "; ".join(f"{name}: {why}" for name, why in bad.items())
        how = "no exact method" if method == "auto" else f"method {method!r} cannot measure them"
        raise DivergenceError(f"cannot measure {', '.join(bad)} on target {target.name!r} (d = {target.d}): "
                              f"{how}. {shown}")


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
          scheduler: str = "none", workers: int | None = None, desc: str = "",
          stamp: Callable[[object, list[dict]], list[dict]] | None = None) -> None:
    """Run `work(job)` for every job and append each job's rows to `results` (through `stamp(job, rows)`, in this
    process, where given: Study adds the content keys this way).

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
                    results.append(stamp(jobs[next_index], outcome) if stamp is not None else outcome)
                next_index += 1
    finally:
        finished.close()  # stops a cluster now, also when a row is refused or on Ctrl-C


# ---------------------------------------------------------------------------- the shape of a study
@dataclass(frozen=True)
class Study:
    """One study's parts; `main` puts them together in the shape every study has:
    parse -> setup -> jobs -> sweep -> read the CSV -> summarise -> print -> plot.

    A job is a picklable value (a frozen dataclass of plain values: names, numbers, paths as strings; never a
    tensor or an open file) whose `row_keys()` gives the key values (`key` columns) of every row it writes and whose
    `ingredients(names)` gives what decides the value of the row of those names ({part: value} over KEY_PARTS,
    computed in the main process from the job's plain values, cheaply: fingerprints, never a measurement). A job
    whose rows are all in the results file already, under the same names and content key, is not run again.
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
            results = self.open_results(args.out, fresh=getattr(args, "fresh", False))
            expected = [keyed_rows(job) for job in jobs]
            results.report_others(key for keys in expected for key in keys)
            pending = [job for job, keys in zip(jobs, expected) if not all(results.done(**key) for key in keys)]
            sweep(pending, self.work, results, scheduler=args.scheduler, workers=args.workers,
                  desc=f"studies.{self.name}", stamp=self.stamp)
            frame = rows_of(results.path, [key for keys in expected for key in keys])
            summary = self.summarise(frame, args)
            written = [results.path, *self.report(frame, summary, args)]
            if not args.no_plot and len(frame):
                written += self.plot(frame, args)
            print(f"\nwrote {', '.join(str(path) for path in written)} ({time.perf_counter() - started:.1f} s)")
        return 0

    def stamp(self, job, rows: list[dict]) -> list[dict]:
        """A job's rows with their content keys (from the job's ingredients for each row's names)."""
        keys: dict[tuple, str] = {}
        out = []
        for row in rows:
            names = {k: row.get(k, "") for k in self.key}
            ident = tuple(str(v) for v in names.values())
            if ident not in keys:
                keys[ident] = content_key(job.ingredients(names))
            out.append({**row, KEY_COLUMN: keys[ident]})
        return out

    def open_results(self, out: Path, fresh: bool = False) -> ResultsFile:
        if Path(out).exists() and not Path(out).is_dir():
            raise StudyError(f"--out {str(out)!r} is a file, not a folder")
        try:
            return ResultsFile(Path(out) / self.results, [*self.columns, KEY_COLUMN], [*self.key, KEY_COLUMN],
                               fresh=fresh)
        except OSError as err:
            raise StudyError(f"cannot write results to --out {str(out)!r}: {err.strerror or err}") from None


def keyed_rows(job) -> list[dict]:
    """A job's row names, each with its content key (KEY_COLUMN): what `done` and `rows_of` take."""
    return [{**names, KEY_COLUMN: content_key(job.ingredients(names))} for names in job.row_keys()]


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
