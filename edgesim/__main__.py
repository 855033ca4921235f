"""`python -m edgesim` runs the CLI."""

from edgesim.cli import main

raise SystemExit(main())
