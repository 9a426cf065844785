"""Run the registry service: `python -m driftloop.services.registry`.

The supervisor starts it this way, with settings from DRIFTLOOP_* environment variables."""

from driftloop.services.registry.main import main

main()
