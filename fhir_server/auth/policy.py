"""Agency and role policy: who reads what, for which purpose, and who writes what.

The rules are data (the tables below), read in three places that must agree:

- :class:`PolicyGuard` (a Router guard) refuses with 403 what a role may never do: read a type
  outside its ``read_types``, write a type its agency does not own, break the glass without the
  right to;
- :meth:`Visibility.clause` is the SQL criterion every search, count, include, chain, ``_has``,
  compartment search and history query ANDs in (the one hook in ``search/query.py``), so hidden
  resources are never counted, paged or included;
- :meth:`Visibility.allows` is the same rule on one resource's JSON, for reads and the single view.

Reads: the scopes say which types; the role narrows types and source agencies; security labels
(:mod:`.labels`) are released per role and purpose of use; Consent deny provisions
(:mod:`.consent`) hide a child's data from an actor or a purpose; ``OWNER_ONLY_TYPES`` (Subscription:
its headers are a receiver's credentials) only the client that created it sees, changes or deletes,
whatever its role (anyone else is answered as if it did not exist). Writes: an agency writes only
resources tagged with its own source agency (new ones are stamped with its tag) and only the types
its kind of agency owns; shared reference data (Organization, Location…) any writer may update.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import (ColumnElement, FromClause, Integer, String, and_, exists, false, literal, literal_column, not_,
                        or_, select, true, union)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from ..storage.tables import idx_reference, idx_token, resource
from . import events, labels
from ..errors import Hidden
from .errors import AccessDenied
from .labels import Label

if TYPE_CHECKING:
    from sqlalchemy import Connection, Select

    from ..repository.context import RequestContext
    from ..rest.messages import FhirRequest, FhirResponse
    from .consent import ConsentCache, DenyRule

Cond = ColumnElement[bool]
ALL = None  # "every type"

# -- purposes of use ----------------------------------------------------------------------------
# A purpose-of-use code (v3 ActReason, NHIN purpose of use, or our local alias) → its class.
SAFEGUARDING, CARE, AUDIT, BREAK_GLASS = "safeguarding", "care", "audit", "break-glass"
PURPOSES: Mapping[str, str] = {
    "safeguarding": SAFEGUARDING,  # local alias
    "ABUSE": SAFEGUARDING,  # NHIN purpose of use: abuse / safeguarding investigation
    "OVRTPS": SAFEGUARDING,  # v3 ActReason: override for third-party safety
    "CAREMGT": CARE, "TREAT": CARE, "ETREAT": CARE, "COC": CARE,
    "HOPERAT": AUDIT, "HCOMPL": AUDIT, "HSYSADMIN": AUDIT, "GOV": AUDIT, "audit": AUDIT,
    "BTG": BREAK_GLASS,
}


def purpose_class(purpose: str | None) -> str | None:
    """The class of a purpose-of-use code, with or without its system (``system|code``)."""
    if not purpose:
        return None
    return PURPOSES.get(purpose.rsplit("|", 1)[-1])


# -- roles ------------------------------------------------------------------------------------

CLINICAL_LABELS = frozenset({labels.PSY, labels.SEX, labels.ETH, labels.HIV})
SAFEGUARDING_LABELS = frozenset({labels.SDV, labels.SOC, labels.RESTRICTED})
# Withheld even from the agency whose records they are, unless the role and purpose release them.
NEVER_OWN_RELEASED = frozenset({labels.VERY_RESTRICTED})
REFERENCE_TYPES = frozenset({"Organization", "Location", "Practitioner", "PractitionerRole", "HealthcareService"})
AUDIT_TYPES = frozenset({"AuditEvent", "Provenance"})
# Types only the owning client (owner-client tag, stamped at create, within its agency's source-agency
# tag) and the server's own work see, change or delete, whatever the role: a Subscription's
# channel.header holds its receiver's credentials (Subscription.channel.header,
# subscription.html#channel). Every role sees its own ones, even outside its read_types. There is no
# agency administrator role (docs/security.md "Roles"): no other client of the agency sees them.
OWNER_ONLY_TYPES = frozenset({"Subscription"})


@dataclass(frozen=True)
class RolePolicy:
    """What one role reads. ``read_types``: None for every type. ``hidden_sources``: agency kinds
    whose data the role does not see, except the ``source_exempt`` types. ``release``: purpose class
    → the sensitive labels released for it (other sensitive labels stay withheld);
    ``release_types``: labels are released only on these types (None: on every type).
    ``break_glass``: may use purpose BTG (which then releases every label and overrides consent)."""

    read_types: frozenset[str] | None = ALL
    hidden_sources: frozenset[str] = frozenset()
    source_exempt: frozenset[str] = frozenset()
    release: Mapping[str, frozenset[Label]] = field(default_factory=dict)
    release_types: frozenset[str] | None = ALL
    break_glass: bool = False
    writes: bool = True


ROLES: Mapping[str, RolePolicy] = {
    # The multi-agency safeguarding hub: everything for safeguarding; sensitive labels withheld otherwise.
    "mash-practitioner": RolePolicy(
        release={SAFEGUARDING: SAFEGUARDING_LABELS | CLINICAL_LABELS | {labels.VERY_RESTRICTED},
                 CARE: frozenset({labels.SOC})},
        break_glass=True),
    "social-worker": RolePolicy(
        release={SAFEGUARDING: SAFEGUARDING_LABELS, CARE: frozenset({labels.SOC})}, break_glass=True),
    "health-safeguarding": RolePolicy(
        release={SAFEGUARDING: SAFEGUARDING_LABELS | CLINICAL_LABELS, CARE: CLINICAL_LABELS}, break_glass=True),
    "police": RolePolicy(hidden_sources=frozenset({"health"}), source_exempt=frozenset({"Flag", "Patient"}),
                         release={SAFEGUARDING: SAFEGUARDING_LABELS}, break_glass=True),
    # A school's designated safeguarding lead: the child, flags (Operation Encompass notices among
    # them) and education data; never health data; sensitive labels only on Flags, for safeguarding.
    "school-dsl": RolePolicy(
        read_types=frozenset({"Patient", "RelatedPerson", "Flag", "Observation", "EpisodeOfCare",
                              "Composition", *REFERENCE_TYPES}),
        hidden_sources=frozenset({"health", "police", "local-authority"}), source_exempt=frozenset({"Flag", "Patient"}),
        release={SAFEGUARDING: frozenset({labels.SDV, labels.RESTRICTED})}, release_types=frozenset({"Flag"})),
    # Auditors read the trail, never clinical or social-care content.
    "auditor": RolePolicy(read_types=AUDIT_TYPES | REFERENCE_TYPES, writes=False),
    # A data protection officer: as an auditor (and answers subject access requests: below).
    "dpo": RolePolicy(read_types=AUDIT_TYPES | REFERENCE_TYPES, writes=False),
}
# Operations on the trail that check their caller themselves (audit/operations.py require_auditor:
# role auditor or dpo with AuditEvent read): ``Patient/[id]/$subject-access`` exports everything held
# about a person (UK GDPR Art 15) although those roles read no clinical content otherwise.
AUDITOR_OPERATIONS = frozenset({"subject-access", "verify-audit"})
# A role not in the table: the scopes' types, no sensitive label, no break-glass.
DEFAULT_ROLE = RolePolicy()
# Trusted server-side work (RequestContext.system): no restriction at all.
UNRESTRICTED_ROLES = frozenset({"system"})

# -- writes ------------------------------------------------------------------------------------
# Agency kind → the types its clients may create, update or delete (None: every type). AuditEvent
# is the server's to write.
# Every writing agency: reference data, its Consents, the Provenance of what it writes, and its
# Subscriptions (notified only about what it may read: subscriptions/access.py).
COMMON_WRITES = frozenset({"Consent", "Provenance", "Subscription", *REFERENCE_TYPES})
WRITE_TYPES: Mapping[str, frozenset[str] | None] = {
    "local-authority": ALL,
    "health": frozenset({"Patient", "RelatedPerson", "Observation", "Encounter", "Condition", "Procedure", "Flag",
                         "DocumentReference", "AllergyIntolerance", "MedicationStatement", *COMMON_WRITES}),
    "police": frozenset({"Patient", "RelatedPerson", "Observation", "Flag", *COMMON_WRITES}),
    "education": frozenset({"Patient", "RelatedPerson", "Observation", "Flag", *COMMON_WRITES}),
}
SERVER_WRITTEN = frozenset({"AuditEvent"})


def role_policy(ctx: "RequestContext") -> RolePolicy:
    return ROLES.get(ctx.role or "", DEFAULT_ROLE)


def restricted(ctx: "RequestContext") -> bool:
    """True when the policy applies: a verified token that is not the server's own work (role
    ``system`` on a context the server made, or a token of our own token endpoint for a client an
    operator registered with that role — never a development or OpenID Connect token's claim)."""
    return ctx.authenticated and not (ctx.role in UNRESTRICTED_ROLES and ctx.issuer == "server")


# -- visibility ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Visibility:
    """What one request may see, as SQL (:meth:`clause`) and as a test on JSON (:meth:`allows`)."""

    read_types: frozenset[str] | None
    withheld: frozenset[Label]
    release_types: frozenset[str] | None  # withheld labels are released on these types
    released: frozenset[Label]
    hidden_sources: frozenset[str]
    source_exempt: frozenset[str]
    denies: tuple["DenyRule", ...] = ()
    # Consent refusals set aside for safeguarding: each share of their data is recorded (an event).
    overrides: tuple["DenyRule", ...] = ()
    ctx: "RequestContext | None" = field(default=None, compare=False)
    # The caller's own agency's tag code: labels protect what is shared, not an agency's own records.
    own: str | None = None
    # The caller's client id: an OWNER_ONLY_TYPES resource is seen only by the client owning it.
    client: str | None = None
    recorded: set[str] = field(default_factory=set, compare=False)
    # The policy_version of the cached Consents used (None: read from the database for this request).
    consent_version: int | None = None
    built: dict[int, tuple[FromClause, Cond]] = field(default_factory=dict, compare=False, repr=False)

    def disclosed(self, shown: "list[dict[str, Any]]") -> None:
        """Record what the caller is shown that a Consent refusal would have hidden."""
        if self.overrides and self.ctx is not None:
            from .consent import record_disclosures
            record_disclosures(self.ctx, self.overrides, shown, self.recorded)

    def clause(self, res: FromClause) -> Cond:
        """The condition a ``resource`` row (or alias) ``res`` must meet to be seen (built once per
        table or alias: a search's page and count queries share it)."""
        built = self.built.get(id(res))
        if built is None:
            built = self.built[id(res)] = (res, _table_clause(self) if res is resource else self._clause(res))
        return built[1]

    def _clause(self, res: FromClause) -> Cond:
        # Plain column tests on the row (labels.policy_columns), no sub-query: PostgreSQL plans every
        # statement afresh (plan_cache_mode=force_custom_plan, storage/db.py), and planning the EXISTS
        # probes on idx_token this clause used to hold cost ~0.35 ms a statement, more than running it.
        owner_only = sorted(OWNER_ONLY_TYPES)
        if self.own is None or self.client is None:
            others: Cond = res.c.res_type.not_in(_types(owner_only))
        else:  # an owner-only type: the caller's own (its agency's and client's), and then no other rule hides it
            others = or_(res.c.res_type.not_in(_types(owner_only)),
                         and_(_tagged(res.c.agencies, self.own), _tagged(res.c.owners, self.client)))
        return and_(others, or_(res.c.res_type.in_(_types(owner_only)), self._shared_clause(res)))

    def _shared_clause(self, res: FromClause) -> Cond:
        conds: list[Cond] = []
        if self.read_types is not None:
            conds.append(res.c.res_type.in_(_types(self.read_types)))
        strict = self.withheld & NEVER_OWN_RELEASED if self.own is not None else self.withheld
        soft = self.withheld - strict
        if strict:
            conds.append(not_(_has_label(res, strict)))
        # labels protect what is shared: the caller's own agency's records are not withheld from it
        # by them (but for NEVER_OWN_RELEASED: "very restricted" even inside the agency)
        shared: list[Cond] = [_has_label(res, soft)] if soft else []
        if self.release_types is not None and self.released:
            # released labels are released on the release types only
            shared.append(and_(res.c.res_type.not_in(_types(self.release_types)), _has_label(res, self.released)))
        if shared:
            hidden = or_(*shared)
            if self.own is not None:
                conds.append(or_(not_(hidden), _tagged(res.c.agencies, self.own)))
            else:
                conds.append(not_(hidden))
        if self.hidden_sources:
            # (agencies NULL: never computed, so maybe from a hidden source: hidden)
            from_hidden = or_(res.c.agencies.is_(None), *(
                res.c.agencies.contains(f"{labels.TAG_SEPARATOR}{kind}/", autoescape=True)
                for kind in sorted(self.hidden_sources)))
            conds.append(or_(res.c.res_type.in_(_types(self.source_exempt)) if self.source_exempt else false(),
                             not_(from_hidden)))
        conds.extend(not_(rule.clause(res)) for rule in self.denies)
        return and_(true(), *conds)

    def allows(self, content: dict[str, Any] | None) -> bool:
        if not isinstance(content, dict):
            return True
        res_type = str(content.get("resourceType"))
        if res_type in OWNER_ONLY_TYPES:
            return self.ctx is not None and owns(self.ctx, content)
        if self.read_types is not None and res_type not in self.read_types:
            return False
        found = labels.labels_of(content)
        own = self.own is not None and self.own in labels.source_agencies(content)
        if found & self.withheld & NEVER_OWN_RELEASED or (found & self.withheld and not own):
            return False
        if self.release_types is not None and res_type not in self.release_types and found & self.released \
                and not own:
            return False
        if self.hidden_sources and res_type not in self.source_exempt:
            kinds = {code.split("/", 1)[0] for code in labels.source_agencies(content)}
            if kinds & self.hidden_sources:
                return False
        return not any(rule.matches(content) for rule in self.denies)

    def allows_deleted(self, conn: "Connection", row: Any) -> bool:
        """Whether the caller may be told that ``row`` (a current ``resource`` row whose version is a
        deletion, so without content) was deleted (410), rather than answered as for an unknown id
        (404). A deletion keeps the policy columns of the version it deleted (``sensitivity``,
        ``agencies``, ``owners``: repository/sql.py _write_version), and :meth:`clause` — the very
        rule every search applies — decides on them, in SQL on that row: withheld labels, hidden
        source agencies, owner-only types, and the fail-closed defaults (every label bit, no
        agencies) all hide it, so a deleted resource the caller could not see answers as an id that
        never existed (its read, the vread of its deletion, a DELETE with If-Match)."""
        return conn.execute(select(literal(1)).select_from(resource).where(
            resource.c.pk == row.pk, self.clause(resource))).first() is not None

    def visible(self, conn: "Connection", refs: "Iterable[tuple[str, str]]") -> set[tuple[str, str]]:
        """Which of the (type, id) ``refs`` exist and may be seen (one query per type and 500 ids)."""
        wanted: dict[str, set[str]] = {}
        for res_type, res_id in refs:
            wanted.setdefault(res_type, set()).add(res_id)
        seen: set[tuple[str, str]] = set()
        for res_type, ids in wanted.items():
            ordered = sorted(ids)
            for i in range(0, len(ordered), 500):
                seen.update((t, r) for t, r in conn.execute(select(resource.c.res_type, resource.c.res_id).where(
                    resource.c.res_type == res_type, resource.c.res_id.in_(ordered[i:i + 500]),
                    resource.c.deleted == false(), self.clause(resource))))
        return seen

    def patient_visible(self, patient_id: Any) -> Cond:
        """SQL: the Patient ``patient_id`` (a column or value) may be seen, and so may every agency
        record its ``link`` names (a master Patient: a child's restricted record hides the child)."""
        me, linked = resource.alias(), resource.alias()
        ref = idx_reference.alias()
        hidden_record = (
            select(literal(1))
            .select_from(ref.join(linked, and_(linked.c.res_type == "Patient", linked.c.res_id == ref.c.target_id)))
            .where(ref.c.resource_pk == me.c.pk, ref.c.res_type == "Patient", ref.c.param == "link",
                   ref.c.target_type == "Patient", linked.c.deleted == false(), not_(self.clause(linked)))
            .correlate(me).exists())
        return (select(literal(1)).select_from(me)
                .where(me.c.res_type == "Patient", me.c.res_id == patient_id, me.c.deleted == false(),
                       self.clause(me), not_(hidden_record)).exists())

    def hidden_patients(self) -> "Select[Any] | None":
        """SQL: the ids of the (not deleted) Patient records the caller may not see — the Patients
        :meth:`clause` rejects — found from the few rows that can hide one instead of testing
        :meth:`clause` on every Patient: a Patient is hidden only by a label bit in its
        ``sensitivity`` column, policy columns never written (fail closed), a source tag of a hidden
        agency kind, or a Consent naming it or a Patient it refers to (the checks of
        :meth:`_shared_clause`; a Patient is never an owner-only type). :meth:`clause` itself
        then decides on those candidates, so the rule stays in one place. None when every Patient
        is a candidate (the role does not read Patients): test :meth:`patient_visible` per row."""
        if "Patient" in OWNER_ONLY_TYPES or (self.read_types is not None and "Patient" not in self.read_types):
            return None
        candidates: list[Any] = []
        suspect = self.withheld | (self.released if self.release_types is not None else frozenset())
        # From the columns the clause reads (not idx_token, which a row stored without the
        # repository lacks): a label bit the clause may hide by, or columns never written (the
        # defaults: every bit, NULL agencies — withheld, fail closed), through the partial index
        # ix_resource_policy_flagged on the few such rows.
        flagged = or_(resource.c.agencies.is_(None), _has_label(resource, suspect)) if suspect \
            else resource.c.agencies.is_(None)
        candidates.append(select(resource.c.pk).where(resource.c.res_type == "Patient", policy_flagged(resource),
                                                      flagged))
        if self.hidden_sources and "Patient" not in self.source_exempt:
            t = idx_token.alias()
            candidates.append(select(t.c.resource_pk).where(
                t.c.res_type == "Patient", t.c.param == "_tag", t.c.system == labels.AGENCY_TAG_SYSTEM,
                or_(*(t.c.code.like(f"{kind}/%") for kind in sorted(self.hidden_sources)))))
        named = sorted({p for rule in self.denies for p in rule.patients})
        if named:  # DenyRule.clause → in_patients: the Patient itself, or one it refers to (link)
            r = idx_reference.alias()
            candidates.append(select(resource.c.pk).where(resource.c.res_type == "Patient",
                                                          resource.c.res_id.in_(named)))
            candidates.append(select(r.c.resource_pk).where(r.c.res_type == "Patient", r.c.target_type == "Patient",
                                                            r.c.target_id.in_(named)))
        hidden = resource.alias()
        suspects = union(*candidates).subquery() if len(candidates) > 1 else candidates[0].subquery()
        return select(hidden.c.res_id).where(
            hidden.c.pk.in_(select(suspects.c[0])), hidden.c.res_type == "Patient", hidden.c.deleted == false(),
            not_(self.clause(hidden)))

    def redact(self, conn: "Connection", found: list[Any]) -> list[Any]:
        """Search results (``search.includes.Found``) with each Provenance's targets the caller may
        not see left out (an import Provenance names every record of a file: other children's too),
        tagged SUBSETTED (resource.html#tag). With none left, its one target is a Reference masked by
        the data-absent-reason extension: the Provenance stays (it was counted in Bundle.total)."""
        self.disclosed([f.content for f in found])
        provenances = [f for f in found if f.res_type == "Provenance"]
        if not provenances:
            return found
        seen = self.visible(conn, (ref for f in provenances for ref in _target_refs(f.content)))
        out = []
        for f in found:
            if f.res_type != "Provenance":
                out.append(f)
                continue
            targets = f.content.get("target") or []
            kept = [t for t in targets if _target_ref(t) in seen]
            if len(kept) == len(targets):
                out.append(f)
                continue
            meta = dict(f.content.get("meta") or {})
            meta["tag"] = [*(meta.get("tag") or []), SUBSETTED]
            out.append(replace(f, content={**f.content, "target": kept or [MASKED_REFERENCE], "meta": meta}))
        return out


# The condition on the ``resource`` table itself (every search's rows, every read) is the same
# for every request under the same policy, so a process builds it once per policy: building the
# SQLAlchemy expression cost more than PostgreSQL spends running it (cProfile: ~1 ms of a 2 ms
# search). A Visibility's key is its compared fields: role's types and labels, agency, client, the
# Consent rules (and the cached Consents' version), so a changed Consent is another key.
_TABLE_CLAUSES: "OrderedDict[Visibility, Cond]" = OrderedDict()
_TABLE_CLAUSES_LOCK = threading.Lock()
_TABLE_CLAUSES_SIZE = 512


def _table_clause(vis: Visibility) -> Cond:
    with _TABLE_CLAUSES_LOCK:
        cond = _TABLE_CLAUSES.get(vis)
        if cond is not None:
            _TABLE_CLAUSES.move_to_end(vis)
            return cond
    cond = vis._clause(resource)
    with _TABLE_CLAUSES_LOCK:
        _TABLE_CLAUSES[vis] = cond
        while len(_TABLE_CLAUSES) > _TABLE_CLAUSES_SIZE:
            _TABLE_CLAUSES.popitem(last=False)
    return cond


MASKED_REFERENCE = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                    "valueCode": "masked"}]}
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


def _target_ref(target: Any) -> tuple[str, str] | None:
    ref = target.get("reference") if isinstance(target, dict) else None
    if not isinstance(ref, str):
        return None
    parts = ref.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return (parts[-2], parts[-1]) if len(parts) >= 2 else None


def _target_refs(content: dict[str, Any]) -> list[tuple[str, str]]:
    return [r for r in map(_target_ref, content.get("target") or []) if r is not None]


def _has_label(res: FromClause, found: frozenset[Label]) -> Cond:
    """SQL: the row carries one of the labels ``found`` (all of them SENSITIVE: each has a bit)."""
    assert found <= labels.SENSITIVE, found - labels.SENSITIVE
    return res.c.sensitivity.op("&")(labels.label_mask(found)) != 0


def policy_flagged(res: FromClause) -> Cond:
    """SQL: the row is in the partial index ix_resource_policy_flagged (storage.tables.POLICY_FLAGGED:
    a label bit set, or columns never written). Written with literal constants, the very term of the
    index's predicate: SQLite uses a partial index only for a query holding that term."""
    zero = literal_column("0", Integer)
    return or_(res.c.sensitivity != zero, res.c.agencies.is_(None)).self_group()


def _types(names: Iterable[str]) -> list[Any]:
    """Resource type names (the policy's own constants) as SQL literals: an IN list of bound values
    is re-expanded into the statement text on every execution (SQLAlchemy "postcompile"), which cost
    ~0.1 ms of Python per audited read (cProfile); a literal list makes the cached statement final."""
    out = []
    for name in sorted(names):
        if not name.isalnum():
            raise ValueError(f"not a resource type: {name!r}")
        out.append(literal_column(f"'{name}'", String))
    return out


def _tagged(column: Any, code: str) -> Cond:
    """SQL: the tab-delimited tag list ``column`` (labels.policy_columns) holds ``code`` whole, with
    its case: client ids and tag codes are compared exactly, as :meth:`Visibility.allows` and
    :func:`owns` do (a LIKE would not: SQLite's ignores ASCII case, so ``PORTAL-a`` would see
    ``portal-A``'s Subscriptions and agency ``health/rxx`` ``health/RXX``'s restricted records)."""
    sep = labels.TAG_SEPARATOR
    if sep in code:  # the column holds no code with a separator in it (labels._tag_list)
        return false()
    return tag_listed(column, literal(f"{sep}{code}{sep}", String)) > 0


class tag_listed(FunctionElement[int]):
    """``tag_listed(haystack, needle)``: the 1-based position of ``needle`` in ``haystack``, 0 when
    absent, compared case-sensitively on both databases (SQLite ``instr``, PostgreSQL ``strpos``)."""

    type = Integer()
    name = "tag_listed"
    inherit_cache = True


@compiles(tag_listed)
def _tag_listed_sqlite(element: tag_listed, compiler: Any, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


@compiles(tag_listed, "postgresql")
def _tag_listed_postgresql(element: tag_listed, compiler: Any, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


def in_patients(res: FromClause, patient_ids: frozenset[str]) -> Cond:
    """SQL: the row is one of these Patients or refers to one (idx_reference)."""
    ids = sorted(patient_ids)
    r = idx_reference.alias()
    return or_(and_(res.c.res_type == literal("Patient"), res.c.res_id.in_(ids)),
               exists().where(r.c.resource_pk == res.c.pk, r.c.res_type == res.c.res_type,
                              r.c.target_type == "Patient", r.c.target_id.in_(ids)))


def visibility(ctx: "RequestContext", conn: "Connection | None" = None, *,
               consents: "ConsentCache | None" = None) -> Visibility | None:
    """The visibility of one request; None when nothing is hidden (authentication off, or the
    server's own work). Consent is read from the database now, or from ``consents`` (a process's
    cache) for a read whose AuditEvent checks the cache's version (``consent_version``) in the same
    statement: either way a changed Consent applies to the next request in every worker."""
    if not restricted(ctx):
        return None
    role = role_policy(ctx)
    pclass = purpose_class(ctx.purpose_of_use)
    if ctx.break_glass and role.break_glass:
        withheld: frozenset[Label] = frozenset()
        released: frozenset[Label] = frozenset()
    else:
        released = role.release.get(pclass or "", frozenset())
        withheld = labels.SENSITIVE - released
    denies: list[DenyRule] = []
    overrides: list[DenyRule] = []
    version = None
    if conn is not None and not ctx.break_glass:
        from .consent import deny_rules, rules_for
        if consents is not None:
            version, active, orgs = consents.get(conn)
            denies, overrides = rules_for(ctx, pclass, active, orgs)
        else:
            denies, overrides = deny_rules(conn, ctx, pclass)
    return Visibility(role.read_types, withheld, role.release_types, released, role.hidden_sources,
                      role.source_exempt, tuple(denies), tuple(overrides), ctx, labels.agency_tag_code(ctx.agency),
                      ctx.client_id, consent_version=version)


# -- the guard ------------------------------------------------------------------------------------

_READS = frozenset({"read", "vread", "history-instance", "history-type", "search-type"})
_WRITES = frozenset({"create", "update", "patch", "delete"})


class PolicyGuard:
    """Role and agency rules that refuse a whole request (403 OperationOutcome, a ``denied`` event)."""

    def before(self, req: "FhirRequest") -> None:
        from .access import classify

        ctx = req.ctx
        if not restricted(ctx):
            return
        role = role_policy(ctx)
        interaction = classify(req.method, req.path)
        if ctx.break_glass:
            if not role.break_glass:
                _deny(req, "break-glass-not-allowed", f"Role {ctx.role or '(none)'!r} may not use break-glass access")
            events.break_glass(ctx, _info(req), req.method, req.path)
        res_type = interaction.res_type
        # owner-only types: every role reads its own agency's (Visibility hides the others')
        type_refused = bool(res_type) and role.read_types is not None and res_type not in role.read_types \
            and res_type not in OWNER_ONLY_TYPES
        if interaction.code in _READS and res_type != "*" and type_refused:
            _deny(req, "role-type-not-allowed", f"Role {ctx.role!r} may not read {res_type} resources")
        if interaction.code == "operation" and type_refused and interaction.operation not in AUDITOR_OPERATIONS:
            _deny(req, "role-type-not-allowed", f"Role {ctx.role!r} may not use operations on {res_type}")
        if interaction.code in _WRITES and res_type:
            check_write_type(ctx, res_type, req)

    def after(self, req: "FhirRequest", response: "FhirResponse") -> None:
        return None


def check_write_type(ctx: "RequestContext", res_type: str, req: "FhirRequest | None" = None) -> None:
    """403 unless the caller's role writes and its agency owns ``res_type``."""
    role = role_policy(ctx)
    if not role.writes:
        _deny(req, "role-cannot-write", f"Role {ctx.role!r} may not create, change or delete resources", ctx)
    if res_type in SERVER_WRITTEN:
        _deny(req, "server-written-type", f"{res_type} resources are written by the server only", ctx)
    kind = labels.agency_kind(ctx.agency)
    if kind is None:
        _deny(req, "no-agency", "Writing needs a token that names the agency the caller acts for", ctx)
    allowed = WRITE_TYPES.get(kind or "", frozenset())
    if allowed is not None and res_type not in allowed:
        _deny(req, "agency-type-not-allowed", f"A {kind} agency may not write {res_type} resources", ctx)


def check_write(ctx: "RequestContext", old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any] | None:
    """The write rule on stored content (repository hook, every create/update/delete including
    Bundle entries and imports): the resource must be the caller's agency's — its source-agency tag
    — and a new version carries that tag (added when missing). Returns the content to store."""
    if not restricted(ctx):
        return new
    res_type = str((new or old or {}).get("resourceType"))
    check_write_type(ctx, res_type)
    if res_type in OWNER_ONLY_TYPES:
        return _owner_only_write(ctx, res_type, old, new)
    return _agency_write(ctx, res_type, old, new)


def owns(ctx: "RequestContext", content: dict[str, Any]) -> bool:
    """Whether ``content`` (of an OWNER_ONLY_TYPES type) is the caller's: its agency's source-agency
    tag and its client's owner-client tag. One without an owner-client tag (written before the tag
    existed) is nobody's: hidden from every client (fail closed); nothing stamps it afterwards (an
    operator deletes it and its client creates it again, docs/security.md)."""
    own = labels.agency_tag_code(ctx.agency)
    return own is not None and ctx.client_id is not None and own in labels.source_agencies(content) \
        and ctx.client_id in labels.owner_clients(content)


def hidden_from_writer(ctx: "RequestContext", current: dict[str, Any], *, refusal_answers: bool) -> bool:
    """Whether the current content of a resource a write targets is, for the caller, not there: an
    OWNER_ONLY_TYPES resource of another client. The repository then answers exactly as for an id
    that does not exist, before any If-Match or existence check (a different status or message would
    confirm that the id exists, or its version), and the attempt is recorded (a denied event).
    ``refusal_answers``: the refusal is the request's answer (an update: the write is refused) rather
    than set aside (a delete of something absent succeeds), see audit/__init__.py."""
    res_type = str(current.get("resourceType"))
    if not restricted(ctx) or res_type not in OWNER_ONLY_TYPES or owns(ctx, current):
        return False
    events.denied("not-owner", ctx, None,
                  f"{res_type}/{current.get('id')} is another client's; refused as if unknown (no existence leak)",
                  resource=f"{res_type}/{current.get('id')}", refusal_answers=refusal_answers)
    return True


def creates_with_client_id(ctx: "RequestContext", res_type: str) -> bool:
    """http.html#update, update as create: whether the caller may create ``res_type`` with an id it
    chooses (PUT to an unknown id). An OWNER_ONLY_TYPES resource gets a server-assigned id only
    (create, POST): a PUT to an id that is unknown, deleted or another client's gets one answer, the
    405 of a server that does not allow client-defined ids for the type."""
    return not (restricted(ctx) and res_type in OWNER_ONLY_TYPES)


def with_owner_only_types(statement: Any) -> Any:
    """Wrap a CapabilityStatement builder: an OWNER_ONLY_TYPES type declares updateCreate false
    (capabilitystatement-definitions.html#CapabilityStatement.rest.resource.updateCreate), as
    :func:`creates_with_client_id` enforces for every caller the policy applies to."""
    def build() -> dict[str, Any]:
        built = statement()
        rest = []
        for r in built.get("rest") or []:
            rest.append({**r, "resource": [
                {**res, "updateCreate": False} if res.get("type") in OWNER_ONLY_TYPES else res
                for res in r.get("resource") or []]})
        return {**built, "rest": rest}
    return build


def _owner_only_write(ctx: "RequestContext", res_type: str, old: dict[str, Any] | None,
                      new: dict[str, Any] | None) -> dict[str, Any] | None:
    """A client changes or deletes only its own Subscriptions; another's is answered as unknown
    (errors.Hidden: 404, or a delete of something absent) and the attempt is recorded (a denied
    event: an AuditEvent). The repository's :func:`hidden_from_writer` check comes first (before
    If-Match); this one stands for any writer that bypasses it. A new version carries the
    owner-client tag of its owner."""
    if old is not None and not owns(ctx, old):
        events.denied("not-owner", ctx, None,
                      f"{res_type}/{old.get('id')} is another client's; refused as if unknown (no existence leak)",
                      resource=f"{res_type}/{old.get('id')}")
        raise Hidden(f"{res_type}/{old.get('id')} is not known", expression="id")
    if ctx.client_id is None:
        _deny(None, "no-client", f"A {res_type} is owned by the client that creates it: the token names no client", ctx)
    checked = _agency_write(ctx, res_type, old, new)
    return None if checked is None else labels.with_owner_client(checked, str(ctx.client_id))


def _agency_write(ctx: "RequestContext", res_type: str, old: dict[str, Any] | None,
                  new: dict[str, Any] | None) -> dict[str, Any] | None:
    own = labels.agency_tag_code(ctx.agency)
    shared = res_type in REFERENCE_TYPES
    if old is not None and not shared:
        owners = labels.source_agencies(old)
        if owners and own not in owners:
            _deny(None, "other-agency-data",
                  f"{res_type}/{old.get('id')} belongs to {', '.join(sorted(owners))}; {ctx.agency} may not change it", ctx)
    if new is None:
        return None
    owners = labels.source_agencies(new)
    if owners - {own} and not shared:
        _deny(None, "other-agency-tag",
              f"{ctx.agency} may not write data tagged as another agency's ({', '.join(sorted(owners - {own}))})", ctx)
    if own in owners:
        return new
    meta = dict(new.get("meta") or {})
    meta["tag"] = [*(meta.get("tag") or []), labels.agency_tag(ctx.agency or "")]
    return {**new, "meta": meta}


def _deny(req: "FhirRequest | None", reason: str, message: str, ctx: "RequestContext | None" = None) -> None:
    who = req.ctx if req is not None else ctx
    info = _info(req) if req is not None else None
    events.denied(reason, who, info, message)
    raise AccessDenied(message, reason=reason)


def _info(req: "FhirRequest") -> events.RequestInfo:
    return events.RequestInfo(req.method, req.path, req.ctx.remote_addr, None, req.ctx.request_id)


__all__ = ["PolicyGuard", "Visibility", "visibility", "check_write", "hidden_from_writer", "creates_with_client_id",
           "with_owner_only_types", "ROLES", "OWNER_ONLY_TYPES", "PURPOSES", "WRITE_TYPES", "purpose_class"]
