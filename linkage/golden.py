"""The master ("golden") Patient of a linked child, and the Provenance and review Task of a decision.

Pure functions from plain JSON to FHIR R4 JSON. A master Patient carries:

- ``meta.tag`` linkage#master, so it is never matched or linked as if it were an agency record;
- a stable identifier in the master-person system (https://w3id.org/sg-fhir/Id/master-person), kept
  for the life of the master, and the NHS number when its members agree on one valid number;
- ``Patient.link`` of type ``seealso`` to every agency record of the child (patient.html#links:
  "the link is to another Patient resource that concerns the same actual person");
- the demographics of its best member (health first: the spine's details are the most reliable);
- an extension listing the records a practitioner split off it, which linking on write respects.
"""
from __future__ import annotations

import uuid
from typing import Any

from fhir_server.conformance import CANONICAL_BASE
from fhir_server.fhir.instants import format_instant, utcnow

from .model import Score
from .record import LINKAGE_CODES, MASTER_SYSTEM, MASTER_TAG, NHS_NUMBER, nhs_number_is_valid

EXCLUDED_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/linkage-excluded"
SCORE_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/match-score"
REVIEW_SYSTEM = f"{CANONICAL_BASE}/Id/link-review"
SOFTWARE_SYSTEM = f"{CANONICAL_BASE}/Id/software"
CLIENT_SYSTEM = f"{CANONICAL_BASE}/Id/client"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_AGENCY_RANK = {"health": 0, "local-authority": 1, "education": 2, "police": 3}

LINKAGE_AGENT = {"identifier": {"system": SOFTWARE_SYSTEM, "value": "sg-fhir-linkage"},
                 "display": "Record linkage (Fellegi-Sunter, this server)"}


def new_master_identifier() -> str:
    return str(uuid.uuid4())


def links_of(master: dict[str, Any]) -> list[str]:
    """Ids of the agency Patients a master links to."""
    out = []
    for link in master.get("link") or []:
        ref = (link.get("other") or {}).get("reference", "")
        if link.get("type") == "seealso" and ref.startswith("Patient/"):
            out.append(ref.split("/", 1)[1])
    return out


def excluded_of(master: dict[str, Any]) -> set[str]:
    return {e["valueReference"]["reference"].split("/", 1)[1] for e in master.get("extension") or []
            if e.get("url") == EXCLUDED_EXTENSION and "/" in (e.get("valueReference") or {}).get("reference", "")}


def master_identifier(master: dict[str, Any]) -> str | None:
    return next((i.get("value") for i in master.get("identifier") or [] if i.get("system") == MASTER_SYSTEM), None)


def build_master(members: dict[str, dict[str, Any]], *, identifier: str, excluded: set[str] = frozenset(),
                 active: bool = True) -> dict[str, Any]:
    """The master Patient for ``members`` (agency Patient id → content)."""
    ranked = sorted(members.items(), key=lambda kv: (_rank(kv[1]), kv[0]))
    master: dict[str, Any] = {"resourceType": "Patient", "meta": {"tag": [dict(MASTER_TAG)]},
                              "identifier": [{"use": "official", "system": MASTER_SYSTEM, "value": identifier}],
                              "active": active}
    nhs = {i.get("value") for _, p in ranked for i in p.get("identifier") or []
           if i.get("system") == NHS_NUMBER and isinstance(i.get("value"), str) and nhs_number_is_valid(i["value"])}
    if len(nhs) == 1:
        master["identifier"].append({"system": NHS_NUMBER, "value": nhs.pop()})
    for element in ("name", "gender", "birthDate", "address"):
        for _, patient in ranked:
            if patient.get(element):
                master[element] = patient[element]
                break
    if members:
        master["link"] = [{"other": {"reference": f"Patient/{pid}"}, "type": "seealso"} for pid in sorted(members)]
    if excluded:
        master["extension"] = [{"url": EXCLUDED_EXTENSION, "valueReference": {"reference": f"Patient/{pid}"}}
                               for pid in sorted(excluded)]
    return master


def _rank(patient: dict[str, Any]) -> tuple[int, int]:
    tag = next((t.get("code", "") for t in (patient.get("meta") or {}).get("tag") or []
                if str(t.get("system", "")).endswith("/CodeSystem/source-agency")), "")
    missing = sum(1 for e in ("name", "birthDate", "gender", "address") if not patient.get(e))
    return missing, _AGENCY_RANK.get(tag.split("/", 1)[0], 9)


def practitioner_agent(practitioner: str | None, client_id: str | None) -> dict[str, Any]:
    """Provenance.agent.who for the person (or, without a user token, the client) that decided."""
    if practitioner:
        return {"reference": practitioner}
    return {"identifier": {"system": CLIENT_SYSTEM, "value": client_id or "anonymous"},
            "display": f"Client {client_id or 'anonymous'}"}


def provenance(activity: str, targets: list[str], *, who: dict[str, Any], reason: str,
               score: Score | None = None, entities: list[str] = ()) -> dict[str, Any]:
    """A Provenance for one link decision (provenance.html): the master and record(s) it changed,
    who decided (this system's linkage, or a practitioner), why, and the match score."""
    prov: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": t} for t in targets],
        "recorded": format_instant(utcnow()),
        "activity": {"coding": [{"system": LINKAGE_CODES, "code": activity}]},
        "agent": [{"type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "performer"}]}, "who": who}],
        "reason": [{"text": reason}],
    }
    if entities:
        prov["entity"] = [{"role": "source", "what": {"reference": e}} for e in entities]
    if score is not None:
        prov["extension"] = [{"url": SCORE_EXTENSION, "valueDecimal": round(score.probability, 6)}]
    return prov


def pair_key(a: str, b: str) -> str:
    return "~".join(sorted((a, b)))


def completed_task(task: dict[str, Any], outcome: str, master_id: str | None, owner: str | None) -> dict[str, Any]:
    """A review Task answered (task.html#statemachine: requested → completed): ``businessStatus``
    linked / not-linked, the practitioner as ``owner``, the master as ``output``."""
    done = {**task, "status": "completed", "lastModified": format_instant(utcnow()), "businessStatus": {"text": outcome}}
    if owner:
        done["owner"] = {"reference": owner}
    if master_id:
        done["output"] = [{"type": {"coding": [{"system": LINKAGE_CODES, "code": "master"}]},
                           "valueReference": {"reference": f"Patient/{master_id}"}}]
    return done


def review_task(record_id: str, candidate_id: str, master_id: str | None, score: Score) -> dict[str, Any]:
    """A Task asking a practitioner whether two records are the same person (task.html): ``for`` is
    the arriving record, ``focus`` the candidate; inputs carry both, the score, grade and master."""
    def code(c: str) -> dict[str, Any]:
        return {"coding": [{"system": LINKAGE_CODES, "code": c}]}

    inputs = [{"type": code("record"), "valueReference": {"reference": f"Patient/{record_id}"}},
              {"type": code("candidate"), "valueReference": {"reference": f"Patient/{candidate_id}"}},
              {"type": code("match-score"), "valueDecimal": round(score.probability, 6)},
              {"type": code("match-grade"), "valueCode": score.grade or "possible"},
              {"type": code("explanation"), "valueString": score.explain()}]
    if master_id:
        inputs.append({"type": code("master"), "valueReference": {"reference": f"Patient/{master_id}"}})
    return {
        "resourceType": "Task",
        "identifier": [{"system": REVIEW_SYSTEM, "value": pair_key(record_id, candidate_id)}],
        "status": "requested",
        "intent": "proposal",
        "priority": "routine",
        "code": {"coding": [{"system": LINKAGE_CODES, "code": "link-review",
                             "display": "Review a possible record link"}]},
        "description": f"Are Patient/{record_id} and Patient/{candidate_id} the same person? "
                       f"Match probability {score.probability:.4f} ({score.grade}).",
        "focus": {"reference": f"Patient/{candidate_id}"},
        "for": {"reference": f"Patient/{record_id}"},
        "authoredOn": format_instant(utcnow()),
        "input": inputs,
    }
