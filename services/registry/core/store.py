"""The registry's SQLite store: models, versions, the production alias history, audit, outbox.

WAL mode, schema migrations keyed by PRAGMA user_version, and one transaction per operation:
a version's status, its alias history, its audit row and its outbox events commit together.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from driftloop.services.registry.core.domain import (
    AliasChange,
    AuditRecord,
    History,
    Lineage,
    Model,
    ModelVersion,
    SliceMetric,
    SpecVersion,
    TrainingSpec,
)
from driftloop.services.registry.core.migrations import MIGRATIONS
from driftloop.services.registry.core.outbox import Outbox

PRODUCTION = "production"
SHADOW = "shadow"


class RegistryStore:
    """One SQLite connection shared by threads behind a lock (calls come via asyncio.to_thread)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        current = self._conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.transaction():
                # executescript would commit our transaction; run statement by statement
                for statement in _statements(script):
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {number}")
        with self.transaction() as tx:
            tx.hash_migrated_specs()

    @contextmanager
    def transaction(self) -> Iterator[RegistryTx]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any exception)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield RegistryTx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class RegistryTx:
    """The SQL of every registry operation, inside one open transaction (the outbox's SQL is
    `outbox`, so a decision's events commit with it)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn
        self.outbox = Outbox(conn)

    # models
    def insert_model(self, model: Model) -> None:
        self._c.execute(
            "INSERT INTO models (name, dataset, target, spec_json, created_at, fleet)"
            " VALUES (?,?,?,?,?,?)",
            (
                model.name,
                model.dataset,
                model.target,
                model.spec.to_json(),
                model.created_at,
                model.fleet,
            ),
        )

    def set_spec(self, model: str, spec: TrainingSpec, author: str, comment: str) -> SpecVersion:
        """Append spec version N+1 and make it the model's current spec."""
        row = self._c.execute(
            "SELECT COALESCE(MAX(number), 0) FROM spec_versions WHERE model = ?", (model,)
        ).fetchone()
        version = SpecVersion(
            model=model,
            number=int(row[0]) + 1,
            spec=spec,
            sha256=spec.sha256(),
            author=author,
            created_at=time.time(),
            comment=comment,
        )
        self._c.execute(
            "INSERT INTO spec_versions (model, number, spec_json, sha256, author, created_at,"
            " comment) VALUES (?,?,?,?,?,?,?)",
            (
                model,
                version.number,
                spec.to_json(),
                version.sha256,
                author,
                version.created_at,
                comment,
            ),
        )
        self._c.execute("UPDATE models SET spec_json = ? WHERE name = ?", (spec.to_json(), model))
        return version

    def spec_versions(self, model: str, number: int = 0) -> list[SpecVersion]:
        """Every spec version of `model` oldest first, or only `number` (when > 0)."""
        sql, args = "SELECT * FROM spec_versions WHERE model = ?", list[Any]([model])
        if number:
            sql, args = sql + " AND number = ?", [model, number]
        return [_spec_version(r) for r in self._c.execute(sql + " ORDER BY number", args)]

    def hash_migrated_specs(self) -> None:
        """Spec versions copied by migration 3 get their hash (SQLite has no SHA-256)."""
        rows = self._c.execute(
            "SELECT model, number, spec_json FROM spec_versions WHERE sha256 = ''"
        ).fetchall()
        for r in rows:
            self._c.execute(
                "UPDATE spec_versions SET sha256 = ? WHERE model = ? AND number = ?",
                (TrainingSpec.from_json(r["spec_json"]).sha256(), r["model"], r["number"]),
            )

    def model(self, name: str) -> Model | None:
        row = self._c.execute(_MODEL_SELECT + " WHERE m.name = ?", (name,)).fetchone()
        return None if row is None else _model(row)

    def models(self, fleet: str = "", changed_after: int = 0) -> list[Model]:
        """Every model, or only `fleet`'s partition models; only those whose revision is after
        `changed_after` when it is > 0."""
        where, args = "WHERE 1=1", list[Any]()
        if fleet:
            where, args = where + " AND m.fleet = ?", [*args, fleet]
        if changed_after > 0:
            where, args = where + " AND m.revision > ?", [*args, changed_after]
        rows = self._c.execute(f"{_MODEL_SELECT} {where} ORDER BY m.name", args)
        # why: a fleet's partitions share its spec; parsing that JSON once, not 16,000 times,
        # was most of a listing's cost
        specs: dict[str, TrainingSpec] = {}
        return [_model(r, specs) for r in rows]

    def revision(self) -> int:
        """The highest model revision: a listing's watermark (see migration 6)."""
        row = self._c.execute("SELECT COALESCE(MAX(revision), 0) FROM models").fetchone()
        return int(row[0])

    def partition_count(self, fleet: str) -> int:
        row = self._c.execute("SELECT COUNT(*) FROM models WHERE fleet = ?", (fleet,)).fetchone()
        return int(row[0])

    # versions
    def next_version(self, model: str) -> int:
        row = self._c.execute(
            "SELECT COALESCE(MAX(version), 0) FROM versions WHERE model = ?", (model,)
        ).fetchone()
        return int(row[0]) + 1

    def insert_version(self, v: ModelVersion, *, promoted: bool) -> None:
        self._c.execute(
            "INSERT INTO versions (model, version, status, artifact_uri, artifact_sha256,"
            " profile_uri, metrics_json, lineage_json, decision_reason, run_id, created_at,"
            " promoted, slices_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                v.model,
                int(v.version),
                v.status,
                v.artifact_uri,
                v.artifact_sha256,
                v.profile_uri,
                json.dumps(v.metrics, sort_keys=True),
                v.lineage.to_json(),
                v.decision_reason,
                v.run_id,
                v.created_at,
                int(promoted),
                json.dumps([asdict(x) for x in v.slice_metrics], sort_keys=True),
            ),
        )

    def set_status(self, model: str, version: str, status: str) -> None:
        self._c.execute(
            "UPDATE versions SET status = ? WHERE model = ? AND version = ?",
            (status, model, int(version)),
        )

    def version(self, model: str, version: str) -> ModelVersion | None:
        if not version.isdigit():
            return None
        row = self._c.execute(
            "SELECT * FROM versions WHERE model = ? AND version = ?", (model, int(version))
        ).fetchone()
        return None if row is None else _version(row)

    def version_by_run(self, run_id: str) -> tuple[ModelVersion, bool] | None:
        row = self._c.execute("SELECT * FROM versions WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else (_version(row), bool(row["promoted"]))

    def production(self, model: str) -> ModelVersion | None:
        row = self._c.execute(
            "SELECT * FROM versions WHERE model = ? AND status = ? ORDER BY version DESC LIMIT 1",
            (model, PRODUCTION),
        ).fetchone()
        return None if row is None else _version(row)

    def versions(
        self, model: str = "", status: str = "", correlation_id: str = ""
    ) -> list[ModelVersion]:
        sql, args = "SELECT * FROM versions WHERE 1=1", []
        for column, value in (("model", model), ("status", status)):
            if value:
                sql += f" AND {column} = ?"
                args.append(value)
        if correlation_id:
            sql += " AND json_extract(lineage_json, '$.correlation_id') = ?"
            args.append(correlation_id)
        sql += " ORDER BY model, version"
        return [_version(r) for r in self._c.execute(sql, args)]

    # production alias, audit (the outbox is `self.outbox`)
    def add_alias(
        self,
        model: str,
        version: str,
        previous: str,
        reason: str,
        actor: str,
        action: str = "",
        alias: str = PRODUCTION,
    ) -> None:
        """Record a move of `alias`; an empty `version` records that it was cleared."""
        self._c.execute(
            "INSERT INTO alias_history"
            " (model, alias, version, previous_version, reason, actor, at, action)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (
                model,
                alias,
                int(version) if version else 0,
                int(previous) if previous else None,
                reason,
                actor,
                time.time(),
                action,
            ),
        )

    def alias_history(self, model: str, alias: str | None = PRODUCTION) -> list[dict[str, Any]]:
        """Moves of `alias` (every alias when None), oldest first."""
        sql, args = "SELECT * FROM alias_history WHERE model = ?", [model]
        if alias is not None:
            sql, args = sql + " AND alias = ?", [model, alias]
        return [dict(r) for r in self._c.execute(sql + " ORDER BY id", args).fetchall()]

    def probation(self, model: str) -> str:
        """The version guarding a probation (the previous production version, run as a shadow
        after a policy promotion), or "" when the model has no probation open."""
        row = self._c.execute(
            "SELECT version, action FROM alias_history WHERE model = ? AND alias = ?"
            " ORDER BY id DESC LIMIT 1",
            (model, SHADOW),
        ).fetchone()
        return str(row["version"]) if row is not None and row["action"] == "probation" else ""

    def shadow(self, model: str) -> ModelVersion | None:
        """The version the shadow alias points at (status "shadow"), if any."""
        row = self._c.execute(
            "SELECT * FROM versions WHERE model = ? AND status = ? ORDER BY version DESC LIMIT 1",
            (model, SHADOW),
        ).fetchone()
        return None if row is None else _version(row)

    def add_audit(
        self,
        model: str,
        version: str,
        action: str,
        reason: str,
        details: dict[str, Any],
        correlation_id: str = "",
    ) -> None:
        self._c.execute(
            "INSERT INTO audit (at, model, version, action, reason, details_json, correlation_id)"
            " VALUES (?,?,?,?,?,?,?)",
            (
                time.time(),
                model,
                int(version) if version else None,
                action,
                reason,
                json.dumps(details, sort_keys=True),
                correlation_id,
            ),
        )

    def audit(self, model: str) -> list[dict[str, Any]]:
        rows = self._c.execute("SELECT * FROM audit WHERE model = ? ORDER BY id", (model,))
        return [dict(r) for r in rows]

    def history(self, model: str, version: str = "") -> History:
        """Alias moves to or from `version` (every move when empty) and its audit records."""
        aliases = [
            AliasChange(
                alias=r["alias"],
                version=_text(r["version"] or None),
                previous_version=_text(r["previous_version"]),
                reason=r["reason"],
                actor=r["actor"],
                at=r["at"],
                action=r["action"],
            )
            for r in self.alias_history(model, None)
            if not version or version in (str(r["version"]), str(r["previous_version"]))
        ]
        sql = "SELECT * FROM audit WHERE model = ?"
        args: list[Any] = [model]
        if version:
            sql, args = sql + " AND version = ?", [model, int(version)]
        audit = [
            AuditRecord(
                at=r["at"],
                model=r["model"],
                version=_text(r["version"]),
                action=r["action"],
                reason=r["reason"],
                details=json.loads(r["details_json"]),
                correlation_id=r["correlation_id"],
            )
            for r in self._c.execute(sql + " ORDER BY id", args)
        ]
        return History(aliases, audit)


# why the join: a partition model's spec is its fleet's current spec, never a copy that could
# fall behind a SetSpec on the fleet
_MODEL_SELECT = (
    "SELECT m.name, m.dataset, m.target, m.created_at, m.fleet,"
    " COALESCE(f.spec_json, m.spec_json) AS spec_json,"
    " (SELECT MAX(version) FROM versions v WHERE v.model = m.name) AS latest,"
    " (SELECT MAX(version) FROM versions v WHERE v.model = m.name AND v.status = 'production')"
    " AS production,"
    " (SELECT MAX(version) FROM versions v WHERE v.model = m.name AND v.status = 'shadow')"
    " AS shadow,"
    " (SELECT MAX(number) FROM spec_versions s WHERE s.model = COALESCE(f.name, m.name))"
    " AS spec_version,"
    " m.revision,"
    " CASE WHEN m.fleet = '' THEN (SELECT COUNT(*) FROM models p WHERE p.fleet = m.name)"
    " ELSE 0 END AS partitions"
    " FROM models m LEFT JOIN models f ON m.fleet != '' AND f.name = m.fleet"
)


def _statements(script: str) -> Iterator[str]:
    """A migration's statements, each complete (a trigger's body holds semicolons too)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        yield pending


def _model(row: sqlite3.Row, specs: dict[str, TrainingSpec] | None = None) -> Model:
    """`specs`: specs already parsed, by their JSON text (filled in as rows come)."""
    text = row["spec_json"]
    spec = specs.get(text) if specs is not None else None
    if spec is None:
        spec = TrainingSpec.from_json(text)
        if specs is not None:
            specs[text] = spec
    return Model(
        name=row["name"],
        dataset=row["dataset"],
        target=row["target"],
        spec=spec,
        created_at=row["created_at"],
        production_version=str(row["production"]) if row["production"] is not None else "",
        latest_version=int(row["latest"] or 0),
        spec_version=int(row["spec_version"] or 0),
        shadow_version=str(row["shadow"]) if row["shadow"] is not None else "",
        fleet=row["fleet"],
        partitions=int(row["partitions"]),
        revision=int(row["revision"]),
    )


def _spec_version(row: sqlite3.Row) -> SpecVersion:
    return SpecVersion(
        model=row["model"],
        number=int(row["number"]),
        spec=TrainingSpec.from_json(row["spec_json"]),
        sha256=row["sha256"],
        author=row["author"],
        created_at=row["created_at"],
        comment=row["comment"],
    )


def _version(row: sqlite3.Row) -> ModelVersion:
    return ModelVersion(
        model=row["model"],
        version=str(row["version"]),
        status=row["status"],
        artifact_uri=row["artifact_uri"],
        artifact_sha256=row["artifact_sha256"],
        profile_uri=row["profile_uri"],
        metrics=json.loads(row["metrics_json"]),
        lineage=Lineage.from_json(row["lineage_json"]),
        decision_reason=row["decision_reason"],
        created_at=row["created_at"],
        run_id=row["run_id"],
        slice_metrics=tuple(SliceMetric(**x) for x in json.loads(row["slices_json"])),
    )


def _text(value: int | None) -> str:
    return "" if value is None else str(value)
