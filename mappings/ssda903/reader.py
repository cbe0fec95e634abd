"""The CSV tables of one SSDA903 return → typed records (records.py), with every problem reported.

A return arrives as several CSV files in one import. Each is recognised by its header row, not its
name: ``DECOM`` makes the Episodes table, ``MIS_START``/``MISSING`` the Missing table, and
``CHILD``+``SEX``+``DOB`` the Header table. The other SSDA903 tables (UASC, Reviews, OC2, OC3, AD1,
PlacedAdoption, PrevPerm, SocialWorker) are recognised and ignored with a warning; any other file is
a file-level error. The Header table is required, at most one of each mapped table.

The local authority is not in these tables, so it comes from (docs/formats/ssda903-csv.md):
1. an ``LA_CODE`` column in any table (every value the same 3-digit code), or
2. the file names: a leading 3-digit code and a separator, as in ``201_header.csv`` or ``201-episodes.csv``.
When both are present they must agree; when neither is, or they disagree, the return is unusable
(file-level error): identifiers minted per local authority cannot be guessed.

Every row's record key is its ``CHILD``, so an error anywhere in a child's rows rejects that child
(Patient, episodes, flag and missing episodes together) in lenient mode.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from ..core import SourceFile, SourceIssue
from ..csvutil import CsvTable, Row, Where, optional_upn, read_header
from .records import ChildHeader, Concept, Episode, MissingEpisode, Return

_LA_CODE = re.compile(r"\d{3}")
_LA_IN_NAME = re.compile(r"(\d{3})[_\-. ]")


@dataclass(frozen=True)
class TableSpec:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


HEADER = TableSpec("Header", ("CHILD", "SEX", "DOB"), ("ETHNIC", "UPN", "MOTHER", "MC_DOB", "LA_CODE"))
EPISODES = TableSpec("Episodes", ("CHILD", "DECOM", "RNE", "LS", "PLACE", "DEC", "REC"),
                     ("CIN", "PLACE_PROVIDER", "REASON_PLACE_CHANGE", "HOME_POST", "PL_POST", "URN", "LA_CODE"))
MISSING = TableSpec("Missing", ("CHILD", "MISSING", "MIS_START", "MIS_END"), ("DOB", "LA_CODE"))
# The other tables of a return, by a column only they have: recognised, not mapped.
OTHER_TABLES = {"duc": "UASC", "review": "Reviews", "sdq_score": "OC2", "in_touch": "OC3", "date_int": "AD1",
                "date_placed": "PlacedAdoption", "prev_perm": "PrevPerm", "sw_id": "SocialWorker"}


def recognise(columns: Iterable[str]) -> TableSpec | str | None:
    """The mapped table a header row belongs to, the name of an unmapped SSDA903 table, or None."""
    cols = set(columns)
    if "child" not in cols:
        return None
    if "decom" in cols:
        return EPISODES
    if "mis_start" in cols or "missing" in cols:
        return MISSING
    for column, name in OTHER_TABLES.items():
        if column in cols:
            return name
    if {"sex", "dob"} <= cols:
        return HEADER
    return None


def la_code_from_name(name: str) -> str | None:
    """``201`` from ``201_header.csv`` (any directory part ignored)."""
    base = re.split(r"[\\/]", name)[-1]
    m = _LA_IN_NAME.match(base)
    return m.group(1) if m else None


def read_return(files: list[SourceFile], issues: list[SourceIssue], today: date) -> Return | None:
    """Read the tables of one return. None (with a file-level error) when the return is unusable:
    no Header table, a table given twice, a file that is no SSDA903 table, or no local authority."""
    tables: dict[str, SourceFile] = {}
    usable = True
    for source in files:
        kind = recognise(read_header(source))
        if kind is None:
            issues.append(_file_error(source.name, "", "not an SSDA903 table: expected the Header, Episodes or "
                                      "Missing table (recognised by their header rows)", "structure"))
            usable = False
        elif isinstance(kind, str):
            issues.append(SourceIssue("warning", source.name, "line 1", "",
                                      f"SSDA903 {kind} table: not mapped, ignored", "not-supported"))
        elif kind.name in tables:
            issues.append(_file_error(source.name, "", f"a second {kind.name} table (the first is "
                                      f"{tables[kind.name].name}); send one return at a time", "structure"))
            usable = False
        else:
            tables[kind.name] = source
    if HEADER.name not in tables:
        issues.append(_file_error(files[0].name if files else "", "", "the return has no Header table "
                                  "(CHILD, SEX, DOB, …): children cannot be created without it", "required"))
        return None
    if not usable:
        return None

    reader = _Reader(issues, today)
    ret = Return(la_code=None, header_file=tables[HEADER.name].name)
    for spec, read in ((HEADER, reader.header), (EPISODES, reader.episode), (MISSING, reader.missing)):
        if spec.name not in tables:
            continue
        table = CsvTable(tables[spec.name], issues, required=spec.required, optional=spec.optional, key="CHILD")
        if not table.ok:
            return None
        ret.tables.add(spec.name)
        for row in table:
            ret.keys.add(row.record)
            reader.la_code(row)
            read(row, ret)
    ret.la_code = _decide_la_code(tables, reader.la_codes, issues)
    if ret.la_code is None:
        return None
    _cross_check(ret, issues)
    return ret


def _file_error(file: str, field: str, message: str, code: str) -> SourceIssue:
    return SourceIssue("error", file, "line 1", field, message, code)


def _decide_la_code(tables: dict[str, SourceFile], from_columns: dict[str, tuple[str, int]],
                    issues: list[SourceIssue]) -> str | None:
    header_file = tables[HEADER.name].name
    from_names = {code: source.name for source in tables.values() if (code := la_code_from_name(source.name))}
    if len(from_columns) > 1:
        found = ", ".join(f"{code} ({file} line {line})" for code, (file, line) in sorted(from_columns.items()))
        issues.append(_file_error(header_file, "LA_CODE", f"the LA_CODE column names several local authorities: "
                                  f"{found}", "invariant"))
        return None
    if len(from_names) > 1:
        issues.append(_file_error(header_file, "", "the file names name several local authorities: "
                                  + ", ".join(f"{c} ({n})" for c, n in sorted(from_names.items())), "invariant"))
        return None
    if from_columns and from_names and set(from_columns) != set(from_names):
        issues.append(_file_error(header_file, "LA_CODE", f"LA_CODE {next(iter(from_columns))} does not match the "
                                  f"file names ({next(iter(from_names))})", "invariant"))
        return None
    code = next(iter(from_columns), None) or next(iter(from_names), None)
    if code is None:
        issues.append(_file_error(header_file, "LA_CODE", "the local authority is unknown: name the files "
                                  "<LA>_header.csv, <LA>_episodes.csv, … or add an LA_CODE column "
                                  "(3-digit DfE code)", "required"))
    return code


class _Reader:
    def __init__(self, issues: list[SourceIssue], today: date) -> None:
        self.issues = issues
        self.today = today
        self.la_codes: dict[str, tuple[str, int]] = {}  # code → where first seen
        self._header_rows: dict[str, Row] = {}
        self._episode_starts: dict[tuple[str, date], int] = {}

    def la_code(self, row: Row) -> None:
        code = row.get("LA_CODE")
        if not code:
            return
        if not _LA_CODE.fullmatch(code):
            row.error("LA_CODE", f"{code!r} is not a 3-digit local authority code")
            return
        self.la_codes.setdefault(code, (row.file, row.line))

    # -- Header ------------------------------------------------------------------------------------

    def header(self, row: Row, ret: Return) -> None:
        child_id = row.required("CHILD")
        if child_id is None:
            return
        sex = row.get("SEX")
        if not sex:
            row.warning("SEX", "SEX is missing (required by SSDA903)", "required")
        gender = row.gender("SEX")
        birth = row.date("DOB", required=True, not_after=self.today)
        record = ChildHeader(row.where, child_id, gender, sex, birth,
                             _coded(row, "ETHNIC", "cin-ethnicity"), optional_upn(row, "UPN"))
        earlier = ret.children.get(child_id)
        if earlier is None:
            ret.children[child_id] = record
            self._header_rows[child_id] = row
        elif _same_child(earlier, record):
            row.warning("CHILD", f"the child is listed again (first at line {earlier.where.line}); ignored")
        else:
            row.error("CHILD", f"the child is listed again (first at line {earlier.where.line}) with different "
                      "details", "duplicate")


    # -- Episodes ----------------------------------------------------------------------------------

    def episode(self, row: Row, ret: Return) -> None:
        child_id = row.required("CHILD")
        start = row.date("DECOM", required=True, not_after=self.today)
        end = row.date("DEC", not_after=self.today)
        if child_id is None or start is None or not row.period("DECOM", start, "DEC", end):
            return
        earlier = self._episode_starts.get((child_id, start))
        if earlier is not None:
            row.error("DECOM", f"a second episode of this child starting {start.isoformat()} (first at line "
                      f"{earlier})", "duplicate")
            return
        self._episode_starts[(child_id, start)] = row.line
        reason_ceased = _coded(row, "REC", "ssda903-reason-episode-ceased", expected=False)
        if reason_ceased is not None and end is None:
            row.error("DEC", "REC says the episode ceased but DEC is empty: is the episode open or closed?",
                      "required")
            return
        if end is not None and reason_ceased is None:
            row.warning("REC", "the episode ceased (DEC) without a reason (REC)", "required")
        ret.episodes.append(Episode(
            row.where, child_id, start, end,
            reason_new=_coded(row, "RNE", "ssda903-reason-new-episode"),
            legal_status=_coded(row, "LS", "ssda903-legal-status"),
            category_of_need=_coded(row, "CIN", "cin-primary-need"),
            placement=_coded(row, "PLACE", "ssda903-placement-type"),
            provider=_coded(row, "PLACE_PROVIDER", "ssda903-placement-provider", expected=False),
            reason_ceased=reason_ceased,
            reason_place_change=_coded(row, "REASON_PLACE_CHANGE", "ssda903-reason-place-change", expected=False),
            home_postcode=row.get("HOME_POST").upper() or None,
            placement_postcode=row.get("PL_POST").upper() or None,
            placement_urn=_urn(row.get("URN")),
        ))

    # -- Missing -----------------------------------------------------------------------------------

    def missing(self, row: Row, ret: Return) -> None:
        child_id = row.required("CHILD")
        kind = row.get("MISSING").upper()
        if not kind:
            row.error("MISSING", "required value is missing (M missing, A away without authorisation)", "required")
        elif kind not in ("M", "A"):
            row.warning("MISSING", f"unknown code {row.get('MISSING')!r} (expected M or A); kept as text",
                        "code-invalid")
            kind = row.get("MISSING")
        start = row.date("MIS_START", required=True, not_after=self.today)
        end = row.date("MIS_END", not_after=self.today)
        birth = row.date("DOB")
        if child_id is None or not kind or start is None or not row.period("MIS_START", start, "MIS_END", end):
            return
        ret.missing.append(MissingEpisode(row.where, child_id, kind, start, end, birth))


def _coded(row: Row, name: str, code_system: str, *, expected: bool = True) -> Concept | None:
    """A coded column; a blank one that SSDA903 requires (``expected``) is a warning, not an error:
    the rest of the row is still true without it."""
    if expected and not row.get(name) and name.lower() in row.values:
        row.warning(name, f"{name} is missing (required by SSDA903)", "required")
    return row.concept(name, code_system)


def _urn(value: str) -> str | None:
    """The placement's Ofsted URN; ``XXXXXXX`` is how SSDA903 writes "no URN applies"."""
    return None if not value or set(value.upper()) == {"X"} else value


def _same_child(a: ChildHeader, b: ChildHeader) -> bool:
    return (a.gender_text, a.birth_date, a.ethnicity, a.upn) == (b.gender_text, b.birth_date, b.ethnicity, b.upn)


def _cross_check(ret: Return, issues: list[SourceIssue]) -> None:
    """Checks across tables: every child in Episodes and Missing is in Header (error: the child
    would have no Patient), DOBs agree (warning), a child's episodes do not overlap and only the
    last is open (warning), no episode starts before birth (error)."""
    def issue(severity: str, where: Where, child_id: str, field: str, message: str, code: str = "value") -> None:
        issues.append(SourceIssue(severity, where.file, where.location, field, message, code, record=child_id))

    for item in [*ret.episodes, *ret.missing]:
        if item.child_id not in ret.children:
            issue("error", item.where, item.child_id, "CHILD", f"child {item.child_id} is not in the Header table "
                  f"({ret.header_file})", "not-found")
    for miss in ret.missing:
        child = ret.children.get(miss.child_id)
        if child and child.birth_date and miss.birth_date and miss.birth_date != child.birth_date:
            issue("warning", miss.where, miss.child_id, "DOB", f"DOB {miss.birth_date.isoformat()} differs from the "
                  f"Header table ({child.birth_date.isoformat()})")
    by_child: dict[str, list[Episode]] = defaultdict(list)
    for ep in ret.episodes:
        by_child[ep.child_id].append(ep)
    for child_id, episodes in by_child.items():
        episodes.sort(key=lambda e: e.start)
        child = ret.children.get(child_id)
        if child and child.birth_date and episodes[0].start < child.birth_date:
            issue("error", episodes[0].where, child_id, "DECOM", f"the episode starts before the child's date of "
                  f"birth ({child.birth_date.isoformat()})")
        for before, after in zip(episodes, episodes[1:]):
            if before.end is None:
                issue("warning", before.where, child_id, "DEC", f"the episode is open but a later one starts "
                      f"{after.start.isoformat()} (line {after.where.line})")
            elif before.end > after.start:
                issue("warning", after.where, child_id, "DECOM", f"the episode starts before the previous one "
                      f"ends ({before.end.isoformat()}, line {before.where.line})")
