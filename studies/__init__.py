"""Floor 4: the studies, `python -m studies.<name>` (`python -m studies` lists them)."""

import sys

# python -m studies.<name>, while its module is being located (sys.argv[0] is "-m"): nothing heavy is loaded yet.
# (python -m studies.front, which writes the door's index, is left alone: it must not be imported twice.)
if sys.argv[:1] == ["-m"] and "studies.front" not in getattr(sys, "orig_argv", ()):
    from studies.front import answer_early

    answer_early()  # --help, --list and bad input answered here, before the study imports torch
