"""``cin-census-xml``: one Children in Need census file per local authority, in the DfE schema's order
(Message/Header/Children/Child…). LAs whose software follows newer census years write ``<Sex>``
where the 2024 schema says ``<GenderCurrent>``. The census holds no names and no NHS number: a child
is known by the LA's child id, the UPN where the LA knows it, date of birth and sex.
"""
from __future__ import annotations

import datetime as dt
import random

from ..errors import View
from ..households import Person
from ..story import Story
from ..trajectories import Episode
from .base import AgencyRef, Outputs, TextFile, Writer, iso

FORMAT = "cin-census-xml"
FACTORS = {"parental-alcohol": ("1B",), "parental-drugs": ("2B",), "domestic-abuse": ("3A", "3B"),
           "parental-mental-health": ("4B",), "parental-learning-disability": ("5B",)}
CHILD_FACTORS = {"missing": ("10A",), "cse": ("11A",), "cce": ("24A", "13A"), "arrest": ("14A",)}


class CinCensusWriter(Writer):
    def __init__(self, out: Outputs, *, reference_date: dt.date) -> None:
        super().__init__(out)
        self.reference_date = reference_date

    def _file(self, story: Story, la_code: str) -> tuple[str, TextFile]:
        la = story.world.la(la_code)
        rel = f"la/{la.code}_cin_census.xml"
        created = dt.datetime.combine(self.reference_date + dt.timedelta(days=20), dt.time(9, 15))
        opening = ('<?xml version="1.0" encoding="UTF-8"?>\n<Message>\n  <Header>\n    <CollectionDetails>\n'
                   f'      <Collection>CIN</Collection>\n      <Year>{self.reference_date.year}</Year>\n'
                   f'      <ReferenceDate>{iso(self.reference_date)}</ReferenceDate>\n    </CollectionDetails>\n'
                   f'    <Source>\n      <SourceLevel>L</SourceLevel>\n      <LEA>{la.code}</LEA>\n'
                   f'      <SoftwareCode>Synthetic Case Management</SoftwareCode>\n      <Release>4.2.1</Release>\n'
                   f'      <SerialNo>001</SerialNo>\n      <DateTime>{created.isoformat()}</DateTime>\n    </Source>\n'
                   '  </Header>\n  <Children>\n')
        sink = self.out.text(rel, FORMAT, AgencyRef("local-authority", la.code, f"{la.name} Children's Services"),
                             opening=opening, closing="  </Children>\n</Message>\n")
        return rel, sink

    def write(self, story: Story) -> None:
        by_record: dict[tuple[str, str, str], list[Episode]] = {}
        for ep in story.timeline.episodes:
            for pid in ep.children:
                view = story.view("local-authority", ep.la_code, story.member(pid), ep.referral_month)
                by_record.setdefault((ep.la_code, pid, view.key), []).append(ep)
        for (la_code, pid, _key), episodes in by_record.items():
            child = story.member(pid)
            rel, sink = self._file(story, la_code)
            view = story.view("local-authority", la_code, child, episodes[0].referral_month)
            story.record(FORMAT, rel, "local-authority", la_code, "LAchildID", view, child)
            sink.write_item(self._child(story, la_code, child, view, episodes, rel))
            self.out.count(rel)

    def _child(self, story: Story, la_code: str, child: Person, view: View, episodes: list[Episode],
               rel: str) -> str:
        la, rng = story.world.la(la_code), story.rng
        lines = ["    <Child>", "      <ChildIdentifiers>", f"        <LAchildID>{view.key}</LAchildID>"]
        age = story.age_on(child, episodes[0].dates["referral"])
        if child.upn and rng.random() < 0.85:
            lines.append(f"        <UPN>{child.upn}</UPN>")
        else:
            lines.append(f"        <UPNunknown>{'UN1' if age < 6 else 'UN2' if not child.upn else 'UN5'}</UPNunknown>")
        lines.append(f"        <PersonBirthDate>{iso(view.dob)}</PersonBirthDate>")
        sex = {"M": "1", "F": "2"}[child.sex] if rng.random() > 0.005 else "0"
        lines.append(f"        <{la.gender_element}>{sex}</{la.gender_element}>")
        ethnicity = "NOBT" if rng.random() < 0.03 else "REFU" if rng.random() < 0.01 else child.ethnicity
        lines += ["      </ChildIdentifiers>", "      <ChildCharacteristics>",
                  f"        <Ethnicity>{ethnicity}</Ethnicity>",
                  "        <Disabilities>", f"          <Disability>{child.disability}</Disability>",
                  "        </Disabilities>", "      </ChildCharacteristics>"]
        nfa_style = ("1", "0") if int(la.code) % 2 else ("true", "false")
        for ep in episodes:
            lines += self._details(story, ep, child, nfa_style, (rel, view.key))
        lines.append("    </Child>")
        return "\n".join(lines) + "\n"

    def _details(self, story: Story, ep: Episode, child: Person, nfa_style: tuple[str, str],
                 where: tuple[str, str]) -> list[str]:
        d, rng, fam = ep.dates, story.rng, story.family
        factors = story.profile.factors
        kinds = {i.kind for i in story.timeline.incidents if i.pid == child.pid and i.month <= ep.referral_month + 2}
        lines = ["      <CINdetails>", f"        <CINreferralDate>{iso(d['referral'])}</CINreferralDate>",
                 f"        <ReferralSource>{ep.source}</ReferralSource>",
                 f"        <PrimaryNeedCode>{_primary_need(ep, factors, child)}</PrimaryNeedCode>"]
        if "closure" in d:
            lines += [f"        <CINclosureDate>{iso(d['closure'])}</CINclosureDate>",
                      f"        <ReasonForClosure>{ep.closure_reason}</ReasonForClosure>"]
        icpcs = [x[2] for x in d["s47"] if x[2] is not None]
        if icpcs:
            lines.append(f"        <DateOfInitialCPC>{iso(icpcs[0])}</DateOfInitialCPC>")
        if "assessment_start" in d:
            lines += ["        <Assessments>",
                      f"          <AssessmentActualStartDate>{iso(d['assessment_start'])}</AssessmentActualStartDate>"]
            if "assessment_end" in d:
                lines.append(f"          <AssessmentAuthorisationDate>{iso(d['assessment_end'])}"
                             "</AssessmentAuthorisationDate>")
                codes = _assessment_factors(factors, kinds, child, ep, rng)
                lines.append("          <FactorsIdentifiedAtAssessment>")
                lines += [f"            <AssessmentFactors>{c}</AssessmentFactors>" for c in codes]
                lines.append("          </FactorsIdentifiedAtAssessment>")
            lines.append("        </Assessments>")
        for start, end in d["cin"]:
            lines += ["        <CINPlanDates>", f"          <CINPlanStartDate>{iso(start)}</CINPlanStartDate>"]
            if end is not None:
                lines.append(f"          <CINPlanEndDate>{iso(end)}</CINPlanEndDate>")
            lines.append("        </CINPlanDates>")
        for start, target, icpc in d["s47"]:
            lines += ["        <Section47>", f"          <S47ActualStartDate>{iso(start)}</S47ActualStartDate>",
                      f"          <InitialCPCtarget>{iso(target)}</InitialCPCtarget>"]
            if icpc is not None:
                lines.append(f"          <DateOfInitialCPC>{iso(icpc)}</DateOfInitialCPC>")
            lines += [f"          <ICPCnotRequired>{'false' if icpc is not None else 'true'}</ICPCnotRequired>",
                      "        </Section47>"]
        lines.append(f"        <ReferralNFA>{nfa_style[0] if ep.nfa else nfa_style[1]}</ReferralNFA>")
        for start, end, previous in d["cp"]:
            category = _category(factors, kinds, rng)
            lines += ["        <ChildProtectionPlans>", f"          <CPPstartDate>{iso(start)}</CPPstartDate>"]
            if end is not None:
                lines.append(f"          <CPPendDate>{iso(end)}</CPPendDate>")
            lines += [f"          <InitialCategoryOfAbuse>{category}</InitialCategoryOfAbuse>",
                      f"          <LatestCategoryOfAbuse>{category}</LatestCategoryOfAbuse>",
                      f"          <NumberOfPreviousCPP>{previous}</NumberOfPreviousCPP>"]
            reviews = []
            review = start + dt.timedelta(days=90)
            while review <= (end or story.cal.end) and review <= story.cal.end:
                reviews.append(review)
                review += dt.timedelta(days=182)
            if reviews:
                lines.append("          <Reviews>")
                lines += [f"            <CPPreviewDate>{iso(r)}</CPPreviewDate>" for r in reviews]
                lines.append("          </Reviews>")
            lines.append("        </ChildProtectionPlans>")
            story.truth.event(start, fam.fid, child.pid, "cp-plan-start", "local-authority", ep.la_code, *where,
                              category)
            if end is not None:
                story.truth.event(end, fam.fid, child.pid, "cp-plan-end", "local-authority", ep.la_code, *where, "")
        lines.append("      </CINdetails>")
        self._events(story, ep, child, where)
        return lines

    def _events(self, story: Story, ep: Episode, child: Person, where: tuple[str, str]) -> None:
        d, fid, la, ev = ep.dates, story.family.fid, ep.la_code, story.truth.event
        ev(d["referral"], fid, child.pid, "cin-referral", "local-authority", la, *where, ep.source)
        if "assessment_end" in d:
            ev(d["assessment_end"], fid, child.pid, "assessment-completed", "local-authority", la, *where, "")
        for start, end in d["cin"]:
            ev(start, fid, child.pid, "cin-plan-start", "local-authority", la, *where, "")
            if end is not None:
                ev(end, fid, child.pid, "cin-plan-end", "local-authority", la, *where, "")
        for start, _, icpc in d["s47"]:
            ev(start, fid, child.pid, "section-47", "local-authority", la, *where, "icpc" if icpc else "")
        if "closure" in d:
            ev(d["closure"], fid, child.pid, "cin-closure", "local-authority", la, *where, ep.closure_reason)


def _primary_need(ep: Episode, factors: frozenset[str], child: Person) -> str:
    if ep.cp_plans or ep.s47:
        return "N1"
    if factors & {"domestic-abuse", "parental-alcohol", "parental-drugs"}:
        return "N4" if "domestic-abuse" in factors else "N5"
    if factors & {"parental-mental-health", "parental-learning-disability"}:
        return "N3"
    if child.disability != "NONE":
        return "N2"
    return "N7" if "low-income" in factors else "N0"


def _assessment_factors(factors: frozenset[str], kinds: set[str], child: Person, ep: Episode,
                        rng: random.Random) -> list[str]:
    codes: list[str] = []
    for f in sorted(factors):
        for code in FACTORS.get(f, ()):
            if rng.random() < 0.85:  # assessments miss some of what is there
                codes.append(code)
    for k in sorted(kinds):
        codes += CHILD_FACTORS.get(k, ())
    if child.disability != "NONE":
        codes.append("5A" if child.disability == "LD" else "6A")
    if ep.s47 and "low-income" in factors:
        codes.append("16A")
    if ep.s47 and "domestic-abuse" in factors:
        codes.append("17A")
    if "ed" in kinds and ep.s47:
        codes.append("18C")
    return list(dict.fromkeys(codes)) or ["21"]


def _category(factors: frozenset[str], kinds: set[str], rng: random.Random) -> str:
    found = []
    if factors & {"low-income", "parental-alcohol", "parental-drugs"}:
        found.append("NEG")
    if "domestic-abuse" in factors:
        found.append("EMO")
    if "ed" in kinds:
        found.append("PHY")
    if rng.random() < 0.02:
        found.append("SAB")
    if not found:
        return "NEG"
    return found[0] if len(found) == 1 else "MUL"
