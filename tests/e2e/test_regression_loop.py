"""The loop for a regressor, end to end on the real stack: a `task: regression` spec, a stream from
river's FriedmanDrift generator (a generator we did not write; at its drift point the function
moves to other features), predictions answered as V2 FP64, labels arriving late through the
labels API, and a drift that retrains, promotes and redeploys by itself.

Runs on both brokers (any_stack): nothing here is a property of one of them."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from dataclasses import dataclass, field

import grpc
import numpy as np
import pandas as pd
from river.datasets import synth

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.shared.bus import envelope
from driftloop.shared.cli.bench.loop_driver import ingest_frame, tail_events
from driftloop.shared.grpc.client import aio_channel, auth_metadata
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.registry_types import TrainingSpec
from driftloop.shared.settings import CommonSettings

FEATURES = [f"x{i}" for i in range(10)]
TARGET = "y"
TRAIN_ROWS = 3000
DRIFT_AT = 600
"""Live row at which FriedmanDrift's function changes."""
BATCH = 10
LABEL_DELAY = 100
RATE = 250.0
"""Live rows per second."""
MAX_LIVE = 14_000
AFTER_SWAP = 800
"""Live rows sent once a new version answers, to measure it."""


def friedman(seed: int) -> pd.DataFrame:
    """TRAIN_ROWS + MAX_LIVE rows; the drift sits at live row DRIFT_AT."""
    stream = synth.FriedmanDrift(
        drift_type="gra", position=(TRAIN_ROWS + DRIFT_AT, 10**9), seed=seed
    )
    rows = list(itertools.islice(stream, TRAIN_ROWS + MAX_LIVE))
    frame = pd.DataFrame([[x[i] for i in range(10)] for x, _ in rows], columns=FEATURES)
    frame[TARGET] = [y for _, y in rows]
    return frame


@dataclass
class Answers:
    versions: list[str] = field(default_factory=list)
    predictions: list[float] = field(default_factory=list)
    datatypes: set[str] = field(default_factory=set)

    def mae(self, truth: np.ndarray, rows: range, version: str) -> float:
        picked = [r for r in rows if self.versions[r] == version]
        assert picked, f"no live row in {rows} answered by version {version}"
        return float(np.mean(np.abs(truth[picked] - np.asarray(self.predictions)[picked])))


def test_a_regressor_drifts_retrains_and_serves_numbers(any_stack: CommonSettings) -> None:
    asyncio.run(_story(any_stack))


async def _story(common: CommonSettings) -> None:
    model = f"reg-{secrets.token_hex(2)}"
    data = friedman(seed=7)
    train, live = data.iloc[:TRAIN_ROWS], data.iloc[TRAIN_ROWS:].reset_index(drop=True)
    meta = auth_metadata(common)
    events: list[envelope.Envelope] = []
    channels = {s: aio_channel(common, s) for s in ("ingestion", "serving")}
    ingest = ingestion_pb2_grpc.IngestionServiceStub(channels["ingestion"])
    serving = v2_grpc.GRPCInferenceServiceStub(channels["serving"])
    tail = asyncio.create_task(tail_events(common, events))
    try:
        async with RegistryClient(common) as registry:
            spec = TrainingSpec(features=tuple(FEATURES), task="regression")
            await registry.create_model(model, model, TARGET, spec=spec)
            stored = (await registry.get_model(model)).spec
            assert (stored.task, stored.policy.metric) == ("regression", "mae")
            await ingest_frame(ingest, model, train, meta)
            await _until(lambda: _answers(serving, model, live), 180, "version 1 serving")

            answers = Answers()
            swapped_at = await _drive(ingest, serving, model, live, answers, meta)
            assert answers.datatypes == {"FP64"}
            truth = live[TARGET].to_numpy()
            new = answers.versions[swapped_at]
            assert new not in ("", "1")
            drifted_old = answers.mae(truth, range(DRIFT_AT + 200, swapped_at), "1")
            after = answers.mae(truth, range(swapped_at, len(answers.versions)), new)
            assert after < 0.8 * drifted_old, (after, drifted_old)

            version = await registry.get_version(model, new)
            assert "mae" in version.metrics and "r2" in version.metrics
            assert version.lineage.trigger == "drift", version.lineage.trigger
    finally:
        tail.cancel()
        await asyncio.gather(tail, return_exceptions=True)
        for channel in channels.values():
            await channel.close()
    detected = [e for e in events if e.type == "DriftDetected" and e.drift_detected.model == model]
    assert detected, "no DriftDetected for the regressor"


async def _drive(
    ingest: ingestion_pb2_grpc.IngestionServiceStub,
    serving: v2_grpc.GRPCInferenceServiceStub,
    model: str,
    live: pd.DataFrame,
    answers: Answers,
    meta: object,
) -> int:
    """Send live rows at RATE, labels LABEL_DELAY rows late (the labels API for the monitor, the
    labelled rows through ingestion for training), until AFTER_SWAP rows after a version other
    than 1 first answered; the live row where it did."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    released, swapped_at = 0, -1
    values = live[FEATURES].to_numpy()
    for first in range(0, MAX_LIVE, BATCH):
        reply = await serving.ModelInfer(_request(model, first, values[first : first + BATCH]))
        output = reply.outputs[0]
        answers.datatypes.add(output.datatype)
        assert list(output.shape) == [BATCH] and output.name == "prediction"
        answers.versions += [reply.model_version] * BATCH
        answers.predictions += list(output.contents.fp64_contents)
        if swapped_at < 0 and first >= DRIFT_AT and reply.model_version != "1":
            swapped_at = first
        if swapped_at >= 0 and first - swapped_at >= AFTER_SWAP:
            return swapped_at
        due = first + BATCH - LABEL_DELAY
        if due - released >= 50:
            await _label(ingest, model, live, released, due, meta)
            released = due
        next_at += BATCH / RATE
        await asyncio.sleep(max(0.0, next_at - loop.time()))  # pacing, not synchronisation
    raise AssertionError(f"no new version answered within {MAX_LIVE} live rows")


async def _label(
    ingest: ingestion_pb2_grpc.IngestionServiceStub,
    model: str,
    live: pd.DataFrame,
    start: int,
    stop: int,
    meta: object,
) -> None:
    labels = live[TARGET].to_numpy()
    request = ingestion_pb2.IngestLabelsRequest(
        model=model,
        request_ids=[f"{model}-{r - r % BATCH}:{r % BATCH}" for r in range(start, stop)],
        labels=[repr(float(labels[r])) for r in range(start, stop)],
    )
    await asyncio.gather(
        ingest.IngestLabels(request, metadata=meta),
        ingest_frame(ingest, model, live.iloc[start:stop], meta),
    )


def _request(model: str, first: int, rows: np.ndarray) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model, id=f"{model}-{first}")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    tensor.contents.fp64_contents.extend(rows.ravel().tolist())
    request.outputs.add(name="prediction")
    return request


async def _answers(
    serving: v2_grpc.GRPCInferenceServiceStub, model: str, live: pd.DataFrame
) -> bool:
    try:
        reply = await serving.ModelInfer(
            _request(model, -BATCH, live[FEATURES].to_numpy()[:BATCH]), timeout=5
        )
    except grpc.aio.AioRpcError:
        return False
    return reply.model_version == "1"


async def _until(probe: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)  # poll
