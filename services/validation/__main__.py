"""Run the validation service: `python -m driftloop.services.validation`.

Everything is wired in main.py.
"""

from driftloop.services.validation.main import main

main()
