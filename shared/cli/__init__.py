"""The driftloop command line."""
