"""The fleet benchmark's driver: declares the fleet on a running stack, trains it on the stream's
warm-up blocks, then sends block after block as prediction traffic addressed to the fleet (one
route's rows per request, twice per route: first and repeat), feeds the labels back (the labels
API for the monitor, the labelled rows through ingestion for training), and moves the stream from
"before" to the roadworks and then to the weather shift once the fleet has recovered from each
(or a deadline passed). Events and the prediction log are read on a thread of their own
(fleet_traffic.Tails)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pyarrow as pa

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.protos.training.v1 import training_pb2, training_pb2_grpc
from driftloop.shared.bus import envelope
from driftloop.shared.cli.bench import fleet_traffic as traffic
from driftloop.shared.cli.bench.fleet_stream import COLUMNS, PARTITION, TARGET, FleetStream
from driftloop.shared.grpc.client import aio_channel, auth_metadata
from driftloop.shared.records import table_to_ipc
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.registry_types import PromotionPolicy, TrainingSpec
from driftloop.shared.settings import CommonSettings
from driftloop.shared.timestamps import seconds_or_none

FLEET = traffic.FLEET
DATASET = "trips"
NEVER = 10**9
"""A block the stream never reaches (a phase not started yet)."""
LABEL_CHUNK = 20_000
INGEST_CHUNK = 50_000
RPC_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Plan:
    """What one run does (the command's options)."""

    partitions: int
    rows_per_route: int = 20
    warmup_blocks: int = 20
    before_blocks: int = 5
    after_blocks: int = 5
    """Blocks sent after every partition a phase drifted serves a new version."""
    phase_timeout_s: float = 600.0
    weather: bool = True
    estimator: str = "gradient_boosting"
    params: tuple[tuple[str, str], ...] = (("max_iter", "30"),)
    window_rows: int = 400
    holdout_fraction: float = 0.2
    min_rows: int = 200
    workers: int = 4
    rate: float = 0.0
    """Rows per second at most (0: as fast as serving answers)."""
    seed: int = 0
    lru_capacity: int = 0
    """Partition models the serving budget holds (the bench's LRU replay)."""

    def spec(self) -> TrainingSpec:
        return TrainingSpec(
            features=traffic.INPUTS,
            estimator=self.estimator,
            params=dict(self.params),
            window_rows=self.window_rows,
            holdout_fraction=self.holdout_fraction,
            min_rows=self.min_rows,
            task="regression",
            partition_by=(PARTITION,),
            policy=PromotionPolicy(metric="mae"),
        )

    def stream(self) -> FleetStream:
        return FleetStream(
            routes=self.partitions,
            rows_per_route=self.rows_per_route,
            seed=self.seed,
            roadworks_at=NEVER,
            weather_at=NEVER,
        )


@dataclass
class PhaseMark:
    """When a phase started and what was in production then."""

    phase: str
    block: int
    at: float
    production: dict[str, str]
    """Model name (the fleet and each partition) -> production version at the start."""
    recovered_at: float | None = None
    """When every partition the phase drifted had answered with a newer version."""
    new_at: dict[str, float] = field(default_factory=dict)
    """Partition model -> when a reply first said a newer version answered one of its rows
    (fleet_traffic.is_newer)."""
    ended_block: int = 0
    timed_out: bool = False


@dataclass
class Recorded:
    """Everything the run observed, for fleet_report."""

    plan: Plan
    stream: FleetStream
    sent: list[traffic.Sent] = field(default_factory=list)
    blocks: list[traffic.LiveBlock] = field(default_factory=list)
    served: traffic.ServedLog = field(default_factory=lambda: traffic.ServedLog(FLEET))
    events: list[envelope.Envelope] = field(default_factory=list)
    phases: list[PhaseMark] = field(default_factory=list)
    warmup_s: float = 0.0
    """From the fleet's first run's start to the last of its partitions' first runs' end."""
    warmup_fleet_runs: int = 0
    """Runs of the fleet's own model by the end of the warm-up (1: one fleet pass)."""
    warmup_partitions_in_production: int = 0
    failed_label_calls: int = 0
    failed_ingest_calls: int = 0
    runs: list[Any] = field(default_factory=list)
    live_started: float = 0.0
    live_ended: float = 0.0


def warmup_rows(plan: Plan) -> int:
    """Rows of the warm-up blocks: the stack trains the fleet once its dataset holds them."""
    return plan.warmup_blocks * plan.partitions * plan.rows_per_route


class FleetDriver:
    def __init__(
        self, common: CommonSettings, plan: Plan, say: Callable[[str], None] = lambda _: None
    ) -> None:
        self.common = common
        self.plan = plan
        self.say = say
        self.stream = plan.stream()
        self.rec = Recorded(plan, self.stream)
        self.replay = traffic.LruReplay(plan.lru_capacity)
        self.meta = auth_metadata(common)
        self._feedback: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FleetDriver:
        self._channels = {
            s: aio_channel(self.common, s) for s in ("ingestion", "training", "serving")
        }
        self.ingest = ingestion_pb2_grpc.IngestionServiceStub(self._channels["ingestion"])
        self.training = training_pb2_grpc.TrainingServiceStub(self._channels["training"])
        self.serving = v2_grpc.GRPCInferenceServiceStub(self._channels["serving"])
        self.registry = RegistryClient(self.common)
        self.tails = traffic.Tails(self.common, self.rec.events, self.rec.served)
        self.tails.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._feedback is not None:
            await asyncio.gather(self._feedback, return_exceptions=True)
        self.tails.stop()
        for channel in self._channels.values():
            await channel.close()
        await self.registry.close()

    # warm-up -------------------------------------------------------------------------------

    async def warm_up(self, timeout: float) -> None:
        """Declare the fleet, ingest the warm-up blocks and wait for the fleet's first run
        (started by training once the dataset holds them all: the stack's auto_train_min_rows
        is the warm-up's rows, see `warmup_rows`) and every partition's, and for serving to
        answer the fleet."""
        plan = self.plan
        await self.registry.create_model(FLEET, DATASET, TARGET, spec=plan.spec())
        for block in range(plan.warmup_blocks):
            await self._ingest(self.stream.rows(block))
        self.say(f"{warmup_rows(plan):,} warm-up rows ingested; training fleet {FLEET!r}")
        await self._wait(self._partitions_trained, timeout, "every partition's first run")
        await self._wait(self._fleet_answers, 120, "serving to answer the fleet")
        runs = await self._runs()
        fleet_runs = [seconds_or_none(r.started_at) or 0.0 for r in runs if r.model == FLEET]
        finished = [
            seconds_or_none(r.finished_at) or 0.0 for r in runs if r.model.startswith(FLEET + "/")
        ]
        self.rec.warmup_s = max(finished, default=0.0) - min(fleet_runs, default=0.0)
        self.rec.warmup_fleet_runs = len(fleet_runs)
        models = await self.registry.list_models(fleet=FLEET)
        self.rec.warmup_partitions_in_production = sum(bool(m.production_version) for m in models)
        self.say(
            f"fleet trained in {self.rec.warmup_s:.1f}s: "
            f"{self.rec.warmup_partitions_in_production}/{plan.partitions} partitions in production"
        )

    async def _partitions_trained(self) -> bool:
        if not (await self.registry.get_model(FLEET)).production_version:
            return False
        # a partition counts once one run of it has finished: a partition whose first candidate
        # was inconclusive against the global model has a retry queued that waits for its rows
        # to grow, which only live traffic brings
        runs = await self._runs()
        finished = {
            r.model
            for r in runs
            if r.model.startswith(FLEET + "/") and r.state not in ("queued", "running")
        }
        return len(finished) >= self.plan.partitions

    async def _fleet_answers(self) -> bool:
        rows = self.stream.pool(0, "before", 2)
        request = traffic.infer_request(FLEET, "probe", rows)
        try:
            await self.serving.ModelInfer(request, timeout=30)
        except grpc.aio.AioRpcError:
            return False
        return True

    async def _runs(self) -> list[Any]:
        reply = await self.training.ListRuns(
            training_pb2.ListRunsRequest(limit=1_000_000), timeout=RPC_TIMEOUT_S
        )
        return list(reply.runs)

    # live ----------------------------------------------------------------------------------

    async def live(self) -> None:
        """Before blocks, the roadworks until their partitions recover, then the weather."""
        plan = self.plan
        block = plan.warmup_blocks
        self.rec.live_started = time.time()
        for _ in range(plan.before_blocks):
            await self._block(block)
            block += 1
        self._move_stream(roadworks_at=block)
        drifted = [traffic.partition_of(r, FLEET) for r in sorted(self.stream.drifted_routes())]
        block = await self._phase("roadworks", block, drifted)
        if plan.weather:
            self._move_stream(weather_at=block)
            every = [traffic.partition_of(r, FLEET) for r in range(plan.partitions)]
            block = await self._phase("weather", block, every)
        if self._feedback is not None:
            await self._feedback
        self.rec.live_ended = time.time()
        self.rec.runs = await self._runs()

    def _move_stream(self, **blocks: int) -> None:
        self.stream = dataclasses.replace(self.stream, **blocks)
        self.rec.stream = self.stream

    async def _phase(self, phase: str, block: int, targets: list[str]) -> int:
        """Blocks of `phase` until every target serves a newer version than at the start (then
        after_blocks more), or phase_timeout_s; the next block."""
        mark = PhaseMark(phase, block, time.time(), await self._production())
        self.rec.phases.append(mark)
        self.say(f"block {block}: {phase} starts ({len(targets)} partitions drift)")
        deadline = time.monotonic() + self.plan.phase_timeout_s
        after = 0
        while after < self.plan.after_blocks:
            await self._block(block)
            block += 1
            if mark.recovered_at is None and self._recovered(mark, targets):
                mark.recovered_at = time.time()
                self.say(f"block {block}: every drifted partition serves a new version")
            if mark.recovered_at is not None:
                after += 1
            elif time.monotonic() > deadline:
                mark.timed_out = True
                self.say(f"block {block}: {phase} timed out before every partition recovered")
                break
        mark.ended_block = block
        return block

    def _recovered(self, mark: PhaseMark, targets: list[str]) -> bool:
        return all(t in mark.new_at for t in targets)

    def _note_answer(self, route: int, sent: traffic.Sent) -> None:
        if not self.rec.phases or not sent.answered_by:
            return
        mark = self.rec.phases[-1]
        name = traffic.partition_of(route, FLEET)
        if name not in mark.new_at and traffic.is_newer(
            mark.production, name, sent.answered_by, sent.answered_version
        ):
            mark.new_at[name] = sent.sent_at

    async def _production(self) -> dict[str, str]:
        models = await self.registry.list_models(fleet=FLEET)
        found = {m.name: m.production_version for m in models}
        found[FLEET] = (await self.registry.get_model(FLEET)).production_version
        return found

    async def _block(self, block: int) -> None:
        """Send one block's rows (W workers, a route's two requests back to back), then feed
        its labels and rows back (at most one block's feedback in flight)."""
        started = time.monotonic()
        frame = self.stream.rows(block).reset_index(drop=True)
        positions = frame.groupby(PARTITION, sort=False).indices
        order = np.random.default_rng((self.plan.seed, 7, block)).permutation(
            np.array(sorted(positions), dtype=np.int64)
        )
        live = traffic.LiveBlock(
            block,
            self.stream.phase_of(block),
            frame[PARTITION].to_numpy(),
            frame[TARGET].to_numpy(),
            np.full(len(frame), np.nan),
            np.full(len(frame), -1, dtype=np.int64),
        )
        routes = iter(order.tolist())

        async def worker() -> None:
            for route in routes:
                await self._route(block, route, frame, positions[route], live)

        await asyncio.gather(*(worker() for _ in range(self.plan.workers)))
        self.rec.blocks.append(live)
        if self._feedback is not None:
            await self._feedback
        self._feedback = asyncio.create_task(self._feed_back(frame, live))
        if self.plan.rate > 0:
            rest = len(frame) / self.plan.rate - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, rest))  # pacing to the rate cap

    async def _route(
        self, block: int, route: int, frame: pd.DataFrame, rows: np.ndarray, live: Any
    ) -> None:
        resident = self.replay.touch(route)
        half = max(1, len(rows) // 2)
        for part, picked in enumerate((rows[:half], rows[half:])):
            if not len(picked):
                continue
            rid = traffic.request_id(block, route, part)
            request = traffic.infer_request(FLEET, rid, frame.iloc[picked])
            sent = traffic.Sent(
                rid, block, route, len(picked), time.time(), 0.0, part == 1, resident
            )
            begun = time.perf_counter()
            try:
                reply = await self.serving.ModelInfer(request, timeout=RPC_TIMEOUT_S)
                sent.latency_s = time.perf_counter() - begun
                sent.answered_by, sent.answered_version = traffic.answered_by(reply)
                self._note_answer(route, sent)
                live.predicted[picked] = np.asarray(reply.outputs[0].contents.fp64_contents)
            except grpc.aio.AioRpcError as exc:
                sent.latency_s = time.perf_counter() - begun
                sent.error = f"{exc.code().name}: {exc.details()}"
            live.request[picked] = len(self.rec.sent)
            self.rec.sent.append(sent)

    async def _feed_back(self, frame: pd.DataFrame, live: traffic.LiveBlock) -> None:
        """The block's labels to the fleet (per row, the ids serving logged) and its rows."""
        ids: list[str] = []
        labels: list[str] = []
        truth = frame[TARGET].to_numpy()
        for index in np.unique(live.request[live.request >= 0]).tolist():
            sent = self.rec.sent[index]
            if sent.error:
                continue
            rows = np.flatnonzero(live.request == index)
            ids += traffic.row_ids(sent.id, len(rows))
            labels += [repr(float(v)) for v in truth[rows]]
        calls = [
            self.ingest.IngestLabels(
                ingestion_pb2.IngestLabelsRequest(
                    model=FLEET,
                    request_ids=ids[i : i + LABEL_CHUNK],
                    labels=labels[i : i + LABEL_CHUNK],
                ),
                metadata=self.meta,
                timeout=RPC_TIMEOUT_S,
            )
            for i in range(0, len(ids), LABEL_CHUNK)
        ]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        self.rec.failed_label_calls += sum(isinstance(o, grpc.aio.AioRpcError) for o in outcomes)
        try:
            await self._ingest(frame)
        except grpc.aio.AioRpcError:
            self.rec.failed_ingest_calls += 1

    async def _ingest(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame[list(COLUMNS)], preserve_index=False)
        for start in range(0, table.num_rows, INGEST_CHUNK):
            await self.ingest.Ingest(
                ingestion_pb2.IngestRequest(
                    dataset=DATASET, arrow_ipc=table_to_ipc(table.slice(start, INGEST_CHUNK))
                ),
                metadata=self.meta,
                timeout=RPC_TIMEOUT_S,
            )

    @staticmethod
    async def _wait(probe: Callable[[], Any], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not await probe():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            await asyncio.sleep(0.5)  # poll
