"""driftloop: a closed-loop MLOps platform.

Three folders make this one namespace (see pyproject.toml):
- driftloop.protos.<domain>.v1: code generated from protos/ by `make protos` (never edited);
  the proto *packages* stay `driftloop.<domain>.v1` (and `inference` for V2) on the wire.
- driftloop.shared: the library every service imports (shared/).
- driftloop.services.<name>: the six services (services/).
"""
