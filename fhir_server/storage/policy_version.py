"""A counter the database raises on every write of a Consent or an Organization (table
``policy_version``, one row), so that a process may cache what the Consents say and still apply a
changed Consent from the next request on (issue 4, "Consent at query time").

The counter is raised by triggers on ``resource`` (any writer: the API, the importer's COPY, SQL by
hand), in the writing transaction, so it changes exactly when the change commits. A reader that
used a cached copy checks the counter in the same statement as its AuditEvent INSERT
(audit/recorder.py) and is run again with fresh Consents when it moved.
"""
from __future__ import annotations

from .triggers import Triggers

TYPES = ("Consent", "Organization")
_BUMP = ("INSERT INTO policy_version (id, version) VALUES (1, 1) "
         "ON CONFLICT (id) DO UPDATE SET version = policy_version.version + 1")
_WHEN_NEW = " OR ".join(f"NEW.res_type = '{t}'" for t in TYPES)
_WHEN_OLD = " OR ".join(f"OLD.res_type = '{t}'" for t in TYPES)
# The version a reader compares with: 0 before any such write.
CURRENT = "coalesce((SELECT version FROM policy_version WHERE id = 1), 0)"

POSTGRESQL_CREATE = (
    f"""CREATE OR REPLACE FUNCTION policy_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_BUMP};
    RETURN NULL;
END
$$""",
    f"CREATE TRIGGER policy_version_write AFTER INSERT OR UPDATE ON resource FOR EACH ROW "
    f"WHEN ({_WHEN_NEW}) EXECUTE FUNCTION policy_version_bump()",
    f"CREATE TRIGGER policy_version_delete AFTER DELETE ON resource FOR EACH ROW "
    f"WHEN ({_WHEN_OLD}) EXECUTE FUNCTION policy_version_bump()",
)
POSTGRESQL_DROP = (
    "DROP TRIGGER IF EXISTS policy_version_delete ON resource",
    "DROP TRIGGER IF EXISTS policy_version_write ON resource",
    "DROP FUNCTION IF EXISTS policy_version_bump()",
)
SQLITE_CREATE = tuple(
    f"CREATE TRIGGER policy_version_{op.lower()} AFTER {op} ON resource WHEN {when} BEGIN {_BUMP}; END"
    for op, when in (("INSERT", _WHEN_NEW), ("UPDATE", _WHEN_NEW), ("DELETE", _WHEN_OLD)))
SQLITE_DROP = tuple(f"DROP TRIGGER IF EXISTS policy_version_{op}" for op in ("insert", "update", "delete"))


TRIGGERS = Triggers(POSTGRESQL_CREATE, POSTGRESQL_DROP, SQLITE_CREATE, SQLITE_DROP)
create_statements = TRIGGERS.create_statements
drop_statements = TRIGGERS.drop_statements
attach = TRIGGERS.attach  # create them whenever ``metadata.create_all`` creates the table(s)
