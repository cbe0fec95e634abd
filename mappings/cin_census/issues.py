"""Issues against an element XPath: ``location`` is the parent path and ``field`` the element, so
that :meth:`SourceIssue.to_issue` gives back the whole XPath as the OperationOutcome expression."""
from __future__ import annotations

from ..core import SourceIssue


def at(severity: str, file: str, xpath: str, message: str, *, code: str = "value", record: str = "") -> SourceIssue:
    """An issue at ``xpath`` (e.g. ``/Message/Children/Child[3]/ChildIdentifiers/PersonBirthDate``)."""
    location, _, field = xpath.rpartition("/")
    return SourceIssue(severity, file, location or "/", field, message, code=code, record=record)
