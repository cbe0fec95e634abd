"""SSDA903 records → FHIR R4 resources (as :class:`~mappings.core.Upsert`). Pure.

Per child: a Patient; per episode an EpisodeOfCare (episode-type ``looked-after``); one "looked
after" Flag, active while the child's latest episode is open; per missing/away episode an
Observation (risk-factor ``missing-episode`` / ``away-from-placement``). docs/formats/ssda903-csv.md
has the table of what goes where.

The Patient, the Flag's category, the Observation category, the agency and the extensions for
ethnicity and unknown source values are the same as the CIN census mapping's, so that the same
child from both returns of one local authority is one Patient of the same shape.

Business identifiers (conditional-update keys), under ``source_record_system(LA, kind)``:
``CHILD/DECOM`` for an episode, ``CHILD`` for the flag, ``CHILD/MIS_START/M|A`` for a missing
episode (``#2``… for a second one starting the same day, ordered by end date). A corrected start date
is a new key: the old resource stays (see the format doc).
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date
from typing import Any

from .. import codes, systems
from ..cin_census.to_fhir import (EXT_ETHNIC_CATEGORY, EXT_SOURCE_VALUE, FLAG_CATEGORY, OBSERVATION_CATEGORY,
                                  organization_reference)
from ..core import Agency, SourceIssue, Upsert, identifier_match
from .records import ChildHeader, Episode, MissingEpisode, Return

EXTENSION = f"{systems.CANONICAL_BASE}/StructureDefinition"
EXT_REASON_NEW_EPISODE = f"{EXTENSION}/ssda903-reason-new-episode"
EXT_CATEGORY_OF_NEED = f"{EXTENSION}/ssda903-category-of-need"
EXT_PLACEMENT_PROVIDER = f"{EXTENSION}/ssda903-placement-provider"
EXT_REASON_CEASED = f"{EXTENSION}/ssda903-reason-episode-ceased"
EXT_REASON_PLACE_CHANGE = f"{EXTENSION}/ssda903-reason-place-change"
EXT_HOME_POSTCODE = f"{EXTENSION}/ssda903-home-postcode"
EXT_PLACEMENT_POSTCODE = f"{EXTENSION}/ssda903-placement-postcode"
EXT_PLACEMENT_URN = f"{EXTENSION}/ssda903-placement-urn"
OFSTED_URN = f"{systems.CANONICAL_BASE}/Id/ofsted-urn"  # Ofsted's unique reference number of a care setting

KIND_EPISODE, KIND_FLAG, KIND_MISSING = "ssda903-episode", "ssda903-looked-after-flag", "ssda903-missing"
MISSING_CODES = {"M": "missing-episode", "A": "away-from-placement"}


def to_fhir(ret: Return, agency: Agency, issues: list[SourceIssue]) -> list[Upsert]:
    """Every resource of the return. Records whose child is not in the Header table were reported
    by the reader and are skipped here (they would have no Patient to refer to)."""
    la = agency.code
    patients = {child_id: _patient(child, agency) for child_id, child in ret.children.items()}
    out = list(patients.values())
    by_child: dict[str, list[Episode]] = defaultdict(list)
    for ep in ret.episodes:
        if ep.child_id in patients:
            by_child[ep.child_id].append(ep)
    for child_id, episodes in by_child.items():
        episodes.sort(key=lambda e: e.start)
        subject = {"reference": patients[child_id].full_url}
        out += [_episode(ep, subject, agency) for ep in episodes]
        out.append(_flag(child_id, episodes, subject, agency))
    out += _missing(ret.missing, patients, la, agency, issues)
    return out


def _patient(child: ChildHeader, agency: Agency) -> Upsert:
    system = systems.la_child_id_system(agency.code)
    identifiers: list[dict[str, Any]] = [{"use": "usual", "system": system, "value": child.child_id}]
    if child.upn:
        identifiers.append({"use": "official", "system": systems.UPN, "value": child.upn})
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers}
    extensions: list[dict[str, Any]] = []
    if child.ethnicity:
        extensions.append({"url": EXT_ETHNIC_CATEGORY, "valueCodeableConcept": child.ethnicity})
    if child.gender:
        patient["gender"] = child.gender
    elif child.gender_text:  # reported by the reader; kept as text, as the CIN mapping does
        patient["gender"] = "unknown"
        extensions.append({"url": EXT_SOURCE_VALUE, "valueString": f"SEX: {child.gender_text}"})
    if child.birth_date:
        patient["birthDate"] = child.birth_date.isoformat()
    patient["managingOrganization"] = organization_reference(agency)
    if extensions:
        patient["extension"] = extensions
    return Upsert(patient, identifier_match(system, child.child_id), full_url=f"urn:uuid:{uuid.uuid4()}",
                  record=child.child_id, merge=True)


def _episode(ep: Episode, subject: dict[str, str], agency: Agency) -> Upsert:
    """An episode is one span with one legal status and one placement, so both classify it
    (EpisodeOfCare.type, searchable); the reasons it began and ended, the provider and the
    postcodes are extensions."""
    system = systems.source_record_system(agency.code, KIND_EPISODE)
    key = f"{ep.child_id}/{ep.start.isoformat()}"
    types = [codes.concept("episode-type", "looked-after")]
    types += [c for c in (ep.legal_status, ep.placement) if c]
    extensions: list[dict[str, Any]] = []
    for url, concept in ((EXT_REASON_NEW_EPISODE, ep.reason_new), (EXT_CATEGORY_OF_NEED, ep.category_of_need),
                         (EXT_PLACEMENT_PROVIDER, ep.provider), (EXT_REASON_CEASED, ep.reason_ceased),
                         (EXT_REASON_PLACE_CHANGE, ep.reason_place_change)):
        if concept:
            extensions.append({"url": url, "valueCodeableConcept": concept})
    for url, text in ((EXT_HOME_POSTCODE, ep.home_postcode), (EXT_PLACEMENT_POSTCODE, ep.placement_postcode)):
        if text:
            extensions.append({"url": url, "valueString": text})
    if ep.placement_urn:
        extensions.append({"url": EXT_PLACEMENT_URN, "valueIdentifier": {"system": OFSTED_URN,
                                                                         "value": ep.placement_urn}})
    resource: dict[str, Any] = {"resourceType": "EpisodeOfCare", "identifier": [{"system": system, "value": key}],
                                "status": "finished" if ep.end else "active", "type": types,
                                "patient": subject, "managingOrganization": organization_reference(agency),
                                "period": _period(ep.start, ep.end)}
    if extensions:
        resource["extension"] = extensions
    return Upsert(resource, identifier_match(system, key), record=ep.child_id)


def _flag(child_id: str, episodes: list[Episode], subject: dict[str, str], agency: Agency) -> Upsert:
    """One Flag per child for the latest period of care: active while its last episode is open,
    inactive (with the period's end) once it has closed — so a later return that closes the
    episode retires the Flag an earlier import raised. The period of care is the run of episodes
    back from the latest in which each starts the day the one before ended, unless that one ended
    the period of care (a REC other than X1) or this one starts a new one (RNE S)."""
    start = episodes[-1].start
    for before, after in zip(reversed(episodes[:-1]), reversed(episodes)):
        if before.end != after.start or before.ends_period_of_care or after.starts_period_of_care:
            break
        start = before.start
    last = episodes[-1]
    system = systems.source_record_system(agency.code, KIND_FLAG)
    flag = {"resourceType": "Flag", "identifier": [{"system": system, "value": child_id}],
            "status": "inactive" if last.end else "active", "category": [FLAG_CATEGORY],
            "code": codes.concept("safeguarding-flag", "looked-after"), "subject": subject,
            "period": _period(start, last.end), "author": organization_reference(agency)}
    return Upsert(flag, identifier_match(system, child_id), record=child_id)


def _missing(items: list[MissingEpisode], patients: dict[str, Upsert], la: str, agency: Agency,
             issues: list[SourceIssue]) -> list[Upsert]:
    """One Observation per missing or away episode, effective over the episode. Two episodes of
    one kind starting the same day are told apart by ``#2``…, in order of their end dates; an
    exact repeat is reported and written once."""
    system = systems.source_record_system(la, KIND_MISSING)
    groups: dict[str, list[MissingEpisode]] = defaultdict(list)
    for item in items:
        if item.child_id in patients:
            groups[f"{item.child_id}/{item.start.isoformat()}/{item.kind}"].append(item)
    out: list[Upsert] = []
    for base, group in groups.items():
        group.sort(key=lambda m: (m.end is None, m.end or date.min))
        seen: dict[date | None, MissingEpisode] = {}
        n = 0
        for item in group:
            if item.end in seen:
                issues.append(SourceIssue("warning", item.where.file, item.where.location, "MIS_START",
                                          f"repeats the episode at line {seen[item.end].where.line}; written once",
                                          "duplicate", record=item.child_id))
                continue
            seen[item.end] = item
            n += 1
            key = base if n == 1 else f"{base}#{n}"
            code = (codes.concept("risk-factor", MISSING_CODES[item.kind]) if item.kind in MISSING_CODES
                    else {"text": f"MISSING: {item.kind}"})
            observation = {"resourceType": "Observation", "identifier": [{"system": system, "value": key}],
                           "status": "final", "category": [{"coding": [OBSERVATION_CATEGORY]}], "code": code,
                           "subject": {"reference": patients[item.child_id].full_url},
                           "effectivePeriod": _period(item.start, item.end),
                           "performer": [organization_reference(agency)]}
            out.append(Upsert(observation, identifier_match(system, key), record=item.child_id))
    return out


def _period(start: date, end: date | None) -> dict[str, str]:
    period = {"start": start.isoformat()}
    if end:
        period["end"] = end.isoformat()
    return period
