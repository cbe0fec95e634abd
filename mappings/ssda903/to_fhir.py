"""SSDA903 records → FHIR R4 resources (as :class:`~mappings.core.Upsert`). Pure.

Per child: a Patient; per episode an EpisodeOfCare (episode-type ``looked-after``); one "looked
after" Flag, active while the child's latest episode is open; per missing/away episode an
Observation (risk-factor ``missing-episode`` / ``away-from-placement``). docs/formats/ssda903-csv.md
has the table of what goes where.

The Patient, the Flag's category, the Observation category, the agency and the extensions for
ethnicity and unknown source values come from :mod:`mappings.fhir_shapes`, as the CIN census
mapping's do, so that the same child from both returns of one local authority is one Patient of the
same shape (merged by the loader: each return adds what it knows).

Business identifiers (conditional-update keys), under ``source_record_system(LA, kind)``:
``CHILD/DECOM`` for an episode, ``CHILD`` for the flag, ``CHILD/MIS_START/M|A`` for a missing
episode (``#2``… for a second one starting the same day, ordered by end date). A corrected start date
is a new key; the return is a full account of each child's episodes and missing episodes from the
earliest one it lists (:func:`full_return`), so the import retires the resource made from the old
date (:mod:`mappings.snapshot`, docs/formats/ssda903-csv.md).
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

from .. import codes, systems
from ..collection_year import containing, span
from ..core import Agency, SourceIssue, Upsert
from ..fhir_shapes import (EXT_ETHNIC_CATEGORY, EXTENSION, FLAG_CATEGORY, SOCIAL_HISTORY, gender_elements, identifier,
                           organization_reference, patient, period, source_record, sourced)
from ..snapshot import Snapshot, Span
from .records import ChildHeader, Episode, MissingEpisode, Return

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


def to_fhir(ret: Return, agency: Agency, issues: list[SourceIssue],
            year: Span | None = None) -> tuple[list[Upsert], list[Snapshot]]:
    """Every resource of the return, and what the return is the full account of over ``year``
    (default: the year inferred from its dates, :func:`collection_year`). Records whose child is
    not in the Header table were reported by the reader and are skipped here (they would have no
    Patient to refer to)."""
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
    out += _missing(ret.missing, patients, agency, issues)
    return out, full_return(ret, patients, agency, year or collection_year(ret.dates()))


def full_return(ret: Return, patients: dict[str, Upsert], agency: Agency, year: Span | None) -> list[Snapshot]:
    """What the return is the full account of (:mod:`mappings.snapshot`): for each table it has
    (Episodes, Missing), every record of that table of every child its Header names — care
    episodes (and so the looked-after Flag made from them) and missing episodes — open at any time
    in the collection ``year`` (:mod:`mappings.collection_year`), and, before the year, from the start of the
    earliest one it lists for that child (never records started after the year) (an episode that ended the day that one began is history:
    kept). So a child whose rows are gone from a table, or a table sent with no rows, retires the
    child's records of that table in the year. A table the return does not have accounts for
    nothing (a return of Header and Episodes leaves the missing episodes as they are); nor does a
    return without a year (no year given and not a single date to infer it from)."""
    snapshots = []
    by_table = {"Episodes": (ret.episodes, (("EpisodeOfCare", KIND_EPISODE, "patient"), ("Flag", KIND_FLAG, "subject"))),
                "Missing": (ret.missing, (("Observation", KIND_MISSING, "subject"),))}
    for table, (rows, kinds) in by_table.items():
        if table not in ret.tables or year is None:
            continue
        for resource_type, kind, reference in kinds:
            snapshot = Snapshot(resource_type, systems.source_record_system(agency.code, kind), reference)
            for upsert in patients.values():
                snapshot.cover(upsert.full_url, year)
            for row in rows:
                if row.child_id in patients:
                    snapshot.cover(patients[row.child_id].full_url, Span(row.start, year.until))
            snapshots.append(snapshot)
    return snapshots


def collection_year(dates: list[date]) -> Span | None:
    """The SSDA903 collection year (1 April to 31 March) a return is for when the importer is not
    told it (its files do not state it): the one holding the latest date it lists. As a Span:
    records open at some moment after the 31 March before it that started by the year's 31 March
    — so a late or corrected return of an earlier year, imported after a later one, never retires
    the later year's records, unless it lists a date after its own year (then give the year:
    ``collection-year``). None without any date."""
    if not dates:
        return None
    return span(containing(max(dates)))


def _patient(child: ChildHeader, agency: Agency) -> Upsert:
    """The child's Patient; its ethnicity, which the CIN census also gives, is marked as this
    format's (docs/formats/README.md#a-value-two-formats-disagree-on)."""
    extensions: list[dict[str, Any]] = []
    if child.ethnicity:
        extensions.append({"url": EXT_ETHNIC_CATEGORY,
                           "valueCodeableConcept": sourced(child.ethnicity, "ssda903")})
    # an unknown SEX was reported by the reader; kept as text, as the CIN mapping does
    elements, unknown_gender = gender_elements(child.gender, child.gender_text, "SEX")
    if child.birth_date:
        elements["birthDate"] = child.birth_date.isoformat()
    identifiers = [identifier(systems.UPN, child.upn, "official")] if child.upn else []
    return patient(systems.la_child_id_system(agency.code), child.child_id, record=child.child_id,
                   identifiers=identifiers, extensions=extensions + unknown_gender, managing=agency, **elements)


def _episode(ep: Episode, subject: dict[str, str], agency: Agency) -> Upsert:
    """An episode is one span with one legal status and one placement, so both classify it
    (EpisodeOfCare.type, searchable); the reasons it began and ended, the provider and the
    postcodes are extensions."""
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
    episode = source_record("EpisodeOfCare", agency, KIND_EPISODE, f"{ep.child_id}/{ep.start.isoformat()}",
                            record=ep.child_id, status="finished" if ep.end else "active", type=types,
                            patient=subject, managingOrganization=organization_reference(agency),
                            period=period(ep.start, ep.end))
    if extensions:
        episode.resource["extension"] = extensions
    return episode


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
    return source_record("Flag", agency, KIND_FLAG, child_id, record=child_id,
                         status="inactive" if last.end else "active", category=[FLAG_CATEGORY],
                         code=codes.concept("safeguarding-flag", "looked-after"), subject=subject,
                         period=period(start, last.end), author=organization_reference(agency))


def _missing(items: list[MissingEpisode], patients: dict[str, Upsert], agency: Agency,
             issues: list[SourceIssue]) -> list[Upsert]:
    """One Observation per missing or away episode, effective over the episode. Two episodes of
    one kind starting the same day are told apart by ``#2``…, in order of their end dates; an
    exact repeat is reported and written once."""
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
            out.append(source_record("Observation", agency, KIND_MISSING, key, record=item.child_id, status="final",
                                     category=[SOCIAL_HISTORY], code=code,
                                     subject={"reference": patients[item.child_id].full_url},
                                     effectivePeriod=period(item.start, item.end),
                                     performer=[organization_reference(agency)]))
    return out
