"""Security labels (security-labels.html) and the source-agency tag, as the policy reads them.

A label is a ``(system, code)`` pair in ``meta.security``; the source agency is the
``meta.tag`` of system :data:`AGENCY_TAG_SYSTEM` whose code is ``<kind>/<code>`` (written by
every mapping's loader, and stamped by the write policy on what an agency's client creates).
Pure functions: the same facts are read from stored JSON here and from the ``_security`` and
``_tag`` index rows inside search queries (:mod:`fhir_server.auth.policy`).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..conformance import CANONICAL_BASE

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
AGENCY_TAG_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/source-agency"
# The client that owns an owner-only resource (a Subscription): stamped by the write policy.
OWNER_CLIENT_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/owner-client"

Label = tuple[str, str]

# v3 ActCode sensitivity (InformationSensitivityPolicy) and v3 Confidentiality codes the policy
# knows; any of these on a resource withholds it unless the caller's role and purpose release it.
SDV: Label = (ACT_CODE, "SDV")  # sexual assault, abuse or domestic violence
PSY: Label = (ACT_CODE, "PSY")  # psychiatry / mental health
SEX: Label = (ACT_CODE, "SEX")  # sexuality and reproductive health
ETH: Label = (ACT_CODE, "ETH")  # substance abuse
HIV: Label = (ACT_CODE, "HIV")
SOC: Label = (ACT_CODE, "SOC")  # social services
RESTRICTED: Label = (CONFIDENTIALITY, "R")
VERY_RESTRICTED: Label = (CONFIDENTIALITY, "V")

SENSITIVE: frozenset[Label] = frozenset({SDV, PSY, SEX, ETH, HIV, SOC, RESTRICTED, VERY_RESTRICTED})

# The agency a request context names ("la:201") → the kind its data is tagged with ("local-authority/201").
AGENCY_KINDS = {"la": "local-authority", "local-authority": "local-authority", "police": "police",
                "health": "health", "education": "education"}


# The policy's facts about a stored resource as plain ``resource`` columns (written with every
# version by the code that writes its index rows: :func:`policy_columns`), so that the access
# policy's SQL (policy.Visibility.clause) tests columns instead of probing ``idx_token`` with EXISTS
# sub-queries: planning those cost more than the read itself (docs/benchmarks.md, session 5).
# ``sensitivity``: one bit per label of SENSITIVE. The bits are stored: a label added to SENSITIVE
# takes a new bit and a migration that recomputes the column (policy_columns on every row).
LABEL_BITS: dict[Label, int] = {SDV: 1, PSY: 2, SEX: 4, ETH: 8, HIV: 16, SOC: 32, RESTRICTED: 64, VERY_RESTRICTED: 128}
assert set(LABEL_BITS) == SENSITIVE
# A row whose columns were never computed (written by something other than the repository) carries
# every bit: withheld from every caller who is not released every label (fail closed).
UNKNOWN_SENSITIVITY = -1
# ``agencies`` and ``owners``: the tag codes, each between two tabs (a FHIR code has no tab).
TAG_SEPARATOR = "\t"


def label_mask(found: "set[Label] | frozenset[Label]") -> int:
    """The ``sensitivity`` bits of the SENSITIVE labels in ``found`` (others have no bit)."""
    mask = 0
    for label in found:
        mask |= LABEL_BITS.get(label, 0)
    return mask


def policy_columns(content: dict[str, Any] | None) -> dict[str, Any]:
    """The ``resource`` columns the access policy's SQL reads, from a version's JSON: the same
    facts :func:`labels_of`, :func:`source_agencies` and :func:`owner_clients` give the policy's
    test on JSON (policy.Visibility.allows), so the SQL and the JSON rule cannot disagree."""
    return {"sensitivity": label_mask(labels_of(content)),
            "agencies": _tag_list(source_agencies(content)),
            "owners": _tag_list(owner_clients(content))}


def _tag_list(codes: set[str]) -> str:
    # (a tab inside a code becomes a space: it can then match no whole code, and a kind prefix
    # "health/…" still matches: the policy errs towards hiding)
    return "".join(f"{TAG_SEPARATOR}{code.replace(TAG_SEPARATOR, ' ')}" for code in sorted(codes)) + \
        (TAG_SEPARATOR if codes else "")


def labels_of(content: dict[str, Any] | None) -> set[Label]:
    """The ``meta.security`` codings of a resource as (system, code) pairs."""
    meta = (content or {}).get("meta")
    found: set[Label] = set()
    if isinstance(meta, dict):
        for coding in meta.get("security") or []:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                found.add((str(coding.get("system") or ""), coding["code"]))
    return found


def source_agencies(content: dict[str, Any] | None) -> set[str]:
    """The source-agency tag codes (``health/RXX``) of a resource."""
    meta = (content or {}).get("meta")
    if not isinstance(meta, dict):
        return set()
    return {t["code"] for t in meta.get("tag") or []
            if isinstance(t, dict) and t.get("system") == AGENCY_TAG_SYSTEM and isinstance(t.get("code"), str)}


def owner_clients(content: dict[str, Any] | None) -> set[str]:
    """The owner-client tag codes (client ids) of a resource."""
    meta = (content or {}).get("meta")
    if not isinstance(meta, dict):
        return set()
    return {t["code"] for t in meta.get("tag") or []
            if isinstance(t, dict) and t.get("system") == OWNER_CLIENT_SYSTEM and isinstance(t.get("code"), str)}


def with_owner_client(content: dict[str, Any], client_id: str) -> dict[str, Any]:
    """``content`` with exactly one owner-client tag, ``client_id`` (any other dropped)."""
    meta = dict(content.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") == OWNER_CLIENT_SYSTEM)]
    meta["tag"] = [*tags, {"system": OWNER_CLIENT_SYSTEM, "code": client_id}]
    return {**content, "meta": meta}


def agency_tag_code(agency: str | None) -> str | None:
    """``la:201`` → ``local-authority/201``: the tag code of the agency a request acts for."""
    if not agency or ":" not in agency:
        return None
    prefix, _, code = agency.partition(":")
    kind = AGENCY_KINDS.get(prefix.strip().lower())
    return f"{kind}/{code.strip()}" if kind and code.strip() else None


def agency_kind(agency: str | None) -> str | None:
    tag = agency_tag_code(agency)
    return tag.split("/", 1)[0] if tag else None


def agency_tag(agency: str) -> dict[str, str]:
    """The meta.tag coding for data written by ``agency`` (same shape as the mappings write)."""
    code = agency_tag_code(agency)
    assert code is not None
    return {"system": AGENCY_TAG_SYSTEM, "code": code}


def patient_references(content: Any) -> Iterator[str]:
    """Ids of every Patient a resource refers to (any ``reference`` element, relative or absolute)."""
    if isinstance(content, dict):
        for key, value in content.items():
            if key == "reference" and isinstance(value, str):
                parts = value.split("?", 1)[0].rstrip("/").split("/")
                if len(parts) >= 2 and parts[-2] == "Patient":
                    yield parts[-1]
                elif len(parts) >= 4 and parts[-4] == "Patient" and parts[-2] == "_history":
                    yield parts[-3]
            else:
                yield from patient_references(value)
    elif isinstance(content, list):
        for item in content:
            yield from patient_references(item)
