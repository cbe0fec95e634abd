"""The family summary as a FHIR document (documents.html): a Bundle of type ``document`` whose first
entry is a Composition, followed by every resource the Composition references. Pure.

- ``Bundle.identifier`` and ``Bundle.timestamp`` are set (bdl-9, bdl-10), every entry has a ``fullUrl``
  (the resource's absolute URL on this server; ``urn:uuid:`` for the Composition and the Device that
  authored it), and the Composition's references are absolute so they resolve to those fullUrls.
- Each section has a generated XHTML narrative; an empty section says so and carries ``emptyReason``
  (cmp-1, cmp-2).
- Besides what the sections name, the Bundle holds what those resources reference when it was
  collected (a RelatedPerson's Patient, an Observation's members), so the document stands alone.
  Import Provenance records are named in the narrative but not included: each targets every resource of
  a whole import file, other children's included.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from . import narrative as nx
from .family import build_family_graph
from .family_loader import FamilyRecord
from .refs import ReferenceIndex, code_displays
from .summary import SECTION_SYSTEM, Section, SummaryInput, build_sections

LOINC_PATIENT_SUMMARY = {"system": "http://loinc.org", "code": "60591-5", "display": "Patient summary Document"}
DOCUMENT_TITLE = "Multi-agency family summary"
EMPTY_REASON = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
                            "code": "nilknown", "display": "Nil Known"}], "text": "None recorded"}
SERVER_NAME = "Safeguarding FHIR Server"


def render_family_summary(record: FamilyRecord, *, subject_id: str, now: datetime, base_url: str,
                          profiles_dir: Any, version: str = "0.1.0") -> dict[str, Any]:
    """The document for the (already filtered) ``record`` of Patient ``subject_id`` as of ``now``."""
    today = now.date()
    graph = build_family_graph(record.child.patient_ids, record.patients, record.related, base_url, today=today)
    resources = {f"{f.res_type}/{f.res_id}": f.content for f in record.resources()}
    resources.update({f"Patient/{k}": v for k, v in record.patients.items()})
    resources.update({f"RelatedPerson/{k}": v for k, v in record.related.items()})
    inp = SummaryInput(subject_id=subject_id, resources=resources,
                       child_records=frozenset(f"{f.res_type}/{f.res_id}" for f in record.child.all()),
                       graph=graph, sources=record.sources, now=now.replace(tzinfo=None), base_url=base_url,
                       displays=code_displays(profiles_dir))
    return document_bundle(build_sections(inp), inp, version=version,
                           references=record.child.references or ReferenceIndex(base_url))


def document_bundle(sections: list[Section], inp: SummaryInput, *, version: str,
                    references: ReferenceIndex | None = None) -> dict[str, Any]:
    base = inp.base_url
    subject_ref = f"Patient/{inp.subject_id}"
    person = inp.graph.people.get(inp.graph.subject)
    name = person.name if person and person.name else "name not recorded"
    now = _instant(inp.now)
    composition_id, device_id, bundle_id = (str(uuid.uuid4()) for _ in range(3))
    device = {"resourceType": "Device", "id": device_id, "status": "active",
              "deviceName": [{"name": SERVER_NAME, "type": "user-friendly-name"}], "type": {"text": "FHIR server"},
              "version": [{"value": version}]}
    composition: dict[str, Any] = {
        "resourceType": "Composition", "id": composition_id,
        "text": {"status": "generated", "div": _header(inp, sections, name)},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{composition_id}"},
        "status": "final",
        "type": {"coding": [LOINC_PATIENT_SUMMARY], "text": DOCUMENT_TITLE},
        "subject": {"reference": f"{base}/{subject_ref}", "display": name},
        "date": now,
        "author": [{"reference": f"urn:uuid:{device_id}", "display": SERVER_NAME}],
        "title": f"{DOCUMENT_TITLE}: {name}" + (f" (born {person.birth_date})" if person and person.birth_date else ""),
        "confidentiality": "R",
        "event": [{"period": {"start": _instant(inp.now - inp.window), "end": now}}],
        "section": [_section(s, base) for s in sections],
    }
    wanted = [subject_ref, *(_all_entries(sections))]
    included = _closure(wanted, inp.resources, references or ReferenceIndex(base))
    entries = [{"fullUrl": f"urn:uuid:{composition_id}", "resource": composition},
               {"fullUrl": f"urn:uuid:{device_id}", "resource": device}]
    entries += [{"fullUrl": f"{base}/{ref}", "resource": inp.resources[ref]} for ref in included]
    return {"resourceType": "Bundle", "id": bundle_id, "meta": {"lastUpdated": now},
            "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{bundle_id}"},
            "type": "document", "timestamp": now, "entry": entries}


def _section(section: Section, base: str) -> dict[str, Any]:
    out: dict[str, Any] = {"title": section.title,
                           "code": {"coding": [{"system": SECTION_SYSTEM, "code": section.code}],
                                    "text": section.title}}
    empty = not section.div and not section.entries and not section.sections
    div = section.div or nx.div(nx.p("None recorded."))
    out["text"] = {"status": "generated", "div": div}
    if section.entries:
        out["entry"] = [{"reference": f"{base}/{ref}"} for ref in dict.fromkeys(section.entries)]
    if section.sections:
        out["section"] = [_section(s, base) for s in section.sections]
    if empty:
        out["emptyReason"] = EMPTY_REASON
    return out


def _all_entries(sections: list[Section]) -> list[str]:
    out: list[str] = []
    for s in sections:
        out += s.entries + _all_entries(s.sections)
    return out


def _closure(wanted: list[str], resources: dict[str, dict[str, Any]], references: ReferenceIndex) -> list[str]:
    """``wanted`` (in order, once each) plus whatever they reference that was collected, repeatedly."""
    out: dict[str, None] = {}
    stack = [r for r in reversed(wanted) if r in resources]
    while stack:
        ref = stack.pop()
        if ref in out:
            continue
        out[ref] = None
        for res_type, res_id in references.of(resources[ref]):
            target = f"{res_type}/{res_id}"
            if target in resources and target not in out:
                stack.append(target)
    return list(out)


def _header(inp: SummaryInput, sections: list[Section], name: str) -> str:
    person = inp.graph.people.get(inp.graph.subject)
    agencies = sorted(person.agencies.values()) if person else []
    parts = [nx.p(f"{DOCUMENT_TITLE} for {name}" + (f", born {person.birth_date}" if person and person.birth_date
                                                    else "") + f", produced {inp.now.date().isoformat()}."),
             nx.p("; ".join(agencies) or "none", bold="Known to:"),
             nx.p("Restricted: information shared between agencies to safeguard a child. Handle it under your "
                  "agency's information-sharing agreement and do not pass it on for any other purpose."),
             nx.ul(s.title for s in sections)]
    return nx.div(*parts)


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")
