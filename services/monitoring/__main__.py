"""Run the monitoring service: `python -m driftloop.services.monitoring`.

The supervisor starts it this way, configured by DRIFTLOOP_* environment variables.
"""

from driftloop.services.monitoring.main import main

main()
