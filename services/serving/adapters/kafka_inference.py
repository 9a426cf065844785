"""The Kafka inference adapter: V2 requests on driftloop.inference.requests (protobuf
ModelInferRequest or V2 REST JSON) answered on driftloop.inference.responses, keyed by request id.

Requests go through the same InferenceService as ModelInfer (model slot, micro-batching,
prediction log): the requests of one poll are scored concurrently, so they share predict calls.
A request that cannot be answered gets an error response; bytes that are no request at all are
dead-lettered by the bus. The poll's offsets are committed after its responses were acked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.services.serving.adapters import pb as converters
from driftloop.services.serving.adapters import v2_json
from driftloop.services.serving.adapters.v2_json import Undecodable
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.metrics import KAFKA_REQUESTS
from driftloop.shared.bus import topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.errors import DriftloopError
from driftloop.shared.grpc.server import status_for
from driftloop.shared.settings import CommonSettings

log = structlog.get_logger(__name__)

GROUP = "serving-inference"
HEADER_MODEL = "model_name"
HEADER_VERSION = "model_version"
HEADER_CONTENT_TYPE = "content-type"


@dataclass
class ParsedRecord:
    """One request message, decoded but not yet checked: either JSON (`body`) or protobuf."""

    request_id: str
    """The id the response echoes and is keyed by (the request's own, else the record key)."""
    model: str
    version: str
    body: dict[str, Any] | None = None
    message: pb.ModelInferRequest | None = None


def parse_record(record: ConsumerRecord) -> ParsedRecord:
    """Decode a request message; Undecodable when it is neither a JSON object nor a protobuf
    ModelInferRequest (the bus dead-letters it)."""
    headers = {k.lower(): (v or b"").decode("utf-8", "replace") for k, v in record.headers or ()}
    value = record.value or b""
    fallback = (
        record.key.decode("utf-8", "replace")
        if record.key
        else f"{record.topic}:{record.partition}:{record.offset}"
    )
    model = headers.get(HEADER_MODEL, "")
    version = headers.get(HEADER_VERSION, "")
    content_type = headers.get(HEADER_CONTENT_TYPE, "")
    is_json = "json" in content_type or (
        "protobuf" not in content_type and value.lstrip()[:1] == b"{"
    )
    if is_json:
        body = v2_json.load_body(value)
        given = body.get("id")
        request_id = given if isinstance(given, str) and given else fallback
        return ParsedRecord(request_id, model, version, body=body)
    message = pb.ModelInferRequest()
    try:
        message.ParseFromString(value)
    except DecodeError as exc:
        raise Undecodable(f"neither a JSON object nor a protobuf ModelInferRequest: {exc}") from exc
    if not message.ListFields():
        raise Undecodable("neither a JSON object nor a protobuf ModelInferRequest (no known field)")
    message.id = message.id or fallback
    message.model_name = message.model_name or model
    message.model_version = message.model_version or version
    return ParsedRecord(message.id, message.model_name, message.model_version, message=message)


class KafkaInference:
    """Answers one poll's request messages and publishes the responses (the bus's on_batch)."""

    def __init__(self, inference: InferenceService, publisher: EventPublisher) -> None:
        self._inference = inference
        self._publisher = publisher

    async def handle_records(self, records: Sequence[ConsumerRecord]) -> None:
        """Every message is decoded before any is answered, so an undecodable one fails the
        call untouched and the bus retries the messages one by one (then dead-letters it)."""
        parsed = [parse_record(record) for record in records]
        replies = await asyncio.gather(*(self.answer(p) for p in parsed))
        await asyncio.gather(
            *(
                self._publisher.publish_raw(
                    topics.INFERENCE_RESPONSES, p.request_id.encode("utf-8"), reply
                )
                for p, reply in zip(parsed, replies, strict=True)
            )
        )

    async def answer(self, parsed: ParsedRecord) -> bytes:
        """The response bytes: the answer, or an error response naming the status; never raises."""
        try:
            reply = await self._infer(parsed)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error response
            status = status_for(exc).name
            KAFKA_REQUESTS.labels(status).inc()
            report = log.info if isinstance(exc, DriftloopError) else log.error
            report(
                "kafka_inference_failed",
                request_id=parsed.request_id,
                model=parsed.model,
                status=status,
                error=str(exc),
                error_type=type(exc).__name__,
            )
            return _error(parsed, status, str(exc))
        KAFKA_REQUESTS.labels("OK").inc()
        return reply

    async def _infer(self, parsed: ParsedRecord) -> bytes:
        if parsed.body is not None:
            request = v2_json.to_inference_request(
                parsed.body,
                model=parsed.model,
                version=parsed.version,
                request_id=parsed.request_id,
            )
            parsed.model, parsed.version = request.request.model, request.request.version
            result = await self._inference.infer_async(request.request)
            return v2_json.dumps(v2_json.to_response(request, result))
        assert parsed.message is not None
        message = parsed.message
        self._inference.check_counts(
            message.model_name, message.model_version, len(message.inputs), len(message.outputs)
        )
        result = await self._inference.infer_async(converters.to_inference_request(message))
        return converters.to_infer_response(message, result).SerializeToString()


def _error(parsed: ParsedRecord, status: str, error: str) -> bytes:
    """JSON in, JSON error out; protobuf in, a ModelInferResponse with no outputs whose
    parameters "status" and "error" say what went wrong."""
    if parsed.body is not None:
        return v2_json.error_body(parsed.request_id, parsed.model, parsed.version, status, error)
    response = pb.ModelInferResponse(
        model_name=parsed.model, model_version=parsed.version, id=parsed.request_id
    )
    response.parameters["status"].string_param = status
    response.parameters["error"].string_param = error
    return response.SerializeToString()


def owns(partition: int, worker: int, workers: int) -> bool:
    """Whether `worker` (of `workers`) answers the requests of `partition`: p % workers."""
    return partition % workers == worker


class _PartitionShare(EventConsumer):
    """The manually assigned consumer restricted to one worker's share of the partitions.

    why: without group membership every consumer is assigned every partition, so each worker
    would answer each request; a static split needs no rebalance (the workers live and die
    together). A worker with no partition (more workers than partitions) stays idle and ready.
    """

    def __init__(self, *, worker: int, workers: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._worker = worker
        self._workers = workers

    async def _assign(self) -> None:
        await super()._assign()
        mine = [
            tp
            for tp in self._consumer.assignment()
            if owns(tp.partition, self._worker, self._workers)
        ]
        self._consumer.assign(mine)
        log.info(
            "inference_partitions",
            worker=self._worker,
            partitions=sorted(tp.partition for tp in mine),
        )
        if not mine:
            self.ready.set()


def kafka_inference_consumer(
    common: CommonSettings,
    publisher: EventPublisher,
    handler: KafkaInference,
    *,
    worker: int | None = None,
    workers: int = 1,
) -> EventConsumer:
    """One consumer group for every serving process, so each request is answered once; it
    commits, so requests published while serving was down are answered when it is back.

    Several workers of one serving (`worker` set): with group membership the group shares
    the partitions out; without it, worker i reads the partitions p with p % workers == i."""
    options: dict[str, Any] = {
        "bootstrap": common.kafka_connection(),
        "group": GROUP,
        "topic_names": [topics.INFERENCE_REQUESTS],
        "publisher": publisher,
        "on_batch": handler.handle_records,
        "group_membership": common.consumer_group_membership,
    }
    if worker is None or workers <= 1 or common.consumer_group_membership:
        return EventConsumer(**options)
    return _PartitionShare(worker=worker, workers=workers, **options)
