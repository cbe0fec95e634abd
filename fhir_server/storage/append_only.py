"""The database itself refuses to rewrite the audit trail (issue 4: "the audit trail is append-only").

The hash chain (fhir_server/audit/chain.py) *detects* a changed or removed row; these triggers stop
one happening through ordinary SQL in the first place, whoever sends it (the application's own
database role included):

- ``DELETE`` (and, on PostgreSQL, ``TRUNCATE``) of ``audit_event`` is refused;
- ``UPDATE`` is refused unless it is the sealer's one permitted change: an unsealed row
  (``chain_pos IS NULL``) receives its chain values, and nothing it recorded (``seq``,
  ``event_id``, ``recorded``, ``content``) changes. A sealed row can never be updated again.

A database superuser can still disable triggers (``session_replication_role = replica``, ``DROP
TRIGGER``); that is the attacker the hash chain and ``$verify-audit`` are for (docs/security.md).
Retention purges are such a deliberate, privileged act (:func:`bypassed`).

The same statements serve ``metadata.create_all`` (tests, via the table's ``after_create`` event) and
the alembic migration 0012, so the two schemas cannot drift apart.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

from .triggers import Triggers

TRIGGER = "audit_event_append_only"
MESSAGE = "audit_event is append-only: an AuditEvent cannot be changed or removed once recorded"

POSTGRESQL_CREATE = (
    f"""CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.chain_pos IS NULL
       AND NEW.seq = OLD.seq AND NEW.event_id = OLD.event_id AND NEW.recorded = OLD.recorded
       AND NEW.content::text = OLD.content::text THEN
        RETURN NEW;  -- sealing: an unsealed row receives its chain values, once
    END IF;
    RAISE EXCEPTION USING MESSAGE = '{MESSAGE} (' || TG_OP || ' refused)',
                          ERRCODE = 'insufficient_privilege';
END
$$""",
    f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE OR DELETE ON audit_event "
    f"FOR EACH ROW EXECUTE FUNCTION {TRIGGER}()",
    f"CREATE TRIGGER {TRIGGER}_truncate BEFORE TRUNCATE ON audit_event "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {TRIGGER}()",
)
POSTGRESQL_DROP = (
    f"DROP TRIGGER IF EXISTS {TRIGGER}_truncate ON audit_event",
    f"DROP TRIGGER IF EXISTS {TRIGGER} ON audit_event",
    f"DROP FUNCTION IF EXISTS {TRIGGER}()",
)

SQLITE_CREATE = (
    f"""CREATE TRIGGER {TRIGGER}_delete BEFORE DELETE ON audit_event
BEGIN SELECT RAISE(ABORT, '{MESSAGE} (DELETE refused)'); END""",
    f"""CREATE TRIGGER {TRIGGER}_update BEFORE UPDATE ON audit_event
WHEN OLD.chain_pos IS NOT NULL OR NEW.seq IS NOT OLD.seq OR NEW.event_id IS NOT OLD.event_id
     OR NEW.recorded IS NOT OLD.recorded OR NEW.content IS NOT OLD.content
BEGIN SELECT RAISE(ABORT, '{MESSAGE} (UPDATE refused)'); END""",
)
SQLITE_DROP = (
    f"DROP TRIGGER IF EXISTS {TRIGGER}_delete",
    f"DROP TRIGGER IF EXISTS {TRIGGER}_update",
)


TRIGGERS = Triggers(POSTGRESQL_CREATE, POSTGRESQL_DROP, SQLITE_CREATE, SQLITE_DROP)
create_statements = TRIGGERS.create_statements
drop_statements = TRIGGERS.drop_statements

# ``audit_pending`` (the compact AuditEvents that reads append in their own statement, expanded by
# the sealer: audit/pending.py): never updated; a row may be removed only once the AuditEvent it
# expands to is in ``audit_event`` (the sealer does both in one transaction), so a read's record
# cannot be dropped before it is in the chain.
PENDING_TRIGGER = "audit_pending_append_only"
PENDING_MESSAGE = "audit_pending is append-only: a pending AuditEvent is removed only once it is in audit_event"
PENDING = Triggers(
    (f"""CREATE OR REPLACE FUNCTION {PENDING_TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM audit_event WHERE event_id = OLD.event_id) THEN
        RETURN OLD;  -- expanded into the trail
    END IF;
    RAISE EXCEPTION USING MESSAGE = '{PENDING_MESSAGE} (' || TG_OP || ' refused)',
                          ERRCODE = 'insufficient_privilege';
END
$$""",
     f"CREATE TRIGGER {PENDING_TRIGGER} BEFORE UPDATE OR DELETE ON audit_pending "
     f"FOR EACH ROW EXECUTE FUNCTION {PENDING_TRIGGER}()",
     f"CREATE TRIGGER {PENDING_TRIGGER}_truncate BEFORE TRUNCATE ON audit_pending "
     f"FOR EACH STATEMENT EXECUTE FUNCTION {PENDING_TRIGGER}()"),
    (f"DROP TRIGGER IF EXISTS {PENDING_TRIGGER}_truncate ON audit_pending",
     f"DROP TRIGGER IF EXISTS {PENDING_TRIGGER} ON audit_pending",
     f"DROP FUNCTION IF EXISTS {PENDING_TRIGGER}()"),
    (f"""CREATE TRIGGER {PENDING_TRIGGER}_delete BEFORE DELETE ON audit_pending
WHEN NOT EXISTS (SELECT 1 FROM audit_event WHERE event_id = OLD.event_id)
BEGIN SELECT RAISE(ABORT, '{PENDING_MESSAGE} (DELETE refused)'); END""",
     f"""CREATE TRIGGER {PENDING_TRIGGER}_update BEFORE UPDATE ON audit_pending
BEGIN SELECT RAISE(ABORT, '{PENDING_MESSAGE} (UPDATE refused)'); END"""),
    (f"DROP TRIGGER IF EXISTS {PENDING_TRIGGER}_delete", f"DROP TRIGGER IF EXISTS {PENDING_TRIGGER}_update"),
)
attach = TRIGGERS.attach  # create them whenever ``metadata.create_all`` creates the table(s)


@contextmanager
def bypassed(conn: Connection) -> Iterator[None]:
    """Inside the caller's transaction, let privileged maintenance (a retention purge, emptying a
    test database) change the trail: PostgreSQL skips triggers for this transaction
    (``session_replication_role``, superuser only); SQLite drops them and creates them again."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        yield
        # (after an error the transaction rolls back, which ends the SET LOCAL too)
        conn.exec_driver_sql("SET LOCAL session_replication_role = origin")
        return
    for statement in (*drop_statements(dialect), *PENDING.drop_statements(dialect)):
        conn.exec_driver_sql(statement)
    yield
    # (after an error the caller's rollback brings the triggers back: SQLite's DDL is transactional)
    for statement in (*create_statements(dialect), *PENDING.create_statements(dialect)):
        conn.exec_driver_sql(statement)
