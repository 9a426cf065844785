"""The embedded stack: the Kafka-protocol broker, the supervisor of the six service processes,
`driftloop up`/`down`, and the container health probe.
"""
