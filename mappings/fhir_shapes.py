"""FHIR shapes every mapper writes the same way, so that one child from several formats and agencies
looks the same: our extension URLs, the categories and security labels we use, references to the
agency, periods, a person's demographics, the Patient, and resources keyed by a source record. Pure.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date
from typing import Any, Protocol

from . import systems
from .core import Agency, Upsert, identifier_match
from .dates import DateOrTime, fhir_datetime

EXTENSION = f"{systems.CANONICAL_BASE}/StructureDefinition"
EXT_ETHNIC_CATEGORY = f"{EXTENSION}/ethnic-category"
EXT_SOURCE_VALUE = f"{EXTENSION}/source-value"  # an unknown code with no CodeableConcept to keep it in
ORIGINAL_TEXT = "http://hl7.org/fhir/StructureDefinition/originalText"
# Which format gave a value that several formats carry (mappings.merge.rank)
EXT_VALUE_SOURCE = f"{EXTENSION}/value-source"

OBSERVATION_CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "social-history", "display": "Social History"}
SOCIAL_HISTORY = {"coding": [OBSERVATION_CATEGORY]}  # Observation.category of every mapped observation
FLAG_CATEGORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category", "code": "safety",
                             "display": "Safety"}], "text": "Safeguarding"}

# Security labels (security-labels.html)
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
RESTRICTED = {"system": CONFIDENTIALITY, "code": "R", "display": "restricted"}

Resource = dict[str, Any]


def organization_reference(agency: Agency) -> dict[str, str]:
    """The agency's Organization, which the loader upserts in the same transaction under
    ``agency.full_url`` (rewritten to ``Organization/<id>`` on write, http.html#trules)."""
    return {"reference": agency.full_url, "display": agency.name}


def period(start: DateOrTime, end: DateOrTime | None = None) -> dict[str, str]:
    """A Period (datatypes.html#Period); open when there is no end."""
    out = {"start": fhir_datetime(start)}
    if end is not None:
        out["end"] = fhir_datetime(end)
    return out


def identifier(system: str, value: str, use: str | None = None) -> dict[str, str]:
    out = {"system": system, "value": value}
    if use:
        out["use"] = use
    return out


def sourced(concept: Resource, fmt: str) -> Resource:
    """``concept`` marked with the ``value-source`` extension: the format that gave it. A merging
    import keeps the stored value when it outranks the new one (:func:`mappings.merge.rank`), so
    that a value two formats disagree on does not depend on which was imported last."""
    mark = {"url": EXT_VALUE_SOURCE, "valueCode": fmt}
    return {**concept, "extension": [*concept.get("extension", []), mark]}


def gender_elements(gender: str | None, text: str, label: str | None = None) -> tuple[Resource, list[Resource]]:
    """``gender`` (administrative-gender), and a gender the source wrote that is no known code,
    kept rather than dropped: as ``unknown`` with the ``source-value`` extension "<label>: <text>"
    when ``label`` names the source element (the local authority and education formats), else as
    the ``originalText`` extension of ``_gender`` with no value (police, health). Returns the
    elements and the extensions to add to the resource."""
    if gender:
        return {"gender": gender}, []
    if not text:
        return {}, []
    if label is not None:
        return {"gender": "unknown"}, [{"url": EXT_SOURCE_VALUE, "valueString": f"{label}: {text}"}]
    return {"_gender": {"extension": [{"url": ORIGINAL_TEXT, "valueString": text}]}}, []


class Person(Protocol):
    """What a CSV format says about a person (police, health and education records have these)."""

    forename: str
    surname: str
    birth_date: date | None
    gender: str | None
    gender_text: str
    postcode: str


def demographics(person: Person, *, gender_label: str | None = None) -> tuple[Resource, list[Resource]]:
    """A person's ``name`` (official), ``gender`` (see :func:`gender_elements`), ``birthDate`` and
    ``address`` (the home postcode) — the elements Patient and RelatedPerson share; and extensions."""
    out: Resource = {}
    name: Resource = {}
    if person.surname:
        name["family"] = person.surname
    if person.forename:
        name["given"] = [person.forename]
    if name:
        out["name"] = [{"use": "official", **name}]
    gender, extensions = gender_elements(person.gender, person.gender_text, gender_label)
    out.update(gender)
    if person.birth_date:
        out["birthDate"] = person.birth_date.isoformat()
    if person.postcode:
        out["address"] = [{"use": "home", "postalCode": person.postcode}]
    return out, extensions


class KnownPerson(Person, Protocol):
    """A person a CSV format names as a patient: demographics, the lenient-mode ``record`` and,
    where the source has a valid one, the NHS number."""

    record: str
    nhs_number: str | None


def person_patient(system: str, value: str, person: KnownPerson, old_postcodes: Iterable[str] = ()) -> Upsert:
    """The Patient of a person a police or health CSV names (police person id, hospital number):
    :func:`demographics` without extensions (an unknown gender is kept as ``_gender``'s
    originalText), the NHS number as an official identifier, and ``old_postcodes`` (other than the
    current one) as addresses of ``use`` old: record linkage compares every address an agency knows."""
    elements, _ = demographics(person)
    old = [{"use": "old", "postalCode": code} for code in old_postcodes if code != person.postcode]
    if old:
        elements["address"] = [*elements.get("address", []), *old]
    nhs = [identifier(systems.NHS_NUMBER, person.nhs_number, "official")] if person.nhs_number else []
    return patient(system, value, record=person.record, identifiers=nhs, **elements)


def patient(system: str, value: str, *, record: str, use: str = "usual", identifiers: Iterable[Resource] = (),
            extensions: Iterable[Resource] = (), managing: Agency | None = None, full_url: str | None = None,
            **elements: Any) -> Upsert:
    """A Patient as an agency knows them: identified, and matched, by the agency's own key for the
    person (``system|value``), with further ``identifiers`` (UPN, NHS number…), ``elements``,
    ``extensions`` and the agency as ``managingOrganization`` (``managing``). Every Patient is
    merged with the stored one (:mod:`mappings.merge`): another format of the same agency may
    describe the same person with other elements."""
    resource: Resource = {"resourceType": "Patient", "identifier": [identifier(system, value, use), *identifiers],
                          **elements}
    if managing is not None:
        resource["managingOrganization"] = organization_reference(managing)
    extension_list = list(extensions)
    if extension_list:
        resource["extension"] = extension_list
    return Upsert(resource, identifier_match(system, value), full_url=full_url or f"urn:uuid:{uuid.uuid4()}",
                  record=record, merge=True)


def source_record(resource_type: str, agency: Agency, kind: str, key: str, *, record: str,
                  **elements: Any) -> Upsert:
    """A resource identified, and matched, by the key of one of the agency's source records of a
    ``kind`` (an episode, an attendance…), under ``source_record_system(agency, kind)``."""
    system = systems.source_record_system(agency.code, kind)
    resource: Resource = {"resourceType": resource_type, "identifier": [identifier(system, key)], **elements}
    return Upsert(resource, identifier_match(system, key), record=record)
