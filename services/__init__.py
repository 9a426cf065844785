"""The six driftloop services, each a pure core plus thin gRPC and Kafka adapters."""
