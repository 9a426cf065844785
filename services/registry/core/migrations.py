"""The registry's SQLite schema, as migrations: the store applies those past the database's
PRAGMA user_version, in order, each in one transaction. Append only; never edit one that
shipped."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE models (
        name TEXT PRIMARY KEY, dataset TEXT NOT NULL, target TEXT NOT NULL,
        spec_json TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE TABLE versions (
        model TEXT NOT NULL REFERENCES models(name), version INTEGER NOT NULL,
        status TEXT NOT NULL, artifact_uri TEXT NOT NULL, artifact_sha256 TEXT NOT NULL,
        profile_uri TEXT NOT NULL, metrics_json TEXT NOT NULL, lineage_json TEXT NOT NULL,
        decision_reason TEXT NOT NULL, run_id TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
        promoted INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (model, version)
    );
    CREATE TABLE alias_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, alias TEXT NOT NULL,
        version INTEGER NOT NULL, previous_version INTEGER, reason TEXT NOT NULL,
        actor TEXT NOT NULL, at REAL NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, model TEXT NOT NULL,
        version INTEGER, action TEXT NOT NULL, reason TEXT NOT NULL, details_json TEXT NOT NULL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, topic TEXT NOT NULL,
        key TEXT NOT NULL, payload BLOB NOT NULL, sent INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_unsent ON outbox(sent, id);
    CREATE INDEX alias_by_model ON alias_history(model, id);
    """,
    # 2: what moved an alias (promote, approve, rollback) and the chain an audit record belongs to
    """
    ALTER TABLE alias_history ADD COLUMN action TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit ADD COLUMN correlation_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX audit_by_model ON audit(model, version, id)
    """,
    # 3: immutable spec versions (the current spec stays in models.spec_json), per-slice metrics
    """
    CREATE TABLE spec_versions (
        model TEXT NOT NULL REFERENCES models(name), number INTEGER NOT NULL,
        spec_json TEXT NOT NULL, sha256 TEXT NOT NULL, author TEXT NOT NULL,
        created_at REAL NOT NULL, comment TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (model, number)
    );
    INSERT INTO spec_versions (model, number, spec_json, sha256, author, created_at, comment)
        SELECT name, 1, spec_json, '', 'migration', created_at,
        'the spec the model had before spec versions' FROM models;
    ALTER TABLE versions ADD COLUMN slices_json TEXT NOT NULL DEFAULT '[]'
    """,
    # 4: outbox rows hold a domain event as JSON (format 'event-json', see outbox.py); rows
    # written before hold an encoded protobuf Envelope, which the default marks to be sent as is
    """
    ALTER TABLE outbox ADD COLUMN format TEXT NOT NULL DEFAULT 'envelope'
    """,
    # 5: fleets: a partition model (FLEET/COLUMN=VALUE) names its fleet, whose spec it uses
    """
    ALTER TABLE models ADD COLUMN fleet TEXT NOT NULL DEFAULT '';
    CREATE INDEX models_by_fleet ON models(fleet, name)
    """,
    # 6: a revision per model, moved by triggers on every change that shows in a listing (so no
    # code path can forget it): ListModels(changed_after=R) lists only models changed after R.
    # A fleet's spec change moves its partitions too (their spec is the fleet's).
    """
    ALTER TABLE models ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX models_by_revision ON models(revision);
    CREATE TRIGGER revision_on_model_insert AFTER INSERT ON models BEGIN
        UPDATE models SET revision = (SELECT MAX(revision) + 1 FROM models)
        WHERE name = NEW.name;
    END;
    CREATE TRIGGER revision_on_spec AFTER UPDATE OF spec_json ON models BEGIN
        UPDATE models SET revision = (SELECT MAX(revision) + 1 FROM models)
        WHERE name = NEW.name OR fleet = NEW.name;
    END;
    CREATE TRIGGER revision_on_version_insert AFTER INSERT ON versions BEGIN
        UPDATE models SET revision = (SELECT MAX(revision) + 1 FROM models)
        WHERE name = NEW.model;
    END;
    CREATE TRIGGER revision_on_version_status AFTER UPDATE OF status ON versions BEGIN
        UPDATE models SET revision = (SELECT MAX(revision) + 1 FROM models)
        WHERE name = NEW.model;
    END
    """,
)
