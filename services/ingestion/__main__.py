"""Run the ingestion service: `python -m driftloop.services.ingestion`.

Everything is wired in main.py.
"""

from driftloop.services.ingestion.main import main

main()
