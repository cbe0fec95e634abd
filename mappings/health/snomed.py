"""SNOMED CT concept identifiers, checked without a terminology server.

An SCTID is 6–18 digits with no leading zero; its last digit is a Verhoeff check digit and the two
digits before it are the partition identifier, ``00`` (international) or ``10`` (extension, such as
the UK edition) for a concept (SNOMED CT Technical Implementation Guide, "SCTID data structure").
The check catches typing and transposition errors. It cannot tell whether a concept exists or
belongs to a reference set: that needs the release files, which this server does not hold.
"""
from __future__ import annotations

SYSTEM = "http://snomed.info/sct"
# The ECDS safeguarding concern reference set (NHS Data Dictionary, SAFEGUARDING CONCERN (SNOMED CT)).
SAFEGUARDING_ISSUES_REFSET = "999002381000000108"

_D = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
      (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
      (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
      (9, 8, 7, 6, 5, 4, 3, 2, 1, 0))
# The permutation table: row i applies row 1 i times (Verhoeff 1969; SNOMED CT TRG Appendix F).
_P1 = (1, 5, 7, 6, 2, 8, 3, 0, 9, 4)
_P: tuple[tuple[int, ...], ...] = (tuple(range(10)),)
for _ in range(7):
    _P += (tuple(_P[-1][_P1[j]] for j in range(10)),)


def verhoeff_ok(digits: str) -> bool:
    check = 0
    for i, ch in enumerate(reversed(digits)):
        check = _D[check][_P[i % 8][int(ch)]]
    return check == 0


def concept_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a SNOMED CT concept id, or None when it can."""
    if not value.isdigit() or not 6 <= len(value) <= 18 or value.startswith("0"):
        return "a SNOMED CT concept id is 6 to 18 digits without a leading zero"
    if value[-3:-1] not in ("00", "10"):
        return f"partition {value[-3:-1]} is not that of a concept (00 or 10)"
    if not verhoeff_ok(value):
        return "the check digit is wrong (Verhoeff)"
    return None


def coding(code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": SYSTEM, "code": code}
    if display:
        out["display"] = display
    return out
