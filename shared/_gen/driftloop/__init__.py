"""driftloop: a closed-loop MLOps platform.

This root package also holds the code generated from protos/ (driftloop.<domain>.v1); the
library lives in driftloop.shared and the six services in driftloop.services.
"""
