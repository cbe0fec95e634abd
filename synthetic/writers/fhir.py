"""FHIR R4 transaction Bundles, streamed to disk in chunks (``fhir-bundle``).

Each entry is a conditional update on a business identifier (``PUT Patient?identifier=system|value``,
http.html#cond-update) with a ``urn:uuid`` fullUrl that other entries reference, so a bundle can be
loaded twice without duplicating anything. A chunk is closed after ``max_patients`` patients, at a
family boundary, so no family is split across files.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from .base import AgencyRef, Outputs, TextFile, iso

FORMAT = "fhir-bundle"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
_NAMESPACE = uuid.UUID("6f1f5a8e-2f3b-5b8e-9c55-5a2d1d0e7c11")


@dataclass
class Chunk:
    rel: str
    sink: TextFile
    patients: int = 0
    included: set[str] = field(default_factory=set)  # fullUrls already in this chunk


class BundleFiles:
    def __init__(self, out: Outputs, *, seed: int, max_patients: int, timestamp: str) -> None:
        self.out, self.seed, self.max_patients, self.timestamp = out, seed, max_patients, timestamp
        self._chunks: dict[str, Chunk] = {}
        self._numbers: dict[str, int] = {}

    def full_url(self, key: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{self.seed}/{key}')}"

    def chunk(self, prefix: str, agency: AgencyRef, tag_system: str) -> Chunk:
        """The open chunk for ``prefix`` (e.g. ``health/QHL_gp_extract``), rolling over when full."""
        chunk = self._chunks.get(prefix)
        if chunk is not None and chunk.patients >= self.max_patients:
            self.out.close_text(chunk.rel)
            chunk = None
        if chunk is None:
            number = self._numbers.get(prefix, 0) + 1
            self._numbers[prefix] = number
            rel = f"{prefix}_{number:03d}.json"
            # meta.tag names the sender, as docs/formats/fhir-bundle.md asks of a Bundle with several
            # ODS-coded Organizations (here: the GP practices)
            head = {"resourceType": "Bundle",
                    "meta": {"tag": [{"system": tag_system, "code": f"{agency.kind}/{agency.code}",
                                      "display": agency.name}]},
                    "identifier": {"system": "urn:ietf:rfc:3986", "value": self.full_url(f"bundle/{rel}")},
                    "type": "transaction", "timestamp": self.timestamp}
            opening = json.dumps(head, ensure_ascii=False)[:-1] + ',"entry":[\n'
            sink = self.out.text(rel, FORMAT, agency, opening=opening, closing="\n]}\n", separator=",\n")
            chunk = self._chunks[prefix] = Chunk(rel, sink)
        return chunk

    def add(self, chunk: Chunk, resource: dict[str, Any], identifier: dict[str, str], key: str) -> str:
        """Append a conditional-update entry on ``identifier`` (once per chunk); return its fullUrl."""
        full_url = self.full_url(key)
        if full_url in chunk.included:
            return full_url
        chunk.included.add(full_url)
        url = f"{resource['resourceType']}?identifier={identifier['system']}|{identifier['value']}"
        entry = {"fullUrl": full_url, "resource": resource, "request": {"method": "PUT", "url": url}}
        chunk.sink.write_item(json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
        self.out.count(chunk.rel)
        return full_url


def human_name(forename: str, middle: str, surname: str) -> dict[str, Any]:
    given = [forename] + ([middle] if middle else [])
    return {"use": "official", "family": surname, "given": given}


def patient(identifiers: list[dict[str, str]], name: dict[str, Any], sex: str, dob: Any, postcode: str,
            **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers, "name": [name],
                                "gender": {"M": "male", "F": "female"}[sex], "birthDate": iso(dob)}
    if postcode:
        resource["address"] = [{"use": "home", "postalCode": postcode}]
    resource.update(extra)
    return resource


def snomed(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": SNOMED, "code": code, "display": display}]}
