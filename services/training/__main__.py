"""Run the training service: `python -m driftloop.services.training`.

The supervisor starts it this way, with settings from DRIFTLOOP_* environment variables."""

from driftloop.services.training.main import main

main()
