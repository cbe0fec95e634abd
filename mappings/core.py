"""The vocabulary every mapper shares: source files, agencies, issues and mapped resources."""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fhir_server.errors import Issue

from . import systems
from .snapshot import Snapshot

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
    code: str  # LA code (local-authority, education), police force code or ODS code
    name: str

    @property
    def identifier(self) -> dict[str, str]:
        """The agency Organization's identifier: one system per kind, so that an LA's children's
        social care and its education service, which share the LA code, are two Organizations."""
        system = {"local-authority": systems.LA_CODE, "police": systems.POLICE_FORCE,
                  "education": systems.LA_EDUCATION_SERVICE, "health": systems.ODS_CODE}[self.kind]
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

    @property
    def full_url(self) -> str:
        """The agency Organization's fullUrl in an import transaction: derived from its identifier, so
        a mapper can reference the Organization (``performer``, ``author``) before the loader adds
        it. A conditional reference (``Organization?identifier=…``) would not resolve on the first
        import, when the Organization is created by the same transaction."""
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, self.identifier['system'] + '|' + self.code)}"


def children_services(la_code: str) -> Agency:
    """A local authority's children's social care (CIN census, SSDA903), by its 3-digit LA code."""
    return Agency("local-authority", la_code, f"Local authority {la_code} children's social care")


def education_service(la_code: str) -> Agency:
    """A local authority's education service (it collects the school census from its schools)."""
    return Agency("education", la_code, f"Local authority {la_code} education service")


def police_force(code: str) -> Agency:
    """A police force by its Home Office code; the files carry only the code, hence the name."""
    return Agency("police", code, f"{code} Police")


def health_organisation(ods_code: str, name: str | None = None) -> Agency:
    """An NHS organisation by its ODS code, named as it names itself where it does."""
    return Agency("health", ods_code, name or f"{ods_code} NHS trust")


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
    ``merge``: the loader combines the resource with the stored one it updates instead of replacing
    it (:mod:`mappings.merge`), for resources that another format of the same agency also writes
    with other elements — every Patient, the agency Organization, shared reference data.

    The loader scopes ``match`` to the importing agency's resources (``&_tag=`` its source-agency
    tag), so that one agency never updates another's record that happens to carry the same
    identifier (an NHS number). ``shared`` is the explicit exception, for reference data every
    agency names the same way and may update: a school by its URN, an organisation by its ODS
    code, an agency's own Organization.
    """

    resource: dict[str, Any]
    match: str
    full_url: str = field(default_factory=lambda: f"urn:uuid:{uuid.uuid4()}")
    record: str = ""  # the source record it came from (for issues and progress)
    merge: bool = False
    shared: bool = False

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])


@dataclass
class MappingResult:
    """Everything one file yields: resources to upsert, issues, and how many records were read;
    for a full return, what it is the whole account of (``snapshots``, :mod:`.snapshot`)."""

    upserts: list[Upsert] = field(default_factory=list)
    issues: list[SourceIssue] = field(default_factory=list)
    records: int = 0
    rejected_records: int = 0
    snapshots: list[Snapshot] = field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return any(i.severity in ("error", "fatal") for i in self.issues)

    def error_records(self) -> set[str]:
        """The records that have an error: lenient mode drops them; ``""`` is the file itself."""
        return {i.record for i in self.issues if i.severity in ("error", "fatal")}

    @property
    def file_rejected(self) -> bool:
        """An error that belongs to no record: nothing in the file can be trusted."""
        return "" in self.error_records()

    def no_agency(self, file: str, field: str, message: str) -> None:
        """The file-level error of a file whose records name no agency (unless it has one already)."""
        if not self.file_rejected:
            self.issues.append(SourceIssue("error", file, "", field, message, "required"))

    def answer(self, agency: Agency, records: int) -> tuple[Agency | None, MappingResult]:
        """A mapper's answer (``formats.Mapper``) once its upserts are in: ``records`` read, the
        rejected ones counted, and no agency when a file-level error rejects the whole import."""
        self.records = records
        self.count_rejected()
        return (None if self.file_rejected else agency), self

    def count_rejected(self, records: set[str] | None = None) -> None:
        """``rejected_records``: the records with errors (only those among ``records``, when a
        mapper's issues also name records that are not source records)."""
        bad = self.error_records() - {""}
        self.rejected_records = len(bad if records is None else bad & records)


def answer_rows(result: MappingResult, files: list[SourceFile], code: str | None, field: str, missing: str,
                agency_of: Callable[[str], Agency], upserts_of: Callable[[Agency], list[Upsert]],
                records: set[str]) -> tuple[Agency | None, MappingResult]:
    """A row-based mapper's answer (``formats.Mapper``) once its rows are read: with the agency
    the rows name (``code`` in column ``field``; none: the file-level error ``missing``), its
    upserts, the dependents of rejected records rejected too, and the rejected ``records`` counted."""
    name = ", ".join(f.name for f in files)
    if code is None:
        result.no_agency(name, field, missing)
        return None, result
    agency = agency_of(code)
    result.upserts = upserts_of(agency)
    reject_dependents(result, name)
    result.count_rejected(records)
    return agency, result


def reject_dependents(result: MappingResult, file: str) -> None:
    """Lenient mode drops the records that have errors; an upsert that references (by ``full_url``)
    an upsert of a dropped record would then point at nothing and fail the whole transaction. Add an
    error issue for each such dependent record, repeatedly, so that it is dropped and reported too."""
    bad = result.error_records()
    if not bad or "" in bad:  # nothing dropped, or the whole file is rejected anyway
        return
    owner = {u.full_url: u.record for u in result.upserts}
    changed = True
    while changed:
        changed = False
        for upsert in result.upserts:
            if upsert.record in bad:
                continue
            for ref in _placeholders(upsert.resource):
                if owner.get(ref) in bad:
                    result.issues.append(SourceIssue(
                        "error", file, f"record {upsert.record}", upsert.resource_type,
                        f"not loaded: it refers to record {owner[ref]}, which has errors",
                        code="processing", record=upsert.record))
                    bad.add(upsert.record)
                    changed = True
                    break


def _placeholders(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _placeholders(value)
    elif isinstance(node, list):
        for value in node:
            yield from _placeholders(value)
    elif isinstance(node, str) and node.startswith("urn:uuid:"):
        yield node


def identifier_match(system: str, value: str) -> str:
    """The conditional-update criterion for an identifier (search.html#token)."""
    return token_criterion("identifier", system, value)


def agency_scope(agency: Agency) -> str:
    """The criterion that limits a conditional update to ``agency``'s resources (``_tag``)."""
    return token_criterion("_tag", systems.AGENCY_TAG_SYSTEM, agency.tag["code"])


def token_criterion(parameter: str, system: str, value: str) -> str:
    """``parameter=system|value`` for a token search (search.html#token): ``\\``, ``|``, ``,`` and
    ``$`` in the value escaped, the whole percent-encoded, because the criterion travels as a URL
    query (Bundle.entry.request.url): an unencoded "&", "+", "#" or "%" in a source key would
    change or cut the search."""
    escaped = value.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")
    return f"{parameter}=" + quote(f"{system}|{escaped}", safe=":/|\\,$")
