"""Our CodeSystems (profiles/codesystems/*.json) as Python look-ups, loaded once.

The JSON files are the single source of truth: they are served through the API, and mappers take
their systems and displays from them, so a code used in data always exists in a published CodeSystem.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

PROFILES = Path(__file__).resolve().parent.parent / "profiles" / "codesystems"


@lru_cache(maxsize=None)
def code_system(name: str) -> dict[str, Any]:
    return json.loads((PROFILES / f"{name}.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _displays(name: str) -> dict[str, str]:
    out: dict[str, str] = {}

    def walk(concepts: list[dict[str, Any]]) -> None:
        for c in concepts:
            out[c["code"]] = c.get("display", c["code"])
            walk(c.get("concept", []))

    walk(code_system(name).get("concept", []))
    return out


def is_known(name: str, code: str) -> bool:
    return code in _displays(name)


def coding(name: str, code: str) -> dict[str, str]:
    """A Coding from one of our CodeSystems; an unknown code is a programming error here (mappers
    check source codes with :func:`is_known` first and keep unknown ones as text)."""
    return {"system": code_system(name)["url"], "code": code, "display": _displays(name)[code]}


def concept(name: str, code: str) -> dict[str, Any]:
    """A CodeableConcept holding one coding from one of our CodeSystems."""
    return {"coding": [coding(name, code)]}
