"""``ssda903-csv``: the looked-after children return of each local authority, three tables
(``<LA>_header.csv``, ``<LA>_episodes.csv``, ``<LA>_missing.csv``) forming one manifest entry.
Dates are dd/mm/yyyy as in the DfE return; the child id is the LA's own (the same as in its CIN census).
"""
from __future__ import annotations

import datetime as dt

from ..identifiers import partial_postcode, postcode
from ..story import Story
from ..trajectories import Incident, LacPeriod
from .base import AgencyRef, CsvFile, Outputs, Writer, uk

FORMAT = "ssda903-csv"
HEADER = ("CHILD", "SEX", "DOB", "ETHNIC", "UPN", "MOTHER", "MC_DOB")
EPISODES = ("CHILD", "DECOM", "RNE", "LS", "CIN", "PLACE", "PLACE_PROVIDER", "DEC", "REC", "REASON_PLACE_CHANGE",
            "HOME_POST", "PL_POST", "URN")
MISSING = ("CHILD", "DOB", "MISSING", "MIS_START", "MIS_END")
YOUNG_PLACES = ("U4", "U4", "U5", "U5", "U1", "U3", "U6", "P1")
OLDER_PLACES = ("U4", "U5", "U5", "K2", "K2", "H5", "U3", "P1")
CHANGE_REASONS = ("CARPL", "CARPL", "PLACE", "CHILD", "CREQO", "LAREQ", "ALLEG", "STAND", "OTHER")


class Ssda903Writer(Writer):
    """``collection_year``: the year to 31 March the returns are for (the one holding the run's last
    day, as the CIN census's reference date), written into each manifest entry so that
    `fhir-server import --manifest` states it rather than inferring it (mappings/collection_year.py)."""

    def __init__(self, out: Outputs, *, collection_year: int) -> None:
        super().__init__(out)
        self.collection_year = collection_year

    def write(self, story: Story) -> None:
        for period in story.timeline.lac:
            self._period(story, period)
        for inc in story.timeline.incidents:
            if inc.kind == "missing" and inc.looked_after:
                period = next((p for p in story.timeline.lac if p.pid == inc.pid and p.start <= inc.month
                               and (p.end is None or inc.month <= p.end)), None)
                if period is not None:
                    self._missing(story, period, inc)

    def _files(self, story: Story, la_code: str) -> tuple[list[CsvFile], str]:
        la = story.world.la(la_code)
        agency = AgencyRef("local-authority", la.code, f"{la.name} Children's Services")
        entry = f"ssda903/{la.code}"
        files = [self.out.csv(f"la/{la.code}_{name}.csv", cols, FORMAT, agency, entry_key=entry)
                 for name, cols in (("header", HEADER), ("episodes", EPISODES), ("missing", MISSING))]
        self.out.entries[entry].details["collection_year"] = self.collection_year
        return files, entry

    def _period(self, story: Story, period: LacPeriod) -> None:
        (header, episodes, _), entry = self._files(story, period.la_code)
        child, rng, fam = story.member(period.pid), story.rng, story.family
        view = story.view("local-authority", period.la_code, child, period.start)
        rel = f"la/{period.la_code}_header.csv"
        story.record(FORMAT, rel, "local-authority", period.la_code, "CHILD", view, child)
        key = (period.la_code, view.key)
        written = story.scratch.setdefault("ssda903-header", set())
        if key not in written:
            written.add(key)
            age = story.age_on(child, period.dates["start"])
            upn = child.upn or ("UN1" if age < 6 else "UN2")
            header.row([view.key, {"M": "1", "F": "2"}[child.sex], uk(view.dob), child.ethnicity, upn,
                        "0" if child.sex == "F" and age >= 12 else "", ""])
            self.out.count(rel, entry)
        starts = [period.dates["start"], *period.dates["changes"]]
        ends = [*period.dates["changes"], period.dates.get("end")]
        age = story.age_on(child, starts[0])
        legal = "L2" if period.emergency else rng.choice(("C1", "C1", "V2", "V2", "C2"))
        home = partial_postcode(fam.address_at(period.start).postcode)
        la = story.world.la(period.la_code)
        for k, (start, end) in enumerate(zip(starts, ends)):
            place = rng.choice(YOUNG_PLACES if age < 11 else OLDER_PLACES)
            provider = "PR4" if place in ("K2", "H5") else "PR1" if place.startswith(("U", "P")) else "PR5"
            if k == 0:
                rne, reason_change = "S", ""
            else:
                new_legal = "C2" if legal in ("C1", "L2") and rng.random() < 0.6 else legal
                rne = "T" if new_legal != legal else "P"
                legal, reason_change = new_legal, rng.choice(CHANGE_REASONS)
            last = k == len(starts) - 1
            rec = (period.reason_end if end is not None else "") if last else "X1"
            pl_post = partial_postcode(fam.address_at(period.start).postcode) if place == "P1" else \
                partial_postcode(postcode(rng, la.districts))
            urn = f"SC{rng.randrange(100000, 999999)}" if place == "K2" else "XXXXXXX"
            episodes.row([view.key, uk(start), rne, legal, "N1", place, provider, uk(end), rec, reason_change, home,
                          pl_post, urn])
            self.out.count(f"la/{period.la_code}_episodes.csv", entry)
        story.truth.event(starts[0], fam.fid, child.pid, "looked-after-start", "local-authority", period.la_code,
                          f"la/{period.la_code}_episodes.csv", view.key, legal)
        if period.dates.get("end") is not None:
            story.truth.event(period.dates["end"], fam.fid, child.pid, "looked-after-end", "local-authority",
                              period.la_code, f"la/{period.la_code}_episodes.csv", view.key, period.reason_end)

    def _missing(self, story: Story, period: LacPeriod, inc: Incident) -> None:
        (_, _, missing), entry = self._files(story, period.la_code)
        child = story.member(period.pid)
        view = story.view("local-authority", period.la_code, child, period.start)
        end = inc.date if story.rng.random() < 0.6 else \
            min(story.cal.end, inc.date + dt.timedelta(days=story.rng.randrange(1, 4)))
        missing.row([view.key, uk(view.dob), "M" if story.rng.random() < 0.7 else "A", uk(inc.date), uk(end)])
        self.out.count(f"la/{period.la_code}_missing.csv", entry)
