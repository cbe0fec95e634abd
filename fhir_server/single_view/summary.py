"""The sections of the multi-agency family summary, each with its narrative and entries. Pure.

Input: the (already filtered) resources, the family graph and the import sources; output: one
:class:`Section` per part of the summary, in order. Every line names the agency that recorded it and,
where an import Provenance targets the resource, the file and date of that import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..conformance import CANONICAL_BASE
from . import narrative as nx
from .facts import HOUSEHOLD_MEMBER, PARENT_OR_CARER, Fact, FactContext, facts_of
from .family import FamilyGraph, Person
from .family_loader import ImportSource
from .links import MASTER_PERSON_SYSTEM, is_master
from .refs import agency_of, human_name

SECTION_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/family-summary-section"
UNNAMED = {PARENT_OR_CARER: "Parent or carer (not named in the assessment)",
           HOUSEHOLD_MEMBER: "Other household member (not named in the assessment)"}


@dataclass
class Section:
    code: str
    title: str
    div: str
    entries: list[str] = field(default_factory=list)  # "Type/id"
    sections: list["Section"] = field(default_factory=list)


@dataclass(frozen=True)
class SummaryInput:
    subject_id: str  # the Patient the summary was asked for
    resources: dict[str, dict[str, Any]]  # "Type/id" → content, after the access filter
    child_records: frozenset[str]  # "Type/id" of the child's own record (its compartment and includes)
    graph: FamilyGraph
    sources: dict[str, list[ImportSource]]
    now: datetime
    base_url: str
    displays: dict[tuple[str, str], str]
    window: timedelta = timedelta(days=365)


def build_sections(inp: SummaryInput) -> list[Section]:
    """The summary's sections in reading order."""
    names = {ref: human_name(res) for ref, res in inp.resources.items() if ref.startswith("Practitioner/")}
    ctx = FactContext(inp.base_url, inp.now, inp.displays, inp.graph.by_record.get, names)
    facts = [fact for ref, res in sorted(inp.resources.items()) for fact in facts_of(res, ctx)
             if fact.about or ref in inp.child_records]
    orgs = {code: ref for ref, res in inp.resources.items() if ref.startswith("Organization/")
            and (code := (agency_of(res) or ("", ""))[0])}
    return [_child(inp), _family(inp, facts), _involvement(inp, facts, orgs), _flags(inp, facts),
            _risks(inp, facts), _interventions(inp, facts), _chronology(inp, facts), _sources(inp, facts, orgs)]


# -- sections ----------------------------------------------------------------------------------------

def _child(inp: SummaryInput) -> Section:
    person = inp.graph.people.get(inp.graph.subject)
    records = _ordered_records(inp, person)
    lines = []
    if person is not None:
        about = ", ".join(x for x in (f"born {person.birth_date}" if person.birth_date else "", person.gender or "")
                          if x)
        lines.append(nx.p(f"{person.name or 'Name not recorded'}" + (f" ({about})" if about else ""), bold="Child:"))
        homes = sorted(set(person.address_labels.values()))
        if homes:
            lines.append(nx.p("; ".join(homes), bold="Home address:"))
    rows = []
    for ref in records:
        res = inp.resources[ref]
        agency = agency_of(res)
        holder = agency[1] if agency else ("Linked record (master)" if is_master(res) else "Not recorded")
        idents = [f"{identifier_label(i.get('system'))}: {i.get('value')}" for i in res.get("identifier") or []
                  if isinstance(i, dict) and i.get("value")]
        born = f"born {res['birthDate']}" if res.get("birthDate") else ""
        rows.append([holder, idents, [human_name(res), born], _address_text(res), ref])
    lines.append(nx.table(["Agency", "Identifiers", "Name", "Address", "Record"], rows))
    return Section("child", "The child and their records in each agency", nx.div(*lines), records)


def _family(inp: SummaryInput, facts: list[Fact]) -> Section:
    graph = inp.graph
    rows, entries = [], []
    for person in graph.family():
        own = [f for f in facts if f.about == person.key and _relevant_for_relative(f, inp)]
        rows.append([person.name or "Name not recorded", graph.relations_to_subject(person.key) or ["related"],
                     person.birth_date or "", "yes" if person.key in graph.household else "not known",
                     sorted(person.agencies.values()), [_fact_line(f, inp) for f in _by_date(own)]])
        entries += person.records + [f.ref for f in own] + [r for f in own for r in f.extra_refs]
    for key, label in UNNAMED.items():
        own = [f for f in facts if f.about == key]
        if own:
            rows.append([label, "", "", "", sorted({f.agency_name for f in own}),
                         [_fact_line(f, inp) for f in _by_date(own)]])
            entries += [f.ref for f in own]
    body = nx.table(["Person", "Relationship to the child", "Date of birth", "Lives with the child", "Known to",
                     "Their risk factors and involvement"], rows)
    return Section("family", "Household and family members", nx.div(body) if body else "", entries)


def _involvement(inp: SummaryInput, facts: list[Fact], orgs: dict[str, str]) -> Section:
    child = [f for f in facts if f.about == inp.graph.subject or f.ref in inp.child_records]
    person = inp.graph.people.get(inp.graph.subject)
    agencies = dict(person.agencies) if person else {}
    for f in child:
        if f.agency:
            agencies.setdefault(f.agency, f.agency_name)
    rows, entries = [], []
    for code, name in sorted(agencies.items(), key=lambda kv: kv[1]):
        open_here = [f for f in child if f.agency == code and f.category == "episode" and f.active]
        dated = [f.start or f.end for f in child if f.agency == code and (f.start or f.end)]
        last = max(dated).date().isoformat() if dated else ""
        episodes = [f"{f.label} ({f.when})" for f in open_here] or ["No open episode"]
        leads = sorted({f.lead for f in open_here if f.lead}) or ([""] if open_here else [])
        rows.append([name, episodes, leads, last])
        entries += [f.ref for f in open_here] + [r for f in open_here for r in f.extra_refs]
        if code in orgs:
            entries.append(orgs[code])
    body = nx.table(["Agency", "Open episodes", "Lead practitioner", "Latest recorded activity"], rows)
    return Section("involvement", "Current involvement by agency", nx.div(body) if body else "", entries)


def _flags(inp: SummaryInput, facts: list[Fact]) -> Section:
    active = [f for f in facts if f.category == "flag" and f.active and f.ref in inp.child_records]
    rows = [[f.label, f.detail, f.when, f.agency_name, _source(f, inp)] for f in _by_date(active)]
    body = nx.table(["Flag", "Category", "Period", "Agency", "Source"], rows)
    return Section("flags", "Active flags and alerts", nx.div(body) if body else "", [f.ref for f in active])


def _risks(inp: SummaryInput, facts: list[Fact]) -> Section:
    risks = [f for f in facts if f.category == "risk" and f.ref in inp.child_records
             and f.about in (inp.graph.subject, PARENT_OR_CARER, HOUSEHOLD_MEMBER)]
    by_agency: dict[str, list[Fact]] = {}
    for f in risks:
        by_agency.setdefault(f.agency_name or "Agency not recorded", []).append(f)
    subsections, summary = [], []
    for agency, found in sorted(by_agency.items()):
        ordered = _by_date(found)
        rows = [[f.when, f.label, _concerning(f, inp.graph), f.detail, _source(f, inp)] for f in ordered]
        subsections.append(Section("risk-factors-agency", agency, nx.div(
            nx.table(["Date", "Risk factor", "Concerning", "Detail", "Source"], rows)), [f.ref for f in ordered]))
        summary.append(f"{agency}: {len(found)} risk factor{'s' if len(found) != 1 else ''}, "
                       f"latest {ordered[0].when or 'undated'}")
    section = Section("risk-factors", "Risk factors by agency", nx.div(nx.ul(summary)) if summary else "")
    section.sections = subsections
    return section


def _interventions(inp: SummaryInput, facts: list[Fact]) -> Section:
    graph = inp.graph
    family = {graph.subject} | {p.key for p in graph.family()}
    chosen = [f for f in facts if f.intervention and f.about in family]
    rows = [[_person_name(graph, f.about), f.label, f.agency_name, f.when,
             "open" if f.active else (f.status or "ended"), f.lead] for f in _by_date(chosen)]
    body = nx.table(["For", "Intervention", "Agency", "Period", "Status", "Lead practitioner"], rows)
    entries = [f.ref for f in chosen] + [r for f in chosen for r in f.extra_refs]
    return Section("interventions", "Interventions", nx.div(body) if body else "", entries)


def _chronology(inp: SummaryInput, facts: list[Fact]) -> Section:
    since = inp.now - inp.window
    lines: list[tuple[datetime, Fact, str]] = []
    seen: set[tuple[str, str, str]] = set()
    for f in facts:
        if f.derived or (f.about not in inp.graph.people and f.about not in UNNAMED):
            continue
        marks = [(f.start, "started: " if f.category in ("episode", "flag") else "")]
        if f.category in ("episode", "flag") and f.end is not None:
            marks.append((f.end, "ended: "))
        for when, prefix in marks:
            if when is not None and since <= when <= inp.now and (f.ref, f.about, prefix) not in seen:
                seen.add((f.ref, f.about, prefix))
                lines.append((when, f, prefix))
    lines.sort(key=lambda item: (item[0], item[1].ref))
    rows = [[when.date().isoformat(), _person_name(inp.graph, f.about), prefix + f.label, _detail(f, inp.graph),
             f.agency_name, _source(f, inp)] for when, f, prefix in lines]
    body = nx.table(["Date", "About", "What", "Detail", "Agency", "Source"], rows)
    title = f"Chronology: {since.date().isoformat()} to {inp.now.date().isoformat()}"
    return Section("chronology", title, nx.div(body) if body else "", list(dict.fromkeys(f.ref for _w, f, _p in lines)))


def _sources(inp: SummaryInput, facts: list[Fact], orgs: dict[str, str]) -> Section:
    used: dict[str, tuple[ImportSource, set[str]]] = {}
    for f in facts:
        for source in inp.sources.get(f.ref, [])[:1]:
            used.setdefault(source.provenance, (source, set()))[1].add(f.ref)
    rows, entries = [], []
    for source, refs in sorted(used.values(), key=lambda item: (item[0].custodian, item[0].recorded)):
        rows.append([source.custodian, source.file, source.recorded[:10], len(refs), source.provenance])
        if source.custodian_ref in inp.resources:
            entries.append(source.custodian_ref)
    unsourced = sorted({f.agency_name or "Agency not recorded" for f in facts if f.ref not in inp.sources})
    lines = [nx.table(["Agency", "Imported file", "Recorded", "Facts in this summary", "Provenance"], rows)]
    if unsourced:
        lines.append(nx.p("; ".join(unsourced), bold="Recorded without an import Provenance:"))
    entries += [orgs[f.agency] for f in facts if f.agency in orgs]
    return Section("sources", "Where the information comes from", nx.div(*lines), list(dict.fromkeys(entries)))


# -- helpers -----------------------------------------------------------------------------------------

def identifier_label(system: Any) -> str:
    """A readable name for an identifier system."""
    system = str(system or "")
    known = {"https://fhir.nhs.uk/Id/nhs-number": "NHS number", f"{CANONICAL_BASE}/Id/upn": "UPN",
             f"{CANONICAL_BASE}/Id/former-upn": "Former UPN", MASTER_PERSON_SYSTEM: "Master person id"}
    if system in known:
        return known[system]
    prefix = f"{CANONICAL_BASE}/Id/"
    if system.startswith(prefix + "la-child-id/"):
        return f"LA child id ({system.rsplit('/', 1)[1]})"
    if system.startswith(prefix) and system.count("/") >= prefix.count("/") + 1:
        code, kind = system[len(prefix):].split("/", 1)
        words = kind.replace("-", " ")
        return f"{words if words.endswith(('number', 'id')) else words + ' id'} ({code})"
    return system or "identifier"


def _ordered_records(inp: SummaryInput, person: Person | None) -> list[str]:
    records = [r for r in (person.patient_records if person else []) if r in inp.resources]
    first = f"Patient/{inp.subject_id}"
    return sorted(records, key=lambda r: (r != first, not is_master(inp.resources[r]), r))


def _address_text(res: dict[str, Any]) -> list[str]:
    out = []
    for a in res.get("address") or []:
        if isinstance(a, dict):
            parts = [*(a.get("line") or []), a.get("city") or "", a.get("postalCode") or ""]
            text = ", ".join(str(x) for x in parts if x)
            if text:
                out.append(text + (" (previous)" if a.get("use") == "old" else ""))
    return out


def _relevant_for_relative(f: Fact, inp: SummaryInput) -> bool:
    """A relative's risk factors, open episodes, interventions, active flags and conditions."""
    if f.category == "risk" or f.intervention:
        return True
    if f.category in ("episode", "flag", "condition"):
        return f.active
    return False


def _fact_line(f: Fact, inp: SummaryInput) -> str:
    parts = [f.when, f.label, f.detail, f.agency_name]
    if f.category == "episode":
        parts.insert(2, "open" if f.active else "ended")
    return " — ".join(p for p in parts if p)


def _by_date(facts: list[Fact]) -> list[Fact]:
    """Newest first; undated last."""
    return sorted(facts, key=lambda f: (f.start or f.end or datetime.min, f.ref), reverse=True)


def _source(f: Fact, inp: SummaryInput) -> str:
    found = inp.sources.get(f.ref)
    if not found:
        return f.agency_name
    s = found[0]
    return ", ".join(x for x in (s.custodian or f.agency_name, s.file, f"imported {s.recorded[:10]}" if s.recorded
                                 else "") if x)


def _detail(f: Fact, graph: FamilyGraph) -> list[str]:
    involved = [f"{_person_name(graph, key)}: {role.lower()}" for key, role in f.involved]
    return [f.detail, *involved]


def _concerning(f: Fact, graph: FamilyGraph) -> list[str]:
    """Who a risk factor concerns: the child, an unnamed parent/carer or household member (CIN
    factors), and the adults the record involves, with their role."""
    first = {PARENT_OR_CARER: "a parent or carer",
             HOUSEHOLD_MEMBER: "another household member"}.get(f.about, "the child")
    return [first, *(f"{_person_name(graph, key)}: {role.lower()}" for key, role in f.involved)]


def _person_name(graph: FamilyGraph, key: str) -> str:
    if key in UNNAMED:
        return UNNAMED[key].split(" (")[0]
    person = graph.people.get(key)
    if person is None:
        return ""
    if key == graph.subject:
        return f"{person.name} (the child)" if person.name else "the child"
    return f"{person.name or 'name not recorded'} ({graph.short_relation(key)})"
