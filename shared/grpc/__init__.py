"""gRPC for every service: `build_server` (health, reflection, auth, errors, TLS) and client
channels with the one reverse error map.
"""
