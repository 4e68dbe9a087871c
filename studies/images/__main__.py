"""`python -m studies.images`: see the package docstring."""

from studies.images.cli import main

raise SystemExit(main())
