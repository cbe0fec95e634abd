"""The family graph around one child. Pure: no database, no HTTP.

People are clusters of records: a child's Patient records joined by ``Patient.link`` (the master record
and each agency's), an adult's RelatedPerson records (one per child and agency, since
``RelatedPerson.patient`` names one patient) joined by a shared identifier (a force's person id, an NHS
number) or by an exact name and date of birth, and an adult's own Patient record (a parent known to
health or police as a patient) joined to the RelatedPerson roles they hold in the same way.

Ties come from RelatedPerson (relatedperson.html): the holder of the role → the child it names, with
the relationship. Two children are kin when they share an adult holding a role for both ("sibling" when
the adult is a parent of both) or a home address; the household is everyone with a current address
equal to one of the child's. Addresses compare on the normalised postcode and first line together: a
postcode alone covers a street, not a home, so records that carry only a postcode never make a
household on their own.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .links import link_targets
from .refs import agency_of, concept_text, human_name, local_ref

V3_ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
# RelatedPerson.relationship → a category that decides kinship (v3 RoleCode, and the police
# relationship codes for a parent's partner who is not a step-parent).
PARENT_CODES = frozenset({"MTH", "FTH", "PRN", "NMTH", "NFTH", "NPRN", "ADOPTM", "ADOPTF", "ADOPTP", "GESTM",
                          "NATMTH", "NATFTH", "NATPRN", "parent", "mother", "father"})
STEP_CODES = frozenset({"STPMTH", "STPFTH", "STPPRN", "mothers-partner", "fathers-partner", "stepmother",
                        "stepfather"})
CARER_CODES = frozenset({"GUARD", "FAMMEMB", "CHILD", "foster-carer", "guardian", "carer"})
GRANDPARENT_CODES = frozenset({"GRPRN", "GRMTH", "GRFTH", "MGRMTH", "MGRFTH", "PGRMTH", "PGRFTH", "grandparent"})
SIBLING_CODES = frozenset({"SIB", "BRO", "SIS", "HSIB", "HBRO", "HSIS", "NSIB", "STPSIB", "sibling"})
ADULT_AGE = 18


@dataclass
class Person:
    """One person: their records (``Patient/…``, ``RelatedPerson/…``) across agencies."""

    key: str
    kind: str  # subject | child | adult
    records: list[str] = field(default_factory=list)
    name: str = ""
    birth_date: str | None = None
    gender: str | None = None
    agencies: dict[str, str] = field(default_factory=dict)  # agency code → name
    addresses: set[tuple[str, str]] = field(default_factory=set)  # normalised (postcode, first line)
    address_labels: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def patient_records(self) -> list[str]:
        return [r for r in self.records if r.startswith("Patient/")]


@dataclass(frozen=True)
class Tie:
    """``holder`` holds a role (RelatedPerson ``via``) for child ``child``."""

    holder: str
    child: str
    relation: str  # as the record says it: "mother", "Mother's partner"
    category: str  # parent | step-parent | carer | grandparent | sibling | other
    via: str  # RelatedPerson/…


@dataclass(frozen=True)
class Kinship:
    """Two children connected through a shared adult or a shared home."""

    a: str
    b: str
    relation: str  # sibling | household
    basis: str  # for people: "shared mother Claire Whitfield", "same address 12 Rowan Close, LS6 2AB"


@dataclass
class FamilyGraph:
    subject: str
    people: dict[str, Person]
    ties: list[Tie]
    kin: list[Kinship]
    household: set[str]  # people sharing a current address with the subject (the subject included)
    by_record: dict[str, str]  # record reference → person key

    def person_of(self, reference: str) -> Person | None:
        key = self.by_record.get(reference)
        return self.people.get(key) if key else None

    def relations_to_subject(self, key: str) -> list[str]:
        """How ``key`` is related to the subject, in words (roles they hold, kinship, household)."""
        out = [t.relation for t in self.ties if t.holder == key and t.child == self.subject]
        out += [f"{k.relation} ({k.basis})" for k in self.kin if self.subject in (k.a, k.b) and key in (k.a, k.b)]
        out += [f"{t.relation} of {self.people[t.child].name or 'a child'}" for t in self.ties
                if t.holder == key and t.child != self.subject and t.child in self.people]
        if key in self.household and key != self.subject and not out:
            out.append("lives at the same address")
        return list(dict.fromkeys(out))

    def short_relation(self, key: str) -> str:
        """One or two words for ``key`` beside their name: "mother", "sibling", "household member"."""
        for t in self.ties:
            if t.holder == key and t.child == self.subject:
                return t.relation
        for k in self.kin:
            if self.subject in (k.a, k.b) and key in (k.a, k.b):
                return k.relation if k.relation == "sibling" else "household member"
        for t in self.ties:
            if t.holder == key and t.child in self.people:
                return f"{t.relation} of {self.people[t.child].name or 'a child'}"
        return "household member" if key in self.household else "related"

    def family(self) -> list[Person]:
        """Everyone but the subject who is tied to the subject or the subject's kin, or shares a home."""
        close = {self.subject} | {k.b if k.a == self.subject else k.a for k in self.kin
                                  if self.subject in (k.a, k.b)}
        keys = {t.holder for t in self.ties if t.child in close} | close | self.household
        keys.discard(self.subject)
        return sorted((self.people[k] for k in keys if k in self.people),
                      key=lambda p: (p.kind != "adult", p.birth_date or "", p.name))


def build_family_graph(subject_ids: set[str] | list[str] | tuple[str, ...], patients: dict[str, dict[str, Any]],
                       related: dict[str, dict[str, Any]], base_url: str, *, today: date | None = None) -> FamilyGraph:
    """The graph over ``patients`` and ``related`` (id → content) for the child whose linked Patient
    records are ``subject_ids``. Records unrelated to the child are ignored."""
    today = today or date.today()
    refs = [f"Patient/{pid}" for pid in sorted(patients)] + [f"RelatedPerson/{rid}" for rid in sorted(related)]
    content = {**{f"Patient/{k}": v for k, v in patients.items()},
               **{f"RelatedPerson/{k}": v for k, v in related.items()}}
    uf = _UnionFind(refs)
    subject_refs = [f"Patient/{pid}" for pid in subject_ids if pid in patients]
    for a, b in zip(subject_refs, subject_refs[1:]):
        uf.union(a, b)
    for pid, patient in patients.items():
        for other in link_targets(patient, base_url):
            if other in patients:
                uf.union(f"Patient/{pid}", f"Patient/{other}")
    # Adults: RelatedPerson records sharing an identity key are one person; a Patient (already joined
    # to its linked records) joins the one adult whose key it shares. Two Patients are never joined
    # here: that is record linkage's decision (two children with one name and birthday stay apart).
    patient_of = {r: _patient_of(content[r], base_url) for r in refs if r.startswith("RelatedPerson/")}
    by_identity: dict[tuple[str, ...], list[str]] = {}
    for r in patient_of:
        for key in identity_keys(content[r]):
            by_identity.setdefault(key, []).append(r)
    for members in by_identity.values():
        for other in members[1:]:
            _union_unless_self(uf, members[0], other, patient_of)
    for pid in sorted(patients):
        for key in identity_keys(patients[pid]):
            for r in by_identity.get(key, [])[:1]:
                if not _has_other_patient(uf, r, f"Patient/{pid}"):
                    _union_unless_self(uf, r, f"Patient/{pid}", patient_of)

    people: dict[str, Person] = {}
    by_record: dict[str, str] = {}
    subject_root = uf.find(subject_refs[0]) if subject_refs else None
    for root, members in uf.groups().items():
        person = _person(root, members, content, subject_root, patient_of, today)
        people[person.key] = person
        for r in members:
            by_record[r] = person.key
    subject_key = by_record[subject_refs[0]] if subject_refs else ""

    ties = []
    for r, child in patient_of.items():
        child_key = by_record.get(f"Patient/{child}") if child else None
        if child_key is None or by_record[r] == child_key:
            continue
        relation, category = relationship(content[r].get("relationship"))
        ties.append(Tie(by_record[r], child_key, relation, category, r))
    children = {k for k, p in people.items() if p.kind in ("subject", "child")}
    kin = _kinship(ties, children, people)
    household = _household(subject_key, people)
    for a, b in sorted(_address_pairs(children, people)):
        if not any({k.a, k.b} == {a, b} for k in kin):
            kin.append(Kinship(a, b, "household", f"same address {_shared_label(people[a], people[b])}"))
    graph = FamilyGraph(subject_key, people, ties, kin, household, by_record)
    _keep_connected(graph)
    return graph


# -- identity ----------------------------------------------------------------------------------------

def identity_keys(resource: dict[str, Any]) -> list[tuple[str, ...]]:
    """What makes two records the same person: each identifier (system, value), and the exact
    normalised name with the date of birth. Per-relationship keys (``…/relationship``) are unique to
    one record and so never join two."""
    keys: list[tuple[str, ...]] = []
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") and ident.get("value") \
                and not str(ident["system"]).endswith("/relationship"):
            keys.append(("id", str(ident["system"]), str(ident["value"]).replace(" ", "")))
    name = normalised_name(resource)
    if name and resource.get("birthDate"):
        keys.append(("name", *name, str(resource["birthDate"])))
    return keys


def normalised_name(resource: dict[str, Any]) -> tuple[str, str] | None:
    """(family, first given) lower-cased, accents and punctuation removed; None without both."""
    for name in resource.get("name") or []:
        if not isinstance(name, dict):
            continue
        family = _fold(name.get("family") or "")
        given = _fold(((name.get("given") or [""])[0]) or "")
        if family and given:
            return family, given
    return None


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


# -- addresses ---------------------------------------------------------------------------------------

def address_keys(resource: dict[str, Any], *, today: date | None = None) -> dict[tuple[str, str], str]:
    """Normalised (postcode, first line) → a printable label, for each current address (not ``use``
    old, not ended) that has both."""
    today = today or date.today()
    out: dict[tuple[str, str], str] = {}
    for address in resource.get("address") or []:
        if not isinstance(address, dict) or address.get("use") == "old":
            continue
        end = (address.get("period") or {}).get("end")
        if isinstance(end, str) and end[:10] < today.isoformat():
            continue
        postcode = normalised_postcode(address.get("postalCode"))
        lines = address.get("line") or []
        first = _fold(str(lines[0])) if lines else ""
        if postcode and first:
            line = " ".join(str(lines[0]).split()).strip(" .,;")
            out[(postcode, first)] = f"{line}, {format_postcode(postcode)}"
    return out


def normalised_postcode(value: Any) -> str:
    return re.sub(r"[^A-Z0-9]", "", str(value).upper()) if isinstance(value, str) else ""


def format_postcode(compact: str) -> str:
    """``LS62AB`` → ``LS6 2AB`` (the inward code is always the last three characters)."""
    return f"{compact[:-3]} {compact[-3:]}" if len(compact) > 3 else compact


def postcode_search_values(postcode: str) -> list[str]:
    """The forms a stored postcode may take in the ``address-postalcode`` index (lower-cased):
    with and without the space."""
    compact = normalised_postcode(postcode)
    return sorted({compact.lower(), format_postcode(compact).lower()}) if compact else []


# -- relationships -----------------------------------------------------------------------------------

def relationship(concepts: Any) -> tuple[str, str]:
    """(words, category) of RelatedPerson.relationship."""
    words, category = "", "other"
    for concept in concepts or []:
        text = concept_text(concept)
        words = words or text
        for coding in concept.get("coding") or [] if isinstance(concept, dict) else []:
            category = _category(str(coding.get("code") or ""), category)
        if category == "other" and text:
            category = _category(text.lower(), category)
    return words or "related person", category


def _category(code: str, current: str) -> str:
    if current != "other":
        return current
    for category, codes in (("parent", PARENT_CODES), ("step-parent", STEP_CODES), ("carer", CARER_CODES),
                            ("grandparent", GRANDPARENT_CODES), ("sibling", SIBLING_CODES)):
        if code in codes:
            return category
    return "other"


# -- building blocks ---------------------------------------------------------------------------------

class _UnionFind:
    def __init__(self, items: list[str]) -> None:
        self.parent = {i: i for i in items}

    def find(self, x: str) -> str:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for item in self.parent:
            out.setdefault(self.find(item), []).append(item)
        return out


def _patient_of(related: dict[str, Any], base_url: str) -> str | None:
    found = local_ref((related.get("patient") or {}).get("reference"), base_url)
    return found[1] if found and found[0] == "Patient" else None


def _union_unless_self(uf: _UnionFind, a: str, b: str, patient_of: dict[str, str | None]) -> None:
    """Join two records unless that would make someone their own relative: a RelatedPerson in one
    cluster naming a Patient of the other."""
    ra, rb = uf.find(a), uf.find(b)
    if ra == rb:
        return
    cluster_a = {r for r in uf.parent if uf.find(r) == ra}
    cluster_b = {r for r in uf.parent if uf.find(r) == rb}
    for rel, child in patient_of.items():
        if child and ((rel in cluster_a and f"Patient/{child}" in cluster_b)
                      or (rel in cluster_b and f"Patient/{child}" in cluster_a)):
            return
    uf.union(a, b)


def _has_other_patient(uf: _UnionFind, member: str, patient: str) -> bool:
    """Whether ``member``'s cluster already holds a Patient record that is not ``patient``'s person."""
    root, own = uf.find(member), uf.find(patient)
    return any(r.startswith("Patient/") and uf.find(r) == root and uf.find(r) != own for r in uf.parent)


def _person(root: str, members: list[str], content: dict[str, dict[str, Any]], subject_root: str | None,
            patient_of: dict[str, str | None], today: date) -> Person:
    members = sorted(members, key=lambda r: (not r.startswith("Patient/"), r))
    # the most complete record speaks for the person: a Patient before a RelatedPerson
    name = next((n for r in members if (n := human_name(content[r]))), "")
    birth = next((str(content[r]["birthDate"]) for r in members if content[r].get("birthDate")), None)
    gender = next((str(content[r]["gender"]) for r in members if content[r].get("gender")), None)
    person = Person(key=members[0], kind="adult", records=members, name=name, birth_date=birth, gender=gender)
    for r in members:
        found = agency_of(content[r])
        if found:
            person.agencies.setdefault(found[0], found[1])
        labels = address_keys(content[r], today=today)
        person.addresses |= set(labels)
        person.address_labels.update(labels)
    is_someones_patient = any(f"Patient/{child}" in members for child in patient_of.values() if child)
    if root == subject_root:
        person.kind = "subject"
    elif birth and _age(birth, today) is not None:
        person.kind = "child" if (_age(birth, today) or 0) < ADULT_AGE else "adult"
    elif is_someones_patient:
        person.kind = "child"
    return person


def _age(birth: str, today: date) -> int | None:
    try:
        born = date.fromisoformat(birth[:10]) if len(birth) >= 10 else date(int(birth[:4]), 1, 1)
    except ValueError:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _kinship(ties: list[Tie], children: set[str], people: dict[str, Person]) -> list[Kinship]:
    """Children sharing a role holder: siblings when the holder is a parent of both. The basis names
    every shared parent (else every shared adult), so it does not depend on which was found first."""
    by_holder: dict[str, list[Tie]] = {}
    for t in ties:
        if t.child in children:
            by_holder.setdefault(t.holder, []).append(t)
    shared: dict[tuple[str, str], list[tuple[bool, str]]] = {}
    for holder, held in by_holder.items():
        for i, first in enumerate(held):
            for second in held[i + 1:]:
                if first.child != second.child:
                    parent = first.category == second.category == "parent"
                    words = f"{first.relation} {people[holder].name or 'an adult'}"
                    shared.setdefault(tuple(sorted((first.child, second.child))), []).append((parent, words))
    found: dict[tuple[str, str], Kinship] = {}
    for (a, b), adults in shared.items():
        parents = sorted({w for parent, w in adults if parent})
        if parents:
            found[(a, b)] = Kinship(a, b, "sibling", "shared " + " and ".join(parents))
        else:
            adults_words = " and ".join(sorted({w for _p, w in adults}))
            found[(a, b)] = Kinship(a, b, "household", f"both linked to {adults_words}")
    for t in ties:  # a child recorded as another child's sibling
        if t.category == "sibling" and t.holder in children and t.child in children:
            a, b = sorted((t.holder, t.child))
            if found.get((a, b)) is None or found[(a, b)].relation != "sibling":
                found[(a, b)] = Kinship(a, b, "sibling", f"recorded as {t.relation}")
    return [found[k] for k in sorted(found)]


def _household(subject: str, people: dict[str, Person]) -> set[str]:
    home = people[subject].addresses if subject in people else set()
    return {k for k, p in people.items() if k == subject or (home and p.addresses & home)}


def _address_pairs(children: set[str], people: dict[str, Person]) -> set[tuple[str, str]]:
    ordered = sorted(children)
    return {(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]
            if people[a].addresses & people[b].addresses}


def _shared_label(a: Person, b: Person) -> str:
    shared = sorted(a.addresses & b.addresses)
    return a.address_labels.get(shared[0], "") if shared else ""


def _keep_connected(graph: FamilyGraph) -> None:
    """Drop people with no path to the subject (candidates the loader fetched that turned out to be
    someone else's family: a neighbour with the same postcode, a namesake of an adult)."""
    edges: dict[str, set[str]] = {}
    for t in graph.ties:
        edges.setdefault(t.holder, set()).add(t.child)
        edges.setdefault(t.child, set()).add(t.holder)
    for k in graph.kin:
        edges.setdefault(k.a, set()).add(k.b)
        edges.setdefault(k.b, set()).add(k.a)
    for k in graph.household:
        edges.setdefault(graph.subject, set()).add(k)
    seen = {graph.subject}
    stack = [graph.subject]
    while stack:
        for nxt in edges.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    graph.people = {k: p for k, p in graph.people.items() if k in seen}
    graph.ties = [t for t in graph.ties if t.holder in seen and t.child in seen]
    graph.kin = [k for k in graph.kin if k.a in seen and k.b in seen]
    graph.by_record = {r: k for r, k in graph.by_record.items() if k in seen}
