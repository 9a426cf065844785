"""`python -m driftloop.shared.cli` runs the driftloop command."""

from driftloop.shared.cli.app import main

main()
