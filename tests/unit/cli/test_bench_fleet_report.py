"""What `driftloop bench fleet` makes of what it recorded: the LRU replay, the prediction log read
back per request, and the report's detections, false retrains, seconds to a new version, MAE per
phase and hot/cold latencies from a small hand-made run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from google.protobuf.message import Message

from driftloop.protos.events.v1 import events_pb2
from driftloop.shared.bus import envelope
from driftloop.shared.cli.bench import fleet_traffic as traffic
from driftloop.shared.cli.bench.fleet_driver import FLEET, PhaseMark, Plan, Recorded
from driftloop.shared.cli.bench.fleet_report import percentile, summarise
from driftloop.shared.cli.bench.fleet_stream import TARGET
from driftloop.shared.records import table_to_ipc
from driftloop.shared.timestamps import timestamp

pytestmark = pytest.mark.unit

ROUTES = 20
T0 = 1_000_000.0
"""When the roadworks start in the hand-made run."""


class MeanModel:
    def __init__(self, mean: float) -> None:
        self.mean = mean

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return np.full(len(features), self.mean)


def mean_fit(features: pd.DataFrame, target: np.ndarray) -> MeanModel:
    return MeanModel(float(np.mean(target)))


def event(payload: Message, at: float) -> envelope.Envelope:
    found = envelope.new_event("test", payload)
    found.occurred_at.CopyFrom(timestamp(at))
    return found


def log_event(
    model: str, version: str, ids: list[str], ts: float, fleet: str = FLEET
) -> envelope.Envelope:
    table = pa.table({"_request_id": ids, "_prediction": [0.0] * len(ids), "_ts": [ts] * len(ids)})
    payload = events_pb2.PredictionLog(
        model=model, version=version, arrow_ipc=table_to_ipc(table), row_count=len(ids), fleet=fleet
    )
    return event(payload, ts)


def test_lru_replay_keeps_the_most_recently_used() -> None:
    replay = traffic.LruReplay(2)
    assert [replay.touch(r) for r in (1, 2, 1, 3)] == [False, False, True, False]
    assert replay.touch(2) is False, "2 was the least recently used when 3 came"
    assert replay.touch(3) is True
    assert traffic.LruReplay(0).touch(1) is False


def test_served_log_says_who_answered_each_request() -> None:
    served = traffic.ServedLog(FLEET)
    part = traffic.partition_of(3, FLEET)
    assert part == "arrivals/route_id=3"
    served.add(log_event(part, "1", ["b1.r3.0:0", "b1.r3.0:1"], 10.0))
    served.add(log_event(part, "2", ["b2.r3.0:0", "b2.r3.0:1"], 20.0))
    served.add(log_event("other", "7", ["x:0"], 30.0, fleet=""))
    assert served.answers["b1.r3.0"] == traffic.Answer(part, "1", 10.0)
    assert served.answers["b2.r3.0"].version == "2"
    assert "x" not in served.answers, "another model's log is not the fleet's"
    assert served.rows == 4
    assert traffic.row_ids("a", 1) == ["a"] and traffic.row_ids("a", 2) == ["a:0", "a:1"]


def test_a_newer_version_is_the_partitions_own_or_while_it_had_none_the_global_models() -> None:
    part = traffic.partition_of(3, FLEET)
    production = {FLEET: "2", part: "1", traffic.partition_of(4, FLEET): ""}
    assert traffic.is_newer(production, part, part, "2")
    assert not traffic.is_newer(production, part, part, "1")
    assert not traffic.is_newer(production, part, FLEET, "3"), "it has its own model"
    none = traffic.partition_of(4, FLEET)
    assert traffic.is_newer(production, none, none, "1"), "its first own version"
    assert traffic.is_newer(production, none, FLEET, "3")
    assert not traffic.is_newer(production, none, FLEET, "2")


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile(range(1, 101), 0.99) == 99


@pytest.fixture
def run() -> Recorded:
    """20 routes (one drifted); a before block, then two roadworks blocks: the drifted route is
    answered by its version 1, then by version 2 from T0 + 12 s. Undrifted route 0 alarms falsely
    and gets a version 2 promoted."""
    plan = Plan(partitions=ROUTES, rows_per_route=4, weather=False)
    stream = dataclasses.replace(plan.stream(), roadworks_at=1)
    (drifted,) = stream.drifted_routes()
    calm = 0 if drifted != 0 else 1
    rec = Recorded(plan, stream, live_started=T0 - 10, live_ended=T0 + 30)
    names = {r: traffic.partition_of(r, FLEET) for r in range(ROUTES)}
    rec.phases.append(PhaseMark("roadworks", 1, T0, {n: "1" for n in names.values()}))
    for block, version, at in ((0, "1", T0 - 5), (1, "1", T0 + 5), (2, "2", T0 + 12)):
        frame = stream.rows(block).reset_index(drop=True)
        route = frame["route_id"].to_numpy()
        live = traffic.LiveBlock(
            block,
            stream.phase_of(block),
            route,
            frame[TARGET].to_numpy(),
            frame[TARGET].to_numpy() + 10.0,  # every answer 10 s off
            np.zeros(len(frame), dtype=np.int64),
        )
        for r in range(ROUTES):
            rows = np.flatnonzero(route == r)
            for part, picked in enumerate((rows[:2], rows[2:])):
                rid = traffic.request_id(block, r, part)
                live.request[picked] = len(rec.sent)
                rec.sent.append(
                    traffic.Sent(rid, block, r, 2, at, 0.001 * (r + 1), part == 1, r % 2 == 0)
                )
                served = version if r == drifted else "1"
                if r == drifted and block == 1:
                    live.predicted[picked] += 200.0  # the old version misses the roadworks
                rec.served.add(log_event(names[r], served, traffic.row_ids(rid, 2), at))
        rec.blocks.append(live)
    rec.events += [
        event(events_pb2.DriftDetected(model=names[drifted], version="1"), T0 + 8),
        event(
            events_pb2.ModelPromoted(model=names[drifted], version="2", action="promote"), T0 + 10
        ),
        event(events_pb2.DriftDetected(model=FLEET, partitions=[names[calm]]), T0 + 6),
        event(events_pb2.ModelPromoted(model=names[calm], version="2", action="promote"), T0 + 7),
    ]
    return rec


def test_the_report_counts_detections_false_retrains_and_seconds_to_a_new_version(
    run: Recorded,
) -> None:
    report = summarise(run, mean_fit, 50)
    assert report["partitions"] == ROUTES
    assert report["drifted_partitions"] == report["detected_partitions"] == 1
    assert report["false_detections"] == 1 and report["false_retrains"] == 1
    (falsely,) = report["false_retrain_partitions"]
    assert falsely in (traffic.partition_of(0, FLEET), traffic.partition_of(1, FLEET))
    assert falsely != report["drifted"][0]["partition"]
    # from the drifted route's first roadworks row (sent at T0 + 5) to version 2 (T0 + 12)
    assert report["median_drift_to_serving_s"] == report["max_drift_to_serving_s"] == 7.0
    (row,) = report["drifted"]
    assert (row["drift_to_detected_s"], row["drift_to_promoted_s"]) == (3.0, 5.0)
    assert row["seen_by"] == "answer"
    assert row["mae"]["before"] == row["mae"]["after"] == 10.0
    assert row["mae"]["during"] == 210.0
    assert row["mae"]["reference"] > 0
    assert report["mae_after_over_reference"] == pytest.approx(
        10.0 / row["mae"]["reference"], abs=1e-3
    )
    assert report["failed_requests"] == 0 and report["requests"] == 3 * ROUTES * 2
    assert report["hot_requests"] == 3 * ROUTES and report["cold_requests"] == 3 * ROUTES / 2
    assert report["serving_p99_ms_hot"] == pytest.approx(20.0)
    assert report["requests_logged"] == report["requests"]
    assert report["live_rows"] == 3 * ROUTES * 4
    assert "weather_fleet_episodes" not in report, "no weather phase ran"


def test_a_reply_names_the_model_that_answered() -> None:
    from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2

    reply = v2.ModelInferResponse(model_name=FLEET, model_version="")
    reply.parameters[traffic.ANSWERED_BY].string_param = '{"arrivals/route_id=3": "2"}'
    assert traffic.answered_by(reply) == ("arrivals/route_id=3", "2")
    assert traffic.answered_by(v2.ModelInferResponse(model_version="4")) == ("", "4")
    reply.parameters[traffic.ANSWERED_BY].string_param = "not json"
    assert traffic.answered_by(reply) == ("", "")


def test_a_fleet_episode_and_its_follow_ups_count_as_one(run: Recorded) -> None:
    # an open fleet episode grows: partitions that drift later come as follow-up events with
    # the same episode id
    names = [traffic.partition_of(r, FLEET) for r in range(3)]
    run.phases.append(PhaseMark("weather", 2, T0 + 11, {n: "1" for n in names}))
    run.events += [
        event(
            events_pb2.DriftDetected(model=FLEET, episode_id="e1", partitions=names[:2]), T0 + 13
        ),
        event(
            events_pb2.DriftDetected(model=FLEET, episode_id="e1", partitions=names[2:]), T0 + 20
        ),
    ]
    report = summarise(run, mean_fit, 50)
    assert report["weather_fleet_episodes"] == 1
    assert report["weather_fleet_episode_events"] == 2
    assert report["weather_episode_partitions"] == 3


def test_a_first_own_model_is_not_a_false_retrain(run: Recorded) -> None:
    # a partition without a production version of its own when the roadworks began (served by
    # the global model) whose grown retry is promoted gets its first own model
    names = [traffic.partition_of(r, FLEET) for r in range(ROUTES)]
    (drifted,) = run.stream.drifted_routes()
    newcomer = next(n for r, n in enumerate(names) if r not in (drifted, 0, 1))
    run.phases[0].production[newcomer] = ""
    run.events.append(
        event(events_pb2.ModelPromoted(model=newcomer, version="2", action="promote"), T0 + 9)
    )
    report = summarise(run, mean_fit, 50)
    assert report["false_retrains"] == 1  # the calm route that alarmed falsely, as before
    assert newcomer not in report["false_retrain_partitions"]
    assert report["first_own_models"] == 1
