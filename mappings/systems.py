"""Canonical URLs and identifier systems used by every mapping.

National systems are used where they exist (NHS number, ODS codes). Local authority child ids and
pupil numbers have no national URI, so we mint them under this project's canonical base, one system
per local authority for ``LAchildID`` (the same id means different children in two LAs).
"""
from __future__ import annotations

from fhir_server.conformance import CANONICAL_BASE

NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS_CODE = "https://fhir.nhs.uk/Id/ods-organization-code"
UPN = f"{CANONICAL_BASE}/Id/upn"
FORMER_UPN = f"{CANONICAL_BASE}/Id/former-upn"
LA_CODE = f"{CANONICAL_BASE}/Id/la-code"  # DfE 3-digit local authority (LEA) code
# The LA's education service, by the same 3-digit code: an organisation of its own, not the LA's
# children's social care (LA_CODE) and not a school (SCHOOL_URN).
LA_EDUCATION_SERVICE = f"{CANONICAL_BASE}/Id/la-education-service"
SCHOOL_URN = f"{CANONICAL_BASE}/Id/school-urn"  # DfE unique reference number of a school
POLICE_FORCE = f"{CANONICAL_BASE}/Id/police-force"  # Home Office force code
POLICE_REFERENCE = f"{CANONICAL_BASE}/Id/police-reference"
IMPORT_FILE = "urn:ietf:rfc:3986"  # Provenance.entity identifier value is urn:sha256:<hex>

AGENCY_TAG_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/source-agency"


def la_child_id_system(la_code: str) -> str:
    return f"{CANONICAL_BASE}/Id/la-child-id/{la_code}"


def source_record_system(agency_code: str, kind: str) -> str:
    """Identifier system for a source-system record key (an episode, an incident) of one agency."""
    return f"{CANONICAL_BASE}/Id/{agency_code}/{kind}"


def code_system(name: str) -> str:
    return f"{CANONICAL_BASE}/CodeSystem/{name}"


def nhs_number_is_valid(value: str) -> bool:
    """NHS number: 10 digits, modulus-11 check digit (NHS Data Dictionary)."""
    digits = value.replace(" ", "")
    if len(digits) != 10 or not digits.isdigit():
        return False
    total = sum(int(d) * (10 - i) for i, d in enumerate(digits[:9]))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])
