"""The studies, one line each: `python -m studies`. Run one with `python -m studies.<name>` (`--help` for its flags).

Each line is the first line of the study's docstring, read from its source without importing it, so a study whose
imports are heavy (or missing) is listed all the same.
"""

from __future__ import annotations

import ast
import importlib.util
import sys

from studies.front import STUDIES, StudyParser  # torch-free; STUDIES: every study, in the README's order


def summary(name: str) -> str:
    """The first line of `studies.<name>`'s docstring, or why there is none."""
    try:
        spec = importlib.util.find_spec(f"studies.{name}")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return "(not found)"
    try:
        with open(spec.origin, encoding="utf-8") as fh:
            doc = ast.get_docstring(ast.parse(fh.read()))
    except (OSError, SyntaxError) as err:
        return f"(unreadable: {err})"
    return doc.strip().splitlines()[0] if doc and doc.strip() else "(no docstring)"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv:  # --help, or a one-line error for anything else (studies.front's parser: no torch)
        StudyParser(prog="python -m studies", description=__doc__.split("\n\n")[0]).parse_args(argv)
    width = max(len(name) for name in STUDIES)
    print("python -m studies.<name> [--help]:")
    for name in STUDIES:
        print(f"  {name:<{width}}  {summary(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
