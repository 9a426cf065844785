"""`driftloop bench ...`: benchmarks that print a table (or --json), never timed tests, and the
parts only they use (the loop driver, the monitoring replay, stream generators).
"""
