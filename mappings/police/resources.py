"""Police records → FHIR R4 resources (docs/formats/police-notifications.md). Pure: no I/O.

- child → Patient, keyed by the force's person id; adult → RelatedPerson of that child (one per
  adult and child, since RelatedPerson.patient is one patient), keyed by the pair;
- notification → Observation (observation.html) with a risk-factor code, subject = the child,
  performer = the force Organization, identified by the police reference and keyed by
  (reference, child); the adults in it are linked with the ``involved-adult`` extension (role +
  RelatedPerson); for MARAC/MAPPA the referred adults are also ``Observation.focus`` — the
  observation is about them, the child being the patient of record (observation.html#focus);
- sensitivity labels (security-labels.html): SDV and restricted confidentiality on domestic abuse,
  sexual exploitation and MARAC; restricted on arrests, criminal exploitation and MAPPA.
"""
from __future__ import annotations

from typing import Any

from .. import codes, systems
from ..core import Agency, Upsert, identifier_match
from ..dates import fhir_datetime
from ..fhir_shapes import (EXTENSION, RESTRICTED, SOCIAL_HISTORY, demographics, organization_reference, period,
                           person_patient)
from .records import RISK_FACTOR, Notification, Person, PoliceFile, Relationship

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
INVOLVED_ADULT = f"{EXTENSION}/involved-adult"
CHILD_SCHOOL = f"{EXTENSION}/child-school"

SDV = {"system": ACT_CODE, "code": "SDV",
       "display": "sexual assault, abuse, or domestic violence information sensitivity"}
SECURITY = {"DA": [SDV, RESTRICTED], "CSE": [SDV, RESTRICTED], "MARAC": [SDV, RESTRICTED],
            "ARREST": [RESTRICTED], "CCE": [RESTRICTED], "MAPPA": [RESTRICTED], "MISSING": []}
UNKNOWN_TYPE_SECURITY = [RESTRICTED]  # an uncoded police notification is treated as restricted

# adult_relationship → v3 RoleCode (v3-RoleCode, PersonalRelationshipRoleType) where one fits.
ROLE_CODES = {"mother": ("MTH", "mother"), "father": ("FTH", "father"), "stepmother": ("STPMTH", "stepmother"),
              "stepfather": ("STPFTH", "stepfather"), "grandparent": ("GRPRN", "grandparent"),
              "sibling": ("SIB", "sibling")}


def person_system(force: str) -> str:
    return systems.source_record_system(force, "person")


def reference_system(force: str) -> str:
    """Police references are unique within a force, so each force has its own system."""
    return f"{systems.POLICE_REFERENCE}/{force}"


def to_fhir(police: PoliceFile, agency: Agency) -> list[Upsert]:
    """Every upsert of one import: Patients, then RelatedPersons, then Observations."""
    force = agency.code
    patients = {pid: _patient(person, force) for pid, person in police.children.items()}
    related = {key: _related_person(rel, police.adults[rel.adult_id], patients[rel.child_id], force)
               for key, rel in police.relationships.items()
               if rel.adult_id in police.adults and rel.child_id in patients}
    observations = [_observation(n, patients[n.child_id], related, agency)
                    for n in police.notifications.values() if n.child_id in patients]
    return [*patients.values(), *related.values(), *observations]


def _patient(child: Person, force: str) -> Upsert:
    return person_patient(person_system(force), child.person_id, child)


def _related_person(rel: Relationship, adult: Person, child: Upsert, force: str) -> Upsert:
    key = f"{rel.adult_id}:{rel.child_id}"
    resource: dict[str, Any] = {
        "resourceType": "RelatedPerson",
        "identifier": [{"use": "secondary", "system": systems.source_record_system(force, "relationship"),
                        "value": key},
                       {"use": "usual", "system": person_system(force), "value": rel.adult_id}],
        "active": True,
        "patient": {"reference": child.full_url},
    }
    if rel.relationship:
        resource["relationship"] = [_relationship(rel)]
    resource.update(demographics(adult)[0])
    # A record of its own: the adult may be related to several children, and one child's rejection
    # must not take the adult's links to the others with it.
    return Upsert(resource, identifier_match(systems.source_record_system(force, "relationship"), key),
                  record=f"relationship {key}")


def _relationship(rel: Relationship) -> dict[str, Any]:
    if rel.relationship in ROLE_CODES:
        code, display = ROLE_CODES[rel.relationship]
        return {"coding": [{"system": ROLE_CODE, "code": code, "display": display}]}
    if rel.known:
        return codes.concept("police-relationship", rel.relationship)
    return {"text": rel.relationship}


def _observation(n: Notification, patient: Upsert, related: dict[tuple[str, str], Upsert],
                 agency: Agency) -> Upsert:
    force = agency.code
    key = f"{n.reference}/{n.child_id}"
    resource: dict[str, Any] = {"resourceType": "Observation"}
    security = SECURITY.get(n.type, UNKNOWN_TYPE_SECURITY) if n.type_known else UNKNOWN_TYPE_SECURITY
    if security:
        resource["meta"] = {"security": security}
    extensions = [_involved(i.role, i.role_known, related.get((i.adult_id, n.child_id))) for i in n.adults
                  if (i.adult_id, n.child_id) in related]
    if n.school_urn:
        extensions.append({"url": CHILD_SCHOOL, "valueIdentifier": {"system": systems.SCHOOL_URN,
                                                                    "value": n.school_urn}})
    if extensions:
        resource["extension"] = extensions
    resource["identifier"] = [
        {"use": "official", "system": reference_system(force), "value": n.reference},
        {"use": "secondary", "system": systems.source_record_system(force, "notification"), "value": key},
    ]
    resource["status"] = "final"
    category = [SOCIAL_HISTORY]
    if n.type_known:
        category.append(codes.concept("police-notification-type", n.type))
    resource["category"] = category
    resource["code"] = _code(n)
    resource["subject"] = {"reference": patient.full_url}
    if n.type in ("MARAC", "MAPPA"):
        focus = [{"reference": related[(i.adult_id, n.child_id)].full_url} for i in n.adults
                 if (i.adult_id, n.child_id) in related]
        if focus:
            resource["focus"] = focus
    if n.end is not None or n.type == "MISSING":
        resource["effectivePeriod"] = period(n.start, n.end)
    else:
        resource["effectiveDateTime"] = fhir_datetime(n.start)
    resource["performer"] = [organization_reference(agency)]
    if n.offence:
        resource["valueString"] = n.offence
    notes = [(label, text) for label, text in (("Circumstances", n.circumstances), ("Child's voice", n.child_voice),
                                               ("Where the child was", n.child_location)) if text]
    if notes:
        resource["note"] = [{"text": f"{label}: {text}"} for label, text in notes]
    return Upsert(resource, identifier_match(systems.source_record_system(force, "notification"), key),
                  record=n.record)


def _code(n: Notification) -> dict[str, Any]:
    """The risk-factor code; domestic abuse splits on whether the child was present (Y, N, or U:
    not known, which has its own code so that no presence is asserted)."""
    if not n.type_known:
        return {"text": n.type}
    if n.type == "DA":
        if n.child_present == "Y":
            return codes.concept("risk-factor", "domestic-abuse-child-present")
        if n.child_present == "N":
            return codes.concept("risk-factor", "domestic-abuse-child-not-present")
        return codes.concept("risk-factor", "domestic-abuse-child-presence-unknown")
    return codes.concept("risk-factor", RISK_FACTOR[n.type])


def _involved(role: str, role_known: bool, person: Upsert | None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if role:
        concept = codes.concept("police-adult-role", role) if role_known else {"text": role}
        parts.append({"url": "role", "valueCodeableConcept": concept})
    if person is not None:
        parts.append({"url": "person", "valueReference": {"reference": person.full_url}})
    return {"url": INVOLVED_ADULT, "extension": parts}
