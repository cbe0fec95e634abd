"""Consent enforcement at query time (consent.html#provision).

A Consent records the basis on which one agency (``Consent.organization``) shares one child's data
(``Consent.patient``): ``policy.uri`` names the legislation, and ``provision`` says permit or deny,
with nested provisions as exceptions, each narrowed by ``actor`` (who receives it: a Practitioner,
an agency's Organization, or a role code), ``purpose`` (purpose of use), ``securityLabel`` and
``class`` (resource types).

For one request, :func:`deny_rules` reads every active Consent from the database — no cache, so a
changed Consent applies to the next request in every worker — and turns the provisions that deny
this caller into :class:`DenyRule`\\s: "hide this child's data (from this agency, with these
labels, of these types)". :class:`fhir_server.auth.policy.Visibility` adds them to every query.

Sharing without consent: when a Consent's base provision denies (the family refused) but its
policy names a lawful basis for sharing without consent for safeguarding (UK GDPR Art 9(2)(g) with
DPA 2018 Sch 1 Part 2 para 18; DPA 2018 Sch 8 para 4 for police; AGENCY_FORMATS.md §6), a caller
whose purpose of use is safeguarding still sees the data, and the share is recorded as a
``shared-without-consent`` event (the audit trail turns it into an AuditEvent) — unless a
provision denies the safeguarding purpose by name.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, FromClause, and_, exists, false, or_, select, text

from ..conformance import CANONICAL_BASE
from ..storage import policy_version
from ..storage.tables import idx_token, resource
from . import events, labels
from .labels import Label

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from ..repository.context import RequestContext

# Lawful bases that allow sharing without consent for safeguarding (AGENCY_FORMATS.md §6).
WITHOUT_CONSENT_BASES = frozenset({
    "https://www.legislation.gov.uk/ukpga/2018/12/schedule/1/part/2/paragraph/18",
    "https://www.legislation.gov.uk/ukpga/2018/12/schedule/8/paragraph/4",
})
# An agency kind → the identifier system of its Organization (as the mappings write them).
ORGANIZATION_SYSTEMS = {
    "local-authority": f"{CANONICAL_BASE}/Id/la-code",
    "police": f"{CANONICAL_BASE}/Id/police-force",
    "health": "https://fhir.nhs.uk/Id/ods-organization-code",
    "education": f"{CANONICAL_BASE}/Id/la-education-service",
}
_KIND_OF_SYSTEM = {v: k for k, v in ORGANIZATION_SYSTEMS.items()}


@dataclass(frozen=True)
class DenyRule:
    """Hide the data of ``patients`` (owned by agency ``owner``, carrying one of ``labels``, of
    ``types``; None = any) — from the Consent ``consent``. ``basis``: for a refusal set aside for
    safeguarding (an *override*), the legislation it is set aside under."""

    consent: str
    patients: frozenset[str]
    owner: str | None = None
    labels: frozenset[Label] | None = None
    types: frozenset[str] | None = None
    basis: tuple[str, ...] = ()

    def clause(self, res: FromClause) -> ColumnElement[bool]:
        from .policy import in_patients

        conds = [in_patients(res, self.patients)]
        if self.types is not None:
            conds.append(res.c.res_type.in_(sorted(self.types)))
        if self.owner is not None:
            t = idx_token.alias()
            conds.append(exists().where(t.c.resource_pk == res.c.pk, t.c.param == "_tag",
                                        t.c.system == labels.AGENCY_TAG_SYSTEM, t.c.code == self.owner))
        if self.labels is not None:
            t = idx_token.alias()
            conds.append(exists().where(t.c.resource_pk == res.c.pk, t.c.param == "_security",
                                        or_(false(), *(and_(t.c.system == s, t.c.code == c)
                                                       for s, c in sorted(self.labels)))))
        return and_(*conds)

    def matches(self, content: dict[str, Any]) -> bool:
        res_type = content.get("resourceType")
        if self.types is not None and res_type not in self.types:
            return False
        if self.owner is not None and self.owner not in labels.source_agencies(content):
            return False
        if self.labels is not None and not labels.labels_of(content) & self.labels:
            return False
        if res_type == "Patient" and content.get("id") in self.patients:
            return True
        return any(p in self.patients for p in labels.patient_references(content))


@dataclass(frozen=True)
class _Caller:
    practitioner: str | None
    organization: tuple[str, str] | None  # (system, value)
    role: str | None
    purpose: str | None
    purpose_class: str | None


def deny_rules(conn: "Connection", ctx: "RequestContext", purpose_class: str | None,
               *, now: datetime | None = None) -> tuple[list[DenyRule], list[DenyRule]]:
    """(deny rules, overrides) every active Consent holds for this caller, read now. An override is
    a refusal set aside for safeguarding: the data shows, and :func:`record_disclosures` records
    each share of it."""
    consents = _active_consents(conn)
    return rules_for(ctx, purpose_class, consents, _organizations(conn, consents) if consents else {}, now=now)


def _active_consents(conn: "Connection") -> list[dict[str, Any]]:
    return [row.content for row in conn.execute(select(resource.c.content).where(
        resource.c.res_type == "Consent", resource.c.deleted.is_(False),
        resource.c.pk.in_(select(idx_token.c.resource_pk).where(
            idx_token.c.res_type == "Consent", idx_token.c.param == "status", idx_token.c.code == "active"))))]


def rules_for(ctx: "RequestContext", purpose_class: str | None, consents: list[dict[str, Any]],
              orgs: dict[str, set[tuple[str, str]]], *, now: datetime | None = None
              ) -> tuple[list[DenyRule], list[DenyRule]]:
    """:func:`deny_rules` on Consents (and their Organizations' identifiers) already read."""
    if not consents:
        return [], []
    kind = labels.agency_kind(ctx.agency)
    code = (labels.agency_tag_code(ctx.agency) or "/").split("/", 1)[1]
    caller = _Caller(ctx.practitioner, (ORGANIZATION_SYSTEMS[kind], code) if kind else None, ctx.role,
                     (ctx.purpose_of_use or "").rsplit("|", 1)[-1] or None, purpose_class)
    moment = now or datetime.now(timezone.utc)
    rules: list[DenyRule] = []
    for consent in consents:
        rules.extend(_rules(consent, caller, orgs, moment))
    return [r for r in rules if not r.basis], [r for r in rules if r.basis]


class ConsentCache:
    """The active Consents and the identifiers of the Organizations they name, kept by one process
    with the ``policy_version`` they were read at (storage/policy_version.py). Only for reads whose
    AuditEvent INSERT checks that version in the same statement (audit/recorder.py): a Consent
    changed meanwhile makes the request run again with fresh Consents, so a change still applies
    from the next request on, without a Consent query on every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[int, list[dict[str, Any]], dict[str, set[tuple[str, str]]]] | None = None

    def get(self, conn: "Connection") -> tuple[int, list[dict[str, Any]], dict[str, set[tuple[str, str]]]]:
        """(version, active Consents, Organization identifiers), read now if not held. The version is
        read first: a Consent committed between the two reads only makes the next check fail."""
        entry = self._entry
        if entry is None:
            with self._lock:
                entry = self._entry
                if entry is None:
                    version = int(conn.execute(text(f"SELECT {policy_version.CURRENT}")).scalar_one())
                    consents = _active_consents(conn)
                    entry = (version, consents, _organizations(conn, consents) if consents else {})
                    self._entry = entry
        return entry

    def changed_since(self, conn: "Connection", seen: int) -> bool:
        """Whether the Consents changed after version ``seen`` (then forgotten): one query."""
        if int(conn.execute(text(f"SELECT {policy_version.CURRENT}")).scalar_one()) == seen:
            return False
        self.invalidate(seen)
        return True

    def invalidate(self, seen: int | None = None) -> None:
        """Forget the Consents (those read at version ``seen``, or whatever is held)."""
        with self._lock:
            if self._entry is not None and (seen is None or self._entry[0] == seen):
                self._entry = None


def record_disclosures(ctx: "RequestContext", overrides: Iterable[DenyRule], shown: Iterable[dict[str, Any]],
                       recorded: set[str]) -> None:
    """Publish one ``shared-without-consent`` event per overridden Consent whose data ``shown``
    includes (once per request: ``recorded`` holds the Consents already reported)."""
    pending = [r for r in overrides if r.consent not in recorded]
    if not pending:
        return
    for content in shown:
        for rule in pending:
            if rule.consent not in recorded and isinstance(content, dict) and rule.matches(content):
                recorded.add(rule.consent)
                events.shared_without_consent(ctx, rule.consent, f"Patient/{min(rule.patients)}", list(rule.basis))


def _rules(consent: dict[str, Any], caller: _Caller, orgs: dict[str, set[tuple[str, str]]],
           now: datetime) -> Iterator[DenyRule]:
    patient = _ref_id(consent.get("patient"), "Patient")
    base = consent.get("provision")
    if patient is None or not isinstance(base, dict) or not _current(consent.get("provision", {}).get("period"), now):
        return
    ref = f"Consent/{consent.get('id')}"
    owner = _owner(consent, orgs)
    patients = frozenset({patient})
    basis = {p.get("uri") for p in consent.get("policy") or [] if isinstance(p, dict)}
    lawful = tuple(sorted(b for b in basis & WITHOUT_CONSENT_BASES if isinstance(b, str)))
    without_consent = bool(lawful)
    nested = [p for p in base.get("provision") or [] if isinstance(p, dict) and _current(p.get("period"), now)]
    if base.get("type") == "deny":
        permitted = any(p.get("type") == "permit" and _applies(p, caller, orgs) for p in nested)
        if permitted or not _applies(base, caller, orgs):
            return
        override = without_consent and caller.purpose_class == "safeguarding" and not _names_purpose(base, caller)
        yield DenyRule(ref, patients, owner, _labels(base), _types(base), lawful if override else ())
        return
    for p in nested:
        if p.get("type") != "deny" or not _applies(p, caller, orgs):
            continue
        override = without_consent and caller.purpose_class == "safeguarding" and not _names_purpose(p, caller)
        yield DenyRule(ref, patients, owner, _labels(p), _types(p), lawful if override else ())


def _applies(provision: dict[str, Any], caller: _Caller, orgs: dict[str, set[tuple[str, str]]]) -> bool:
    """A provision applies to the caller when each of its actor and purpose lists (if any) names them."""
    actors = [a for a in provision.get("actor") or [] if isinstance(a, dict)]
    if actors and not any(_is_caller(a, caller, orgs) for a in actors):
        return False
    purposes = [p for p in provision.get("purpose") or [] if isinstance(p, dict)]
    return not purposes or any(_purpose_matches(p, caller) for p in purposes)


def _names_purpose(provision: dict[str, Any], caller: _Caller) -> bool:
    return any(isinstance(p, dict) and _purpose_matches(p, caller) for p in provision.get("purpose") or [])


def _purpose_matches(coding: dict[str, Any], caller: _Caller) -> bool:
    from .policy import purpose_class

    code = coding.get("code")
    if not isinstance(code, str) or caller.purpose is None:
        return False
    return code == caller.purpose or (caller.purpose_class is not None and purpose_class(code) == caller.purpose_class)


def _is_caller(actor: dict[str, Any], caller: _Caller, orgs: dict[str, set[tuple[str, str]]]) -> bool:
    role = actor.get("role") or {}
    if caller.role and any(isinstance(c, dict) and c.get("code") == caller.role for c in role.get("coding") or []):
        return True
    ref = actor.get("reference") or {}
    if not isinstance(ref, dict):
        return False
    practitioner = _ref_id(ref, "Practitioner")
    if practitioner is not None and caller.practitioner == f"Practitioner/{practitioner}":
        return True
    return caller.organization is not None and caller.organization in _identifiers(ref, orgs)


def _owner(consent: dict[str, Any], orgs: dict[str, set[tuple[str, str]]]) -> str | None:
    """The source-agency tag code of the agency whose data the Consent covers (None: every agency's)."""
    for org in consent.get("organization") or []:
        for system, value in _identifiers(org, orgs):
            kind = _KIND_OF_SYSTEM.get(system)
            if kind:
                return f"{kind}/{value}"
    return None


def _identifiers(ref: Any, orgs: dict[str, set[tuple[str, str]]]) -> set[tuple[str, str]]:
    if not isinstance(ref, dict):
        return set()
    found = set(orgs.get(_ref_id(ref, "Organization") or "", set()))
    ident = ref.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("system"), str) and isinstance(ident.get("value"), str):
        found.add((ident["system"], ident["value"]))
    return found


def _organizations(conn: "Connection", consents: Iterable[dict[str, Any]]) -> dict[str, set[tuple[str, str]]]:
    """Identifiers of every Organization the Consents refer to by id (one query)."""
    ids: set[str] = set()
    for consent in consents:
        refs = list(consent.get("organization") or [])
        stack = [consent.get("provision")]
        while stack:
            p = stack.pop()
            if isinstance(p, dict):
                refs.extend(a.get("reference") for a in p.get("actor") or [] if isinstance(a, dict))
                stack.extend(p.get("provision") or [])
        ids.update(i for i in (_ref_id(r, "Organization") for r in refs) if i)
    if not ids:
        return {}
    out: dict[str, set[tuple[str, str]]] = {}
    for res_id, content in conn.execute(select(resource.c.res_id, resource.c.content).where(
            resource.c.res_type == "Organization", resource.c.res_id.in_(sorted(ids)), resource.c.deleted.is_(False))):
        out[res_id] = {(i["system"], i["value"]) for i in (content or {}).get("identifier") or []
                       if isinstance(i, dict) and isinstance(i.get("system"), str) and isinstance(i.get("value"), str)}
    return out


def _ref_id(ref: Any, res_type: str) -> str | None:
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    parts = ref["reference"].rstrip("/").split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == res_type else None


def _labels(provision: dict[str, Any]) -> frozenset[Label] | None:
    found = {(str(c.get("system") or ""), c["code"]) for c in provision.get("securityLabel") or []
             if isinstance(c, dict) and isinstance(c.get("code"), str)}
    return frozenset(found) or None


def _types(provision: dict[str, Any]) -> frozenset[str] | None:
    found = {c["code"] for c in provision.get("class") or [] if isinstance(c, dict) and isinstance(c.get("code"), str)}
    return frozenset(found) or None


def _current(period: Any, now: datetime) -> bool:
    """provision.period: a provision outside its period does not apply (dates compared as text)."""
    if not isinstance(period, dict):
        return True
    today = now.strftime("%Y-%m-%dT%H:%M:%S")
    start, end = period.get("start"), period.get("end")
    if isinstance(start, str) and start[:19] > today:
        return False
    return not (isinstance(end, str) and end[:19] < today[:len(end[:19])])
