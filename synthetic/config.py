"""What a run generates: size, seed, period, and how often each agency gets a person wrong."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ErrorRates:
    """Probabilities that one agency's record of one person carries each kind of error.

    An agency keeps one record per person (its own id), so an error made once is repeated on every
    row of that record — as in real systems. ``nhs_missing`` applies only where the format has an NHS
    number field (police notifications, the local authority's FHIR export, ED attendances).
    """

    nickname: float = 0.0  # "Liz" for Elizabeth (where the name has a known-as form)
    forename_variant: float = 0.0  # Mohammed/Muhammad, diacritics dropped (where a variant exists)
    forename_typo: float = 0.0  # one letter dropped, doubled, swapped or replaced
    surname_change: float = 0.0  # a child recorded with the other parent's or a hyphenated surname
    surname_typo: float = 0.0
    dob_swapped: float = 0.0  # day and month exchanged (only where both are 12 or less, so still a date)
    dob_typo: float = 0.0  # day or year off by one
    nhs_missing: float = 0.0
    nhs_typo: float = 0.0  # two digits transposed (usually fails the modulus-11 check)
    postcode_stale: float = 0.0  # the agency still holds the address before the family's last move
    postcode_typo: float = 0.0
    duplicate: float = 0.0  # a second record (another local id) for the same person


DEFAULT_ERRORS: dict[str, ErrorRates] = {
    # local authority children's social care (CIN census, SSDA903, early help export)
    "local-authority": ErrorRates(nickname=0.03, forename_variant=0.10, forename_typo=0.02, surname_change=0.04,
                                  surname_typo=0.02, dob_swapped=0.02, dob_typo=0.005, nhs_missing=1 / 3,
                                  nhs_typo=0.01, postcode_stale=0.30, postcode_typo=0.01, duplicate=0.01),
    "police": ErrorRates(nickname=0.12, forename_variant=0.25, forename_typo=0.05, surname_change=0.06,
                         surname_typo=0.05, dob_swapped=0.03, dob_typo=0.02, nhs_missing=1 / 3, nhs_typo=0.01,
                         postcode_stale=0.10, postcode_typo=0.02, duplicate=0.03),
    "education": ErrorRates(nickname=0.10, forename_variant=0.10, forename_typo=0.02, surname_change=0.08,
                            surname_typo=0.02, dob_swapped=0.01, dob_typo=0.005, postcode_stale=0.20,
                            postcode_typo=0.01),
    "emergency-department": ErrorRates(nickname=0.06, forename_variant=0.15, forename_typo=0.05, surname_change=0.04,
                                       surname_typo=0.05, dob_swapped=0.02, dob_typo=0.01, nhs_missing=0.05,
                                       nhs_typo=0.005, postcode_stale=0.15, postcode_typo=0.01, duplicate=0.02),
    # primary care holds the spine (PDS) demographics: few errors, NHS number always present
    "gp": ErrorRates(nickname=0.01, forename_variant=0.02, forename_typo=0.005, surname_change=0.01,
                     surname_typo=0.005, postcode_stale=0.05),
}


@dataclass(frozen=True)
class SynthConfig:
    families: int = 200
    seed: int = 1
    start_date: dt.date = dt.date(2022, 4, 1)
    months: int = 36
    errors: dict[str, ErrorRates] = field(default_factory=lambda: dict(DEFAULT_ERRORS))
    unknown_code_rate: float = 0.005  # a legacy/unknown code in a coded CSV column (mappers warn and keep it)
    gp_extract_share: float = 0.35  # share of GP practices on the system that sends FHIR bundles
    bundle_max_patients: int = 2500  # a FHIR bundle file is closed after this many patients
    counterfactual: bool = True  # also simulate treated families with no intervention effect

    def __post_init__(self) -> None:
        if self.families < 1:
            raise ValueError("families must be at least 1")
        if not 1 <= self.months <= 240:
            raise ValueError("months must be between 1 and 240")

    @property
    def end_date(self) -> dt.date:
        """The last day of the simulated period."""
        return add_months(self.start_date, self.months) - dt.timedelta(days=1)


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day of the month ``months`` later (clamped to the month's last day)."""
    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    for d in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month, min(day.day, d))
        except ValueError:
            continue
    raise AssertionError("unreachable")
