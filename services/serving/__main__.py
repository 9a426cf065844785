"""Run the serving service: `python -m driftloop.services.serving`.

The supervisor starts it this way with DRIFTLOOP_* environment variables.
"""

from driftloop.services.serving import native_threads

native_threads.limit()  # before anything loads the OpenMP runtime (see native_threads.py)

from driftloop.services.serving.main import main  # noqa: E402 - after the thread limit

main()
