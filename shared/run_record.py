"""The run record: what a training run measured, written by training beside its artifact
(`artifacts/<model>/<run_id>/run.json`) before it registers the candidate. The registry takes a
candidate's metrics from it, so a caller of RegisterVersion cannot flatter them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from driftloop.shared.errors import InvalidInput
from driftloop.shared.paired import PairedComparison


def run_record_key(model: str, run_id: str) -> str:
    return f"artifacts/{model}/{run_id}/run.json"


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    metrics: dict[str, float]
    """The candidate's metrics on the holdout."""
    champion_metrics: dict[str, float] = field(default_factory=dict)
    """The champion's metrics on the same holdout (empty without a champion)."""
    champion_version: str = ""
    comparison: PairedComparison | None = None
    """Candidate vs champion on the same rows, with interval and p-value (None: no champion)."""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunRecord:
        try:
            body = json.loads(data)
            return cls(
                run_id=str(body["run_id"]),
                metrics={str(k): float(v) for k, v in body["metrics"].items()},
                champion_metrics={
                    str(k): float(v) for k, v in body.get("champion_metrics", {}).items()
                },
                champion_version=str(body.get("champion_version", "")),
                comparison=(
                    PairedComparison.from_dict(body["comparison"])
                    if body.get("comparison")
                    else None
                ),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"run record is not readable: {exc}") from exc
