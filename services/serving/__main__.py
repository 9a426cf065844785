"""Run the serving service: `python -m driftloop.services.serving`.

The supervisor starts it this way with DRIFTLOOP_* environment variables.
"""

from driftloop.services.serving.main import main

main()
