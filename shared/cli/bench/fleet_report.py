"""What `driftloop bench fleet` reports, worked out from what the driver recorded: detections and
false retrains from the events, seconds from drift to a new version answering from the
prediction log, MAE per partition per phase from the answers against the truth (and against the
post-drift reference models of fleet_stream), latencies of hot and cold requests."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from driftloop.shared.cli.bench import fleet_traffic as traffic
from driftloop.shared.cli.bench.fleet_driver import PhaseMark, Recorded
from driftloop.shared.cli.bench.fleet_stream import FleetStream, Phase, reference_mae
from driftloop.shared.cli.bench.fleet_traffic import FLEET
from driftloop.shared.timestamps import seconds_or_none


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-quantile (nearest rank), None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _at(event: Any) -> float:
    return seconds_or_none(event.occurred_at) or 0.0


@dataclass(frozen=True)
class Window:
    """[start, end) in wall-clock seconds."""

    start: float
    end: float

    def __contains__(self, at: float) -> bool:
        return self.start <= at < self.end


def named_partitions(event: Any) -> set[str]:
    """The partition models a DriftDetected names: its model when a partition, and a fleet
    episode's `partitions`."""
    drift = event.drift_detected
    named = set(drift.partitions)
    if drift.model != FLEET and drift.model.startswith(FLEET + "/"):
        named.add(drift.model)
    return named


def drift_events(rec: Recorded, window: Window) -> list[Any]:
    return [e for e in rec.events if e.type == "DriftDetected" and _at(e) in window]


def promotions(rec: Recorded, window: Window) -> list[Any]:
    return [
        e
        for e in rec.events
        if e.type == "ModelPromoted" and e.model_promoted.action != "rollback" and _at(e) in window
    ]


def newer(mine: pd.DataFrame, mark: PhaseMark, name: str) -> pd.Series:
    """Which of partition `name`'s rows a newer version answered than at the phase's start
    (fleet_traffic.is_newer, row by row)."""
    own = mark.production.get(name, "")
    if own:
        return (mine["model"] == name) & (mine["version"] > traffic.number(own))
    global_base = traffic.number(mark.production.get(FLEET, ""))
    return (mine["model"] == name) | ((mine["model"] == FLEET) & (mine["version"] > global_base))


def serving_new(
    rec: Recorded, mark: PhaseMark, name: str, mine: pd.DataFrame
) -> tuple[float | None, str]:
    """When partition `name` (its rows `mine`) first had a row of the phase answered by a newer
    version, and how that was seen: "answer" (a reply or the prediction log), "deployed" (a
    ModelDeployed of the partition: serving has it, no row asked yet) or "" (not yet)."""
    phase = mine[mine["phase"] == mark.phase]
    answered = phase[newer(phase, mark, name)]
    if len(answered):
        return float(answered["at"].min()), "answer"
    base = traffic.number(mark.production.get(name, ""))
    deployed = [
        _at(e)
        for e in rec.events
        if e.type == "ModelDeployed"
        and e.model_deployed.model == name
        and traffic.number(e.model_deployed.version) > base
        and _at(e) >= mark.at
    ]
    return (min(deployed), "deployed") if deployed else (None, "")


def drift_starts(rec: Recorded, mark: PhaseMark) -> dict[int, float]:
    """When each route's first row of the phase was sent (its drift's start: a block sends
    every route once, in a shuffled order, so a route's drift starts up to a block after the
    phase's)."""
    starts: dict[int, float] = {}
    for sent in rec.sent:
        if sent.block == mark.block and sent.sent_at < starts.get(sent.route, math.inf):
            starts[sent.route] = sent.sent_at
    return starts


def global_serving_new(rec: Recorded, mark: PhaseMark) -> tuple[float | None, str]:
    """When the fleet's global model had a newer version than at the phase's start deployed
    (ModelDeployed), else promoted (ModelPromoted)."""
    base = traffic.number(mark.production.get(FLEET, ""))
    for kind, field_name in (
        ("ModelDeployed", "model_deployed"),
        ("ModelPromoted", "model_promoted"),
    ):
        times = [
            _at(e)
            for e in rec.events
            if e.type == kind
            and getattr(e, field_name).model == FLEET
            and traffic.number(getattr(e, field_name).version) > base
            and _at(e) >= mark.at
        ]
        if times:
            return min(times), kind.removeprefix("Model").lower()
    return None, ""


COLUMNS = ("block", "phase", "route", "truth", "predicted", "request", "position", "at")
EMPTY = pd.DataFrame({c: [] for c in (*COLUMNS, "model", "version", "error")})


def answered_rows(rec: Recorded) -> pd.DataFrame:
    """Every live row: block, phase, route, truth, predicted, and the model and version that
    answered it (from the prediction log; "" where the log did not say)."""
    parts = []
    for live in rec.blocks:
        parts.append(
            pd.DataFrame(
                {
                    "block": live.block,
                    "phase": live.phase,
                    "route": live.route,
                    "truth": live.truth,
                    "predicted": live.predicted,
                    "request": live.request,
                    "position": np.arange(len(live.route)),
                }
            )
        )
    if not parts:
        return EMPTY
    rows = pd.concat(parts, ignore_index=True)
    answers = [_answer(rec, s) for s in rec.sent]
    model = np.array([a[0] for a in answers] + [""], dtype=object)
    version = np.array([traffic.number(a[1]) if a[0] else -1 for a in answers] + [-1])
    at = np.array([s.sent_at for s in rec.sent] + [np.nan])
    request = rows["request"].to_numpy()
    rows["model"] = model[request]
    rows["version"] = version[request]
    rows["at"] = at[request]
    rows["error"] = (rows["predicted"] - rows["truth"]).abs()
    return rows


def _answer(rec: Recorded, sent: traffic.Sent) -> tuple[str, str]:
    """Who answered a request: the prediction log's word, else the reply's."""
    logged = rec.served.answers.get(sent.id)
    if logged is not None:
        return logged.model, logged.version
    return sent.answered_by, sent.answered_version


def _mae(rows: pd.DataFrame) -> float | None:
    errors = rows["error"].dropna()
    return float(errors.mean()) if len(errors) else None


def phase_maes(
    mine: pd.DataFrame, mark: PhaseMark, name: str
) -> tuple[pd.DataFrame, dict[str, float | None]]:
    """One partition's rows (`mine`) of `mark`'s phase answered by a newer version than at its
    start (after), and its MAE before the live drifts, in the phase on the old version (during)
    and on a newer one (after)."""
    phase = mine[mine["phase"] == mark.phase]
    answered = newer(phase, mark, name)
    after = phase[answered]
    return after, {
        "before": _mae(mine[mine["phase"] == "before"]),
        "during": _mae(phase[~answered]),
        "after": _mae(after),
    }


def references(
    stream: FleetStream,
    after: dict[int, pd.DataFrame],
    phase: Phase,
    fit: Any,
    train_rows: int,
    features: tuple[str, ...],
) -> dict[int, float]:
    """fleet_stream.reference_mae on each partition's `after` rows (their features regenerated
    from the stream: blocks are deterministic)."""
    wanted = {r: a for r, a in after.items() if len(a)}
    if not wanted:
        return {}
    tests = []
    for block, positions in (
        pd.concat(wanted.values()).groupby("block")["position"].apply(list).items()
    ):
        frame = stream.rows(int(block)).reset_index(drop=True)
        tests.append(frame.iloc[positions])
    test = pd.concat(tests, ignore_index=True)
    return reference_mae(stream, test, phase, fit, train_rows, features)


def latencies(rec: Recorded) -> dict[str, Any]:
    """p50/p99 of hot requests (a route's repeat, its model just used) and cold ones (a route's
    first request when the bench's LRU replay says its model was evicted), in ms."""
    ok = [s for s in rec.sent if not s.error]
    hot = [s.latency_s * 1000 for s in ok if s.repeat]
    cold = [s.latency_s * 1000 for s in ok if not s.repeat and not s.resident]
    first = [s.latency_s * 1000 for s in ok if not s.repeat]
    errors: dict[str, int] = {}
    for s in rec.sent:
        if s.error:
            errors[s.error[:200]] = errors.get(s.error[:200], 0) + 1
    return {
        "requests": len(rec.sent),
        "failed_requests": len(rec.sent) - len(ok),
        "request_errors": dict(sorted(errors.items(), key=lambda e: -e[1])[:5]),
        "serving_p50_ms_hot": _round(percentile(hot, 0.5)),
        "serving_p99_ms_hot": _round(percentile(hot, 0.99)),
        "serving_p50_ms_cold": _round(percentile(cold, 0.5)),
        "serving_p99_ms_cold": _round(percentile(cold, 0.99)),
        "serving_p50_ms_first": _round(percentile(first, 0.5)),
        "serving_p99_ms_first": _round(percentile(first, 0.99)),
        "hot_requests": len(hot),
        "cold_requests": len(cold),
    }


def runs_per_minute(rec: Recorded) -> dict[str, Any]:
    """Training runs finished during the live phase, per minute, and by trigger."""
    window = Window(rec.live_started, rec.live_ended)
    finished = [r for r in rec.runs if (seconds_or_none(r.finished_at) or 0.0) in window]
    minutes = max(1e-9, (window.end - window.start) / 60)
    triggers: dict[str, int] = {}
    for r in finished:
        triggers[r.trigger] = triggers.get(r.trigger, 0) + 1
    return {
        "training_runs_live": len(finished),
        "training_runs_per_minute": _round(len(finished) / minutes, 2),
        "training_runs_by_trigger": triggers,
        "training_runs_failed": sum(r.state == "failed" for r in finished),
    }


def _first(times: Iterable[float]) -> float | None:
    return min(times, default=None)


def _since(at: float | None, start: float) -> float | None:
    return None if at is None else _round(at - start)


def _present(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in rows if r[key] is not None]


def roadworks(
    rec: Recorded, by_route: dict[int, pd.DataFrame], fit: Any, train_rows: int
) -> dict[str, Any]:
    """Per drifted partition: detected, seconds to a new version answering, MAE before /
    during / after and the post-drift reference's; the fleet's figures over them."""
    mark = next(m for m in rec.phases if m.phase == "roadworks")
    weather = next((m for m in rec.phases if m.phase == "weather"), None)
    window = Window(mark.at, weather.at if weather else math.inf)
    alarms = drift_events(rec, window)
    promoted = promotions(rec, window)
    drifted = sorted(rec.stream.drifted_routes())
    starts = drift_starts(rec, mark)
    found, afters = [], {}
    for route in drifted:
        name = traffic.partition_of(route, FLEET)
        mine = by_route.get(route, EMPTY)
        start = starts.get(route, mark.at)
        serving_at, seen = serving_new(rec, mark, name, mine)
        detected_at = _first(_at(e) for e in alarms if name in named_partitions(e))
        promoted_at = _first(_at(e) for e in promoted if e.model_promoted.model == name)
        afters[route], maes = phase_maes(mine, mark, name)
        found.append(
            {
                "partition": name,
                "own_model_at_drift": bool(mark.production.get(name)),
                "detected": detected_at is not None,
                "drift_to_detected_s": _since(detected_at, start),
                "drift_to_promoted_s": _since(promoted_at, start),
                "drift_to_serving_s": _since(serving_at, start),
                "seen_by": seen,
                "mae": {k: _round(v, 2) for k, v in maes.items()},
            }
        )
    refs = references(rec.stream, afters, "roadworks", fit, train_rows, traffic.INPUTS)
    ratios = []
    for route, row in zip(drifted, found, strict=True):
        ref = refs.get(route)
        row["mae"]["reference"] = _round(ref, 2)
        after = row["mae"]["after"]
        if ref and after is not None:
            ratios.append(after / ref)
    seconds = _present(found, "drift_to_serving_s")
    fleet_alarms = [e for e in alarms if e.drift_detected.model == FLEET]
    return {
        "drifted_partitions": len(drifted),
        "detected_partitions": sum(r["detected"] for r in found),
        "drifted_without_own_model": sum(not r["own_model_at_drift"] for r in found),
        "roadworks_global_drift_events": sum(not e.drift_detected.partitions for e in fleet_alarms),
        "drifted_serving_new": len(seconds),
        "median_drift_to_serving_s": _round(_median(seconds)),
        "p90_drift_to_serving_s": _round(percentile(seconds, 0.9)),
        "max_drift_to_serving_s": _round(max(seconds, default=None)),
        "median_drift_to_detected_s": _round(_median(_present(found, "drift_to_detected_s"))),
        "median_drift_to_promoted_s": _round(_median(_present(found, "drift_to_promoted_s"))),
        "mae_after_over_reference": _round(_median(ratios)),
        "roadworks_timed_out": mark.timed_out,
        "drifted": found,
    }


def false_alarms(rec: Recorded) -> dict[str, Any]:
    """What happened to undrifted partitions before the weather shift: drift events naming
    them, drift runs and promoted versions (false retrains)."""
    weather = next((m for m in rec.phases if m.phase == "weather"), None)
    window = Window(rec.live_started, weather.at if weather else rec.live_ended)
    drifted = {traffic.partition_of(r, FLEET) for r in rec.stream.drifted_routes()}

    def undrifted(name: str) -> bool:
        return name.startswith(FLEET + "/") and name not in drifted

    detected = set().union(*(named_partitions(e) for e in drift_events(rec, window)))
    promoted = {e.model_promoted.model for e in promotions(rec, window)}
    runs = {
        r.model
        for r in rec.runs
        if r.trigger == "drift" and (seconds_or_none(r.created_at) or 0.0) in window
    }
    # a partition that had no production version of its own when the drift phases began (its
    # first candidate was inconclusive against the global model) and gets one now is not
    # retrained: its grown retry made its first own model
    first = next((m for m in rec.phases), None)
    had_own = {n for n, v in (first.production if first else {}).items() if v}
    false_retrains = sorted(p for p in promoted if undrifted(p) and (not first or p in had_own))
    first_own = sorted(p for p in promoted if undrifted(p) and first and p not in had_own)
    return {
        "false_retrains": len(false_retrains),
        "false_retrain_partitions": false_retrains[:20],
        "first_own_models": len(first_own),
        "false_detections": sum(undrifted(p) for p in detected),
        "false_drift_runs": sum(undrifted(p) for p in runs),
    }


def weather(
    rec: Recorded, by_route: dict[int, pd.DataFrame], fit: Any, train_rows: int
) -> dict[str, Any]:
    """The city-wide shift: fleet episodes, the global model's new version, every partition's
    recovery and MAE after against the weather reference."""
    mark = next((m for m in rec.phases if m.phase == "weather"), None)
    if mark is None:
        return {}
    window = Window(mark.at, math.inf)
    events = drift_events(rec, window)
    episodes = [
        e for e in events if e.drift_detected.model == FLEET and e.drift_detected.partitions
    ]
    alone = [e for e in events if e.drift_detected.model != FLEET]
    global_at, global_seen = global_serving_new(rec, mark)
    seconds, afters, ratios = [], {}, []
    starts = drift_starts(rec, mark)
    for route in range(rec.plan.partitions):
        name = traffic.partition_of(route, FLEET)
        mine = by_route.get(route, EMPTY)
        at, _ = serving_new(rec, mark, name, mine)
        if at is not None:
            seconds.append(at - starts.get(route, mark.at))
        afters[route], _ = phase_maes(mine, mark, name)
    refs = references(rec.stream, afters, "weather", fit, train_rows, traffic.INPUTS)
    for route, ref in refs.items():
        after = _mae(afters[route])
        if ref and after is not None:
            ratios.append(after / ref)
    return {
        # an open fleet episode grows: partitions that drift later come as follow-up events
        # with the same episode id, so episodes are counted by id
        "weather_fleet_episodes": len({e.drift_detected.episode_id for e in episodes}),
        "weather_fleet_episode_events": len(episodes),
        "weather_episode_partitions": len(
            {p for e in episodes for p in e.drift_detected.partitions}
        ),
        "weather_partition_drift_events": len(alone),
        "weather_global_serving_s": _round(global_at - mark.at) if global_at else None,
        "weather_global_seen_by": global_seen,
        "weather_partitions_serving_new": len(seconds),
        "weather_median_to_serving_s": _round(_median(seconds)),
        "weather_max_to_serving_s": _round(max(seconds, default=None)),
        "weather_mae_after_over_reference": _round(_median(ratios)),
        "weather_timed_out": mark.timed_out,
    }


def undrifted_maes(rows: pd.DataFrame, rec: Recorded) -> dict[str, Any]:
    """Median over undrifted partitions of their MAE in each phase (the stationary baseline)."""
    drifted = rec.stream.drifted_routes()
    calm = rows[~rows["route"].isin(list(drifted))]
    out: dict[str, Any] = {}
    for phase in ("before", "roadworks", "weather"):
        per = calm[calm["phase"] == phase].groupby("route")["error"].mean()
        out[f"undrifted_median_mae_{phase}"] = _round(float(per.median()), 2) if len(per) else None
    return out


def summarise(rec: Recorded, fit: Any, train_rows: int) -> dict[str, Any]:
    """The report's figures (the command adds the stack's: memory, metrics, settings)."""
    rows = answered_rows(rec)
    by_route = {int(route): part for route, part in rows.groupby("route")}
    logged = sum(rec.served.answers.get(s.id) is not None for s in rec.sent if not s.error)
    return {
        "partitions": rec.plan.partitions,
        **roadworks(rec, by_route, fit, train_rows),
        **false_alarms(rec),
        **weather(rec, by_route, fit, train_rows),
        **undrifted_maes(rows, rec),
        **latencies(rec),
        **runs_per_minute(rec),
        "live_rows": len(rows),
        "requests_logged": logged,
        "live_blocks": len(rec.blocks),
        "live_s": _round(rec.live_ended - rec.live_started, 1),
        "live_rows_per_s": _round(len(rows) / max(1e-9, rec.live_ended - rec.live_started), 1),
        "failed_label_calls": rec.failed_label_calls,
        "failed_ingest_calls": rec.failed_ingest_calls,
        "warmup_fleet_training_s": _round(rec.warmup_s, 1),
        "warmup_fleet_runs": rec.warmup_fleet_runs,
        "warmup_partitions_in_production": rec.warmup_partitions_in_production,
        "phases": [
            {
                "phase": m.phase,
                "block": m.block,
                "ended_block": m.ended_block,
                "recovered_s": _round(m.recovered_at - m.at) if m.recovered_at else None,
                "timed_out": m.timed_out,
            }
            for m in rec.phases
        ],
    }
