"""The chaos matrix: each fault injected into a running stack, then the books and the loop
checked. A fault survives when it was injected, no row was lost or curated twice, the loop
closed afterwards (a new version trained, promoted and answering) and its own checks held."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from driftloop.shared.bus import topics
from driftloop.shared.cli.chaos import events as chaos_events
from driftloop.shared.cli.chaos.artifact_faults import tampered_artifact, warmup_failure
from driftloop.shared.cli.chaos.episode import duplicated_episode, one_run_per_episode
from driftloop.shared.cli.chaos.hostile import HOSTILE
from driftloop.shared.cli.chaos.infra import pid_of, rss_mb, wait_new_pid
from driftloop.shared.cli.chaos.kafka_restart import kafka_broker_restart
from driftloop.shared.cli.chaos.steps import (
    Chaos,
    Inject,
    Row,
    in_background,
    kill,
    recovered,
    wait_truthy,
)
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.manifest import manifest_head

__all__ = ["FAULTS", "Chaos", "Row", "run_fault"]


# ---- kill -9 of each service at its point of the loop


def kill_ingestion(c: Chaos, row: Row) -> None:
    state: dict[str, Any] = {}

    def on_request(done: int) -> None:
        if "pid" not in state and done >= c.rows // 3:
            state["t"] = time.monotonic()
            state["pid"] = kill(c, "ingestion", row)

    c.h.ingest(c.rows, on_request=on_request)  # retries ride over the restart
    row.recovery_s = recovered(c, "ingestion", state["pid"], state["t"])
    row.note = f"killed after {c.rows // 3} rows acknowledged; client retried by batch id"


def kill_validation(c: Chaos, row: Row) -> None:
    before = manifest_head(c.h.store, c.h.model)
    v0 = before.version if before else 0
    feeder = in_background(lambda: c.h.ingest(c.rows))
    deadline = time.monotonic() + c.timeout
    while time.monotonic() < deadline:
        head = manifest_head(c.h.store, c.h.model)
        if head is not None and head.version > v0:
            break
        time.sleep(0.02)  # poll: kill as soon as validation curated part of the stream
    t = time.monotonic()
    pid = kill(c, "validation", row)
    feeder.join()
    row.recovery_s = recovered(c, "validation", pid, t)
    row.note = "killed after its first manifest write of the stream"


def kill_training(c: Chaos, row: Row) -> str:
    holder: dict[str, str] = {}

    def running() -> str:
        run = c.h.run(holder["run"]) if "run" in holder else None
        return f"{run.state}/{run.progress}" if run and run.state != "queued" else ""

    c.h.ingest(c.rows)
    c.h.wait_accounted(c.timeout)
    holder["run"] = c.h.start_run("chaos: kill training")
    phase = ""
    deadline = time.monotonic() + c.timeout
    while not phase and time.monotonic() < deadline:
        phase = running()
        time.sleep(0.005)  # poll: the run leaves the queue within the worker's poll
    t = time.monotonic()
    pid = kill(c, "training", row)
    row.info["phase_at_kill"] = phase
    row.recovery_s = recovered(c, "training", pid, t)
    return holder["run"]


def kill_registry(c: Chaos, row: Row) -> str:
    holder: dict[str, str] = {}
    start = time.monotonic()

    def registering() -> str:
        run = c.h.run(holder["run"]) if "run" in holder else None
        if run is None:
            return ""
        if run.progress == "registering" or run.state == "succeeded":
            return f"{run.state}/{run.progress}"
        return "fitting (timeout)" if time.monotonic() - start > 60 else ""

    c.h.ingest(c.rows)
    c.h.wait_accounted(c.timeout)
    holder["run"] = c.h.start_run("chaos: kill registry mid-promotion")
    phase = ""
    deadline = time.monotonic() + c.timeout
    while not phase and time.monotonic() < deadline:
        phase = registering()
        time.sleep(0.005)  # poll: aim at the registration
    t = time.monotonic()
    pid = kill(c, "registry", row)
    row.info["phase_at_kill"] = phase
    row.recovery_s = recovered(c, "registry", pid, t)
    counts = c.h.versions_by_run()
    row.checks["no_version_registered_twice"] = all(n == 1 for n in counts.values())
    return holder["run"]


def kill_serving(c: Chaos, row: Row) -> str:
    c.h.ingest(c.rows)
    c.h.wait_accounted(c.timeout)
    before = c.h.production()
    run_id = c.h.start_run("chaos: kill serving mid-swap")
    deadline = time.monotonic() + c.timeout
    while c.h.production() == before and time.monotonic() < deadline:
        time.sleep(0.01)  # poll: kill the moment the registry moved production
    t = time.monotonic()
    pid = kill(c, "serving", row)
    row.recovery_s = recovered(c, "serving", pid, t)
    row.note = "killed when the registry moved production (ModelPromoted on its way)"
    return run_id


def kill_monitoring(c: Chaos, row: Row) -> str:
    c.h.ingest(c.rows)
    c.h.predict(20)
    t = time.monotonic()
    pid = kill(c, "monitoring", row)
    row.recovery_s = recovered(c, "monitoring", pid, t)
    c.h.predict(20)
    report = wait_truthy(lambda: _report_current(c), c.timeout)
    row.checks["profile_reloaded"] = bool(report)
    run_id = c.h.start_run("chaos: after monitoring restart")
    return run_id


def _report_current(c: Chaos) -> bool:
    report = c.h.drift_report()
    return bool(report and report.version == c.h.production() and report.rows_seen > 0)


# ---- infrastructure faults


def broker_restart(c: Chaos, row: Row) -> None:
    if c.kafka is not None:
        kafka_broker_restart(c, row)  # Kafka keeps its log: a different row
        return
    production = c.h.production()
    t = time.monotonic()
    pid = kill(c, "broker", row)
    served = [c.h.served_version() for _ in range(5)]
    row.checks["serving_answered_during_outage"] = all(v == production for v in served)
    wait_new_pid(c.h.common, "broker", pid, c.timeout)
    c.h.ingest(c.rows)  # retried until ingestion can publish again
    c.h.wait_accounted(c.timeout)
    row.recovery_s = round(time.monotonic() - t, 2)
    row.note = "memory-only broker: every topic and offset is lost"


def after_broker_restart(c: Chaos, row: Row) -> None:
    c.h.predict(20)
    row.checks["monitoring_follows_new_version"] = bool(wait_truthy(lambda: _report_current(c), 60))


def object_store_outage(c: Chaos, row: Row) -> None:
    if c.s3 is None:
        raise RuntimeError("needs the S3 store (run with --store s3)")
    c.s3.proxy.cut()
    row.injected = True
    t_cut = time.monotonic()
    c.h.ingest(c.rows)  # ingestion only needs the broker
    served = c.h.served_version()
    row.checks["serving_answered_during_outage"] = served == c.h.production()
    remaining = c.outage_s - (time.monotonic() - t_cut)
    if remaining > 0:
        time.sleep(remaining)  # the outage lasts outage_s; nothing to wait on
    cut_books = c.h.books()
    row.info["curated_during_outage"] = cut_books.curated
    c.s3.proxy.restore()
    t = time.monotonic()
    c.h.wait_accounted(c.timeout)
    row.recovery_s = round(time.monotonic() - t, 2)
    row.info["outage_s"] = round(t - t_cut, 1)
    row.note = "S3 behind a proxy that refuses connections for the outage"


POISON_TOPICS = [
    topics.INGEST_JSON,
    topics.RECORDS_RAW,
    topics.RECORDS_VALIDATED,
    topics.DRIFT,
    topics.MODELS,
    topics.PREDICTIONS,
    topics.LABELS,
    topics.DEPLOYMENTS,
]
"""Every topic a service consumes (the others have no consumer to poison)."""


def poison(c: Chaos, row: Row) -> None:
    since = time.time()
    sent = chaos_events.send_poison(c.h.common.kafka_connection(), POISON_TOPICS, c.h.model)
    row.injected = True
    row.info["poison_messages"] = sent
    letters = chaos_events.wait_letters(c.h.common.kafka_connection(), POISON_TOPICS, since, 90)
    row.info["dead_letters"] = letters
    row.checks["garbage_dead_lettered_on_every_topic"] = all(
        letters.get(t, 0) >= 2 for t in POISON_TOPICS
    )
    c.h.ingest(c.rows)
    c.h.wait_accounted(c.timeout)
    row.checks["all_services_healthy"] = all(
        stack.health_of(c.h.common, s) == "SERVING"
        for s in ("ingestion", "validation", "training", "registry", "serving", "monitoring")
    )
    row.recovery_s = round(time.time() - since, 2)


def backlog(c: Chaos, row: Row) -> None:
    from driftloop.shared.cli.commands.status import collect_status

    pid = pid_of(c.h.common, "validation")
    assert pid is not None
    rss_before = rss_mb(pid)
    os.kill(pid, signal.SIGSTOP)
    row.injected = True
    try:
        c.h.ingest(c.rows * 3)
        lag = collect_status(c.h.common)["lag"].get("validation", {}).get(topics.RECORDS_RAW, 0)
    finally:
        os.kill(pid, signal.SIGCONT)
    t = time.monotonic()
    peak = rss_before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(pid))
            time.sleep(0.1)  # poll: memory sampling interval

    sampler = in_background(sample)
    c.h.wait_accounted(c.timeout)
    done.set()
    sampler.join()
    row.recovery_s = round(time.monotonic() - t, 2)
    row.info.update(lag_seen=lag, rss_before_mb=round(rss_before), rss_peak_mb=round(peak))
    row.checks["lag_visible_in_status"] = lag > 0
    row.checks["rss_bounded"] = peak - rss_before < 512
    row.note = "validation SIGSTOPped while 3x the rows arrived, then SIGCONTed"


FAULTS: dict[str, tuple[str, Inject]] = {
    "kill_ingestion": ("kill -9 ingestion mid-ingest", kill_ingestion),  # type: ignore[dict-item]
    "kill_validation": ("kill -9 validation mid-validation", kill_validation),  # type: ignore[dict-item]
    "kill_training": ("kill -9 training mid-training", kill_training),
    "kill_registry": ("kill -9 registry mid-promotion", kill_registry),
    "kill_serving": ("kill -9 serving mid-swap", kill_serving),
    "kill_monitoring": ("kill -9 monitoring", kill_monitoring),
    "broker_restart": ("broker restart (memory lost)", broker_restart),  # type: ignore[dict-item]
    "object_store_outage": ("object store unreachable", object_store_outage),  # type: ignore[dict-item]
    "tampered_artifact": ("tampered artifact promoted", tampered_artifact),  # type: ignore[dict-item]
    "warmup_failure": ("artifact that fails warm-up promoted", warmup_failure),  # type: ignore[dict-item]
    "poison": ("poison messages on every consumed topic", poison),  # type: ignore[dict-item]
    "backlog": ("backlog: validation paused", backlog),  # type: ignore[dict-item]
    "duplicated_episode": ("drift episode re-sent, training killed mid-run", duplicated_episode),
    **HOSTILE,
}
AFTER: dict[str, Callable[[Chaos, Row], None]] = {
    "broker_restart": after_broker_restart,
    "duplicated_episode": one_run_per_episode,
}
"""Checks that need the loop to have closed after the fault."""


def run_fault(c: Chaos, name: str) -> Row:
    """Inject one fault, then account for every row and close the loop."""
    label, inject = FAULTS[name]
    row = Row(fault=name, info={"label": label})
    before = c.h.books()
    sent_before = c.h.sent
    lost_before = _lost(c, before)
    production = c.h.production()
    try:
        run_id = inject(c, row)
        books = c.h.wait_accounted(c.timeout)
        t = time.monotonic()
        run_id = run_id or c.h.start_run(f"chaos: after {name}")
        row.loop_closed, row.version = c.h.close_loop(run_id, production, c.timeout)
        row.loop_s = round(time.monotonic() - t, 2)
        if name in AFTER and row.loop_closed:
            AFTER[name](c, row)
    except Exception as exc:  # noqa: BLE001 - a fault that breaks the harness is a failed row
        row.note = f"{type(exc).__name__}: {exc}"
        books = c.h.wait_accounted(5)
    row.info.pop("killed_at", None)
    row.records_in = c.h.sent - sent_before
    row.curated = books.curated - before.curated
    row.rejected = books.rejected - before.rejected
    row.lost = _lost(c, books) - lost_before
    row.duplicates = books.duplicates - before.duplicates
    return row


def _lost(c: Chaos, books: Any) -> int:
    return len(c.h.sent_good - books.ids) + max(0, c.h.sent_bad - books.rejected)
