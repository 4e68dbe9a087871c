"""Mutation testing of the scientific code, on demand (never in default CI).

    pip install -e ".[test,mutation]"
    python -m tests.mutation --sample 160 --seed 0            # about 25 minutes on an idle 2-core machine
    python -m tests.mutation --list                           # the population and the module -> tests map only
    python -m tests.mutation --again build/mutation/report.json   # rerun only the survivors of an earlier run

The tool is cosmic-ray (https://cosmic-ray.readthedocs.io). For each module in MODULES this driver writes a
cosmic-ray config (the module, the test command of *its* tests only, a timeout) and a session, enumerates every
mutant of the module with cosmic-ray's operators, marks as skipped those the population leaves out (below), draws a
seeded sample stratified by module (every module gets at least MIN_PER_MODULE mutants, the rest in proportion to the
module's population), and runs the sessions with `cosmic-ray exec` in WORKERS copies of the source tree, each copy
working through its share of the modules. It writes report.md and report.json into --out: the population, the sample
and seed, killed / survived / timeout per module, the kill rate, and every survivor with file:line and its diff.

Left out of the population by configuration (so that a kill says something about the science):
  - operators: replacements by bitwise, shift, floor-division and modulo operators and by `is` / `is not` (on float
    tensors these only raise a TypeError), bitwise originals (`int | None` unions), unary `~` / `not` put on numbers,
    and the variable replacer / inserter (they draw random numbers, so a mutant would not be reproducible);
  - places: docstrings, `raise` statements (the error messages), f-strings (messages and labels), logging, print and
    warnings calls, type annotations;
  - in studies/ only the verdict code is mutated (VERDICT_FUNCTIONS); the rest of a study (argument parsing, sweeps,
    files, plots) is not in the population.
A mutant counts as killed when its tests fail or run past the timeout (reported apart); the kill rate is
killed / (killed + survived). Survivors are analysed in tests/mutation_survivors.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The tests that exercise each module: the fast, relevant files, and a -k expression where some of their tests are
# slow and test other things (the expression applies to the whole command). Globs are expanded when the command is
# built, and a listed file that does not exist is dropped with a warning (tests get renamed); a module whose files
# are all missing is refused, and so is a module of theory/, samplers/ or exact/ missing from this map.
FAST_DIVERGENCES = "not errors_fall_as_T_doubles"
NOT_STUDY_SWEEPS = "not sweep and not follow_the_seed and not folds and not tidy_rows"
LAWS_SAMPLERS = "tests/test_laws_samplers.py"
LAWS_EXACT = "tests/test_laws_exact.py"
LAWS_THEORY = "tests/test_laws_theory.py"
VERDICT_TESTS = "tests/test_verdict*.py"
MODULES: dict[str, tuple[list[str], str | None]] = {
    # theory/
    "theory/targets.py": (["tests/test_targets.py", "tests/test_engine_paths.py", "tests/test_pinned.py"], None),
    "theory/schedules.py": (["tests/test_li2023.py", "tests/test_solvers.py", LAWS_SAMPLERS, "tests/test_renoise.py"],
                            None),
    "theory/solver_grids.py": (["tests/test_solvers.py", LAWS_SAMPLERS], None),
    "theory/catalog.py": (["tests/test_targets.py", "tests/test_pinned.py", LAWS_THEORY], None),
    "theory/posterior.py": (["tests/test_path_kl.py"], None),
    "theory/product.py": (["tests/test_product.py", LAWS_THEORY], None),
    "theory/subspace.py": (["tests/test_subspace.py"], "not 1024"),
    "theory/bounds.py": ([LAWS_THEORY, "tests/test_rates.py", "tests/test_lijiao.py",
                          "tests/test_picard.py", VERDICT_TESTS],
                         NOT_STUDY_SWEEPS),
    "theory/rates.py": (["tests/test_rates.py", LAWS_THEORY, VERDICT_TESTS], NOT_STUDY_SWEEPS),
    "theory/em.py": (["tests/test_images.py", LAWS_THEORY], "em_"),
    "theory/target_file.py": (["tests/test_bad_input.py", "tests/test_targets.py"], None),
    "theory/fingerprint.py": (["tests/test_content_keys.py"], None),
    # samplers/
    "samplers/__init__.py": (["tests/test_pinned.py", "tests/test_diffusers_samplers.py"], None),
    "samplers/base.py": (["tests/test_pinned.py", "tests/test_ddram.py", "tests/test_li2023.py", LAWS_SAMPLERS], None),
    "samplers/solvers.py": (["tests/test_solvers.py", "tests/test_pinned.py", LAWS_SAMPLERS,
                             "tests/test_diffusers_crosscheck.py"], "not deis_is_a_different"),
    "samplers/li2023.py": (["tests/test_li2023.py", "tests/test_pinned.py", LAWS_SAMPLERS], None),
    "samplers/lijiao.py": (["tests/test_lijiao.py"], None),
    "samplers/expint.py": (["tests/test_frontier.py", LAWS_SAMPLERS], None),
    "samplers/randomized_midpoint.py": (["tests/test_frontier.py", LAWS_SAMPLERS], None),
    "samplers/ddram.py": (["tests/test_ddram.py"], None),
    "samplers/renoise.py": (["tests/test_frontier.py"], None),
    "samplers/picard.py": (["tests/test_picard.py"], None),
    "samplers/amed.py": (["tests/test_amed.py"], None),
    "samplers/perturbed.py": (["tests/test_score_error.py"], None),
    "samplers/diffusers.py": (["tests/test_diffusers_samplers.py", "tests/test_diffusers_crosscheck.py", LAWS_SAMPLERS],
                              "not deis_is_a_different"),
    "samplers/unet.py": (["tests/test_images.py"], "eps_is_tweedie or features or every_registered"),
    # exact/
    "exact/__init__.py": (["tests/test_engine_paths.py", "tests/test_flow.py", "tests/test_frontier.py"], None),
    "exact/base.py": (["tests/test_engine_paths.py", "tests/test_pinned.py", LAWS_EXACT], None),
    "exact/density_1d.py": (["tests/test_divergences.py", "tests/test_pinned.py", LAWS_EXACT, "tests/test_path_kl.py"],
                            FAST_DIVERGENCES),
    "exact/grid_1d_kernel.py": (["tests/test_divergences.py", "tests/test_frontier.py", LAWS_EXACT], FAST_DIVERGENCES),
    "exact/grid_1d_flow.py": (["tests/test_divergences.py", "tests/test_pinned.py", LAWS_EXACT], FAST_DIVERGENCES),
    "exact/randomized_1d.py": (["tests/test_frontier.py", "tests/test_ddram.py", LAWS_EXACT], None),
    "exact/flow_mc.py": (["tests/test_flow.py", "tests/test_score_error.py"], None),
    "exact/gaussian.py": (["tests/test_divergences.py", "tests/test_li2023.py", LAWS_EXACT, "tests/test_papers.py"],
                          FAST_DIVERGENCES),
    "exact/init_error.py": (["tests/test_engine_paths.py", "tests/test_ddram.py", LAWS_EXACT], None),
    "exact/path_kl.py": (["tests/test_path_kl.py", LAWS_EXACT], None),
    "exact/product.py": (["tests/test_product.py", LAWS_EXACT], None),
    "exact/subspace.py": (["tests/test_subspace.py"], "not 1024"),
    # studies/: the verdict code only (VERDICT_FUNCTIONS)
    "studies/rates.py": (["tests/test_rates.py", VERDICT_TESTS], None),
    "studies/tightness.py": (["tests/test_tightness.py", VERDICT_TESTS], None),
    "studies/dimension.py": (["tests/test_cli.py", VERDICT_TESTS], "dimension or verdict or abstain"),
    "studies/score_error.py": (["tests/test_score_error.py", VERDICT_TESTS], None),
}
# The verdict code of each study (function names; a name the module no longer has is reported, not fatal), and the
# pattern that also brings in a verdict function added later (fits, trend words, classification, summaries).
VERDICT_FUNCTIONS = {
    "studies/rates.py": {"fit_orders", "measured", "summarise", "metric_verdicts", "_theorem_verdict", "_order_row",
                         "_is_flagged"},
    "studies/score_error.py": {"floors", "summarise"},
    "studies/tightness.py": {"classify", "verdict_text", "summarise"},
    "studies/dimension.py": {"_proven", "_usable", "fit_subspace_exponents", "fit_exponents", "summarise"},
}
VERDICT_PATTERN = re.compile(r"^_?(fit|verdict|classify|trend|summar|abstain|decide|interval)")

EXCLUDED_OPERATORS = [
    r"core/ReplaceBinaryOperator_\w+_(RShift|LShift|BitOr|BitAnd|BitXor|FloorDiv|Mod)$",
    r"core/ReplaceBinaryOperator_(RShift|LShift|BitOr|BitAnd|BitXor)_\w+$",
    r"core/ReplaceUnaryOperator_(UAdd|USub)_(Invert|Not)$",
    r"core/ReplaceComparisonOperator_(Eq|NotEq|Lt|LtE|Gt|GtE)_(Is|IsNot)$",
    r"core/ReplaceComparisonOperator_(Is|IsNot)_(Lt|LtE|Gt|GtE)$",
    r"core/Variable(Replacer|Inserter)$",
]
QUIET_CALLS = {"print", "warn", "debug", "info", "warning", "error", "exception", "critical"}
PYTEST = "python -m pytest -x -q -n 0 -p no:cacheprovider"  # -n 0: one process per mutant (2 mutants run side by side)
MIN_PER_MODULE = 2
WORKERS = 2
TIMEOUT_FACTOR, TIMEOUT_SLACK = 4.0, 15.0


# ---- the population --------------------------------------------------------------------------------------------

Span = tuple[tuple[int, int], tuple[int, int]]


def _span(node: ast.AST) -> Span:
    return (node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)


def left_out_spans(source: str, module: str) -> tuple[list[Span], list[Span] | None, set[str]]:
    """The spans no mutant may touch (messages, docstrings, logging, annotations), the spans a studies module is
    limited to (its verdict functions; None: the whole module) and the verdict names that were not found."""
    tree = ast.parse(source)
    quiet: list[Span] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                quiet.append(_span(body[0]))
        if isinstance(node, (ast.Raise, ast.JoinedStr)):
            quiet.append(_span(node))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in QUIET_CALLS:
                quiet.append(_span(node))
        elif isinstance(node, ast.arg) and node.annotation is not None:
            quiet.append(_span(node.annotation))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            quiet.append(_span(node.returns))
        elif isinstance(node, ast.AnnAssign):
            quiet.append(_span(node.annotation))
    if module not in VERDICT_FUNCTIONS:
        return quiet, None, set()
    named = VERDICT_FUNCTIONS[module]
    keep, found = [], set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                node.name in named or VERDICT_PATTERN.match(node.name)):
            keep.append(_span(node))
            found.add(node.name)
    return quiet, keep, named - found


def _inside(position: tuple[int, int], spans: list[Span]) -> bool:
    return any(start <= position < end for start, end in spans)


@dataclass
class Mutant:
    module: str
    operator: str
    occurrence: int
    start: tuple[int, int]
    end: tuple[int, int]
    job_id: str = ""
    outcome: str = ""  # killed | survived | timeout | incompetent
    diff: str = ""

    @property
    def key(self) -> tuple:
        return (self.module, self.operator, self.occurrence)

    def line(self, source_lines: list[str]) -> str:
        return source_lines[self.start[0] - 1].strip()


@dataclass
class Population:
    by_module: dict[str, list[Mutant]] = field(default_factory=dict)
    enumerated: Counter = field(default_factory=Counter)
    left_out: Counter = field(default_factory=Counter)  # (module, reason) -> count
    missing_verdicts: dict[str, set[str]] = field(default_factory=dict)


def enumerate_population(modules: list[str]) -> Population:
    from cosmic_ray.commands.init import _all_work_items  # the tool's own enumeration of mutation sites

    excluded = re.compile("|".join(f"(?:{e})" for e in EXCLUDED_OPERATORS))
    population = Population()
    for module in modules:
        source = (ROOT / module).read_text()
        quiet, keep, missing = left_out_spans(source, module)
        if missing:
            population.missing_verdicts[module] = missing
        kept = []
        cwd = os.getcwd()
        os.chdir(ROOT)  # module paths stay relative, so a session runs in any copy of the tree
        try:
            items = list(_all_work_items([Path(module)], {}))
        finally:
            os.chdir(cwd)
        for item in items:
            (spec,) = item.mutations
            population.enumerated[module] += 1
            start = tuple(spec.start_pos)
            if excluded.match(spec.operator_name):
                population.left_out[module, "operator"] += 1
            elif _inside(start, quiet):
                population.left_out[module, "message/docstring/logging/annotation"] += 1
            elif keep is not None and not _inside(start, keep):
                population.left_out[module, "outside the verdict code"] += 1
            else:
                kept.append(Mutant(module, spec.operator_name, spec.occurrence, start, tuple(spec.end_pos)))
        kept.sort(key=lambda m: (m.operator, m.occurrence))
        population.by_module[module] = kept
    return population


def allocate(sizes: dict[str, int], n: int, floor: int = MIN_PER_MODULE) -> dict[str, int]:
    """Stratified allocation: `floor` per module (or all it has), the rest in proportion to the sizes left over
    (largest remainders), never more than a module has."""
    take = {m: min(floor, s) for m, s in sizes.items()}
    while True:
        left = n - sum(take.values())
        room = {m: sizes[m] - take[m] for m in sizes if sizes[m] > take[m]}
        if left <= 0 or not room:
            return take
        total = sum(room.values())
        shares = {m: left * r / total for m, r in room.items()}
        whole = {m: min(int(s), room[m]) for m, s in shares.items()}
        if sum(whole.values()) == 0:  # hand out the remainders one by one
            for m in sorted(room, key=lambda m: (-(shares[m] - int(shares[m])), m))[:left]:
                take[m] += 1
            return take
        for m, w in whole.items():
            take[m] += w


def draw_sample(population: Population, n: int, seed: int) -> dict[str, list[Mutant]]:
    sizes = {m: len(ms) for m, ms in population.by_module.items()}
    counts = allocate(sizes, n)
    rng = random.Random(seed)
    return {m: sorted(rng.sample(population.by_module[m], counts[m]), key=lambda x: (x.start, x.operator))
            for m in sorted(population.by_module)}


# ---- running ---------------------------------------------------------------------------------------------------

_WARNED: set[tuple[str, str]] = set()


def test_files(module: str) -> list[str]:
    files = []
    for entry in MODULES[module][0]:
        if "*" in entry:
            files += sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(entry))
        elif (ROOT / entry).is_file():
            files.append(entry)
        elif (module, entry) not in _WARNED:
            _WARNED.add((module, entry))
            print(f"warning: {entry} (mapped to {module}) does not exist and is left out", file=sys.stderr)
    return files


def test_command(module: str) -> str:
    files = test_files(module)
    if not files:
        raise SystemExit(f"error: none of the test files mapped to {module} exists (MODULES in tests/mutation.py)")
    k = MODULES[module][1]
    return " ".join([PYTEST] + files + ([f"-k {shlex.quote(k)}"] if k else []))


def copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    if dest.exists():
        shutil.rmtree(dest)
    for name in files:
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def worker_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(tree), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONHASHSEED="0", MPLBACKEND="Agg")
    return env


def baseline(command: str, tree: Path) -> tuple[bool, float, str]:
    began = time.monotonic()
    done = subprocess.run(command, shell=True, cwd=tree, env=worker_env(tree), capture_output=True, text=True)
    return done.returncode == 0, time.monotonic() - began, (done.stdout + done.stderr)[-2000:]


def write_session(module: str, mutants: list[Mutant], timeout: float, sessions: Path, command: str
                  ) -> tuple[Path, Path]:
    """A cosmic-ray config and session for one module: every enumerated mutant is a work item; those outside the
    sample (or the population) are marked skipped, so `cosmic-ray exec` runs exactly the sample."""
    from cosmic_ray.commands.init import _all_work_items
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    stem = module.replace("/", ".").removesuffix(".py")
    config = sessions / f"{stem}.toml"
    db = sessions / f"{stem}.sqlite"
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{module}"\n'
        f"timeout = {timeout:.0f}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(command)}\n"
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
        "[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = {json.dumps(EXCLUDED_OPERATORS)}\n")
    if db.exists():
        db.unlink()
    wanted = {m.key: m for m in mutants}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        items = list(_all_work_items([Path(module)], {}))
    finally:
        os.chdir(cwd)
    with use_db(str(db), WorkDB.Mode.create) as work_db:
        work_db.add_work_items(items)
        skip = []
        for item in items:
            (spec,) = item.mutations
            mutant = wanted.get((module, spec.operator_name, spec.occurrence))
            if mutant is None:
                skip.append(item.job_id)
            elif tuple(spec.start_pos) != mutant.start:
                raise SystemExit(f"error: {module} changed since the mutants were listed "
                                 f"({spec.operator_name} #{spec.occurrence} moved)")
            else:
                mutant.job_id = item.job_id
        work_db.set_multiple_results(skip, WorkResult(output="not in the sample",
                                                      worker_outcome=WorkerOutcome.SKIPPED))
    return config, db


def read_session(db: Path, mutants: list[Mutant]) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    by_job = {m.job_id: m for m in mutants}
    with use_db(str(db), WorkDB.Mode.open) as work_db:
        for item, result in work_db.completed_work_items:
            mutant = by_job.get(item.job_id)
            if mutant is None:
                continue
            if result.worker_outcome != WorkerOutcome.NORMAL:
                mutant.outcome = "incompetent"
            elif result.test_outcome == TestOutcome.KILLED:
                mutant.outcome = "timeout" if result.output == "timeout" else "killed"
            elif result.test_outcome == TestOutcome.SURVIVED:
                mutant.outcome = "survived"
            else:
                mutant.outcome = "incompetent"
            mutant.diff = "\n".join(line for line in (result.diff or "").splitlines()
                                    if line[:1] in "+-" and not line.startswith(("+++", "---")))


def run_sample(sample: dict[str, list[Mutant]], out: Path, workers: int, log, on_module=None,
               fixed_timeout: float | None = None) -> dict[str, dict]:
    """Run the sample's sessions in `workers` copies of the tree; `on_module(info)` after each module (a partial
    report, so that an interrupted run keeps what it measured: `--again` on it runs the rest)."""
    sessions = out / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    trees = [out / f"tree-{i}" for i in range(workers)]
    commands = {module: test_command(module) for module in sample if sample[module]}  # the files of the copies
    for tree in trees:
        copy_tree(tree)
    # biggest modules first, each to the worker with the least work so far (the sample's count is the cost proxy)
    queue = sorted((m for m in sample if sample[m]), key=lambda m: -len(sample[m]))
    shares: list[list[str]] = [[] for _ in trees]
    load = [0] * len(trees)
    for module in queue:
        i = load.index(min(load))
        shares[i].append(module)
        load[i] += len(sample[module])
    info: dict[str, dict] = {}
    lock = threading.Lock()
    baselines: dict[str, tuple[bool, float, str]] = {}  # one clean run per command, shared by the workers

    def work(i: int) -> None:
        tree = trees[i]
        for module in shares[i]:
            command = commands[module]
            if fixed_timeout is not None:  # no clean run: the caller vouches that the clean tests pass
                ok, seconds, tail = True, (fixed_timeout - TIMEOUT_SLACK) / TIMEOUT_FACTOR, ""
            else:
                if command not in baselines:
                    baselines[command] = baseline(command, tree)
                ok, seconds, tail = baselines[command]
            if not ok:
                with lock:
                    info[module] = {"baseline_s": seconds, "error": "the clean tests fail: " + tail}
                    log(f"[{i}] {module}: the clean tests FAIL, module skipped")
                continue
            timeout = TIMEOUT_FACTOR * seconds + TIMEOUT_SLACK
            config, db = write_session(module, sample[module], timeout, sessions, command)
            began = time.monotonic()
            with lock:
                log(f"[{i}] {module}: {len(sample[module])} mutants, clean run {seconds:.1f} s, timeout {timeout:.0f} s")
            subprocess.run(["cosmic-ray", "exec", str(config), str(db)], cwd=tree, env=worker_env(tree),
                           capture_output=True, text=True)
            read_session(db, sample[module])
            counts = Counter(m.outcome for m in sample[module])
            with lock:
                info[module] = {"baseline_s": seconds, "timeout_s": timeout, "run_s": time.monotonic() - began}
                log(f"[{i}] {module}: done in {time.monotonic() - began:.0f} s {dict(counts)}")
                if on_module is not None:
                    on_module(info)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(trees))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for tree in trees:
        shutil.rmtree(tree, ignore_errors=True)
    return info


# ---- the survivors' analysis ---------------------------------------------------------------------------------

SURVIVORS = ROOT / "tests" / "mutation_survivors.md"
_SURVIVOR_LINE = re.compile(r"^- (\S+?):(\d+) (\w+) #(\d+)")


def explained_survivors() -> dict[tuple, str]:
    """The survivors analysed in tests/mutation_survivors.md, keyed like Mutant.key: one line each,
    `- module:line Operator #occurrence: ... -- equivalent|accepted: why`."""
    if not SURVIVORS.is_file():
        return {}
    out = {}
    for line in SURVIVORS.read_text().splitlines():
        match = _SURVIVOR_LINE.match(line)
        if match:
            module, _, operator, occurrence = match.groups()
            out[module, "core/" + operator, int(occurrence)] = line
    return out


def _kind(line: str) -> str:
    """equivalent | accepted | open, as the survivor's line in SURVIVORS says."""
    match = re.search(r"#\d+: (equivalent|accepted|open)", line)
    return match.group(1) if match else "open"


# ---- the report ------------------------------------------------------------------------------------------------

def group_of(module: str) -> str:
    return module.split("/")[0]


def kill_rate(mutants: list[Mutant]) -> tuple[int, int, float | None]:
    killed = sum(m.outcome in ("killed", "timeout") for m in mutants)
    decided = killed + sum(m.outcome == "survived" for m in mutants)
    return killed, decided, (killed / decided if decided else None)


def write_report(population: Population, sample: dict[str, list[Mutant]], info: dict, args, seconds: float,
                 out: Path) -> Path:
    rows, survivors = [], []
    lines_of = {m: (ROOT / m).read_text().splitlines() for m in sample}
    for module, mutants in sample.items():
        c = Counter(m.outcome for m in mutants)
        killed, decided, rate = kill_rate(mutants)
        rows.append((module, len(population.by_module[module]), len(mutants), c["killed"], c["timeout"],
                     c["survived"], c["incompetent"], rate, info.get(module, {}).get("baseline_s")))
        survivors += [m for m in mutants if m.outcome == "survived"]
    everyone = [m for ms in sample.values() for m in ms]
    killed, decided, rate = kill_rate(everyone)
    pop_total = sum(len(v) for v in population.by_module.values())
    text = ["# Mutation testing report", "",
            f"- command: `python -m tests.mutation {' '.join(args.argv)}`",
            f"- tool: cosmic-ray {_version()}; {args.workers} workers; wall time {seconds / 60:.1f} min",
            f"- population: {pop_total} mutants ({sum(population.enumerated.values())} enumerated; left out by "
            f"configuration: " + ", ".join(f"{r} {n}" for r, n in _reasons(population).items()) + ")",
            f"- sample: {len(everyone)} mutants, seed {args.seed}, stratified by module (at least {MIN_PER_MODULE} "
            "each, the rest in proportion)" + (f"; the survivors of {args.again} run again with today's tests, the "
                                                  "other outcomes carried over" if args.again else ""),
            f"- kill rate: **{_pct(rate)}** ({killed} of {decided} decided; timeouts count as killed)"
            + (f"; {sum(not m.outcome for m in everyone)} mutants not run yet (partial report)"
               if any(not m.outcome for m in everyone) else ""), ""]
    for group in ("theory", "samplers", "exact", "studies"):
        k, dcd, r = kill_rate([m for mod, ms in sample.items() if group_of(mod) == group for m in ms])
        text.append(f"- {group}: {_pct(r)} ({k}/{dcd})")
    text += ["", "| module | population | sample | killed | timeout | survived | incompetent | kill rate | clean run (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for module, pop, n, k, t, s, inc, r, base in rows:
        text.append(f"| {module} | {pop} | {n} | {k} | {t} | {s} | {inc} | {_pct(r)} | "
                    f"{'' if base is None else f'{base:.1f}'} |")
    for module, missing in population.missing_verdicts.items():
        text.append(f"\nnote: {module} has no function named {', '.join(sorted(missing))} (VERDICT_FUNCTIONS)")
    for module, meta in info.items():
        if "error" in meta:
            text.append(f"\nnote: {module} was not run: {meta['error'].splitlines()[-1] if meta['error'] else ''}")
    explained = explained_survivors()
    fresh = [m for m in survivors if m.key not in explained]
    kinds = Counter(_kind(explained[m.key]) for m in survivors if m.key in explained)
    if survivors and decided > kinds["equivalent"]:
        text.insert(7, f"- kill rate without the {kinds['equivalent']} survivors analysed as equivalent (no input tells "
                       f"them from the original): {_pct(killed / (decided - kinds['equivalent']))}; survivors "
                       f"accepted {kinds['accepted']}, open {kinds['open']}, not analysed {len(fresh)}")
    text += ["", f"## Survivors ({len(survivors)}; {len(survivors) - len(fresh)} analysed in "
             f"tests/mutation_survivors.md, {len(fresh)} not yet: marked NEW)", ""]
    for m in sorted(survivors, key=lambda m: (m.module, m.start)):
        change = m.diff.replace("\n", " / ") or m.line(lines_of[m.module])
        mark = "" if m.key in explained else "NEW "
        text.append(f"- {mark}{m.module}:{m.start[0]} {m.operator.removeprefix('core/')} #{m.occurrence}: `{change}`")
    report = out / "report.md"
    report.write_text("\n".join(text) + "\n")
    (out / "report.json").write_text(json.dumps({
        "argv": args.argv, "seed": args.seed, "population": pop_total,
        "population_by_module": {m: len(v) for m, v in population.by_module.items()},
        "kill_rate": rate, "killed": killed, "decided": decided,
        "mutants": [{"module": m.module, "operator": m.operator, "occurrence": m.occurrence, "line": m.start[0],
                     "start": m.start, "outcome": m.outcome, "diff": m.diff} for m in everyone],
    }, indent=1))
    return report


def _reasons(population: Population) -> Counter:
    reasons = Counter()
    for (_, reason), n in population.left_out.items():
        reasons[reason] += n
    return reasons


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def _version() -> str:
    from importlib.metadata import version
    return version("cosmic-ray")


# ---- the command -----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=int, default=160, help="mutants to draw (default 160)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument("--workers", type=int, default=WORKERS, help="parallel copies of the tree (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mutation", help="report folder")
    parser.add_argument("--modules", nargs="+", metavar="PATH", help="only these modules (default: all of MODULES)")
    parser.add_argument("--again", type=Path, metavar="REPORT.json", help="rerun only that report's survivors")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="one timeout per mutant instead of %.0fx each module's clean run + %.0f s (skips the "
                             "clean runs: only when the mapped tests are known to pass)" % (TIMEOUT_FACTOR, TIMEOUT_SLACK))
    parser.add_argument("--list", action="store_true", help="print the population and the test map, run nothing")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.sample < 1:
        parser.error(f"--sample must be at least 1, not {args.sample}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    modules = args.modules or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"no tests are mapped for {', '.join(unknown)} (known: the keys of MODULES in tests/mutation.py)")
    unmapped = sorted(str(p.relative_to(ROOT)) for top in ("theory", "samplers", "exact")
                      for p in (ROOT / top).glob("*.py") if str(p.relative_to(ROOT)) not in MODULES
                      and p.read_text().strip())
    try:
        import cosmic_ray  # noqa: F401
    except ImportError:
        print('error: cosmic-ray is not installed (pip install -e ".[mutation]")', file=sys.stderr)
        return 2
    if args.timeout is not None and not args.timeout > TIMEOUT_SLACK:
        parser.error(f"--timeout must exceed {TIMEOUT_SLACK:.0f} seconds, not {args.timeout}")
    if args.again and not args.again.is_file():
        parser.error(f"--again: no report at {args.again}")

    began = time.monotonic()
    population = enumerate_population(modules)
    if args.again:
        # the earlier sample, with its outcomes; only its survivors are run again (tests were added since: a mutant
        # the earlier tests killed is still killed, the commands only grew)
        previous = json.loads(args.again.read_text())
        args.seed = previous["seed"]
        before = {(m["module"], m["operator"], m["occurrence"]): m for m in previous["mutants"]}
        explained = explained_survivors()
        sample = {}
        for mod, ms in population.by_module.items():
            chosen = [m for m in ms if m.key in before]
            for m in chosen:
                was = before[m.key]["outcome"]
                # a survivor listed as equivalent/accepted in SURVIVORS is not run again (it would survive again)
                if (was and was != "survived") or (was == "survived" and m.key in explained):
                    m.outcome, m.diff = was, before[m.key]["diff"]
            sample[mod] = chosen
        lost = len(before) - sum(len(v) for v in sample.values())
        if lost:
            print(f"warning: {lost} mutants of {args.again} are no longer in the population (code changed)",
                  file=sys.stderr)
    else:
        sample = draw_sample(population, args.sample, args.seed)
    for module in unmapped:
        print(f"warning: {module} has no entry in MODULES and is not mutated", file=sys.stderr)
    if args.list:
        for module in modules:
            print(f"{module}: {len(population.by_module[module])} mutants, sample {len(sample.get(module, []))}; "
                  f"{test_command(module)}")
        print(f"population {sum(len(v) for v in population.by_module.values())}, left out {dict(_reasons(population))}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = (args.out / "progress.log").open("w")

    def log(message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {message}", flush=True)
        log_file.write(f"{stamp} {message}\n")
        log_file.flush()

    log(f"population {sum(len(v) for v in population.by_module.values())}, sample "
        f"{sum(len(v) for v in sample.values())}, seed {args.seed}, to run "
        f"{sum(not m.outcome for ms in sample.values() for m in ms)}")
    to_run = {mod: [m for m in ms if not m.outcome] for mod, ms in sample.items()}
    info = run_sample(to_run, args.out, args.workers, log,
                      on_module=lambda info: write_report(population, sample, info, args, time.monotonic() - began,
                                                          args.out),
                      fixed_timeout=args.timeout)
    report = write_report(population, sample, info, args, time.monotonic() - began, args.out)
    log(f"report: {report}")
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
