"""The schema: current resources, their history, one search-index table per search parameter type,
and the outbox. SQLAlchemy Core (no ORM): the write path is bulk inserts and the read path is JSON.

Every index row points at ``resource.pk`` (a surrogate key that never changes for a resource) and
repeats ``res_type`` and ``param`` so that one composite index answers ``Type?param=value``.
Dates are stored as ranges of naive UTC datetimes (search.html#date: a value is an implicit range).
"""
from __future__ import annotations

from sqlalchemy import (DDL, JSON, BigInteger, Boolean, Column, Date, DateTime, Float, ForeignKey, Index, Integer,
                        LargeBinary, MetaData, String, Table, Text, event, func, literal_column, text)
from sqlalchemy.dialects.postgresql import JSONB

from . import append_only
from . import policy_version as policy_version_triggers

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

# JSONB on PostgreSQL (queryable, numeric keeps its scale); JSON text on SQLite.
FhirJson = JSON().with_variant(JSONB(), "postgresql")
# A resource body: the JSON text exactly as written, ``json`` (not ``jsonb``) on PostgreSQL too. A resource
# read back must equal what was sent, decimals as written (datatypes.html#decimal), and jsonb keeps a
# number as ``numeric``, which prints -1.000000000000000000E+245 as 246 digits. The server never queries
# inside a body in SQL (search reads the idx_* tables), and json is cheaper than jsonb both to write (no
# conversion to the binary form) and to read (no conversion back to text).
ResourceJson = JSON()
# SQLite only auto-increments an INTEGER PRIMARY KEY.
PrimaryKey = BigInteger().with_variant(Integer(), "sqlite")

# (the partial index's predicate; a query uses the index only if it holds this very term: policy.flagged)
POLICY_FLAGGED = "sensitivity <> 0 OR agencies IS NULL"

resource = Table(
    "resource", metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    # The client's JSON with server-owned id and meta set; NULL once deleted.
    Column("content", ResourceJson, nullable=True),
    # What the access policy's SQL tests (fhir_server/auth/labels.py policy_columns, written with
    # every version): the SENSITIVE security labels as bits, and the source-agency and owner-client
    # tag codes, tab-delimited. A row written without them is withheld (every bit; no agency).
    Column("sensitivity", Integer, nullable=False, server_default=text("-1")),
    Column("agencies", Text, nullable=True),
    Column("owners", Text, nullable=True),
    Index("ux_resource_type_id", "res_type", "res_id", unique=True),
    Index("ix_resource_type_updated", "res_type", "last_updated"),
    Index("ix_resource_updated", "last_updated"),
    # The few deleted resources, by type and id: "is this Patient deleted" for a whole list at once
    # ($triage's visibility filter, triage/query.py) without reading every live row.
    Index("ix_resource_deleted", "res_type", "res_id", postgresql_where=text("deleted"), sqlite_where=text("deleted")),
    # The few rows the access policy may hide by their columns alone: labelled ones, and ones whose
    # columns were never written (NULL agencies) — $triage's list of hidden Patients
    # (policy.Visibility.hidden_patients) without reading every Patient row.
    Index("ix_resource_policy_flagged", "res_type", postgresql_where=text(POLICY_FLAGGED),
          sqlite_where=text(POLICY_FLAGGED)),
)

resource_history = Table(
    "resource_history", metadata,
    Column("resource_pk", PrimaryKey, ForeignKey("resource.pk"), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("last_updated", DateTime, nullable=False),
    # http.html#history: the method that produced the version (POST, PUT, PATCH, DELETE).
    Column("method", String(8), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", ResourceJson, nullable=True),
    Index("ix_resource_history_type_updated", "res_type", "last_updated"),
    Index("ix_resource_history_updated", "last_updated"),
)


def _index_table(name: str, *value_columns: Column, value_indexes: list[tuple[str, ...]]) -> Table:
    table = Table(
        name, metadata,
        # No foreign key: resource rows are never deleted (deletion is a version), the repository
        # rewrites index rows in the same transaction as the resource, and the constraint check cost
        # ~40 µs of PostgreSQL time per index row batch on ingest (bench/ingest.py).
        Column("resource_pk", PrimaryKey, nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(64), nullable=False),
        *value_columns,
    )
    Index(f"ix_{name}_resource", table.c.resource_pk)
    for cols in value_indexes:
        Index(f"ix_{name}_{'_'.join(cols)}", table.c.res_type, table.c.param,
              *[table.c[c] for c in cols], table.c.resource_pk)
    return table


# token: Coding / CodeableConcept / Identifier / ContactPoint / code / boolean / id.
idx_token = _index_table(
    "idx_token",
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    # display / text (for :text) and Identifier.type coding (for :of-type) as "system|code".
    Column("text", String(255), nullable=True),
    Column("type_system", String(255), nullable=True),
    Column("type_code", String(255), nullable=True),
    value_indexes=[("code", "system")],
)

# string: value_norm is lower-cased and accent-stripped (search.html#string).
idx_string = _index_table(
    "idx_string",
    Column("value_norm", String(255), nullable=False),
    Column("value_exact", Text, nullable=False),
    value_indexes=[("value_norm",)],
)
# Prefix search (``LIKE 'abc%'``) can only use a btree under the C collation or with pattern ops;
# servers usually run a locale collation, so give PostgreSQL a pattern-ops index as well.
Index("ix_idx_string_prefix", idx_string.c.res_type, idx_string.c.param, idx_string.c.value_norm,
      idx_string.c.resource_pk, postgresql_ops={"value_norm": "varchar_pattern_ops"})

idx_date = _index_table(
    "idx_date",
    Column("low", DateTime, nullable=True),  # NULL = unbounded below
    Column("high", DateTime, nullable=True),  # NULL = unbounded above
    value_indexes=[("low",), ("high",)],
)

idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    # Absolute or canonical references that are not to this server, and versioned refs.
    Column("target_url", Text, nullable=True),
    Column("target_version", String(64), nullable=True),
    value_indexes=[("target_id", "target_type")],
)

idx_quantity = _index_table(
    "idx_quantity",
    Column("low", Float, nullable=True),
    Column("value", Float, nullable=True),
    Column("high", Float, nullable=True),
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    Column("unit", String(255), nullable=True),
    value_indexes=[("value",)],
)

idx_number = _index_table(
    "idx_number",
    Column("low", Float, nullable=True),
    Column("value", Float, nullable=True),
    Column("high", Float, nullable=True),
    value_indexes=[("value",)],
)

idx_uri = _index_table(
    "idx_uri",
    Column("value", Text, nullable=False),
    value_indexes=[("value",)],
)
Index("ix_idx_uri_prefix", idx_uri.c.res_type, idx_uri.c.param, idx_uri.c.value,
      postgresql_ops={"value": "text_pattern_ops"})

# _text (narrative) and _content (all the text) (search.html#text, search/text.py): one row per
# resource and param holding its distinct folded words, " a b c ", matched as whole words. PostgreSQL
# answers from a GIN index over the words' tsvector; SQLite scans the type's rows with LIKE.
idx_text = _index_table(
    "idx_text",
    Column("words", Text, nullable=False),
    value_indexes=[],
)
Index("ix_idx_text_type", idx_text.c.res_type, idx_text.c.param, idx_text.c.resource_pk)
idx_text.append_constraint(
    Index("ix_idx_text_words", func.to_tsvector(literal_column("'simple'::regconfig"), idx_text.c.words),
          postgresql_using="gin").ddl_if(dialect="postgresql"))

# composite (search.html#composite): one row per value of one component of one element instance;
# ``param`` is "<code>$<component index>" and ``grp`` numbers the instance within the resource, so
# components are matched on the same element by joining on (resource_pk, grp). When the first
# component is a token (all R4 composites but one) its system/code is copied into the rows of the
# others as ``anchor_*`` (one row per pair), so a two-component search is one index range scan.
# Columns by component type: token (system, code), quantity/number (low, value, high; system, code,
# unit), date (date_low, date_high), string (value_norm, value_exact; uri in value_exact),
# reference (target_*).
idx_composite = Table(
    "idx_composite", metadata,
    Column("resource_pk", PrimaryKey, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("grp", Integer, nullable=False),
    Column("anchor_system", String(255), nullable=True),
    Column("anchor_code", String(255), nullable=True),
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    Column("unit", String(255), nullable=True),
    Column("low", Float, nullable=True),
    Column("value", Float, nullable=True),
    Column("high", Float, nullable=True),
    Column("date_low", DateTime, nullable=True),
    Column("date_high", DateTime, nullable=True),
    Column("value_norm", String(255), nullable=True),
    Column("value_exact", Text, nullable=True),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("target_url", Text, nullable=True),
    Index("ix_idx_composite_resource", "resource_pk", "param", "grp"),
    Index("ix_idx_composite_anchor_value", "res_type", "param", "anchor_code", "anchor_system", "value",
          "resource_pk"),
    Index("ix_idx_composite_anchor_code", "res_type", "param", "anchor_code", "anchor_system", "code", "system",
          "resource_pk"),
)

# special ``near`` (Location.position, WGS84 degrees): the btree on latitude then longitude serves the
# bounding-box prefilter of search/geo.py; the exact great-circle distance is checked on those rows.
idx_geo = Table(
    "idx_geo", metadata,
    Column("resource_pk", PrimaryKey, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("latitude", Float, nullable=False),
    Column("longitude", Float, nullable=False),
    Index("ix_idx_geo_resource", "resource_pk"),
    Index("ix_idx_geo_latitude_longitude", "res_type", "param", "latitude", "longitude", "resource_pk"),
)

# PostgreSQL extended statistics (CREATE STATISTICS) over columns the planner would otherwise take as
# independent: `param` all but fixes `res_type` and a reference's `target_type`, and a composite's
# anchor code its system. Without them a chain's `idx_reference` rows were estimated at a tenth of
# their number and a chained composite was probed once per referenced resource (bench/composite_near.py:
# 0.5 s instead of 0.1 s at 200,000 Observations). Migration 0017 creates them on existing databases.
EXTENDED_STATISTICS: dict[str, tuple[Table, tuple[str, ...]]] = {
    "st_idx_reference_type_param_target": (idx_reference, ("res_type", "param", "target_type")),
    "st_idx_composite_type_param_anchor": (idx_composite, ("res_type", "param", "anchor_code", "anchor_system")),
}
for _name, (_table, _columns) in EXTENDED_STATISTICS.items():
    event.listen(_table, "after_create", DDL(
        f"CREATE STATISTICS IF NOT EXISTS {_name} ON {', '.join(_columns)} FROM {_table.name}"
    ).execute_if(dialect="postgresql"))

INDEX_TABLES: dict[str, Table] = {
    "token": idx_token, "string": idx_string, "date": idx_date, "reference": idx_reference,
    "quantity": idx_quantity, "number": idx_number, "uri": idx_uri, "text": idx_text,
    "composite": idx_composite, "geo": idx_geo,
}

# Written in the same transaction as every change; drained after commit by subscriptions, risk and
# audit workers (later issues). Rows are never updated by the writer, only marked done by consumers.
outbox = Table(
    "outbox", metadata,
    Column("id", PrimaryKey, primary_key=True, autoincrement=True),
    Column("created", DateTime, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("event", String(16), nullable=False),  # create | update | delete
    Column("processed_at", DateTime, nullable=True),
    Index("ix_outbox_pending", "processed_at", "id"),
)

# The FHIR asynchronous request pattern (async.html): one row per kicked-off request, polled at
# [base]/_async/[id]. Inputs are kept in the database so that any worker process can run the job.
async_job = Table(
    "async_job", metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(64), nullable=False),  # e.g. import-agency-data
    Column("status", String(16), nullable=False),  # accepted | in-progress | completed | failed | cancelled
    Column("created", DateTime, nullable=False),
    Column("updated", DateTime, nullable=False),
    Column("client_id", String(255), nullable=True),
    Column("request", FhirJson, nullable=False),  # the parameters the job needs (format, lenient…)
    Column("progress", String(255), nullable=True),
    Column("result_status", Integer, nullable=True),
    Column("result", FhirJson, nullable=True),  # the response body once completed or failed
    Index("ix_async_job_status", "status", "updated"),
)

async_job_input = Table(
    "async_job_input", metadata,
    Column("job_id", String(64), ForeignKey("async_job.id", ondelete="CASCADE"), primary_key=True),
    Column("ordinal", Integer, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("content", LargeBinary, nullable=False),
)

# -- authentication (fhir_server/auth) -------------------------------------------------------------
# Everything the token endpoint and token verification share between gunicorn workers lives here,
# never in one process: registered clients, client-assertion ids already used, the signing keys the
# server generated for itself (only when none is configured), and fetched client JWKS.

# SMART backend-services clients (backend-services.html#registering-a-client-communicating-public-keys).
auth_client = Table(
    "auth_client", metadata,
    Column("client_id", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("agency", String(64), nullable=False),  # e.g. la:201, police:01, health:RXX
    Column("role", String(64), nullable=False),  # e.g. mash-practitioner, school-dsl, auditor
    Column("scopes", Text, nullable=False),  # the most it may be granted, space-separated
    Column("jwks", JSON, nullable=True),  # inline public JWK Set, or
    Column("jwks_url", Text, nullable=True),  # a JWK Set URL on the configured trusted list
    Column("active", Boolean, nullable=False),
    Column("created", DateTime, nullable=False),
    Column("updated", DateTime, nullable=False),
)

# Client-assertion ``jti`` values seen, kept until the assertion expires: a second use is a replay.
auth_jti = Table(
    "auth_jti", metadata,
    Column("client_id", String(255), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", DateTime, nullable=False),
    Index("ix_auth_jti_expires_at", "expires_at"),
)

# Keys the server signs with when none is configured (development and tests): ``issuer`` is
# "server" (access tokens) or "dev" (the development issuer); the highest ``slot`` signs, all verify.
auth_signing_key = Table(
    "auth_signing_key", metadata,
    Column("kid", String(128), primary_key=True),
    Column("issuer", String(16), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("alg", String(8), nullable=False),
    Column("private_pem", Text, nullable=False),
    Column("created", DateTime, nullable=False),
    Index("ux_auth_signing_key_issuer_slot", "issuer", "slot", unique=True),
)

# JWK Sets fetched from trusted URLs (client jwks_url, OpenID Connect provider), shared by workers.
auth_jwks_cache = Table(
    "auth_jwks_cache", metadata,
    Column("url", String(2048), primary_key=True),
    Column("jwks", JSON, nullable=False),
    Column("fetched_at", DateTime, nullable=False),
)

# -- subscriptions (subscriptions/; docs/subscriptions.md) -----------------------------------------
# The delivery state of each Subscription resource, kept in step with it by a write hook in the
# same transaction: what the matcher and the workers need without parsing the resource, plus what
# must never be served (the signing secret) and the delivery cursor (events up to
# ``delivered_through`` reached the endpoint, in order).
subscription_state = Table(
    "subscription_state", metadata,
    Column("sub_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),  # requested | active | error | off
    Column("topic", Text, nullable=False),
    Column("spec", JSON, nullable=False),  # filters, channel, payload (subscriptions/spec.py)
    Column("secret", String(255), nullable=False),  # HMAC-SHA256 key for the signature header
    Column("event_count", BigInteger, nullable=False),  # events-since-subscription-start
    Column("delivered_through", BigInteger, nullable=False),
    Column("handshake_due", Boolean, nullable=False),
    Column("failures", Integer, nullable=False),  # consecutive failed deliveries
    Column("next_attempt_at", DateTime, nullable=True),  # backoff: no attempt before this
    Column("last_error", Text, nullable=True),
    Column("last_sent_at", DateTime, nullable=True),  # for heartbeats
    Column("lease_owner", String(64), nullable=True),  # one deliverer at a time, in order
    Column("lease_until", DateTime, nullable=True),
    Column("updated", DateTime, nullable=False),
    # Who the Subscription notifies (subscriptions/access.py): client, agency, role, scopes,
    # purpose of use, practitioner of its last client write. NULL (before migration 0019): nothing.
    Column("access", JSON, nullable=True),
    Index("ix_subscription_state_status", "status"),
)

# Every event matched to a subscription, numbered 1, 2, 3… per subscription (event-number), kept
# for ``$events`` catch-up; the outbox id makes numbering a drain that is re-run idempotent.
subscription_event = Table(
    "subscription_event", metadata,
    Column("sub_id", String(64), primary_key=True),
    Column("number", BigInteger, primary_key=True),
    Column("outbox_id", BigInteger, nullable=False),
    Column("created", DateTime, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("interaction", String(16), nullable=False),  # create | update | delete
    Index("ux_subscription_event_outbox", "sub_id", "outbox_id", unique=True),
)

# -- audit trail (fhir_server/audit) ---------------------------------------------------------------
# One row per audited interaction, appended in the request's own transaction (never updated by a
# request). A sealing step later gives each row, in commit order, its place in the hash chain
# (``chain_pos``, ``prev_hash``, ``hash`` = SHA-256 over the previous hash and the canonical JSON of
# ``content``) and copies it into ``resource`` as a searchable AuditEvent.
audit_event = Table(
    "audit_event", metadata,
    Column("seq", PrimaryKey, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),  # AuditEvent.id
    Column("recorded", DateTime, nullable=False),
    # The AuditEvent as recorded, without the chain extension. JSON text, not JSONB: it is never
    # queried here (searches use the published copy), and storing text is cheaper on every request.
    Column("content", JSON, nullable=False),
    Column("chain_pos", BigInteger, nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Column("sealed_at", DateTime, nullable=True),
    Index("ux_audit_event_chain_pos", "chain_pos", unique=True),
    # only the rows waiting to be sealed (few at any time)
    Index("ix_audit_event_pending", "seq", postgresql_where=text("chain_pos IS NULL"),
          sqlite_where=text("chain_pos IS NULL")),
)
append_only.attach(audit_event)  # the database refuses UPDATE/DELETE of a recorded AuditEvent
# The sealer's lookup of an expanded read's event (and the audit_pending DELETE trigger's check).
Index("ix_audit_event_event_id", audit_event.c.event_id)

# PostgreSQL reads and searches: the compact AuditEvent that the read statement itself appends (a
# data-modifying CTE, audit/pending.py) — the AuditEvent as known before the statement (``head``)
# and what the statement disclosed (``returned``: "Type/id/_history/v", in the order answered). The
# sealer expands each into the full AuditEvent in ``audit_event`` and only then removes it (a
# trigger refuses any other UPDATE or DELETE: storage/append_only.py).
audit_pending = Table(
    "audit_pending", metadata,
    Column("seq", PrimaryKey, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("recorded", DateTime, nullable=False),
    Column("head", JSON, nullable=False),
    Column("returned", JSON, nullable=False),
)
append_only.PENDING.attach(audit_pending)

# Raised by triggers on every Consent/Organization write (storage/policy_version.py): processes cache
# the Consents and check this in the statement that writes a read's AuditEvent.
policy_version = Table(
    "policy_version", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)
policy_version_triggers.attach(metadata)

# -- risk scores (triage/) ---------------------------------------------------------------------------
# One row per child (the master Patient, or an agency record linked to none) with the current score, its
# reasons and what $triage shows and filters on; the escalation Flag open for the child, if any.
risk_score = Table(
    "risk_score", metadata,
    Column("child_id", String(64), primary_key=True),
    Column("score", Float, nullable=False),
    Column("band", String(16), nullable=False),
    Column("reasons", FhirJson, nullable=False),
    Column("fired", FhirJson, nullable=False),  # triggers active now
    Column("agencies", String(1000), nullable=False),  # "|police|police/20|health|health/R9Q|"
    Column("local_authority", String(16), nullable=True),
    Column("birth_date", Date, nullable=True),
    Column("lead", FhirJson, nullable=True),  # careManager Reference of the open EpisodeOfCare
    Column("open_episodes", FhirJson, nullable=False),
    Column("config_version", String(128), nullable=False),
    Column("scored_at", DateTime, nullable=False),
    Column("changed_at", DateTime, nullable=False),  # last change of score or band
    Column("assessment_id", String(64), nullable=True),
    Column("flag_id", String(64), nullable=True),  # the open escalation Flag
    Column("flag_band", String(16), nullable=True),
    Column("flag_by_band", Boolean, nullable=True),
    Column("flag_triggers", FhirJson, nullable=True),
    Index("ix_risk_score_score", "score", "child_id"),
    Index("ix_risk_score_band_score", "band", "score"),
    Index("ix_risk_score_changed_at", "changed_at"),
)

# Every change of a child's score (for the 7- and 30-day trend).
risk_score_history = Table(
    "risk_score_history", metadata,
    Column("id", PrimaryKey, primary_key=True, autoincrement=True),
    Column("child_id", String(64), nullable=False),
    Column("scored_at", DateTime, nullable=False),
    Column("score", Float, nullable=False),
    Column("band", String(16), nullable=False),
    Column("config_version", String(128), nullable=False),
    Index("ix_risk_score_history_child_id_scored_at", "child_id", "scored_at"),
)
