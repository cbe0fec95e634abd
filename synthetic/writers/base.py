"""Output files, opened on first use and kept open while families stream through, and the manifest.

A CSV file gets its header when opened; an XML or JSON file gets its opening text (the CIN census
header, ``[`` or the Bundle's first lines) when opened and its closing text when the run ends, so
memory stays flat however many families are written. Each file belongs to a manifest entry: one
logical source of one format from one agency (the three tables of an SSDA903 return share one).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AgencyRef:
    kind: str  # local-authority | police | education | health (mappings.core.Agency.kind)
    code: str
    name: str

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "code": self.code, "name": self.name}


@dataclass
class Entry:
    format: str
    agency: AgencyRef
    files: list[str] = field(default_factory=list)
    records: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # more manifest fields (an SSDA903 collection_year)


class TextFile:
    """A streamed text file: ``opening`` before the first item, ``separator`` between items."""

    def __init__(self, path: Path, opening: str, closing: str, separator: str) -> None:
        self.handle = path.open("w", encoding="utf-8", newline="\n")
        self.handle.write(opening)
        self.closing, self.separator = closing, separator
        self.items = 0

    def write_item(self, text: str) -> None:
        if self.items and self.separator:
            self.handle.write(self.separator)
        self.handle.write(text)
        self.items += 1

    def close(self) -> None:
        self.handle.write(self.closing)
        self.handle.close()


class CsvFile:
    def __init__(self, path: Path, header: tuple[str, ...]) -> None:
        # RFC 4180: CRLF line ends; csv.writer quotes only where needed
        self.handle = path.open("w", encoding="utf-8", newline="")
        self.writer = csv.writer(self.handle, lineterminator="\r\n")
        self.writer.writerow(header)
        self.rows = 0

    def row(self, values: list[Any] | tuple[Any, ...]) -> None:
        self.writer.writerow(values)
        self.rows += 1

    def close(self) -> None:
        self.handle.close()


class Outputs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: dict[str, Entry] = {}
        self._csv: dict[str, CsvFile] = {}
        self._text: dict[str, TextFile] = {}

    @property
    def files_open(self) -> int:
        return len(self._csv) + len(self._text)

    @property
    def files_written(self) -> int:
        return sum(len(e.files) for e in self.entries.values())

    def _register(self, rel: str, fmt: str, agency: AgencyRef, entry_key: str | None) -> Entry:
        key = entry_key or rel
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = Entry(fmt, agency)
        if rel not in entry.files:
            entry.files.append(rel)
        return entry

    def _path(self, rel: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def csv(self, rel: str, header: tuple[str, ...], fmt: str, agency: AgencyRef,
            entry_key: str | None = None) -> CsvFile:
        f = self._csv.get(rel)
        if f is None:
            self._register(rel, fmt, agency, entry_key)
            f = self._csv[rel] = CsvFile(self._path(rel), header)
        return f

    def text(self, rel: str, fmt: str, agency: AgencyRef, *, opening: str, closing: str,
             separator: str = "") -> TextFile:
        f = self._text.get(rel)
        if f is None:
            self._register(rel, fmt, agency, None)
            f = self._text[rel] = TextFile(self._path(rel), opening, closing, separator)
        return f

    def close_text(self, rel: str) -> None:
        f = self._text.pop(rel, None)
        if f is not None:
            f.close()

    def count(self, rel: str, entry_key: str | None = None, n: int = 1) -> None:
        self.entries[entry_key or rel].records += n

    def close(self) -> None:
        for f in self._csv.values():
            f.close()
        for f in self._text.values():
            f.close()
        self._csv.clear()
        self._text.clear()

    def manifest(self) -> list[dict[str, Any]]:
        out = []
        for entry in sorted(self.entries.values(), key=lambda e: (e.format, e.agency.code, e.files[0])):
            out.append({"format": entry.format, "agency": entry.agency.as_json(), "paths": entry.files,
                        "records": entry.records, **entry.details})
        return out


def iso(day: Any) -> str:
    return day.isoformat() if day is not None else ""


def uk(day: Any) -> str:
    return day.strftime("%d/%m/%Y") if day is not None else ""


def xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Writer:
    """One agency format: renders one family's story into its files."""

    def __init__(self, out: Outputs) -> None:
        self.out = out

    def write(self, story: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass
