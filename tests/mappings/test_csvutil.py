"""CSV reading and value parsing shared by the CSV mappers (pure: no database)."""
from __future__ import annotations

import datetime as dt

import pytest

from mappings.core import SourceFile, SourceIssue
from mappings.csvutil import CsvTable, parse_date, parse_datetime, parse_gender, parse_int, read_header, swapped
from mappings.dates import fhir_datetime


def _table(text: str | bytes, *, required=("id", "dob"), optional=("name",), key="id"):
    issues: list[SourceIssue] = []
    content = text.encode("utf-8") if isinstance(text, str) else text
    table = CsvTable(SourceFile("pupils.csv", content), issues, required=required, optional=optional, key=key)
    return table, issues


# --- dates ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2024-02-29", dt.date(2024, 2, 29)),
    ("29/02/2024", dt.date(2024, 2, 29)),
    ("1/3/2020", dt.date(2020, 3, 1)),
    (" 2019-12-01 ", dt.date(2019, 12, 1)),
])
def test_parse_date_accepts_iso_and_uk_forms(text, expected):
    assert parse_date(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("31/02/2024", "not a real date"),
    ("2023-02-29", "not a real date"),
    ("12/25/2020", "swapped"),          # MM/DD/YYYY: detectable because 25 cannot be a month
    ("2020-25-12", "swapped"),
    ("2020-13-13", "not a real date"),  # no swap would help
    ("01/02/20", "four digits"),
    ("2020/01/02", "expected YYYY-MM-DD or DD/MM/YYYY"),
    ("yesterday", "expected YYYY-MM-DD or DD/MM/YYYY"),
    ("01/01/1066", "not plausible"),
])
def test_parse_date_rejects_impossible_dates_with_a_reason(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_date(text)


def test_swapped_only_when_another_real_date():
    assert swapped(dt.date(2020, 3, 4)) == dt.date(2020, 4, 3)
    assert swapped(dt.date(2020, 3, 3)) is None
    assert swapped(dt.date(2020, 3, 25)) is None


def test_parse_datetime_local_uk_time_and_offsets():
    winter = parse_datetime("2025-01-04T21:40")
    summer = parse_datetime("04/07/2025 21:40")
    assert fhir_datetime(winter) == "2025-01-04T21:40:00+00:00"
    assert fhir_datetime(summer) == "2025-07-04T21:40:00+01:00"
    assert fhir_datetime(parse_datetime("2025-07-04T21:40:05Z")) == "2025-07-04T21:40:05+00:00"
    assert fhir_datetime(parse_datetime("2025-07-04 21:40+02:00")) == "2025-07-04T21:40:00+02:00"
    assert parse_datetime("2025-07-04") == dt.date(2025, 7, 4)
    with pytest.raises(ValueError, match="not a time of day"):
        parse_datetime("2025-07-04T25:00")
    with pytest.raises(ValueError, match="not a date-time"):
        parse_datetime("4th July")


@pytest.mark.parametrize("text, expected", [("M", "male"), ("f", "female"), ("U", "unknown"), ("1", "male"),
                                            ("2", "female"), ("0", "unknown"), ("9", "other"),
                                            ("Female", "female")])
def test_parse_gender(text, expected):
    assert parse_gender(text) == expected


def test_parse_gender_and_int_reject_others():
    with pytest.raises(ValueError):
        parse_gender("X")
    assert parse_int("012") == 12
    with pytest.raises(ValueError):
        parse_int("1.5")
    with pytest.raises(ValueError, match="below 0"):
        parse_int("-3")


# --- reading -------------------------------------------------------------------------------------

def test_header_is_case_insensitive_with_bom_and_any_order():
    table, issues = _table("\ufeffDOB,ID,Name\r\n2015-03-09,C1,Amara Okafor\r\n")
    rows = list(table)
    assert table.ok and not issues
    assert rows[0].get("id") == "C1" and rows[0].get("NAME") == "Amara Okafor"
    assert rows[0].line == 2 and rows[0].record == "C1"


def test_missing_required_column_is_a_file_level_error_and_no_rows_are_read():
    table, issues = _table("id,name\nC1,Amara\n")
    assert not table.ok and list(table) == []
    assert [(i.severity, i.field, i.record, i.location) for i in issues] == [("error", "dob", "", "line 1")]


def test_unknown_and_repeated_columns():
    table, issues = _table("id,dob,shoe_size,\nC1,2015-03-09,3,\n")
    assert table.ok and len(list(table)) == 1
    assert {(i.severity, i.field) for i in issues} == {("warning", "shoe_size"), ("warning", "column 4")}
    table, issues = _table("id,dob,ID\nC1,2015-03-09,C2\n")
    assert not table.ok and issues[0].message == "column appears more than once"


def test_empty_file_and_blank_lines():
    table, issues = _table("")
    assert not table.ok and issues[0].message.startswith("the file is empty")
    table, issues = _table("\n\nid,dob\n\nC1,2015-03-09\n,\n\nC2,2016-04-10\n")
    assert [(r.get("id"), r.line) for r in table] == [("C1", 5), ("C2", 8)]
    assert not issues


def test_line_numbers_follow_multiline_quoted_values():
    table, _ = _table('id,dob,name\nC1,2015-03-09,"Okafor,\nAmara"\nC2,2016-04-10,Ben\n')
    rows = list(table)
    assert [(r.get("id"), r.line) for r in rows] == [("C1", 2), ("C2", 4)]
    assert rows[0].get("name") == "Okafor,\nAmara"


def test_wrong_number_of_values_is_an_error_for_that_record():
    table, issues = _table("id,dob\nC1,2015-03-09,extra\nC2\n")
    rows = list(table)
    assert len(rows) == 2
    assert [(i.record, i.location, i.code) for i in issues] == [("C1", "line 2", "structure"),
                                                                ("C2", "line 3", "structure")]


def test_rows_without_a_key_are_records_of_their_own():
    table, _ = _table("id,dob\n,2015-03-09\n")
    assert next(iter(table)).record == "pupils.csv line 2"
    table, _ = _table("id,dob\nC1,2015-03-09\n", key=lambda v: f"{v['id']}/{v['dob']}")
    assert next(iter(table)).record == "C1/2015-03-09"


def test_windows_1252_lines_are_read_with_a_warning():
    table, issues = _table("id,dob,name\nC1,2015-03-09,Zoë Brontë\n".encode("cp1252"))
    rows = list(table)
    assert rows[0].get("name") == "Zoë Brontë"
    assert [(i.severity, i.location) for i in issues] == [("warning", "line 2")]


def test_undecodable_bytes_are_an_error_for_the_record():
    table, issues = _table(b"id,dob,name\nC1,2015-03-09,A\x81B\n")
    list(table)
    assert [(i.severity, i.record) for i in issues if i.severity == "error"] == [("error", "C1")]


def test_csv_syntax_error_stops_with_a_file_level_error():
    table, issues = _table(b'id,dob,name\nC1,2015-03-09,"A"B\nC2,2015-03-09,C\n')
    list(table)
    assert issues and issues[-1].severity == "error" and issues[-1].record == ""


def test_read_header_sniffs_without_consuming():
    source = SourceFile("201_episodes.csv", b"\xef\xbb\xbfCHILD,DECOM\n1,01/01/2020\n")
    assert read_header(source) == ["child", "decom"]
    assert read_header(SourceFile("x", b"")) == []


# --- row helpers ---------------------------------------------------------------------------------

def _row(**values):
    table, issues = _table("id,dob,name,start,end,g,n\n" + ",".join(values.get(k, "") for k in
                                                                     ("id", "dob", "name", "start", "end", "g", "n")),
                           optional=("name", "start", "end", "g", "n"))
    return next(iter(table)), issues


def test_row_date_reports_file_line_field_and_record():
    row, issues = _row(id="C7", dob="31/09/2015")
    assert row.date("dob") is None
    issue = issues[0]
    assert (issue.severity, issue.file, issue.location, issue.field, issue.record) == \
        ("error", "pupils.csv", "line 2", "dob", "C7")
    assert issue.to_issue().expression == ("pupils.csv#line 2/dob",)


def test_row_required_and_not_after():
    row, issues = _row(id="C7", dob="")
    assert row.date("dob", required=True) is None and issues[0].code == "required"
    row, issues = _row(id="C7", dob="2030-01-03")
    assert row.date("dob", not_after=dt.date(2025, 6, 1)) is None
    assert "after 2025-06-01" in issues[0].message and "swapped" not in issues[0].message
    row, issues = _row(id="C7", dob="05/12/2025")  # 5 Dec 2025 is future; 12 May 2025 is not
    assert row.date("dob", not_after=dt.date(2025, 6, 1)) is None
    assert "may be swapped" in issues[0].message


def test_row_period_order_with_swap_hint():
    row, issues = _row(id="C7", start="10/03/2024", end="04/05/2024")
    assert row.period("start", row.date("start"), "end", row.date("end"))
    row, issues = _row(id="C7", start="10/05/2024", end="04/05/2024")
    assert not row.period("start", row.date("start"), "end", row.date("end"))
    assert issues[0].field == "end" and issues[0].message == "04/05/2024 is before start 10/05/2024"
    row, issues = _row(id="C7", start="10/05/2024", end="06/04/2024")  # meant 4 June, written US-style
    assert not row.period("start", row.date("start"), "end", row.date("end"))
    assert issues[0].message.endswith("end with day and month swapped (2024-06-04) would fit")


def test_row_gender_unknown_is_a_warning():
    row, issues = _row(id="C7", g="X")
    assert row.gender("g") is None
    assert (issues[0].severity, issues[0].code) == ("warning", "code-invalid")


def test_row_code_and_concept():
    row, issues = _row(id="C7", g="suspension", n="made-up")
    assert row.code("g", ["SUSPENSION", "CME"]) == "SUSPENSION"
    assert row.concept("g", "risk-factor")["coding"][0]["code"] == "suspension"
    assert row.concept("n", "risk-factor") == {"text": "made-up"}
    assert (issues[0].severity, issues[0].field) == ("warning", "n")
    assert row.code("n", ["A"]) is None and issues[-1].severity == "error"


def test_row_integer():
    row, issues = _row(id="C7", n="-1")
    assert row.integer("n") is None and issues
    row, issues = _row(id="C7", n="12")
    assert row.integer("n") == 12 and not issues
