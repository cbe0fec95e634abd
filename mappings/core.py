"""The vocabulary every mapper shares: source files, agencies, issues and mapped resources."""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import Issue

from . import systems

# Lawful bases (AGENCY_FORMATS.md §6), as policy URIs for Provenance.policy and Consent.policy.uri.
LAWFUL_BASIS = {
    "local-authority": "https://www.legislation.gov.uk/eur/2016/679/article/9#9-2-g"
                       "|https://www.legislation.gov.uk/ukpga/2018/12/schedule/1/part/2/paragraph/18",
    "health": "https://www.legislation.gov.uk/eur/2016/679/article/9#9-2-g"
              "|https://www.legislation.gov.uk/ukpga/2018/12/schedule/1/part/2/paragraph/18",
    "education": "https://www.legislation.gov.uk/eur/2016/679/article/6#6-1-e"
                 "|https://www.legislation.gov.uk/ukpga/2018/12/schedule/1/part/2/paragraph/18",
    "police": "https://www.legislation.gov.uk/ukpga/2018/12/schedule/8/paragraph/4",
}


@dataclass(frozen=True)
class Agency:
    """The organisation a file comes from; becomes an Organization and the source of every resource."""

    kind: str  # local-authority | police | education | health
    code: str  # LA code, police force code, school URN or ODS code
    name: str

    @property
    def identifier(self) -> dict[str, str]:
        system = {"local-authority": systems.LA_CODE, "police": systems.POLICE_FORCE,
                  "education": systems.SCHOOL_URN, "health": systems.ODS_CODE}[self.kind]
        return {"system": system, "value": self.code}

    @property
    def tag(self) -> dict[str, str]:
        """meta.tag naming the source agency, so every resource says where it came from."""
        return {"system": systems.AGENCY_TAG_SYSTEM, "code": f"{self.kind}/{self.code}", "display": self.name}

    @property
    def meta_source(self) -> str:
        return f"{systems.CANONICAL_BASE}/agency/{self.kind}/{self.code}"

    @property
    def lawful_basis(self) -> list[str]:
        return LAWFUL_BASIS[self.kind].split("|")


@dataclass(frozen=True)
class SourceFile:
    name: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class SourceIssue:
    """A problem in a source file. Never an exception: mappers collect these and go on."""

    severity: str  # error | warning | information
    file: str
    location: str  # "line 12" for CSV, an XPath such as /Message/Children/Child[3]/ChildIdentifiers/UPN
    field: str
    message: str
    code: str = "value"  # OperationOutcome issue type
    record: str = ""  # the source record (child, row, notification) it belongs to; lenient mode drops it

    def to_issue(self) -> Issue:
        """As an OperationOutcome issue; ``expression`` names file, location and field."""
        return Issue(self.severity, self.code, f"{self.file} {self.location} {self.field}: {self.message}",
                     (f"{self.file}#{self.location}/{self.field}",))


@dataclass
class Upsert:
    """One resource to write, identified by a business identifier so a re-import updates in place.

    ``match`` is the search (``identifier=system|value``) of the conditional update; ``full_url``
    (urn:uuid) lets other resources in the same file reference it before it has a server id.
    """

    resource: dict[str, Any]
    match: str
    full_url: str = field(default_factory=lambda: f"urn:uuid:{uuid.uuid4()}")
    record: str = ""  # the source record it came from (for issues and progress)

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])


@dataclass
class MappingResult:
    """Everything one file yields: resources to upsert, issues, and how many records were read."""

    upserts: list[Upsert] = field(default_factory=list)
    issues: list[SourceIssue] = field(default_factory=list)
    records: int = 0
    rejected_records: int = 0

    @property
    def has_errors(self) -> bool:
        return any(i.severity in ("error", "fatal") for i in self.issues)


def identifier_match(system: str, value: str) -> str:
    """The conditional-update criterion for an identifier (search.html#token)."""
    escaped = value.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")
    return f"identifier={system}|{escaped}"
