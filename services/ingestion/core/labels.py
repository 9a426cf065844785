"""Labels core: check (request id, label) pairs for one model and cut them into LabelBatch chunks
with deterministic ids, so a retried request (or a re-delivered message) publishes the same events.

Pure domain logic: no Kafka or gRPC here. The adapters publish the `LabelChunk`s this returns.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from driftloop.services.ingestion.core.batches import JsonMessage, batch_ids, loads_json
from driftloop.services.ingestion.core.windows import Bundle, Piece
from driftloop.shared.errors import InvalidInput, TooLarge
from driftloop.shared.names import check_name

LABELS_PER_BATCH = 5000
"""Most labels in one LabelBatch event on driftloop.labels."""
MAX_LABELS_PER_REQUEST = 100_000
MAX_TEXT = 256
"""Longest request id or label, in characters."""
EVENT_NAMESPACE = uuid.UUID("6f1d3a52-7c1e-4f0b-9a57-3d0b8e5c2a10")
"""uuid5 namespace of label event ids (fixed: retries must map to the same event id)."""


@dataclass(frozen=True)
class LabelChunk:
    """One LabelBatch to publish: labels of one model, with a stable id."""

    model: str
    batch_id: str
    request_ids: list[str]
    labels: list[str]

    @property
    def event_id(self) -> str:
        """The envelope's event id: the same for the same model and batch id, so a consumer
        that skips seen event ids (driftloop.shared.bus.consumer) drops a retried batch."""
        return str(uuid.uuid5(EVENT_NAMESPACE, f"{self.model}/{self.batch_id}"))


@dataclass(frozen=True)
class LabelsRequest:
    """Labels of one model as a client sent them: request ids paired with labels by position."""

    model: str
    request_ids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    batch_id: str = ""
    """The client's id for these labels (empty: derived from the content)."""


def check_labels(
    model: str,
    request_ids: list[str],
    labels: list[str],
    max_labels: int = MAX_LABELS_PER_REQUEST,
) -> None:
    """Raise InvalidInput (or TooLarge past `max_labels`) saying what is wrong with the pairs."""
    check_name("model", model)
    if len(request_ids) != len(labels):
        raise InvalidInput(
            f"labels for model {model!r}: {len(request_ids)} request ids but {len(labels)} "
            "labels; they pair up by position"
        )
    if not request_ids:
        raise InvalidInput(f"labels for model {model!r}: no labels given")
    if len(request_ids) > max_labels:
        raise TooLarge(
            f"request for model {model!r} holds {len(request_ids):,} labels, over the limit of "
            f"{max_labels:,} (setting DRIFTLOOP_INGESTION_MAX_LABELS_PER_REQUEST): split it"
        )
    for i, (request_id, label) in enumerate(zip(request_ids, labels, strict=True)):
        if not request_id:
            raise InvalidInput(f"labels for model {model!r}: request id {i} is empty")
        if not label:
            raise InvalidInput(f"labels for model {model!r}: label {i} is empty")
        if len(request_id) > MAX_TEXT or len(label) > MAX_TEXT:
            raise InvalidInput(
                f"labels for model {model!r}: pair {i} is longer than {MAX_TEXT} characters"
            )


def content_id(model: str, request_ids: list[str], labels: list[str]) -> str:
    """A batch id derived from the pairs themselves: the same request sent twice gets it twice."""
    digest = hashlib.sha256(model.encode())
    for request_id, label in zip(request_ids, labels, strict=True):
        digest.update(b"\x00" + request_id.encode() + b"\x01" + label.encode())
    return f"l{digest.hexdigest()[:31]}"


def make_label_chunks(
    model: str,
    request_ids: list[str],
    labels: list[str],
    *,
    batch_id: str = "",
    chunk: int = LABELS_PER_BATCH,
    max_labels: int = MAX_LABELS_PER_REQUEST,
) -> list[LabelChunk]:
    """Check the pairs and cut them into chunks of at most `chunk` labels. Ids come from the
    client's `batch_id` ("<id>.<n>" for several chunks) or, without one, from the content."""
    check_labels(model, request_ids, labels, max_labels)
    if not 1 <= chunk <= LABELS_PER_BATCH:
        raise ValueError(f"chunk must be within 1..{LABELS_PER_BATCH}, got {chunk}")
    starts = range(0, len(request_ids), chunk)
    ids = batch_ids(batch_id or content_id(model, request_ids, labels), len(starts))
    return [
        LabelChunk(model, b, request_ids[s : s + chunk], labels[s : s + chunk])
        for b, s in zip(ids, starts, strict=True)
    ]


def request_chunks(
    request: LabelsRequest,
    *,
    chunk: int = LABELS_PER_BATCH,
    max_labels: int = MAX_LABELS_PER_REQUEST,
) -> list[LabelChunk]:
    """`make_label_chunks` of one client request."""
    return make_label_chunks(
        request.model,
        request.request_ids,
        request.labels,
        batch_id=request.batch_id,
        chunk=chunk,
        max_labels=max_labels,
    )


def label_pieces(message: JsonMessage) -> list[Piece[tuple[str, str]]]:
    """Read one message of driftloop.labels.json into one piece per model it names, in order of
    first appearance. Raises InvalidInput saying what is wrong (the whole message is refused)."""
    by_model: dict[str, list[tuple[str, str]]] = {}
    for model, request_id, label in parse_label_message(message.value):
        by_model.setdefault(model, []).append((request_id, label))
    return [Piece(model, pairs) for model, pairs in by_model.items()]


def bundle_label_chunks(
    bundle: Bundle[tuple[str, str]], *, chunk: int = LABELS_PER_BATCH
) -> list[LabelChunk]:
    """The chunks of one model's bundle, with ids "<bundle id>" or "<id>.<n>": a redelivered
    bundle publishes the same events."""
    request_ids = [request_id for request_id, _ in bundle.items]
    labels = [label for _, label in bundle.items]
    return make_label_chunks(
        bundle.group, request_ids, labels, batch_id=bundle.batch_id, chunk=chunk
    )


def parse_label_message(value: bytes | None) -> list[tuple[str, str, str]]:
    """Read one message of driftloop.labels.json: a JSON object {"model", "request_id",
    "label"} (or an array of them). Returns (model, request_id, label) triples; raises
    InvalidInput saying what is wrong."""
    if not value:
        raise InvalidInput("label message has an empty value")
    try:
        parsed = loads_json(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"label message is not valid JSON: {exc}") from exc
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        raise InvalidInput("label message is an empty array")
    return [_triple(i, item) for i, item in enumerate(items)]


def _triple(index: int, item: Any) -> tuple[str, str, str]:
    where = f"label message element {index}" if index else "label message"
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} is not a JSON object")
    missing = [k for k in ("model", "request_id", "label") if k not in item]
    if missing:
        raise InvalidInput(f"{where} lacks {missing}: expected model, request_id and label")
    extra = sorted(set(item) - {"model", "request_id", "label"})
    if extra:
        raise InvalidInput(f"{where} has unknown fields {extra}")
    model, request_id, label = item["model"], item["request_id"], item["label"]
    if not isinstance(model, str) or not isinstance(request_id, str):
        raise InvalidInput(f"{where}: model and request_id must be strings")
    if isinstance(label, bool) or not isinstance(label, str | int | float):
        raise InvalidInput(f"{where}: label must be a string or a number")
    # why: classes are strings (training casts targets with str()), so 1 is "1" and 1.5 "1.5"
    text = label if isinstance(label, str) else str(label)
    check_labels(model, [request_id], [text])
    return model, request_id, text
