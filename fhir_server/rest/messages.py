"""Plain request and response objects, independent of any web framework."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..repository.context import RequestContext


@dataclass
class FhirRequest:
    method: str  # GET POST PUT PATCH DELETE
    path: str  # relative to the FHIR base, without leading slash: "Patient/1/_history/2"
    ctx: RequestContext
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None  # parsed JSON (dict, or list for JSON Patch); raw bytes for an operation's non-FHIR body
    content_type: str | None = None
    # Files sent to an operation as multipart/form-data, or its raw non-FHIR body: (name, content).
    files: list[tuple[str, bytes]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None

    @property
    def url(self) -> str:
        """Relative URL as it would appear in Bundle.entry.request.url."""
        if not self.query:
            return self.path
        from urllib.parse import urlencode
        return f"{self.path}?{urlencode(self.query)}"


@dataclass
class FhirResponse:
    status: int
    resource: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # For writes: the stored resource (kept even when Prefer: return=minimal drops ``resource``)
    location: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    outcome: dict[str, Any] | None = None
    # A non-FHIR representation an operation produced (e.g. $triage as CSV), sent as is.
    raw: bytes | None = None
    media_type: str | None = None
