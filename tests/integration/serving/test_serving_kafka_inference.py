"""The Kafka inference path against the real broker: a protobuf and a JSON request answered on
driftloop.inference.responses keyed by id, a bad request answered with its status, garbage
dead-lettered, answered rows in the prediction log, offsets committed after the responses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from serving_models import make_pipeline
from support import wait_for

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.services.serving.adapters.kafka import prediction_log_publisher
from driftloop.services.serving.adapters.kafka_inference import (
    GROUP,
    KafkaInference,
    kafka_inference_consumer,
)
from driftloop.services.serving.core.batching import BatchPolicy
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.prediction_log import PredictionLogger
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.records import ipc_to_table
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration


def protobuf_request() -> bytes:
    req = pb.ModelInferRequest(model_name="churn", id="pb-1")
    for name, datatype, values in (
        ("x1", "FP64", [0.5, -1.0]),
        ("color", "BYTES", [b"red", b"blue"]),
        ("x2", "FP64", [0.1, 0.2]),
    ):
        tensor = req.inputs.add(name=name, datatype=datatype, shape=[2])
        field = "bytes_contents" if datatype == "BYTES" else "fp64_contents"
        getattr(tensor.contents, field).extend(values)
    return req.SerializeToString()


def json_request(rid: str, model_field: bool) -> bytes:
    body: dict[str, Any] = {
        "id": rid,
        "inputs": [
            {
                "name": "features",
                "shape": [1, 3],
                "datatype": "BYTES",
                "data": [["1.5", "green", "-0.5"]],
            }
        ],
    }
    if model_field:
        body["model_name"] = "churn"
    return json.dumps(body).encode()


async def test_requests_are_answered_on_the_responses_topic(common: CommonSettings) -> None:
    await ensure_topics(common.bootstrap())
    publisher = EventPublisher(common.bootstrap(), "serving")
    client = EventPublisher(common.bootstrap(), "client")
    await publisher.start()
    await client.start()
    pipeline = make_pipeline()
    slot = ModelSlot()
    slot.swap(LoadedModel("churn", "3", pipeline, artifacts.signature(pipeline), "sha"))
    logger = PredictionLogger(prediction_log_publisher(publisher), flush_interval_s=0.1)
    service = InferenceService(slot, logger, batching=BatchPolicy(max_batch_size=64))
    consumer = kafka_inference_consumer(common, publisher, KafkaInference(service, publisher))
    responses: list[ConsumerRecord] = []
    events: list[envelope.Envelope] = []

    async def on_response(record: ConsumerRecord) -> None:
        responses.append(record)

    async def on_event(event: envelope.Envelope) -> None:
        events.append(event)

    raw_listener = EventConsumer(
        bootstrap=common.bootstrap(),
        group=None,
        topic_names=[topics.INFERENCE_RESPONSES],
        publisher=client,
        on_record=on_response,
    )
    listener = EventConsumer(
        bootstrap=common.bootstrap(),
        group=None,
        topic_names=[topics.DEADLETTER, topics.PREDICTIONS],
        publisher=client,
        on_event=on_event,
    )
    parts = (consumer, raw_listener, listener)
    tasks = [asyncio.create_task(p.run()) for p in parts] + [asyncio.create_task(logger.run())]
    try:
        await asyncio.wait_for(asyncio.gather(*(p.ready.wait() for p in parts)), 30)
        requests = topics.INFERENCE_REQUESTS
        await client.publish_raw(requests, b"pb-1", protobuf_request())
        await client.publish_raw(requests, b"js-1", json_request("js-1", model_field=True))
        await client.publish_raw(requests, b"garbage", b"\xff\x00 not a request")
        await client.publish_raw(requests, None, json_request("js-2", model_field=False))

        def by_key() -> dict[bytes, ConsumerRecord] | None:
            found = {r.key: r for r in responses}
            return found if {b"pb-1", b"js-1", b"js-2"} <= set(found) else None

        answered = await wait_for(by_key, 60, "three responses")
        reply = pb.ModelInferResponse.FromString(answered[b"pb-1"].value)
        assert (reply.id, reply.model_name, reply.model_version) == ("pb-1", "churn", "3")
        assert len(reply.outputs[0].contents.bytes_contents) == 2
        assert len(reply.outputs[1].contents.fp64_contents) == 4
        body = json.loads(answered[b"js-1"].value)
        assert (body["id"], body["model_version"]) == ("js-1", "3")
        assert body["outputs"][0]["shape"] == [1] and body["outputs"][1]["shape"] == [1, 2]
        error = json.loads(answered[b"js-2"].value)
        assert (error["id"], error["status"]) == ("js-2", "INVALID_ARGUMENT")
        assert "model_name is empty" in error["error"]

        [letter] = await wait_for(
            lambda: [e for e in events if e.type == "DeadLetter"], 30, "the dead letter"
        )
        assert letter.dead_letter.source_topic == topics.INFERENCE_REQUESTS
        assert letter.dead_letter.key == b"garbage" and "Undecodable" in letter.dead_letter.error
        assert letter.dead_letter.consumer_group == GROUP

        logged = await wait_for(lambda: _logged_ids(events) >= {"pb-1:0", "pb-1:1", "js-1"}, 30)
        assert logged
        assert len(responses) == 3  # answered once each, garbage not answered
        await wait_for(lambda: _committed(common, 4), 30, "offsets of all four messages committed")
    finally:
        for part in parts:
            await part.stop()
        tasks[-1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.stop()
        await publisher.stop()


def _logged_ids(events: list[envelope.Envelope]) -> set[str]:
    ids: set[str] = set()
    for event in events:
        if event.type == "PredictionLog":
            ids.update(
                ipc_to_table(event.prediction_log.arrow_ipc).column("_request_id").to_pylist()
            )
    return ids


async def _committed(common: CommonSettings, expected: int) -> bool:
    """Sum of the serving-inference group's committed offsets over the request partitions."""
    probe = AIOKafkaConsumer(bootstrap_servers=common.bootstrap(), group_id=GROUP)
    await probe.start()
    try:
        partitions = [
            tp.partition for tp in await topics.partitions(probe, [topics.INFERENCE_REQUESTS])
        ]
        offsets = [
            await probe.committed(TopicPartition(topics.INFERENCE_REQUESTS, p)) for p in partitions
        ]
        return sum(o or 0 for o in offsets) == expected
    finally:
        await probe.stop()
