"""The studies' front door: `--help`, `--list` and every refusal of bad command-line input, answered before torch
is imported (importing torch alone takes seconds).

    python -m studies.rates --help            # answered here, from the index, without torch
    python -m studies.rates --sampler nope    # refused here: one line, exit status 2
    python -m studies.front --write           # regenerate the index after changing a registry or a study's flags

How: `python -m studies.<name>` imports the package `studies` before it runs the study module, and
studies/__init__.py hands the command line to `answer_early` (the study module itself, whose imports are heavy, is
not touched). The answer comes from studies/front_index.json, an index generated from the real registries (sampler,
target, schedule and theorem names with one line each) and the real parsers of every study (each flag with its type,
default, choices and help): the front door rebuilds each parser from it, so `--help` prints what the study's own
parser prints and bad numbers are refused with the same words. A command that passes goes on to the study, which
parses it again with its own parser; anything this door cannot judge (a parametrised sampler's argument, a --d that
a target refuses) is left to the study. The index is never written by hand: tests/test_cli.py regenerates it and
fails, naming `python -m studies.front --write`, when it differs from the file; and if the file is missing or
unreadable the door stays open (the study answers everything itself, only more slowly).

This module is torch-free (argparse, json, the standard library and theory.target_file); studies.common re-exports
its parser pieces (StudyParser, integer, real).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable

# Every study, in the order the README presents them (`python -m studies` lists them). tests/test_cli.py walks this
# list: each entry is a module or package `studies.<name>` with `build_parser()` and `main(argv)`.
STUDIES = ["rates", "dimension", "isotropic", "score_error", "nfe", "geometry", "images", "tightness", "papers"]
INDEX_PATH = Path(__file__).with_name("front_index.json")
REGENERATE = "python -m studies.front --write"


# ---------------------------------------------------------------------------- the parser pieces (torch-free)
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
    parse.kind, parse.minimum, parse.inclusive, parse.maximum, parse.why = int, minimum, True, None, why
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


def device_name(text: str) -> str:
    if not (text == "cpu" or text == "cuda" or text.startswith("cuda:") or text == "mps"):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu or cuda")
    return text


class ListAction(argparse.Action):
    """`--list`: the samplers, targets, schedules and theorems, one line each, then exit 0 (like --help)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        index = getattr(parser, "front_index", None) or live_names()
        print(list_text(index, getattr(parser, "extra_names", {})), end="")  # stdout, as --help's text
        parser.exit(0)


LIST_HELP = "list the samplers, targets, schedules and theorems, one line each, and exit"


# ---------------------------------------------------------------------------- --list
def list_text(index: dict, extra: dict | None = None) -> str:
    """The text of --list: each registry's names with one line each."""
    extra = extra or {}
    sections = [
        ("samplers (--sampler; 'all': every one the study measures)", index["samplers"]),
        ("sampler families (--sampler family:argument)", index["sampler_families"]),
        ("targets (--target; or a JSON file)", index["targets"] + [[n, "(this study's own)"]
                                                                    for n in extra.get("target", [])]),
        ("target families (--target family:argument)", index["target_families"]),
        ("schedules (--schedule)", index["schedules"]),
        ("theorems (theory.bounds)", index["theorems"]),
    ]
    lines = []
    for title, entries in sections:
        lines.append(f"{title}:")
        width = max((len(name) for name, _ in entries), default=0)
        lines += [f"  {name:<{width}}  {line}" for name, line in entries]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the index (generated)
def _first_line(doc: str | None) -> str:
    doc = (doc or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def live_names() -> dict:
    """The names part of the index, from the real registries (imports torch)."""
    import inspect

    import exact  # noqa: F401  (every module that registers something is imported: the full registries)
    import samplers
    from samplers.base import REGISTRY, known_sampler_names
    from theory import catalog, schedules, solver_grids  # noqa: F401  (solver_grids registers its schedules)
    from theory.bounds import THEOREMS

    def sampler_line(name: str) -> str:
        """The factory's docstring, else the sampler's class docstring or reference, else its module's docstring."""
        factory = REGISTRY[name]
        line = _first_line(inspect.getdoc(factory)) if isinstance(factory, type) or factory.__doc__ else ""
        if not line and not name.endswith(":"):
            sampler = samplers.get_sampler(name)
            line = _first_line(type(sampler).__doc__) or sampler.info.reference
        if not line:
            line = _first_line(getattr(sys.modules.get(factory.__module__), "__doc__", ""))
        return line or "(no description)"

    def factory_line(factory) -> str:
        return _first_line(inspect.getdoc(factory)) or "(no description)"

    theorem_lines = [[t.id, f"{t.metric.upper()} order {t.order:g} ({t.bound} bound; {t.paper}): {t.statement}"]
                     for t in THEOREMS]
    return {
        "samplers": [[n, sampler_line(n)] for n in REGISTRY if not n.endswith(":")],
        "sampler_families": [[n, sampler_line(n)] for n in REGISTRY if n.endswith(":")],
        "known_samplers": known_sampler_names(),  # as samplers.base.get_sampler's refusal spells them
        "targets": [[n, factory_line(f)] for n, f in catalog.TARGETS.items()],
        "target_families": [[n + ":", factory_line(f)] for n, f in catalog.PARAMETRISED.items()],
        "known_targets": catalog.known_targets(),
        "schedules": [[n, factory_line(f)] for n, f in schedules.SCHEDULES.items()],
        "theorems": theorem_lines,
    }


class _Shown:
    """A default that is not JSON (a Path, a tuple), kept as the text --help shows for it."""

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


def _encode(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value if not (isinstance(value, float) and not math.isfinite(value)) else {"shown": str(value)}
    if isinstance(value, list) and all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return value
    return {"shown": str(value)}


def _decode(value):
    return _Shown(value["shown"]) if isinstance(value, dict) else value


ACTIONS = {"_StoreAction": "store", "_StoreTrueAction": "store_true", "_StoreFalseAction": "store_false",
           "_StoreConstAction": "store_const", "_AppendAction": "append", "_CountAction": "count",
           "_HelpAction": "help", "ListAction": "list"}


def _type_spec(kind) -> object:
    if kind is None:
        return None
    if getattr(kind, "kind", None) is int:
        return {"integer": kind.minimum, "why": getattr(kind, "why", "")}
    if getattr(kind, "kind", None) is float:
        return {"real": [kind.minimum, kind.inclusive, kind.maximum]}
    if kind is Path:
        return "path"
    if kind in (int, float, str):
        return kind.__name__
    if getattr(kind, "__name__", "") == "device_name" or kind is device_name:
        return "device"
    # a type this door does not rebuild (e.g. --scheduler, which probes an address): taken as text here, judged by
    # the study's own parser
    return {"text": getattr(kind, "__name__", "value")}


def _lenient(name: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        return text

    parse.__name__ = name
    return parse


def _type_of(spec) -> Callable[[str], object] | None:
    if spec is None:
        return None
    if spec == "path":
        return Path
    if spec in ("int", "float", "str"):
        return {"int": int, "float": float, "str": str}[spec]
    if spec == "device":
        return device_name
    if "integer" in spec:
        return integer(spec["integer"], spec.get("why", ""))
    if "real" in spec:
        return real(*spec["real"])
    return _lenient(spec["text"])


def parser_spec(parser: argparse.ArgumentParser) -> dict:
    """A parser as plain data: everything --help shows and everything parsing checks."""
    group_of = {}
    for g, group in enumerate(parser._action_groups):
        for action in group._group_actions:
            group_of[id(action)] = g
    actions = []
    for action in parser._actions:
        kind = ACTIONS.get(type(action).__name__)
        if kind is None:
            raise TypeError(f"{parser.prog}: the front door cannot rebuild action {type(action).__name__} of "
                            f"{action.option_strings or action.dest}: add it to studies.front.ACTIONS")
        actions.append({
            "group": group_of[id(action)], "action": kind, "option_strings": action.option_strings,
            "dest": action.dest, "nargs": action.nargs, "const": _encode(action.const),
            "default": None if action.default is argparse.SUPPRESS else _encode(action.default),
            "suppress_default": action.default is argparse.SUPPRESS, "type": _type_spec(action.type),
            "choices": list(action.choices) if action.choices is not None else None,
            "required": action.required, "help": action.help, "metavar": action.metavar,
        })
    return {"prog": parser.prog, "usage": parser.usage, "description": parser.description, "epilog": parser.epilog,
            "groups": [[group.title, group.description] for group in parser._action_groups], "actions": actions,
            "extra_names": getattr(parser, "extra_names", {})}


def rebuild_parser(spec: dict) -> StudyParser:
    """The parser described by `spec` (parser_spec), built from the standard library alone."""
    parser = StudyParser(prog=spec["prog"], usage=spec["usage"], description=spec["description"],
                         epilog=spec["epilog"], formatter_class=_Formatter, add_help=False)
    groups = [parser._action_groups[0], parser._action_groups[1]]
    for title, description in spec["groups"][2:]:
        groups.append(parser.add_argument_group(title, description))
    for action in spec["actions"]:
        if action["help"] == argparse.SUPPRESS:
            action = {**action, "help": argparse.SUPPRESS}  # argparse tests this marker by identity
        options: dict = {"dest": action["dest"], "help": action["help"]}
        kind = action["action"]
        if kind == "list":
            options = {"help": action["help"]}
            groups[action["group"]].add_argument(*action["option_strings"], action=ListAction, **options)
            continue
        if kind == "help":
            groups[action["group"]].add_argument(*action["option_strings"], action="help", help=action["help"])
            continue
        options["action"] = kind
        options["default"] = argparse.SUPPRESS if action["suppress_default"] else _decode(action["default"])
        if kind in ("store", "append"):
            options.update(nargs=action["nargs"], type=_type_of(action["type"]), choices=action["choices"],
                           metavar=action["metavar"])
        if kind in ("store_const",):
            options["const"] = _decode(action["const"])
        if action["option_strings"]:
            options["required"] = action["required"]
            groups[action["group"]].add_argument(*action["option_strings"], **options)
        else:
            dest = options.pop("dest")
            groups[action["group"]].add_argument(dest, **options)
    parser.extra_names = spec.get("extra_names", {})
    return parser


def build_index() -> dict:
    """The whole index, from the real registries and parsers (imports every study)."""
    import importlib

    studies = {}
    for name in STUDIES:
        module = importlib.import_module(f"studies.{name}.cli" if name == "images" else f"studies.{name}")
        studies[name] = {**parser_spec(module.build_parser()), "sources": sources_digest(name)}
    return {"about": f"generated by `{REGENERATE}` from the registries and the studies' parsers; do not edit",
            **live_names(), "studies": studies}


def parser_sources(study: str) -> list[Path]:
    """The files a study's parser is written in: its module (a package's every module), studies.common (the shared
    flags) and this module. An edit to one of them may change the parser, so the door stops trusting the index for
    refusals until it is regenerated (it still answers --help and --list)."""
    here = Path(__file__).parent
    own = sorted((here / study).glob("*.py")) if (here / study).is_dir() else [here / f"{study}.py"]
    return [*own, here / "common.py", here / "front.py"]


def sources_digest(study: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in parser_sources(study):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def load_index() -> dict | None:
    try:
        return json.loads(INDEX_PATH.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- the door
def _refuse(prog: str, message: str):
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_sampler_names(names, index: dict) -> str | None:
    """Why a --sampler list is refused (the registry's own words), or None; parametrised arguments are not judged."""
    names = [names] if isinstance(names, str) else list(names or [])
    if names == ["all"]:
        return None
    known = {n for n, _ in index["samplers"]}
    families = {n for n, _ in index["sampler_families"]}
    for name in names:
        family, _, arg = name.partition(":")
        if (name in known and not name.endswith("?")) or (arg and family + ":" in families):
            continue
        if name.partition("?")[0] + "?" in known:  # a query-form family (lijiao-rmp?K=10): options judged later
            continue
        return f"unknown sampler {name!r}: known samplers are {', '.join(index['known_samplers'])}"
    return None


def check_target_names(names, index: dict, extra=()) -> str | None:
    """Why a --target is refused (unknown name, or a JSON file with a bad field), or None."""
    from theory.target_file import TargetError, read_target_file

    names = [names] if isinstance(names, str) else list(names or [])
    known = {n for n, _ in index["targets"]} | set(extra)
    families = {n for n, _ in index["target_families"]}
    for name in names:
        family, _, arg = name.partition(":")
        if name in known or (arg and family + ":" in families):
            continue
        if name.endswith(".json") or Path(name).is_file():
            try:
                read_target_file(name)
            except TargetError as err:
                return str(err)
            continue
        return f"unknown target {name!r}: known targets are {', '.join(index['known_targets'])}, or a JSON path"
    return None


def check_schedule_name(name, index: dict) -> str | None:
    known = [n for n, _ in index["schedules"]]
    if name is None or name in known:
        return None
    return f"unknown schedule {name!r}: known schedules are {', '.join(sorted(known))}"


def front_door(study: str, argv: list[str], index: dict | None = None) -> None:
    """Answer --help and --list, and refuse bad input, for `python -m studies.<study> argv`; return when the
    command should go on to the study."""
    index = load_index() if index is None else index
    if index is None or study not in index.get("studies", {}):
        return  # no index (or not this study): the study answers everything itself
    spec = index["studies"][study]
    parser = rebuild_parser(spec)
    parser.front_index = index
    fresh = spec.get("sources") == sources_digest(study)
    if not fresh:  # the parser's sources changed since the index was written: only the study itself may refuse
        parser.error = lambda message: _StaleIndex.throw()
    try:
        args = parser.parse_args(argv)  # --help, --list and bad numbers end here
    except _StaleIndex:
        return
    extra = spec.get("extra_names", {})
    why = (check_sampler_names(getattr(args, "sampler", None), index)
           or check_target_names(getattr(args, "target", None), index, extra.get("target", ()))
           or check_schedule_name(getattr(args, "schedule", None), index))
    if why and fresh and not _registered_since(why):
        _refuse(parser.prog, why)


class _StaleIndex(Exception):
    @classmethod
    def throw(cls):
        raise cls


def _registered_since(why: str) -> bool:
    """Whether an unknown name of a refusal ("unknown sampler 'x'", "unknown target 'x'", "unknown schedule 'x'")
    appears as a string in the sources of the registries (samplers/, theory/), i.e. may have been registered after the
    index was written: then the study decides (a stale index never refuses a name the registry has)."""
    import re

    match = re.match(r"unknown (sampler|target|schedule) '([^']*)'", why)
    if match is None:
        return False
    name = match[2]
    family = name.partition(":")[0] + ":" if ":" in name else None
    root = Path(__file__).resolve().parents[1]
    folders = ["samplers"] if match[1] == "sampler" else ["theory"]
    quoted = [f'"{name}"', f"'{name}'"] + ([f'"{family}', f"'{family}"] if family else [])
    for folder in folders:
        for path in (root / folder).rglob("*.py"):
            text = path.read_text(errors="replace")
            if any(q in text for q in quoted):
                return True
    return False


def answer_early() -> None:
    """Called by studies/__init__.py while `python -m studies.<name>` locates its module (sys.argv[0] is '-m'
    then): the door for that study, before the study module and torch are imported."""
    argv = list(getattr(sys, "orig_argv", []))
    module, rest = None, []
    for i, word in enumerate(argv[1:], start=1):  # the interpreter's options come first, then -m and the module
        if word == "-m" and i + 1 < len(argv):
            module, rest = argv[i + 1], argv[i + 2:]
            break
        if word.startswith("-m") and len(word) > 2:
            module, rest = word[2:], argv[i + 1:]
            break
    if module is None or not module.startswith("studies."):
        return
    name = module.split(".")[1]
    if module not in (f"studies.{name}", f"studies.{name}.__main__"):
        return
    front_door(name, rest)


def main(argv=None) -> int:
    parser = StudyParser(prog="python -m studies.front", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"regenerate {INDEX_PATH.name}")
    args = parser.parse_args(argv)
    index = build_index()
    text = json.dumps(index, indent=1, sort_keys=True) + "\n"
    if args.write:
        INDEX_PATH.write_text(text)
        print(f"wrote {INDEX_PATH}")
        return 0
    same = load_index() == json.loads(text)
    print(f"{INDEX_PATH} is {'up to date' if same else 'stale: run ' + REGENERATE}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
