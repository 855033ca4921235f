"""`python -m edgesim` runs the CLI."""

try:
    from edgesim.cli import main
except KeyboardInterrupt:  # Ctrl-C while importing: nothing has started, exit as main would
    raise SystemExit(130) from None

raise SystemExit(main())
