"""The registry service's core: pure domain and logic, unit-testable without a broker or a port.

No gRPC, Kafka, MinIO or protobuf import here (pyproject.toml's import contracts check it).
"""
