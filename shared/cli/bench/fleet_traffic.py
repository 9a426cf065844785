"""What `driftloop bench fleet` sends and what it learns back: V2 requests addressed to the fleet
(one route's rows each), the record of every request, the bench's replay of serving's LRU (which
requests found their partition model loaded), and the prediction log read back from Kafka (which
model and version answered each request)."""

from __future__ import annotations

import asyncio
import collections
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.shared import fleet
from driftloop.shared.bus import connection, envelope, topics
from driftloop.shared.cli.bench.fleet_stream import FEATURES, PARTITION
from driftloop.shared.cli.bench.loop_driver import tail_events
from driftloop.shared.records import ipc_to_table
from driftloop.shared.settings import CommonSettings

FLEET = "arrivals"
"""The fleet the bench declares (dataset `trips`, target delay_s, partitioned by route_id)."""
INPUTS = (PARTITION, *FEATURES)
"""The model's features, the partition column among them (what a request carries)."""
INTEGERS = frozenset({PARTITION, "stop_seq", "day_of_week", "headway_s"})
"""Inputs sent as INT64 (the others FP64)."""


def request_id(block: int, route: int, part: int) -> str:
    """The id of the `part`-th request (0: first, 1: repeat) of `route` in `block`."""
    return f"b{block}.r{route}.{part}"


def row_ids(request: str, rows: int) -> list[str]:
    """The ids serving logs for a request's rows: its own for one row, `id:i` per row otherwise
    (services/serving/core/prediction_log.py)."""
    return [request] if rows == 1 else [f"{request}:{i}" for i in range(rows)]


def infer_request(name: str, request: str, rows: pd.DataFrame) -> v2.ModelInferRequest:
    """A V2 request to model `name` with one input per feature (INT64 or FP64 by column)."""
    message = v2.ModelInferRequest(model_name=name, id=request)
    for column in INPUTS:
        values = rows[column].to_numpy()
        if column in INTEGERS:
            tensor = message.inputs.add(name=column, datatype="INT64", shape=[len(rows)])
            tensor.contents.int64_contents.extend(values.astype(np.int64).tolist())
        else:
            tensor = message.inputs.add(name=column, datatype="FP64", shape=[len(rows)])
            tensor.contents.fp64_contents.extend(values.astype(np.float64).tolist())
    message.outputs.add(name="prediction")
    return message


@dataclass
class Sent:
    """One answered (or failed) request."""

    id: str
    block: int
    route: int
    rows: int
    sent_at: float
    """Wall time the request was sent."""
    latency_s: float
    repeat: bool
    """The second request of its route in the block, right after the first: its model was
    just used (hot)."""
    resident: bool
    """The bench's LRU replay found the route's model among the most recently used ones."""
    error: str = ""
    """The gRPC status and message of a failed request ("" when answered)."""
    answered_by: str = ""
    """The model that answered, per the reply's `driftloop_answered_by` parameter."""
    answered_version: str = ""


ANSWERED_BY = "driftloop_answered_by"
"""Serving's response parameter naming the models that answered a fleet request (JSON, model
name -> version; services/serving/core/fleet_router.py)."""


def answered_by(reply: v2.ModelInferResponse) -> tuple[str, str]:
    """The (model, version) a single-route request's reply says answered it ("", "" if none)."""
    found = reply.parameters.get(ANSWERED_BY)
    if found is None or not found.string_param:
        return "", reply.model_version
    try:
        named = json.loads(found.string_param)
    except ValueError:
        return "", reply.model_version
    if not isinstance(named, dict) or not named:
        return "", reply.model_version
    model, version = next(iter(named.items()))
    return str(model), str(version)


@dataclass
class LiveBlock:
    """The rows of one live block, in the order sent, and what serving answered for them."""

    block: int
    phase: str
    route: np.ndarray
    truth: np.ndarray
    predicted: np.ndarray
    """NaN where the request failed."""
    request: np.ndarray
    """Index of each row's request in the driver's `sent` list."""


class LruReplay:
    """Serving's least-recently-used residency as the bench sees it: a partition is resident when
    it was used among the last `capacity` distinct partitions (approximate under concurrency, and
    exact only if serving's budget holds `capacity` models)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._used: collections.OrderedDict[int, None] = collections.OrderedDict()

    def touch(self, route: int) -> bool:
        """Record a use of `route`; True when it was resident before this use."""
        resident = route in self._used
        if resident:
            self._used.move_to_end(route)
        else:
            self._used[route] = None
        while len(self._used) > self.capacity:
            self._used.popitem(last=False)
        return resident


@dataclass(frozen=True)
class Answer:
    """Which model and version answered one request, per the prediction log."""

    model: str
    version: str
    ts: float


@dataclass
class ServedLog:
    """The fleet's prediction log read back: who answered each request."""

    fleet_name: str
    answers: dict[str, Answer] = field(default_factory=dict)
    rows: int = 0
    undecodable: int = 0

    def add(self, event: envelope.Envelope) -> None:
        log = event.prediction_log
        if log.shadow or not (log.fleet == self.fleet_name or log.model == self.fleet_name):
            return
        table = ipc_to_table(log.arrow_ipc)
        ids = pc.replace_substring_regex(table.column("_request_id"), r":\d+$", "")
        ts = table.column("_ts").to_numpy()
        for base, at in zip(ids.to_pylist(), ts.tolist(), strict=True):
            if base not in self.answers:
                self.answers[base] = Answer(log.model, log.version, at)
        self.rows += table.num_rows


def number(version: str) -> int:
    """A version's number (0 for none)."""
    try:
        return int(version)
    except ValueError:
        return 0


def is_newer(production: Mapping[str, str], partition: str, model: str, version: str) -> bool:
    """Whether (model, version) answering a row of `partition` is a newer version than what
    served it when `production` was read: the partition's own newer version, or, for a
    partition that had none (the fleet's global model answered it), its first own version or a
    newer global version."""
    own = production.get(partition, "")
    if model == partition:
        return not own or number(version) > number(own)
    return not own and model == FLEET and number(version) > number(production.get(FLEET, ""))


def partition_of(route: int, name: str) -> str:
    """The partition model of `route` in fleet `name`."""
    return fleet.partition_name(name, {PARTITION: route})


async def tail_predictions(common: CommonSettings, served: ServedLog) -> None:
    """Read driftloop.predictions from now on into `served`, until cancelled."""
    kafka = common.kafka_connection()
    consumer = connection.consumer(kafka)
    await connection.start(consumer, kafka)
    try:
        consumer.assign(await topics.partitions(consumer, [topics.PREDICTIONS]))
        while True:
            for records in (await consumer.getmany(timeout_ms=200, max_records=500)).values():
                for r in records:
                    try:
                        served.add(envelope.decode(r.value))
                    except Exception:  # noqa: BLE001 - the bench reads what it can
                        served.undecodable += 1
                await asyncio.sleep(0)  # yield between batches to the other tail
    finally:
        await consumer.stop()


def lru_capacity(budget_mb: float, model_mb: float) -> int:
    """Partition models a budget holds (the replay's capacity)."""
    return int(budget_mb / model_mb + 1e-9) if model_mb > 0 else 0


class Tails:
    """The event and prediction-log tails on a thread with its own event loop, so reading them
    never delays a request the bench times."""

    def __init__(
        self, common: CommonSettings, events: list[envelope.Envelope], served: ServedLog
    ) -> None:
        self._common = common
        self._events = events
        self._served = served
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-tails", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)

    def stop(self) -> None:
        for task in self._tasks:
            self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join(15)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._tasks = [
                asyncio.create_task(tail_events(self._common, self._events)),
                asyncio.create_task(tail_predictions(self._common, self._served)),
            ]
            self._ready.set()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        self._loop.run_until_complete(main())
        self._loop.close()
