"""The FHIR face of a score: RiskAssessment, escalation Flag, Provenance and this system's Device. Pure.

* RiskAssessment (riskassessment.html): one per child, ``subject`` the child, ``basis`` the evidence,
  ``prediction.qualitativeRisk`` the band (our ``risk-band`` codes, with the HL7 risk-probability
  equivalent), the score in an extension, one ``note`` per reason.
* Flag (flag.html): category safety ("Safeguarding", as the agency mappings' Flags), code
  ``safeguarding-flag#escalation``, ``period``, ``author`` this system's Device, and the
  ``risk-escalation`` extension: score, band, model, what caused it (band-rise or trigger codes, also in
  ``safeguarding-flag``), the reasons, the evidence and the RiskAssessment.
* Provenance (provenance.html): for every raise, update and closure of a Flag.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_server.conformance import CANONICAL_BASE
from fhir_server.fhir.instants import format_instant

from .config import RiskConfig
from .model import RiskScore

DEVICE_ID = "sg-fhir-risk-model"
DEVICE_REF = {"reference": f"Device/{DEVICE_ID}", "display": "Safeguarding FHIR Server risk model"}
SAFEGUARDING_FLAG = f"{CANONICAL_BASE}/CodeSystem/safeguarding-flag"
RISK_BAND = f"{CANONICAL_BASE}/CodeSystem/risk-band"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
SCORE_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/risk-score"
ESCALATION_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/risk-escalation"
ASSESSMENT_SYSTEM = f"{CANONICAL_BASE}/Id/risk-assessment"
ESCALATION_SYSTEM = f"{CANONICAL_BASE}/Id/risk-escalation"
MAX_EVIDENCE = 50  # references listed per resource; the reasons name the rest


def device(config: RiskConfig) -> dict[str, Any]:
    return {"resourceType": "Device", "id": DEVICE_ID, "status": "active",
            "deviceName": [{"name": "Safeguarding FHIR Server risk model", "type": "user-friendly-name"}],
            "version": [{"value": config.label}]}


def reason_text(r: dict[str, Any]) -> str:
    where = f" ({r['agency']})" if r.get("agency") else ""
    corroborated = ", corroborated by more than one agency" if r.get("corroborated") else ""
    return f"{r['display']}{where}: +{r['contribution']}{corroborated}"


def _probability(config: RiskConfig, band: str) -> str:
    rank, top = config.band_rank(band), len(config.bands) - 1
    return "high" if rank == top else ("low" if rank <= 0 else "moderate")


def band_concept(config: RiskConfig, band: str) -> dict[str, Any]:
    display = next((b.display for b in config.bands if b.code == band), band)
    return {"coding": [{"system": RISK_BAND, "code": band},
                       {"system": RISK_PROBABILITY, "code": _probability(config, band)}], "text": display}


def risk_assessment(score: RiskScore, config: RiskConfig, now: datetime) -> dict[str, Any]:
    reasons = [r.as_json() for r in score.reasons]
    ra: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "identifier": [{"system": ASSESSMENT_SYSTEM, "value": score.child_id}],
        "status": "final",
        "method": {"text": f"Multi-agency safeguarding risk model {config.label}"},
        "code": {"text": "Multi-agency safeguarding risk"},
        "subject": {"reference": f"Patient/{score.child_id}"},
        "occurrenceDateTime": format_instant(now),
        "performer": DEVICE_REF,
        "prediction": [{"outcome": {"text": "Significant harm to the child"},
                        "qualitativeRisk": band_concept(config, score.band),
                        "rationale": f"Score {score.score} ({score.band})"}],
        "extension": [{"url": SCORE_EXTENSION, "valueDecimal": score.score}],
    }
    basis = [{"reference": ref} for ref in score.evidence[:MAX_EVIDENCE]]
    if basis:
        ra["basis"] = basis
    if reasons:
        ra["note"] = [{"text": reason_text(r)} for r in reasons]
    return ra


def escalation_flag(score: RiskScore, config: RiskConfig, *, causes: list[str], start: str,
                    assessment_id: str | None, end: str | None = None) -> dict[str, Any]:
    """The escalation Flag of one child; ``causes`` are safeguarding-flag codes (band-rise, triggers)."""
    ext: list[dict[str, Any]] = [{"url": "score", "valueDecimal": score.score},
                                 {"url": "band", "valueCoding": {"system": RISK_BAND, "code": score.band}},
                                 {"url": "model", "valueString": config.label}]
    ext += [{"url": "cause", "valueCoding": {"system": SAFEGUARDING_FLAG, "code": c}} for c in causes]
    ext += [{"url": "reason", "valueString": reason_text(r.as_json())} for r in score.reasons]
    for f in score.fired:
        ext.append({"url": "reason", "valueString": f"Trigger: {f.display}"})
    evidence = list(dict.fromkeys([*(ref for f in score.fired for ref in f.evidence), *score.evidence]))
    ext += [{"url": "evidence", "valueReference": {"reference": ref}} for ref in evidence[:MAX_EVIDENCE]]
    if assessment_id:
        ext.append({"url": "assessment", "valueReference": {"reference": f"RiskAssessment/{assessment_id}"}})
    period = {"start": start, **({"end": end} if end else {})}
    return {
        "resourceType": "Flag",
        "identifier": [{"system": ESCALATION_SYSTEM, "value": f"{score.child_id}/{start}"}],
        "status": "inactive" if end else "active",
        "category": [{"coding": [{"system": FLAG_CATEGORY, "code": "safety", "display": "Safety"}],
                      "text": "Safeguarding"}],
        "code": {"coding": [{"system": SAFEGUARDING_FLAG, "code": "escalation", "display": "Safeguarding escalation"}],
                 "text": f"Safeguarding escalation: {score.band} ({score.score})"},
        "subject": {"reference": f"Patient/{score.child_id}"},
        "period": period,
        "author": DEVICE_REF,
        "extension": [{"url": ESCALATION_EXTENSION, "extension": ext}],
    }


def provenance(flag_ref: str, activity: str, reason: str, evidence: list[str], now: datetime) -> dict[str, Any]:
    prov: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": flag_ref}],
        "recorded": format_instant(now),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": activity}]},
        "agent": [{"type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "author"}]}, "who": DEVICE_REF}],
        "reason": [{"text": reason}],
    }
    if evidence:
        prov["entity"] = [{"role": "source", "what": {"reference": ref}} for ref in evidence[:MAX_EVIDENCE]]
    return prov
