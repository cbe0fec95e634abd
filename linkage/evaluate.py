"""Linkage quality against the synthetic generator's ground truth.

The generator (``synthetic``) writes agency files and ``ground_truth/records.csv``, which names the
true person behind every agency record. This module maps the files with the agency mappers (no
server: :func:`mappings.formats.mapper`), keeps one Patient per conditional-update key (what the
loader would store), links them in file order exactly as the outbox consumer does on write
(:class:`~linkage.linker.Matcher` over a :class:`~linkage.memory.MemoryStore`), and compares the
resulting clusters with the truth:

- pairwise precision, recall and F1 over pairs of distinct agency Patients (a pair is predicted when
  both are linked to one master);
- the false-merge rate for children: the share of children whose master holds a record of someone
  else;
- what review would add (pairs put to a practitioner, and how many of them are true);
- blocking recall (true pairs that share at least one blocking key);
- the *ceiling*: the best F1 any linker can reach on the evidence the records carry (precision 1, every
  pair found but those :func:`unlinkable_pairs` names), so that the headline F1 is read against it;
- every missed pair by cause, agency pair and the evidence each side carries (:func:`missed_breakdown`).
"""
from __future__ import annotations

import csv
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .blocking import query_for, query_keys, stored_keys
from .linker import Matcher
from .memory import MemoryStore
from .model import COMPARISONS, Model, train
from .record import AGENCY_TAG_SYSTEM, LA_CHILD_ID_PREFIX, PersonRecord, from_patient

# Patient extensions the mappings write from the DfE returns (mappings/fhir_shapes.py, cin_census/to_fhir.py):
# read for the breakdown of missed pairs only, never compared.
_EXT_CODES = {"ethnic-category": "ethnicity", "upn-unknown-reason": "upn_unknown"}


@dataclass
class Dataset:
    records: list[PersonRecord]  # in load order
    person: dict[str, str]  # record id → true person id
    children: set[str]  # true person ids of children
    unmatched: int = 0  # Patients whose source record the ground truth does not name
    # record id → {"ethnicity": code, "upn_unknown": UN1…UN7}: what the LA returns carry beyond the
    # compared fields (the breakdown of missed pairs reports it)
    extras: dict[str, dict[str, str]] = field(default_factory=dict)


def generate(families: int, seed: int, out: Path) -> Path:
    """Run the generator into ``out`` (quietly); returns the directory."""
    from synthetic.config import SynthConfig
    from synthetic.generator import generate as run

    run(SynthConfig(families=families, seed=seed, counterfactual=False), out, progress=False, overwrite=True)
    return out


def load_dataset(directory: Path) -> Dataset:
    """Agency Patients from the manifest's files, each with its true person: one per conditional-update
    key of the loader (the agency's own identifier within the agency's records, so the same UPN in
    two LAs' school censuses is two Patients, as stored)."""
    from mappings.core import SourceFile
    from mappings.formats import mapper
    from mappings.loader import criteria

    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    truth: dict[tuple[str, str], str] = {}
    with (directory / "ground_truth" / "records.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            truth[(row["agency_code"], row["key"])] = row["person_id"]
    children = set()
    with (directory / "ground_truth" / "persons.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["role"] == "child":
                children.add(row["person_id"])
    patients: dict[str, dict[str, Any]] = {}
    person: dict[str, str] = {}
    unmatched = 0
    for entry in manifest["files"]:
        sources = [SourceFile(p, (directory / p).read_bytes()) for p in entry["paths"]]
        agency, result = mapper(entry["format"])(sources)
        if agency is None:
            continue
        for upsert in result.upserts:
            if upsert.resource_type != "Patient":
                continue
            key = criteria(upsert, agency)  # the loader's conditional update: scoped to the agency
            resource = dict(upsert.resource)
            meta = dict(resource.get("meta") or {})
            meta["tag"] = [*(meta.get("tag") or []), {"system": AGENCY_TAG_SYSTEM,
                                                      "code": f"{agency.kind}/{agency.code}"}]
            resource["meta"] = meta
            patients[key] = combine(patients.get(key), resource, merge=getattr(upsert, "merge", False))
            value = unquote(key.split("&", 1)[0].split("|", 1)[-1])
            who = truth.get((agency.code, value))
            if who is None:
                unmatched += 1
            else:
                person[key] = who
    records = [from_patient(resource, res_id=key) for key, resource in patients.items() if key in person]
    extras = {key: _extension_codes(patients[key]) for key in person}
    return Dataset(records, person, children, unmatched, {k: v for k, v in extras.items() if v})


def _extension_codes(patient: dict[str, Any]) -> dict[str, str]:
    out = {}
    for ext in patient.get("extension") or []:
        name = _EXT_CODES.get(str(ext.get("url", "")).rsplit("/", 1)[-1])
        coding = ((ext.get("valueCodeableConcept") or {}).get("coding") or [{}])[0]
        if name and coding.get("code"):
            out[name] = str(coding["code"])
    return out


def combine(stored: dict[str, Any] | None, new: dict[str, Any], *, merge: bool) -> dict[str, Any]:
    """What the loader stores for a second upsert of one record: the new content, or (``merge``) the
    stored one completed by the new one (:func:`mappings.merge.merge_resource`)."""
    if stored is None or not merge:
        return new
    from mappings.merge import merge_resource

    return merge_resource(stored, new)


@dataclass
class Report:
    records: int
    true_pairs: int
    predicted_pairs: int
    true_positives: int
    reviews: int
    reviews_true: int
    blocking_recall: float
    children: int
    children_false_merged: int
    seconds_linking: float
    unlinkable: int = 0  # true pairs nothing in the records connects (:func:`unlinkable_pairs`)
    linkable_true_positives: int = 0
    model: dict[str, Any] = field(default_factory=dict)
    missed: list[tuple[str, str, str]] = field(default_factory=list)
    false: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def recall_linkable(self) -> float:
        """Recall over the true pairs the records can support (unlinkable ones left out, not hidden:
        :attr:`unlinkable` says how many)."""
        linkable = self.true_pairs - self.unlinkable
        return self.linkable_true_positives / linkable if linkable else 1.0

    @property
    def f1_linkable(self) -> float:
        p, r = self.precision, self.recall_linkable
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def recall_ceiling(self) -> float:
        """The best recall of any linker on this evidence: every pair but the unlinkable ones."""
        return (self.true_pairs - self.unlinkable) / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1_ceiling(self) -> float:
        """The best F1 of any linker on this evidence: precision 1 at :attr:`recall_ceiling`. An upper
        bound: it counts as found every pair two named records could support, even on name and birth
        date alone, which the wrong-merge guard leaves to a practitioner."""
        r = self.recall_ceiling
        return 2 * r / (1 + r) if r else 0.0

    @property
    def false_merge_rate(self) -> float:
        return self.children_false_merged / self.children if self.children else 0.0

    @property
    def recall_with_reviews(self) -> float:
        return (self.true_positives + self.reviews_true) / self.true_pairs if self.true_pairs else 1.0

    def lines(self) -> list[str]:
        return [
            f"records (agency Patients): {self.records:,}; true pairs: {self.true_pairs:,}; "
            f"blocking recall {self.blocking_recall:.4f}",
            f"auto-linked pairs: {self.predicted_pairs:,} (true {self.true_positives:,})",
            f"precision {self.precision:.5f}  recall {self.recall:.5f}  F1 {self.f1:.5f}  "
            f"(ceiling: recall {self.recall_ceiling:.5f}  F1 {self.f1_ceiling:.5f}; linkable pairs missed: "
            f"{self.true_pairs - self.unlinkable - self.linkable_true_positives:,})",
            f"unlinkable true pairs (no name, no shared identifier on one side): {self.unlinkable:,}; over the "
            f"{self.true_pairs - self.unlinkable:,} linkable ones: recall {self.recall_linkable:.5f}  "
            f"F1 {self.f1_linkable:.5f}",
            f"children false-merged: {self.children_false_merged} of {self.children:,} "
            f"({self.false_merge_rate:.5f})",
            f"review tasks: {self.reviews:,} ({self.reviews_true:,} true matches); recall if all true ones are "
            f"confirmed: {self.recall_with_reviews:.5f}",
            f"linking time: {self.seconds_linking:.1f} s ({1000 * self.seconds_linking / max(self.records, 1):.2f} "
            f"ms per record)",
        ]


def true_pairs(data: Dataset) -> set[frozenset[str]]:
    by_person: dict[str, list[str]] = defaultdict(list)
    for record in data.records:
        by_person[data.person[record.id]].append(record.id)
    return {frozenset(p) for ids in by_person.values() for p in combinations(ids, 2)}


def unlinkable_pairs(data: Dataset, truth: set[frozenset[str]]) -> set[frozenset[str]]:
    """True pairs that nothing in the records can connect, even through the person's other records.

    Two records of one person are *connectable* when they share an identifier (any system, the NHS
    number included) or both carry a name (forename and surname) to compare. A true pair is
    unlinkable when its records fall in different connected components of that relation: one side
    is then a record with no name and no identifier in common with any other record of the child — in
    practice a CIN census record (no names in the DfE return) of a child without a UPN — which only
    its birth date and sex describe. No rule that respects the wrong-merge guard can link it."""
    def named(r: PersonRecord) -> bool:
        return bool(r.given and r.family)

    def connectable(a: PersonRecord, b: PersonRecord) -> bool:
        return bool(a.identifiers & b.identifiers) or bool(a.nhs and a.nhs == b.nhs) or (named(a) and named(b))

    by_person: dict[str, list[PersonRecord]] = defaultdict(list)
    for record in data.records:
        by_person[data.person[record.id]].append(record)
    component: dict[str, str] = {}
    for records in by_person.values():
        parent = {r.id: r.id for r in records}

        def root(x: str) -> str:
            while parent[x] != x:
                x = parent[x]
            return x

        for a, b in combinations(records, 2):
            if connectable(a, b):
                parent[root(a.id)] = root(b.id)
        component.update({r.id: root(r.id) for r in records})
    return {p for p in truth if len({component[i] for i in p}) > 1}


def miss_cause(a: PersonRecord, b: PersonRecord, vector: dict[str, str | None], unlinkable: bool) -> str:
    """Why a true pair was not linked, in words (docs/linkage.md, "What limits recall")."""
    if unlinkable:
        return "unlinkable: a record with no name and no shared identifier (birth date and sex only)"
    if not (a.given and a.family and b.given and b.family):
        return "one record without a name; its other records not linked to the named one"
    if vector["dob"] not in ("exact", "transposed", "near"):
        return "named; birth date differs"
    if vector["surname"] not in ("exact", "close", "part") or vector["forename"] in ("different", "initial"):
        return "named; name changed (surname or forename disagree)"
    if vector["postcode"] in ("different", "district"):
        return "named; same name and birth date, different address, no shared identifier or household evidence"
    return "named; other (below the certain threshold)"


def evidence(record: PersonRecord, extras: dict[str, str] | None = None) -> str:
    """What a record carries to be linked by, in words: name, NHS number, identifiers by kind, postcode,
    and the LA returns' ethnicity and UPNunknown reason (birth date and sex: nearly every record)."""
    extras = extras or {}
    parts = ["name" if record.given and record.family else "no name"]
    if record.nhs:
        parts.append("NHS no.")
    kinds = set()
    for system, _ in record.identifiers:
        if system.startswith(LA_CHILD_ID_PREFIX):
            kinds.add("LA child id")
        elif system.endswith("/Id/upn"):
            kinds.add("UPN")
        else:
            kinds.add({"health": "hospital no.", "police": "police id"}.get((record.agency or "").split("/")[0],
                                                                           "local id"))
    parts += sorted(kinds)
    if "upn_unknown" in extras:
        parts.append(f"UPNunknown {extras['upn_unknown']}")
    if record.postcodes:
        parts.append("postcode")
    if "ethnicity" in extras:
        parts.append("ethnicity")
    return ", ".join(parts)


def missed_breakdown(data: Dataset, truth: set[frozenset[str]], predicted: set[frozenset[str]],
                     matcher: Matcher) -> list[tuple[str, str, str, str, str, int]]:
    """Every true pair not linked, counted by (cause, agencies, evidence of one side, of the other,
    grade given), most frequent first within a cause. The sides are ordered by agency kind."""
    by_id = {r.id: r for r in data.records}
    unlinkable = unlinkable_pairs(data, truth)
    counts: dict[tuple[str, str, str, str, str], int] = defaultdict(int)
    for pair in truth - predicted:
        a, b = sorted((by_id[i] for i in pair), key=lambda r: ((r.agency or "?").split("/")[0], r.id))
        score = matcher.score(a, b)
        vector = dict(zip((c.name for c in COMPARISONS), score.vector))
        kinds = " + ".join((r.agency or "?").split("/")[0] for r in (a, b))
        key = (miss_cause(a, b, vector, pair in unlinkable), kinds, evidence(a, data.extras.get(a.id)),
               evidence(b, data.extras.get(b.id)), score.grade or "-")
        counts[key] += 1
    return [(*k, n) for k, n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0]))]


def cluster_pairs(clusters: Iterable[set[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for members in clusters for p in combinations(sorted(members), 2)}


def link_all(data: Dataset, model: Model) -> tuple[MemoryStore, float]:
    """Link the records in load order, each against those stored before it (linking on write)."""
    store = MemoryStore()
    started = time.perf_counter()
    for record in data.records:
        store.add(record)
        Matcher(model, store).decide(record)
    return store, time.perf_counter() - started


def blocking_recall(data: Dataset, truth: set[frozenset[str]]) -> float:
    by_id = {r.id: r for r in data.records}
    found = 0
    for pair in truth:
        a, b = (by_id[i] for i in pair)
        if query_keys(query_for(a)) & stored_keys(b) or query_keys(query_for(b)) & stored_keys(a):
            found += 1
    return found / len(truth) if truth else 1.0


def evaluate(data: Dataset, model: Model) -> Report:
    truth = true_pairs(data)
    store, seconds = link_all(data, model)
    predicted = cluster_pairs(store.clusters.values())
    tp = predicted & truth
    unlinkable = unlinkable_pairs(data, truth)
    reviews_true = sum(1 for pair in store.reviews if pair in truth and pair not in predicted)
    merged_children = set()
    for members in store.clusters.values():
        people = {data.person[i] for i in members}
        if len(people) > 1:
            merged_children.update(p for p in people if p in data.children)
    children = {data.person[r.id] for r in data.records if data.person[r.id] in data.children}

    def describe(pair: frozenset[str]) -> tuple[str, str, str]:
        a, b = sorted(pair)
        ra = next(r for r in data.records if r.id == a)
        rb = next(r for r in data.records if r.id == b)
        return _brief(ra), _brief(rb), Matcher(model, store).score(ra, rb).explain()

    return Report(
        records=len(data.records), true_pairs=len(truth), predicted_pairs=len(predicted), true_positives=len(tp),
        reviews=len(store.reviews), reviews_true=reviews_true, blocking_recall=blocking_recall(data, truth),
        children=len(children), children_false_merged=len(merged_children), seconds_linking=seconds,
        unlinkable=len(unlinkable), linkable_true_positives=len(tp - unlinkable),
        model={"matches_per_record": model.matches_per_record, "population": model.population},
        missed=[describe(p) for p in sorted(truth - predicted, key=sorted)[:40]],
        false=[describe(p) for p in sorted(predicted - truth, key=sorted)[:40]])


def _brief(r: PersonRecord) -> str:
    return (f"{r.agency} {' '.join(r.given)} {r.family or ''} {r.birth_date} {r.gender or ''} "
            f"{'/'.join(r.postcodes)} nhs={r.nhs or '-'} ids={len(r.identifiers)}")


def run(families: int, seed: int, *, directory: Path | None = None, model: Model | None = None,
        train_model: bool = True) -> tuple[Report, Model, Dataset]:
    """Generate (unless ``directory`` holds a dataset), map, train by EM (unless a model is given)
    on the same unlabelled records, link and evaluate."""
    if directory is None or not (directory / "manifest.json").exists():
        directory = directory or Path(tempfile.mkdtemp(prefix="linkage-eval-"))
        generate(families, seed, directory)
    data = load_dataset(directory)
    if model is None:
        model = train(data.records) if train_model else Model.load()
    return evaluate(data, model), model, data
