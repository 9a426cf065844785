"""What a V2 request may hold before any of its tensors is converted: how many input tensors
and outputs. A request of millions of tiny tensors must cost nothing beyond its parse."""

from __future__ import annotations

from driftloop.shared.artifacts import ModelSignature
from driftloop.shared.errors import InvalidInput
from driftloop.shared.names import shown

MAX_INPUTS_UNKNOWN_MODEL = 1024
"""Input tensors a request may hold before its model is known: one per feature at most, and a
dataset has at most 1000 columns (ingestion's limit)."""
MAX_OUTPUTS = 8
MAX_PARAMETERS = 256
"""Request parameters a V2 request may carry (clients send a handful)."""


def check_input_count(
    model: str, inputs: int, outputs: int, signature: ModelSignature | None
) -> None:
    """Refuse a request with more input tensors than the model has features (one [N, F] tensor,
    or one per feature), or more outputs than exist, before any tensor is converted: a request
    of millions of tiny tensors must cost nothing beyond its parse."""
    limit = len(signature.features) if signature is not None else MAX_INPUTS_UNKNOWN_MODEL
    if inputs > limit:
        takes = f"{limit} (one per feature, or one [N, {limit}] tensor)" if signature else limit
        raise InvalidInput(
            f"request for {shown(model)} has {inputs} input tensors; it takes at most {takes}"
        )
    if outputs > MAX_OUTPUTS:
        raise InvalidInput(
            f"request for {shown(model)} asks for {outputs} outputs; there are at most "
            f"{MAX_OUTPUTS}"
        )


def check_parameter_count(model: str, parameters: int) -> None:
    """Refuse a request with more parameters than any client sends (each is echoed back)."""
    if parameters > MAX_PARAMETERS:
        raise InvalidInput(
            f"request for {shown(model)} has more than {MAX_PARAMETERS} parameters; send at "
            f"most {MAX_PARAMETERS}"
        )
