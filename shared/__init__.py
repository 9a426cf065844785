"""The library every driftloop service imports.

Settings, logging, errors, the Kafka bus and event envelope, the object store, gRPC server
scaffolding, the embedded broker launcher and process supervision.
"""
