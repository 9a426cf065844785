"""`driftloop` subcommands that inspect and drive a running stack: status, trace, datasets,
registry, runs, drift, predict, ingest, deadletter, demo, config.
"""
