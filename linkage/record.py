"""A Patient reduced to what record linkage compares (:class:`PersonRecord`), and the master tag.

Agency Patients differ in shape (docs/formats/): the CIN census has no name or address, school
records have a UPN but never an NHS number, health records have a hospital number and usually the
NHS number. Everything absent is None/empty and is compared as "no evidence".
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from fhir_server.conformance import CANONICAL_BASE
from mappings.systems import FORMER_UPN, NHS_NUMBER, UPN  # the identifier systems the mappings write

from .compare import name_key, normalise_postcode, parse_date

LA_CHILD_ID_PREFIX = f"{CANONICAL_BASE}/Id/la-child-id/"
MASTER_SYSTEM = f"{CANONICAL_BASE}/Id/master-person"
LINKAGE_CODES = f"{CANONICAL_BASE}/CodeSystem/linkage"
MASTER_TAG = {"system": LINKAGE_CODES, "code": "master", "display": "Master (golden) person record"}
AGENCY_TAG_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/source-agency"
# Identifier systems that say nothing about who a person is (record keys of files, episodes).
_IGNORED_SYSTEMS = ("urn:ietf:rfc:3986",)


def nhs_number_is_valid(value: str) -> bool:
    """NHS number: 10 digits with a modulus-11 check digit (NHS Data Dictionary)."""
    digits = value.replace(" ", "")
    if len(digits) != 10 or not digits.isdigit():
        return False
    total = sum(int(d) * (10 - i) for i, d in enumerate(digits[:9]))
    check = (11 - total % 11) % 11
    return check != 10 and check == int(digits[9])


@dataclass(frozen=True)
class PersonRecord:
    """The compared fields of one Patient. ``id`` is the Patient's id (or any unique key offline)."""

    id: str
    agency: str | None = None  # "health/QHL", "local-authority/330" (meta.tag source-agency)
    given: tuple[str, ...] = ()
    family: str | None = None
    birth_date: dt.date | None = None
    gender: str | None = None  # male | female (other/unknown compare as missing)
    postcodes: tuple[str, ...] = ()  # normalised, current home first
    nhs: str | None = None
    nhs_valid: bool = False
    identifiers: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (system, value), not NHS
    is_master: bool = False

    @property
    def postcode(self) -> str | None:
        return self.postcodes[0] if self.postcodes else None

    @property
    def forename_key(self) -> str:
        return name_key(self.given[0]) if self.given else ""

    @property
    def surname_key(self) -> str:
        return name_key(self.family) if self.family else ""

    def values(self, system: str) -> set[str]:
        return {v for s, v in self.identifiers if s == system}


def is_master(patient: dict[str, Any]) -> bool:
    tags = (patient.get("meta") or {}).get("tag") or []
    return any(t.get("system") == LINKAGE_CODES and t.get("code") == "master" for t in tags)


def from_patient(patient: dict[str, Any], res_id: str | None = None) -> PersonRecord:
    """The linkage view of a Patient resource (R4 JSON)."""
    name = _main_name(patient.get("name") or [])
    given: tuple[str, ...] = ()
    family = None
    if name:
        given = tuple(g for g in name.get("given") or [] if isinstance(g, str) and name_key(g))
        family = name.get("family") if isinstance(name.get("family"), str) and name_key(name["family"]) else None
    postcodes: list[str] = []
    for address in sorted(patient.get("address") or [], key=_address_rank):
        code = normalise_postcode(address.get("postalCode")) if isinstance(address, dict) else None
        if code and code not in postcodes:
            postcodes.append(code)
    nhs = None
    others: set[tuple[str, str]] = set()
    for ident in patient.get("identifier") or []:
        system, value = ident.get("system"), ident.get("value")
        if not isinstance(system, str) or not isinstance(value, str) or not value.strip():
            continue
        if system == NHS_NUMBER:
            nhs = nhs or value.replace(" ", "")
        elif system == FORMER_UPN:
            # A former UPN is a UPN the child held before (a temporary one replaced, a move between
            # systems): the DfE issues UPNs from one number space and never reuses one, so another
            # agency's record may hold it as the child's UPN. Compared and blocked on as a UPN.
            others.add((UPN, value.strip()))
        elif system != MASTER_SYSTEM and system not in _IGNORED_SYSTEMS:
            others.add((system, value.strip()))
    gender = patient.get("gender") if patient.get("gender") in ("male", "female") else None
    agency = next((t.get("code") for t in (patient.get("meta") or {}).get("tag") or []
                   if t.get("system") == AGENCY_TAG_SYSTEM), None)
    return PersonRecord(
        id=res_id or str(patient.get("id") or ""), agency=agency, given=given, family=family,
        birth_date=parse_date(patient.get("birthDate")), gender=gender, postcodes=tuple(postcodes),
        nhs=nhs, nhs_valid=bool(nhs) and nhs_number_is_valid(nhs or ""), identifiers=frozenset(others),
        is_master=is_master(patient))


def _main_name(names: list[Any]) -> dict[str, Any] | None:
    usable = [n for n in names if isinstance(n, dict) and n.get("use") not in ("old", "anonymous")]
    for use in ("official", "usual", None):
        for n in usable:
            if n.get("use") == use or use is None:
                return n
    return None


def _address_rank(address: Any) -> int:
    if not isinstance(address, dict):
        return 9
    if address.get("period", {}).get("end"):
        return 5
    return {"home": 0, None: 1, "temp": 2}.get(address.get("use"), 3)
