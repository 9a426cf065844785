"""The registry service's adapters: gRPC servicer, Kafka consumers and publishers, protobuf
conversion, clients of other services. They decode, call the core, and encode; no logic.
"""
