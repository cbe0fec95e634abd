"""XHTML narrative for FHIR (narrative.html#xhtml). Pure.

Every narrative is one ``<div xmlns="http://www.w3.org/1999/xhtml">`` holding only the basic elements
FHIR allows (p, b, ul, li, table, thead, tbody, tr, th, td, span, br); no attributes besides ``class``;
every piece of data is HTML-escaped, so a value containing markup is shown as text, never rendered.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from html import escape

XHTML_NS = "http://www.w3.org/1999/xhtml"
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def esc(value: object) -> str:
    """Escaped text; characters XML 1.0 forbids (control characters) are dropped."""
    text = "" if value is None else str(value)
    return escape(_NOT_XML.sub("", text), quote=True)


def div(*parts: str) -> str:
    """The narrative root. An empty narrative is not allowed (txt-2), so it never is."""
    body = "".join(parts) or "<p>No information.</p>"
    return f'<div xmlns="{XHTML_NS}">{body}</div>'


def p(text: object, *, bold: str | None = None) -> str:
    lead = f"<b>{esc(bold)}</b> " if bold else ""
    return f"<p>{lead}{esc(text)}</p>"


def ul(items: Iterable[object]) -> str:
    lis = "".join(f"<li>{esc(i)}</li>" for i in items)
    return f"<ul>{lis}</ul>" if lis else ""


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A table of text cells; a cell holding a list becomes lines separated by ``<br/>``."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "<br/>".join(esc(v) for v in value if v not in (None, ""))
    return esc(value)
