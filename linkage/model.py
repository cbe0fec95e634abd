"""Fellegi–Sunter record linkage: comparison vectors, m/u probabilities, EM, match weights, grades.

Fellegi & Sunter (1969), "A theory for record linkage": for a pair of records, each compared field
reaches an agreement level γ_k; with m_k(l) = P(γ_k = l | same person) and u_k(l) = P(γ_k = l |
different people), the match weight is log2(λ/(1-λ)) + Σ_k log2(m_k(γ_k)/u_k(γ_k)) and the match
probability 1/(1 + 2^-weight). A missing value contributes nothing.

Estimation follows Splink (UK Ministry of Justice): u from random pairs (almost all non-matches);
m by expectation–maximisation on the pairs of one blocking rule at a time, leaving out of each EM
session the fields that rule blocks on (they agree by construction), then averaging; λ from the
EM session's match share scaled by the rule's recall. Exact name agreement is term-frequency
adjusted: agreeing on "Smith" is weaker evidence than agreeing on "Postlethwaite".

Two pieces of policy sit on top of the probability (:func:`grade`), because a false merge of two
children is far worse than a missed link:

- ``certainly-not``: two valid NHS numbers that differ, or two ids of the same local authority's
  child index that differ, whatever else agrees;
- ``certain`` needs corroboration beyond name and date of birth — a shared identifier, or the same
  postcode sector with agreeing forenames — so that two children with the same name and birthday at
  different addresses, or twins, are never linked without a practitioner. Forenames that agree only
  by a keying slip (Amy ~ May), or only closely while the recorded sexes differ (Daniel ~ Daniela),
  do not corroborate: twins bear such names.
"""
from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import compare
from .blocking import index_form
from .record import LA_CHILD_ID_PREFIX, PersonRecord

DEFAULT_MODEL = Path(__file__).with_name("default_model.json")
M_FLOOR = 0.001
U_IDENTIFIER_EXACT = 1e-8
IDENTIFIER_COMPARISONS = ("nhs", "local_id")

# grades (extension-match-grade.html)
CERTAIN, PROBABLE, POSSIBLE, CERTAINLY_NOT = "certain", "probable", "possible", "certainly-not"


@dataclass(frozen=True)
class Comparison:
    name: str
    levels: tuple[str, ...]  # best first
    compare: Callable[[PersonRecord, PersonRecord], str | None]
    tf: str | None = None  # term-frequency adjusted field for the "exact" level


def _local_ids(a: PersonRecord, b: PersonRecord) -> str | None:
    """Identifiers of the same system other than the NHS number (UPN, LA child id, police person id,
    hospital number): ``exact`` when one value is shared, ``different`` when a shared system has only
    different values, None when they share no system."""
    shared = {s for s, _ in a.identifiers} & {s for s, _ in b.identifiers}
    if not shared:
        return None
    if a.identifiers & b.identifiers:
        return "exact"
    return "different"


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("nhs", ("exact", "near", "different", "conflict"),
               lambda a, b: compare.compare_nhs_numbers(a.nhs, b.nhs, a_valid=a.nhs_valid, b_valid=b.nhs_valid)),
    Comparison("local_id", ("exact", "different"), _local_ids),
    Comparison("forename", ("exact", "equivalent", "close", "similar", "initial", "different"),
               lambda a, b: compare.compare_forenames(list(a.given), list(b.given)), tf="forename"),
    Comparison("surname", ("exact", "close", "part", "similar", "different"),
               lambda a, b: compare.compare_surnames(a.family, b.family), tf="surname"),
    Comparison("dob", ("exact", "transposed", "near", "year", "different"),
               lambda a, b: compare.compare_dates(a.birth_date, b.birth_date)),
    Comparison("gender", ("exact", "different"),
               lambda a, b: None if not a.gender or not b.gender else
               ("exact" if a.gender == b.gender else "different")),
    Comparison("postcode", ("exact", "near", "sector", "district", "different"), lambda a, b: _best_postcode(a, b)),
)
BY_NAME = {c.name: c for c in COMPARISONS}
_FORENAME = [c.name for c in COMPARISONS].index("forename")

_POSTCODE_ORDER = BY_NAME["postcode"].levels


def _best_postcode(a: PersonRecord, b: PersonRecord) -> str | None:
    """Best agreement of any address of one with any of the other (an agency may hold an old one)."""
    if not a.postcodes or not b.postcodes:
        return None
    best = "different"
    for x in a.postcodes:
        for y in b.postcodes:
            level = compare.compare_postcodes(x, y) or "different"
            if _POSTCODE_ORDER.index(level) < _POSTCODE_ORDER.index(best):
                best = level
    return best


Vector = tuple[str | None, ...]


def comparison_vector(a: PersonRecord, b: PersonRecord) -> Vector:
    """γ: the agreement level of each comparison (None where a value is missing)."""
    return tuple(c.compare(a, b) for c in COMPARISONS)


def certainly_not(a: PersonRecord, b: PersonRecord) -> str | None:
    """Why two records can never be the same person, or None. Different valid NHS numbers; different
    ids in the same local authority's child index (each LA keeps one id per child)."""
    if a.nhs and b.nhs and a.nhs_valid and b.nhs_valid and a.nhs != b.nhs:
        return "different valid NHS numbers"
    for system, value in a.identifiers:
        if system.startswith(LA_CHILD_ID_PREFIX):
            other = b.values(system)
            if other and value not in other:
                return f"different child ids of local authority {system.rsplit('/', 1)[-1]}"
    return None


# -- the model --------------------------------------------------------------------------------------------

@dataclass
class Thresholds:
    """Match probabilities at which a pair is graded; see :func:`grade`."""

    certain: float = 0.999
    probable: float = 0.90
    possible: float = 0.20


@dataclass
class Model:
    """m and u per comparison level, the prior and thresholds.

    The prior is kept as ``matches_per_record`` (how many other records of the same person a record
    has, on average) so that λ, the probability that two random records match, follows the size of
    the population actually searched: λ = matches_per_record / (population - 1)."""

    m: dict[str, dict[str, float]]
    u: dict[str, dict[str, float]]
    matches_per_record: float
    population: int
    thresholds: Thresholds = field(default_factory=Thresholds)
    trained_on: dict[str, Any] = field(default_factory=dict)

    @property
    def lam(self) -> float:
        return min(max(self.matches_per_record / max(self.population - 1, 1), 1e-12), 0.5)

    @property
    def prior_weight(self) -> float:
        return math.log2(self.lam / (1 - self.lam))

    def for_population(self, population: int) -> "Model":
        """The same model with λ for a population of ``population`` records."""
        return replace(self, population=max(population, 2))

    def weight(self, name: str, level: str, tf_value: float | None = None) -> float:
        """log2 Bayes factor of one comparison level; an exact name match uses the value's frequency."""
        m = self.m[name][level]
        u = self.u[name][level]
        if tf_value is not None and level == "exact":
            u = max(tf_value, 1e-7)
        return math.log2(m / u)

    def to_json(self) -> dict[str, Any]:
        return {"matches_per_record": self.matches_per_record, "population": self.population, "m": self.m,
                "u": self.u, "thresholds": self.thresholds.__dict__, "trained_on": self.trained_on}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Model":
        return cls(m=data["m"], u=data["u"], matches_per_record=float(data["matches_per_record"]),
                   population=int(data["population"]),
                   thresholds=Thresholds(**data.get("thresholds", {})), trained_on=data.get("trained_on", {}))

    @classmethod
    def load(cls, path: Path | str | None = None) -> "Model":
        return cls.from_json(json.loads(Path(path or DEFAULT_MODEL).read_text(encoding="utf-8")))

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")


# Frequency of a name value among all records (0..1), or None when unknown.
TermFrequency = Callable[[str, str], "float | None"]


@dataclass(frozen=True)
class Score:
    """The outcome of comparing two records."""

    probability: float
    weight: float
    grade: str | None  # certain | probable | possible | certainly-not | None (not a candidate)
    vector: Vector
    reason: str = ""  # why certainly-not, or why not certain although the probability is high
    # the forenames agree only by a keying slip (compare.forename_slip): never corroboration
    forename_slip: bool = False
    # another person's two records that corroborate a move (linkage.household), linked with this pair
    household: tuple[str, str] | None = None

    def explain(self) -> str:
        agreed = ", ".join(f"{c.name} {lvl}" for c, lvl in zip(COMPARISONS, self.vector) if lvl is not None)
        text = f"match weight {self.weight:.1f}, probability {self.probability:.6f} ({agreed})"
        return f"{text}; {self.reason}" if self.reason else text


def score_pair(model: Model, a: PersonRecord, b: PersonRecord, tf: TermFrequency | None = None) -> Score:
    """Compare two records and grade the pair (patient-operation-match.html: score 0–1 and a grade)."""
    vector = comparison_vector(a, b)
    why_not = certainly_not(a, b)
    if why_not:
        return Score(0.0, -math.inf, CERTAINLY_NOT, vector, why_not)
    total = model.prior_weight
    for comp, level in zip(COMPARISONS, vector):
        if level is None:
            continue
        tf_value = None
        if tf is not None and comp.tf and level == "exact":
            tf_value = tf(comp.tf, tf_key(a, comp.tf))
        total += model.weight(comp.name, level, tf_value)
    probability = 1.0 / (1.0 + 2.0 ** (-total)) if total > -1000 else 0.0
    slip = compare.forename_slip(list(a.given), list(b.given), vector[_FORENAME])
    level, reason = grade(model, probability, vector, slip=slip)
    return Score(probability, total, level, vector, reason, forename_slip=slip)


def tf_key(record: PersonRecord, field: str) -> str:
    """The value whose frequency adjusts an exact agreement, as the search index stores it."""
    if field == "forename":
        return index_form(record.given[0]) if record.given else ""
    return index_form(record.family) if record.family else ""


def grade(model: Model, probability: float, vector: Vector, *, slip: bool = False) -> tuple[str | None, str]:
    """The match grade of a pair that is not certainly-not, and why a high probability was not made
    certain (no corroboration beyond name and date of birth). ``slip``: the forenames agree only by a
    keying slip (:attr:`Score.forename_slip`)."""
    t = model.thresholds
    if probability >= t.certain:
        if corroborated(vector, slip=slip):
            return CERTAIN, ""
        return PROBABLE, "not certain: nothing beyond name and date of birth corroborates it"
    if probability >= t.probable:
        return PROBABLE, ""
    if probability >= t.possible:
        return POSSIBLE, ""
    return None, ""


def corroborated(vector: Vector, *, slip: bool = False) -> bool:
    """A shared identifier, or the same postcode sector (or a postcode one keying error away) with
    forenames that agree (:func:`forenames_corroborate`) and birth dates that agree but for a keying
    error. Siblings given the same name live at one address too: a birth date that differs outright
    keeps them apart."""
    v = dict(zip((c.name for c in COMPARISONS), vector))
    if v["nhs"] == "exact" or v["local_id"] == "exact":
        return True
    return (v["dob"] in ("exact", "transposed", "near") and v["postcode"] in ("exact", "near", "sector")
            and forenames_corroborate(vector, slip=slip))


def forenames_corroborate(vector: Vector, *, slip: bool = False) -> bool:
    """Whether the forenames agree well enough to corroborate a link without a shared identifier, as
    twins' names must not: the same or equivalent name (a nickname, a variant); or a close or similar
    one, but not when it agrees only by a keying slip (``slip``: Amy ~ May, Kai ~ Kia, Amelia ~ May
    are twins' names as often as typos) nor when the recorded sexes differ (Daniel ~ Daniela, a boy
    and a girl; a sex not recorded as male or female is missing and does not count against)."""
    v = dict(zip((c.name for c in COMPARISONS), vector))
    if v["forename"] in ("exact", "equivalent"):
        return True
    return v["forename"] in ("close", "similar") and not slip and v["gender"] != "different"


# -- estimation -------------------------------------------------------------------------------------------

def estimate_u(records: Sequence[PersonRecord], *, pairs: int = 200_000, seed: int = 1) -> dict[str, dict[str, float]]:
    """u probabilities from random pairs: the share of each level among pairs of (almost surely)
    different people. A level never seen gets one pseudo-count (u is never zero)."""
    rng = random.Random(seed)
    n = len(records)
    counts = {c.name: Counter[str]() for c in COMPARISONS}
    for _ in range(min(pairs, n * (n - 1) // 2)):
        i, j = rng.randrange(n), rng.randrange(n)
        if i == j:
            continue
        for comp, level in zip(COMPARISONS, comparison_vector(records[i], records[j])):
            if level is not None:
                counts[comp.name][level] += 1
    u = {c.name: _normalise(counts[c.name], c.levels, pseudo=1.0) for c in COMPARISONS}
    # An identifier is issued once per person: two different people's records agree on one only when a
    # keying error lands on another person's number. Random sampling cannot see so rare an event (it
    # would only report its own resolution, 1/pairs), so the exact level takes a fixed, small value.
    for name in IDENTIFIER_COMPARISONS:
        u[name]["exact"] = U_IDENTIFIER_EXACT
        rest = sum(v for lvl, v in u[name].items() if lvl != "exact")
        u[name] = {lvl: (v if lvl == "exact" else v * (1 - U_IDENTIFIER_EXACT) / rest) for lvl, v in u[name].items()}
    return u


def _normalise(counts: Counter[str] | dict[str, float], levels: Iterable[str], *, pseudo: float) -> dict[str, float]:
    levels = list(levels)
    total = sum(counts.get(lvl, 0) for lvl in levels) + pseudo * len(levels)
    return {lvl: (counts.get(lvl, 0) + pseudo) / total for lvl in levels}


@dataclass
class EmResult:
    m: dict[str, dict[str, float]]
    lam: float  # share of matches among the session's pairs
    iterations: int
    converged: bool


def expectation_maximisation(vectors: Counter[Vector], u: dict[str, dict[str, float]], *,
                             active: Sequence[str], m: dict[str, dict[str, float]] | None = None,
                             lam: float = 0.1, max_iterations: int = 100, tolerance: float = 1e-6) -> EmResult:
    """EM for the two-class mixture of Fellegi–Sunter with u fixed (Winkler 1988; Splink's default).

    ``vectors`` counts identical comparison vectors (the E-step is per distinct vector); only the
    ``active`` comparisons take part (those not used by the blocking rule that made the pairs).
    Converged when no parameter moves by more than ``tolerance``."""
    index = {c.name: i for i, c in enumerate(COMPARISONS)}
    m = {k: dict(v) for k, v in (m or _initial_m()).items()}
    total = sum(vectors.values())
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        tallies = {name: Counter[str]() for name in active}
        matched = 0.0
        for vector, count in vectors.items():
            log_m = math.log(lam)
            log_u = math.log(1 - lam)
            for name in active:
                level = vector[index[name]]
                if level is not None:
                    log_m += math.log(m[name][level])
                    log_u += math.log(u[name][level])
            diff = log_u - log_m
            p = 1.0 / (1.0 + math.exp(diff)) if diff < 700 else 0.0
            weight = p * count
            matched += weight
            for name in active:
                level = vector[index[name]]
                if level is not None:
                    tallies[name][level] += weight
        new_lam = min(max(matched / total, 1e-9), 1 - 1e-9)
        change = abs(new_lam - lam)
        for name in active:
            new = _normalise(tallies[name], BY_NAME[name].levels, pseudo=1e-3)
            change = max(change, *(abs(new[lvl] - m[name][lvl]) for lvl in new))
            m[name] = new
        lam = new_lam
        if change < tolerance:
            return EmResult(m, lam, iteration, True)
    return EmResult(m, lam, iteration, False)


def _initial_m() -> dict[str, dict[str, float]]:
    """A starting point: most matches agree exactly, a few at each lesser level."""
    out = {}
    for comp in COMPARISONS:
        n = len(comp.levels)
        out[comp.name] = {lvl: (0.9 if i == 0 else 0.1 / (n - 1)) for i, lvl in enumerate(comp.levels)}
    return out


@dataclass(frozen=True)
class TrainingRule:
    """A blocking rule used for one EM session: its pairs, and the comparisons it fixes."""

    name: str
    key: Callable[[PersonRecord], str | None]
    fixes: tuple[str, ...]
    recall_from: str  # comparison whose m("exact") estimates how many true pairs the rule finds
    recall_levels: tuple[str, ...] = ("exact",)


TRAINING_RULES: tuple[TrainingRule, ...] = (
    TrainingRule("same date of birth", lambda r: r.birth_date.isoformat() if r.birth_date else None,
                 ("dob",), "dob"),
    TrainingRule("same forename and surname",
                 lambda r: f"{r.forename_key}|{r.surname_key}" if r.forename_key and r.surname_key else None,
                 ("forename", "surname"), "surname"),
)


def blocked_pairs(records: Sequence[PersonRecord], key: Callable[[PersonRecord], str | None],
                  *, max_block: int = 2000) -> Iterable[tuple[PersonRecord, PersonRecord]]:
    blocks: dict[str, list[PersonRecord]] = {}
    for r in records:
        k = key(r)
        if k:
            blocks.setdefault(k, []).append(r)
    for members in blocks.values():
        if len(members) > max_block:
            continue
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                yield members[i], members[j]


def train(records: Sequence[PersonRecord], *, u_pairs: int = 200_000, seed: int = 1,
          thresholds: Thresholds | None = None) -> Model:
    """Estimate a model from unlabelled records (no ground truth is used): u from random pairs, m by
    one EM session per :data:`TRAINING_RULES` rule, λ from the date-of-birth session."""
    u = estimate_u(records, pairs=u_pairs, seed=seed)
    estimates: dict[str, list[dict[str, float]]] = {c.name: [] for c in COMPARISONS}
    sessions: dict[str, Any] = {}
    m_all: dict[str, dict[str, float]] = _initial_m()
    for rule in TRAINING_RULES:
        vectors = Counter(comparison_vector(a, b) for a, b in blocked_pairs(records, rule.key))
        active = [c.name for c in COMPARISONS if c.name not in rule.fixes]
        result = expectation_maximisation(vectors, u, active=active)
        for name in active:
            estimates[name].append(result.m[name])
        sessions[rule.name] = {"pairs": sum(vectors.values()), "lambda": result.lam,
                               "iterations": result.iterations, "converged": result.converged}
        sessions[rule.name]["_matches"] = result.lam * sum(vectors.values())
    for name, found in estimates.items():
        if found:
            # no level is impossible for a true match (a gender keyed wrongly, a date mistyped): a floor
            # keeps one disagreement the synthetic data never shows from vetoing a pair outright
            mean = {lvl: max(sum(e[lvl] for e in found) / len(found), M_FLOOR) for lvl in BY_NAME[name].levels}
            total = sum(mean.values())
            m_all[name] = {lvl: value / total for lvl, value in mean.items()}
    # the prior: expected true pairs found by the date-of-birth rule, divided by that rule's recall
    # (m of an exact date, estimated by the other session)
    dob_session = sessions[TRAINING_RULES[0].name]
    recall = m_all["dob"]["exact"]
    n = len(records)
    true_pairs = dob_session.pop("_matches") / max(recall, 1e-6)
    for s in sessions.values():
        s.pop("_matches", None)
    return Model(m=m_all, u=u, matches_per_record=2 * true_pairs / max(n, 1), population=n,
                 thresholds=thresholds or Thresholds(),
                 trained_on={"records": n, "u_pairs": u_pairs, "sessions": sessions})
