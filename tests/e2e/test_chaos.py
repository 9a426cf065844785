"""The short chaos matrix on the real stack, on the embedded broker and on Apache Kafka: kill -9
validation mid-stream, poison messages on every consumed topic, kill -9 serving mid-swap, one
drift episode delivered three times with training killed mid-run. Each must lose no row, curate
none twice, and leave a loop that still closes (`driftloop bench chaos` runs the full matrix).

On Kafka the matrix also restarts the broker (kill -9, same log dir): a property only Kafka has
(the embedded broker is memory-only), so only there must rows that were acknowledged but still
unread when it died be curated afterwards, from the offsets validation had committed."""

from __future__ import annotations

from pathlib import Path

import kafka_broker
import pytest

from driftloop.shared.cli.bench.chaos import run_matrix

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

FAULTS = ["kill_validation", "poison", "kill_serving", "duplicated_episode"]
KAFKA_ONLY = ["broker_restart"]


@pytest.mark.parametrize("broker", ["embedded", "kafka"])
def test_short_chaos_matrix_loses_nothing_and_the_loop_closes(tmp_path: Path, broker: str) -> None:
    faults = FAULTS + (KAFKA_ONLY if broker == "kafka" else [])
    if broker == "kafka" and (reason := kafka_broker.missing()) is not None:
        kafka_broker.skip_or_fail(reason)
    report = run_matrix(faults, store="local", rows=400, data_dir=tmp_path / "stack", broker=broker)

    rows = {r["fault"]: r for r in report["faults"]}
    assert list(rows) == faults
    for name, row in rows.items():
        assert row["injected"], name
        assert row["lost"] == 0 and row["duplicates"] == 0, row
        assert row["records_in"] == row["curated"] + row["rejected"] == 400, row
        assert row["rejected"] > 0, "the bad rows of the test data were rejected, not lost"
        assert row["loop_closed"], row
        assert all(row["checks"].values()), row
    assert rows["poison"]["checks"]["garbage_dead_lettered_on_every_topic"]
    assert rows["duplicated_episode"]["checks"]["episode_trained_once"]
    assert rows["duplicated_episode"]["info"]["runs_for_episode"] == 1
    if broker == "kafka":
        restart = rows["broker_restart"]
        for check in ("log_kept", "committed_offsets_kept", "unread_rows_curated_after_restart"):
            assert restart["checks"][check], restart
        assert restart["info"]["rows_unread_at_kill"] > 0, restart
    assert report["faults_survived"] == len(faults)
    assert report["records_lost"] == 0 and report["duplicates"] == 0
    assert report["versions_registered_twice"] == 0
    assert report["stack_exit_code"] == 0, "the stack stopped cleanly after the faults"
