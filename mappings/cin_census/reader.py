"""CIN census XML → typed records, safely and in bounded memory.

Hostile XML is refused before parsing: a file larger than the limit, or one that declares a DOCTYPE
or an ENTITY (XXE, "billion laughs"), yields one file-level ``security``/``too-costly`` error and is
never handed to the parser. The parser itself is locked down as a second line of defence (no DTD
loading, no entity resolution, no network, no huge trees) and a DOCTYPE that slipped past the byte
scan (an exotic encoding) is still refused at the root element. A census has no use for DTDs.

The file is streamed with ``iterparse``: each ``Child`` is read when its end tag arrives and then
cleared, together with its already-read siblings, so memory holds one child at a time however large
the file. Problems are :class:`~mappings.core.SourceIssue` items naming the file, the XPath and the
field; nothing here raises on bad data.
"""
from __future__ import annotations

import codecs
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from lxml import etree

from ..core import SourceFile, SourceIssue
from .issues import at
from .records import (Assessment, CensusHeader, ChildRecord, CinEpisode, CinPlan, ProtectionPlan,
                      Section47)

MAX_BYTES_ENV = "FHIR_CIN_MAX_BYTES"
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
EARLIEST_DATE = date(1900, 1, 1)  # nothing in a CIN census can predate this: earlier is a typo (1066)

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:Z|[+-]\d{2}:\d{2})?$")
_UPN = re.compile(r"^[A-Za-z]\d{12}$|^[A-Za-z]\d{11}[A-Za-z]$")
_LEA = re.compile(r"^\d{3}$")
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})
# Wide encodings that hide ASCII markers from a byte search: by BOM, or by how "<?" starts the file
# (XML 1.0 appendix F, the autodetection libxml2 does too).
_WIDE = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (b"<\0\0\0", "utf-32-le"), (b"\0\0\0<", "utf-32-be"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
         (b"<\0?\0", "utf-16-le"), (b"\0<\0?", "utf-16-be"))


@dataclass(frozen=True)
class DatePolicy:
    """How bad a missing-or-unusable date is, and how far in the future it may lie.

    ``error`` where dropping the date would make what we store false or unkeyable: a start date
    keys its resource, an end date decides whether a plan (and its Flag) is still active, a birth
    date is what other agencies link on. ``warning`` where the date is informative and can be dropped.
    """

    severity: str
    days_ahead: int = 0  # 0: a date after today is impossible
    required: bool = False


DATES: dict[str, DatePolicy] = {
    "PersonBirthDate": DatePolicy("error"),
    "ExpectedPersonBirthDate": DatePolicy("warning", days_ahead=300),  # unborn: up to ~10 months ahead
    "PersonDeathDate": DatePolicy("warning"),
    "CINreferralDate": DatePolicy("error", required=True),
    "CINclosureDate": DatePolicy("error"),
    "DateOfInitialCPC": DatePolicy("warning"),
    "AssessmentActualStartDate": DatePolicy("error", required=True),
    "AssessmentInternalReviewDate": DatePolicy("warning"),
    "AssessmentAuthorisationDate": DatePolicy("warning"),
    "CINPlanStartDate": DatePolicy("error", required=True),
    "CINPlanEndDate": DatePolicy("error"),
    "S47ActualStartDate": DatePolicy("error", required=True),
    "InitialCPCtarget": DatePolicy("warning", days_ahead=366),
    "S47DateOfInitialCPC": DatePolicy("error"),  # ends the enquiry (period.end)
    "CPPstartDate": DatePolicy("error", required=True),
    "CPPendDate": DatePolicy("error"),
    "CPPreviewDate": DatePolicy("warning"),
}

# Elements we read, per parent; anything else is reported (warning) and ignored.
_KNOWN = {
    "Child": {"ChildIdentifiers", "ChildCharacteristics", "CINdetails"},
    "ChildIdentifiers": {"LAchildID", "UPN", "FormerUPN", "UPNunknown", "PersonBirthDate", "ExpectedPersonBirthDate",
                         "GenderCurrent", "Sex", "PersonDeathDate", "NHSnumber", "NHSNumber"},
    "ChildCharacteristics": {"Ethnicity", "Disabilities"},
    "Disabilities": {"Disability"},
    "CINdetails": {"CINreferralDate", "ReferralSource", "PrimaryNeedCode", "CINclosureDate", "ReasonForClosure",
                   "DateOfInitialCPC", "ReferralNFA", "Assessments", "CINPlanDates", "Section47",
                   "ChildProtectionPlans"},
    "Assessments": {"AssessmentActualStartDate", "AssessmentInternalReviewDate", "AssessmentAuthorisationDate",
                    "FactorsIdentifiedAtAssessment"},
    "FactorsIdentifiedAtAssessment": {"AssessmentFactors"},
    "CINPlanDates": {"CINPlanStartDate", "CINPlanEndDate"},
    "Section47": {"S47ActualStartDate", "InitialCPCtarget", "DateOfInitialCPC", "ICPCnotRequired"},
    "ChildProtectionPlans": {"CPPstartDate", "CPPendDate", "InitialCategoryOfAbuse", "LatestCategoryOfAbuse",
                             "NumberOfPreviousCPP", "Reviews"},
    "Reviews": {"CPPreviewDate"},
}
_NOT_MAPPED_YET = {"PreProceedingsandFGDM"}  # 2026 census: known, not mapped (reported once per child)
_REPEATING = {"Child", "CINdetails", "Assessments", "CINPlanDates", "Section47", "ChildProtectionPlans",
              "Disability", "AssessmentFactors", "CPPreviewDate"}


def max_bytes_from_env() -> int:
    """The size limit: ``FHIR_CIN_MAX_BYTES`` (bytes) or 200 MB."""
    raw = os.environ.get(MAX_BYTES_ENV, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_BYTES


def read_census(source: SourceFile, issues: list[SourceIssue], *, max_bytes: int | None = None,
                today: date | None = None) -> Iterator[CensusHeader | ChildRecord]:
    """Yield the header (once, before any child) and then each child of a CIN census file.

    Problems are appended to ``issues``. A file-level problem (too large, DOCTYPE/ENTITY, not XML,
    not a CIN census) is one error with ``record=""``, after which nothing more is yielded.
    """
    limit = max_bytes if max_bytes is not None else max_bytes_from_env()
    if len(source.content) > limit:
        issues.append(_file_issue(source, "too-costly", f"the file is {len(source.content)} bytes; the limit is "
                                  f"{limit} ({MAX_BYTES_ENV})", "file/size"))
        return
    declared = _declares_dtd(source.content)
    if declared:
        marker, line = declared
        issues.append(_file_issue(source, "security", f"the file declares {marker}; DTDs and entity declarations are "
                                  "refused (XXE and entity-expansion attacks), the file was not parsed",
                                  f"line {line}/{marker}"))
        return
    yield from _Stream(source, issues, today or date.today()).run()


def _declares_dtd(content: bytes) -> tuple[str, int] | None:
    """``<!DOCTYPE`` or ``<!ENTITY`` anywhere in the file (ASCII-compatible encodings, UTF-16/32),
    with its line number. Searched in the bytes (no copy) unless the start says the text is wider."""
    for start, encoding in _WIDE:
        if content.startswith(start):
            text = content.decode(encoding, errors="replace")
            for marker in ("<!DOCTYPE", "<!ENTITY"):
                if (found := text.find(marker)) >= 0:
                    return marker[2:], text.count("\n", 0, found) + 1
            return None
    for marker in ("<!DOCTYPE", "<!ENTITY"):
        if (found := content.find(marker.encode())) >= 0:
            return marker[2:], content.count(b"\n", 0, found) + 1
    return None


def _file_issue(source: SourceFile, code: str, message: str, where: str = "/Message") -> SourceIssue:
    """A file-level error (``record=""``): the whole file is rejected, even in lenient mode. ``where``
    is an XPath, or ``line N/what`` for a problem found before or outside the element tree."""
    return at("error", source.name, where, message, code=code)


def _local(elem: etree._Element) -> str:
    """The element name without a namespace (census files have none, but some tools add one)."""
    tag = elem.tag
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2] if tag.startswith("{") else tag


class _Stream:
    """The iterparse loop: header, then one child at a time."""

    def __init__(self, source: SourceFile, issues: list[SourceIssue], today: date) -> None:
        self.source, self.issues, self.today = source, issues, today
        self.header: CensusHeader | None = None
        self.children = 0
        self.keys: set[str] = set()

    def run(self) -> Iterator[CensusHeader | ChildRecord]:
        events = etree.iterparse(io.BytesIO(self.source.content), events=("end",),
                                 resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                                 remove_comments=True, remove_pis=True)
        root: etree._Element | None = None
        try:
            for _event, elem in events:
                if root is None:  # the first element to end: the prolog and the root's start are read
                    root = elem.getroottree().getroot()
                    problem = self._check_root(root)
                    if problem:
                        self.issues.append(problem)
                        return
                parent = elem.getparent()
                name = _local(elem)
                if parent is root and name == "Header":
                    self.header = _read_header(self.source, elem, self.issues, self.today)
                    yield self.header
                elif parent is not None and parent.getparent() is root and _local(parent) == "Children" \
                        and name == "Child":
                    if self.header is None:
                        self.header = CensusHeader(lea=None)
                        self.issues.append(_file_issue(self.source, "required", "no Header before the first Child: "
                                                       "the local authority (LEA) is unknown",
                                                       "/Message/Header/Source/LEA"))
                        yield self.header
                    self.children += 1
                    yield self._child(elem)
                    self._release(elem, parent)
                elif parent is root:
                    self._check_top(elem, name)
            if root is not None:
                self._check_end(root)
        except etree.XMLSyntaxError as exc:
            line = exc.lineno or (exc.position[0] if exc.position else 0)
            self.issues.append(_file_issue(self.source, "structure", f"not well-formed XML: {exc.msg}",
                                           f"line {line}/XML"))
        except (etree.LxmlError, LookupError, ValueError) as exc:  # e.g. an unknown declared encoding
            self.issues.append(_file_issue(self.source, "structure", f"unreadable XML: {exc}", "file/XML"))

    def _check_root(self, root: etree._Element) -> SourceIssue | None:
        info = root.getroottree().docinfo
        if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
            return _file_issue(self.source, "security", "the file declares a DOCTYPE; refused", "file/DOCTYPE")
        if _local(root) != "Message":
            return _file_issue(self.source, "structure", f"the root element is <{_local(root)}>, not <Message>: "
                               "not a CIN census file", f"/{_local(root)}")
        return None

    def _child(self, elem: etree._Element) -> ChildRecord:
        xpath = f"/Message/Children/Child[{self.children}]"
        reader = _ChildReader(self.source.name, self.issues, self.today, f"Child[{self.children}]")
        record = reader.child(elem, xpath, self.children)
        if record.la_child_id is not None:
            if record.la_child_id in self.keys:
                self.issues.append(at("error", self.source.name, f"{xpath}/ChildIdentifiers/LAchildID",
                                      f"LAchildID {record.la_child_id!r} appears more than once in the file; "
                                      "every copy is rejected", code="duplicate", record=record.key))
            self.keys.add(record.la_child_id)
        return record

    def _release(self, child: etree._Element, children: etree._Element) -> None:
        """Bounded memory: clear the child just read and drop the earlier ones (checking the text
        between them, complete by now)."""
        child.clear(keep_tail=True)
        while (previous := child.getprevious()) is not None:
            self._stray(previous.tail, "/Message/Children")
            if _local(previous) != "Child":
                self._warn(f"/Message/Children/{_local(previous)}", "unknown element, ignored", "not-supported")
            del children[0]

    def _check_top(self, elem: etree._Element, name: str) -> None:
        if name == "Children":
            self._stray(elem.text, "/Message/Children")
            for child in elem:
                self._stray(child.tail, "/Message/Children")
                if _local(child) != "Child":
                    self._warn(f"/Message/Children/{_local(child)}", "unknown element, ignored", "not-supported")
        elif name != "Header":
            self._warn(f"/Message/{name}", "unknown element, ignored", "not-supported")

    def _check_end(self, root: etree._Element) -> None:
        self._stray(root.text, "/Message")
        for part in root:
            self._stray(part.tail, "/Message")
        if self.header is None:
            self.issues.append(_file_issue(self.source, "required", "no Header: the local authority (LEA) is unknown",
                                           "/Message/Header/Source/LEA"))
        if not any(_local(p) == "Children" for p in root):
            self.issues.append(_file_issue(self.source, "required", "no Children element", "/Message/Children"))

    def _stray(self, text: str | None, where: str) -> None:
        if text and text.strip():
            self._warn(f"{where}/text()", f"stray text {_snippet(text)} ignored", "structure")

    def _warn(self, xpath: str, message: str, code: str) -> None:
        self.issues.append(at("warning", self.source.name, xpath, message, code=code))


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _read_header(source: SourceFile, header: etree._Element, issues: list[SourceIssue], today: date) -> CensusHeader:
    r = _ChildReader(source.name, issues, today, record="")
    r.severity_floor = "warning"  # header oddities other than the LEA do not reject the file
    details = r.only(header, "/Message/Header", "CollectionDetails", structural=True)
    sources = [e for e in header if _local(e) == "Source"]
    r.check_structure(header, "/Message/Header", {"CollectionDetails", "Source"})
    collection = year = generated = software = release = serial = None
    reference = None
    if details is not None:
        where = "/Message/Header/CollectionDetails"
        r.check_structure(details, where, {"Collection", "Year", "ReferenceDate"})
        collection, year = r.text(details, where, "Collection"), r.text(details, where, "Year")
        reference = r.date(details, where, "ReferenceDate", DatePolicy("warning", days_ahead=366))
        if collection is not None and collection != "CIN":
            r.issue("warning", f"{where}/Collection", f"collection is {collection!r}, expected 'CIN'")
    lea = None
    if not sources:
        issues.append(_file_issue(source, "required", "no Source: the local authority (LEA) is unknown",
                                  "/Message/Header/Source/LEA"))
    for n, src in enumerate(sources, start=1):
        where = "/Message/Header/Source" + (f"[{n}]" if len(sources) > 1 else "")
        r.check_structure(src, where, {"SourceLevel", "LEA", "SoftwareCode", "Release", "SerialNo", "DateTime"})
        value = r.text(src, where, "LEA")
        if value is None or not _LEA.match(value):
            issues.append(_file_issue(source, "value" if value else "required",
                                      f"LEA {value!r} is not a 3-digit local authority code" if value
                                      else "LEA is missing", f"{where}/LEA"))
        elif lea is None:
            lea = value
            software, release = r.text(src, where, "SoftwareCode"), r.text(src, where, "Release")
            serial, generated = r.text(src, where, "SerialNo"), r.text(src, where, "DateTime")
        elif value != lea:
            issues.append(_file_issue(source, "value", f"a second Source names LEA {value}, the first {lea}",
                                      f"{where}/LEA"))
    return CensusHeader(lea=lea, collection=collection, year=year, reference_date=reference, software=software,
                        release=release, serial_no=serial, generated=generated)


class _ChildReader:
    """Reads one Child subtree into records, reporting each problem against ``record``."""

    def __init__(self, file: str, issues: list[SourceIssue], today: date, record: str) -> None:
        self.file, self.issues, self.today, self.record = file, issues, today, record
        self.severity_floor = "error"

    # -- the Child --------------------------------------------------------------------------------

    def child(self, elem: etree._Element, xpath: str, index: int) -> ChildRecord:
        ids_xpath, chars_xpath = f"{xpath}/ChildIdentifiers", f"{xpath}/ChildCharacteristics"
        ids = self.only(elem, xpath, "ChildIdentifiers", structural=True)
        la_child_id = self.text(ids, ids_xpath, "LAchildID") if ids is not None else None
        if la_child_id is not None:
            self.record = la_child_id
        self.check_structure(elem, xpath, _KNOWN["Child"])
        if la_child_id is None:
            self.issue("error", f"{ids_xpath}/LAchildID",
                       "LAchildID is missing: the child cannot be identified and is rejected", "required")
        values: dict[str, object] = {}
        if ids is not None:
            self.check_structure(ids, ids_xpath, _KNOWN["ChildIdentifiers"])
            values.update(self._identifiers(ids, ids_xpath))
        chars = self.only(elem, xpath, "ChildCharacteristics", structural=True)
        if chars is not None:
            self.check_structure(chars, chars_xpath, _KNOWN["ChildCharacteristics"])
            values["ethnicity"] = self.code(chars, chars_xpath, "Ethnicity")
            values["disabilities"] = self._disabilities(chars, chars_xpath)
        episodes = [e for e in elem if _local(e) == "CINdetails"]
        if not episodes:
            self.issue("warning", f"{xpath}/CINdetails", "the child has no CINdetails", "required")
        return ChildRecord(index=index, xpath=xpath, key=self.record, la_child_id=la_child_id,
                           episodes=tuple(self._episode(e, f"{xpath}/CINdetails[{n}]")
                                          for n, e in enumerate(episodes, start=1)),
                           **values)  # type: ignore[arg-type]

    def _identifiers(self, ids: etree._Element, where: str) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, key in (("UPN", "upn"), ("FormerUPN", "former_upn")):
            value = self.text(ids, where, name)
            if value is not None and not _UPN.match(value):
                self.issue("warning", f"{where}/{name}",
                           f"{value!r} is not a UPN (a letter, 11 digits, then a digit or letter); not stored", "value")
                value = None
            out[key] = value.upper() if value else None
        out["upn_unknown"] = self.code(ids, where, "UPNunknown")
        nhs = self.text(ids, where, "NHSnumber") or self.text(ids, where, "NHSNumber")
        out["nhs_number"] = nhs.replace(" ", "") if nhs else None
        out["birth_date"] = self.date(ids, where, "PersonBirthDate")
        out["expected_birth_date"] = self.date(ids, where, "ExpectedPersonBirthDate")
        out["death_date"] = self.date(ids, where, "PersonDeathDate")
        current, sex = self.code(ids, where, "GenderCurrent"), self.code(ids, where, "Sex")
        if current is not None and sex is not None and current != sex:
            self.issue("warning", f"{where}/Sex", f"Sex {sex!r} and GenderCurrent {current!r} disagree; "
                       "Sex (the newer element) is used", "value")
        if sex is not None:
            out["gender"], out["gender_element"] = sex, "Sex"
        elif current is not None:
            out["gender"], out["gender_element"] = current, "GenderCurrent"
        else:
            self.issue("warning", f"{where}/Sex", "neither Sex nor GenderCurrent is given", "required")
        return out

    def _disabilities(self, chars: etree._Element, where: str) -> tuple[tuple[str, str], ...]:
        group = self.only(chars, where, "Disabilities", structural=True)
        if group is None:
            return ()
        gwhere = f"{where}/Disabilities"
        self.check_structure(group, gwhere, _KNOWN["Disabilities"])
        return self.repeated_codes(group, gwhere, "Disability")

    # -- CINdetails ------------------------------------------------------------------------------

    def _episode(self, elem: etree._Element, where: str) -> CinEpisode:
        self.check_structure(elem, where, _KNOWN["CINdetails"])
        return CinEpisode(
            xpath=where,
            referral_date=self.date(elem, where, "CINreferralDate"),
            referral_source=self.code(elem, where, "ReferralSource"),
            primary_need=self.code(elem, where, "PrimaryNeedCode"),
            closure_date=self.date(elem, where, "CINclosureDate"),
            closure_reason=self.code(elem, where, "ReasonForClosure"),
            initial_cpc=self.date(elem, where, "DateOfInitialCPC"),
            referral_nfa=self.boolean(elem, where, "ReferralNFA"),
            assessments=tuple(self._assessment(e, w) for e, w in self.each(elem, where, "Assessments")),
            cin_plans=tuple(self._cin_plan(e, w) for e, w in self.each(elem, where, "CINPlanDates")),
            section47s=tuple(self._section47(e, w) for e, w in self.each(elem, where, "Section47")),
            protection_plans=tuple(self._cp_plan(e, w) for e, w in self.each(elem, where, "ChildProtectionPlans")),
        )

    def _assessment(self, elem: etree._Element, where: str) -> Assessment:
        self.check_structure(elem, where, _KNOWN["Assessments"])
        factors: tuple[tuple[str, str], ...] = ()
        group = self.only(elem, where, "FactorsIdentifiedAtAssessment", structural=True)
        if group is not None:
            gwhere = f"{where}/FactorsIdentifiedAtAssessment"
            self.check_structure(group, gwhere, _KNOWN["FactorsIdentifiedAtAssessment"])
            factors = self.repeated_codes(group, gwhere, "AssessmentFactors")
        return Assessment(xpath=where, start=self.date(elem, where, "AssessmentActualStartDate"),
                          internal_review=self.date(elem, where, "AssessmentInternalReviewDate"),
                          authorised=self.date(elem, where, "AssessmentAuthorisationDate"), factors=factors)

    def _cin_plan(self, elem: etree._Element, where: str) -> CinPlan:
        self.check_structure(elem, where, _KNOWN["CINPlanDates"])
        return CinPlan(xpath=where, start=self.date(elem, where, "CINPlanStartDate"),
                       end=self.date(elem, where, "CINPlanEndDate"))

    def _section47(self, elem: etree._Element, where: str) -> Section47:
        self.check_structure(elem, where, _KNOWN["Section47"])
        return Section47(xpath=where, start=self.date(elem, where, "S47ActualStartDate"),
                         initial_cpc_target=self.date(elem, where, "InitialCPCtarget"),
                         initial_cpc=self.date(elem, where, "DateOfInitialCPC", DATES["S47DateOfInitialCPC"]),
                         icpc_not_required=self.boolean(elem, where, "ICPCnotRequired"))

    def _cp_plan(self, elem: etree._Element, where: str) -> ProtectionPlan:
        self.check_structure(elem, where, _KNOWN["ChildProtectionPlans"])
        reviews: list[date] = []
        group = self.only(elem, where, "Reviews", structural=True)
        if group is not None:
            gwhere = f"{where}/Reviews"
            self.check_structure(group, gwhere, _KNOWN["Reviews"])
            for n, review in enumerate((e for e in group if _local(e) == "CPPreviewDate"), start=1):
                value = self._parse_date(review, f"{gwhere}/CPPreviewDate[{n}]", DATES["CPPreviewDate"])
                if value is not None:
                    reviews.append(value)
        return ProtectionPlan(xpath=where, start=self.date(elem, where, "CPPstartDate"),
                              end=self.date(elem, where, "CPPendDate"),
                              initial_category=self.code(elem, where, "InitialCategoryOfAbuse"),
                              latest_category=self.code(elem, where, "LatestCategoryOfAbuse"),
                              previous_plans=self.integer(elem, where, "NumberOfPreviousCPP"),
                              reviews=tuple(reviews))

    # -- elements and values ---------------------------------------------------------------------

    def each(self, parent: etree._Element, where: str, name: str) -> Iterator[tuple[etree._Element, str]]:
        for n, elem in enumerate((e for e in parent if _local(e) == name), start=1):
            yield elem, f"{where}/{name}[{n}]"

    def only(self, parent: etree._Element, where: str, name: str, *, structural: bool = False) -> etree._Element | None:
        """The one ``name`` child of ``parent``; a second one is reported and ignored."""
        found = [e for e in parent if _local(e) == name]
        if len(found) > 1:
            self.issue("warning", f"{where}/{name}[2]", f"{name} appears {len(found)} times; the first is used",
                       "structure")
        if found and not structural and len(found[0]):
            self.issue("warning", f"{where}/{name}", "a value element has child elements; they are ignored",
                       "structure")
        return found[0] if found else None

    def text(self, parent: etree._Element, where: str, name: str) -> str | None:
        elem = self.only(parent, where, name)
        if elem is None:
            return None
        value = (elem.text or "").strip()
        return value or None

    def code(self, parent: etree._Element, where: str, name: str) -> str | None:
        value = self.text(parent, where, name)
        return value.upper() if value else None

    def repeated_codes(self, parent: etree._Element, where: str, name: str) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        for elem, xpath in self.each(parent, where, name):
            value = (elem.text or "").strip().upper()
            if value:
                out.append((value, xpath))
            else:
                self.issue("warning", xpath, f"empty {name} ignored", "required")
        return tuple(out)

    def date(self, parent: etree._Element, where: str, name: str, policy: DatePolicy | None = None) -> date | None:
        policy = policy or DATES[name]
        elem = self.only(parent, where, name)
        if elem is None or not (elem.text or "").strip():
            if policy.required:
                self.issue(policy.severity, f"{where}/{name}", f"{name} is missing", "required")
            return None
        return self._parse_date(elem, f"{where}/{name}", policy)

    def _parse_date(self, elem: etree._Element, xpath: str, policy: DatePolicy) -> date | None:
        raw = (elem.text or "").strip()
        match = _DATE.match(raw)
        value = None
        if match:
            try:
                value = date(int(match[1]), int(match[2]), int(match[3]))
            except ValueError:
                value = None
        dropped = " and is not stored" if policy.severity == "warning" else ""
        if value is None:
            self.issue(policy.severity, xpath, f"{raw!r} is not a date (YYYY-MM-DD){dropped}", "value")
        elif value < EARLIEST_DATE:
            self.issue(policy.severity, xpath, f"{raw} is an impossible date (before {EARLIEST_DATE}){dropped}",
                       "value")
            value = None
        elif value > self.today + timedelta(days=policy.days_ahead):
            self.issue(policy.severity, xpath, f"{raw} is in the future{dropped}", "value")
            value = None
        return value

    def boolean(self, parent: etree._Element, where: str, name: str) -> bool | None:
        value = self.text(parent, where, name)
        if value is None:
            return None
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        self.issue("warning", f"{where}/{name}", f"{value!r} is not true/false/1/0; not stored", "value")
        return None

    def integer(self, parent: etree._Element, where: str, name: str) -> int | None:
        value = self.text(parent, where, name)
        if value is None:
            return None
        if value.isdigit():
            return int(value)
        self.issue("warning", f"{where}/{name}", f"{value!r} is not a whole number; not stored", "value")
        return None

    def check_structure(self, elem: etree._Element, where: str, known: set[str]) -> None:
        """Stray text inside a container and elements we do not know: warnings, never silent."""
        if elem.text and elem.text.strip():
            self.issue("warning", f"{where}/text()", f"stray text {_snippet(elem.text)} ignored", "structure")
        unknown: dict[str, int] = {}
        for child in elem:
            name = _local(child)
            if child.tail and child.tail.strip():
                self.issue("warning", f"{where}/text()", f"stray text {_snippet(child.tail)} after <{name}> ignored",
                           "structure")
            if name not in known:
                unknown[name] = unknown.get(name, 0) + 1
        for name in unknown:
            message = ("not mapped yet (2026 census), ignored" if name in _NOT_MAPPED_YET
                       else "unknown element, ignored")
            suffix = "[1]" if name in _REPEATING else ""
            self.issue("warning", f"{where}/{name}{suffix}", message, "not-supported")

    def issue(self, severity: str, xpath: str, message: str, code: str = "value") -> None:
        if self.severity_floor == "warning" and severity == "error":
            severity = "warning"
        self.issues.append(at(severity, self.file, xpath, message, code=code, record=self.record))
