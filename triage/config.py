"""The risk model's configuration: ``profiles/risk/risk-model.json`` (weights, half-lives, bands,
combinations, triggers), read and checked once. Not code, so a partnership can tune and publish it;
its ``version`` is recorded with every score, RiskAssessment and Flag."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.conformance import CANONICAL_BASE

CONFIG_FILE = Path("risk") / "risk-model.json"
TRIGGER_KINDS = frozenset({"event-during-episode", "repeat", "event-while-known"})


class RiskConfigError(ValueError):
    """The configuration is not usable (a start-up or recompute error naming the bad element)."""


@dataclass(frozen=True)
class Factor:
    code: str
    display: str
    weight: float
    half_life_days: float
    weights: dict[tuple[str, str], float]  # (CodeSystem url, code) → weight of that evidence


@dataclass(frozen=True)
class Weighted:
    code: str
    display: str
    weight: float


@dataclass(frozen=True)
class Combination:
    code: str
    display: str
    factors: tuple[str, ...]
    bonus: float


@dataclass(frozen=True)
class Band:
    code: str
    display: str
    min_score: float


@dataclass(frozen=True)
class Trigger:
    code: str
    kind: str
    display: str
    factor: str
    active_days: float
    agencies: tuple[str, ...] = ()
    episodes: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    count: int = 2
    within_days: float = 30
    max_age_years: float | None = None


@dataclass(frozen=True)
class RiskConfig:
    id: str
    version: str
    horizon_days: float
    max_occurrences: int
    corroboration_agencies: int
    corroboration_multiplier: float
    bands: tuple[Band, ...]  # highest first
    factors: tuple[Factor, ...]
    episodes: tuple[Weighted, ...]
    sibling: Weighted
    sibling_episodes: tuple[str, ...]
    combinations: tuple[Combination, ...]
    triggers: tuple[Trigger, ...]
    lead_order: tuple[str, ...]
    by_code: dict[tuple[str, str], Factor]  # (system url, code) → factor

    def band_of(self, score: float) -> Band:
        for band in self.bands:
            if score >= band.min_score:
                return band
        return self.bands[-1]

    def band_rank(self, code: str | None) -> int:
        """0 for the lowest band; higher is worse; -1 for an unknown band (or none yet)."""
        codes = [b.code for b in reversed(self.bands)]
        return codes.index(code) if code in codes else -1

    @property
    def label(self) -> str:
        return f"{self.id}|{self.version}"


def system_url(name: str) -> str:
    return name if name.startswith(("http:", "https:", "urn:")) else f"{CANONICAL_BASE}/CodeSystem/{name}"


DEFAULT_PROFILES = Path(__file__).resolve().parent.parent / "profiles"


def config_path(profiles_dir: Path) -> Path:
    """``FHIR_RISK_MODEL`` (a path) overrides the configuration in the profiles directory; a profiles
    directory without one (a deployment's own conformance resources) uses the one shipped here."""
    override = os.environ.get("FHIR_RISK_MODEL")
    if override:
        return Path(override)
    path = Path(profiles_dir) / CONFIG_FILE
    return path if path.exists() else DEFAULT_PROFILES / CONFIG_FILE


def load_config(profiles_dir: Path) -> RiskConfig:
    path = config_path(profiles_dir)
    return _load(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _load(path: Path, _mtime: int) -> RiskConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RiskConfigError(f"{path}: cannot read the risk model ({exc})") from None
    try:
        return parse_config(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise RiskConfigError(f"{path}: {exc}") from None


def parse_config(data: dict[str, Any]) -> RiskConfig:
    """Check and read a configuration document (see profiles/risk/risk-model.json)."""
    def num(obj: dict[str, Any], key: str, default: float | None = None) -> float:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{key} must be a number >= 0 (in {obj.get('code', 'the model')})")
        return float(value)

    if not data.get("id") or not data.get("version"):
        raise ValueError("the model needs an id and a version")
    default_half_life = num(data, "defaultHalfLifeDays", 180)
    factors = []
    by_code: dict[tuple[str, str], Factor] = {}
    for f in data["factors"]:
        weight = num(f, "weight")
        weights = {(system_url(m["system"]), str(m["code"])): num(m, "weight", weight) for m in f["match"]}
        factor = Factor(str(f["code"]), str(f.get("display") or f["code"]), weight,
                        num(f, "halfLifeDays", default_half_life) or default_half_life, weights)
        for key in weights:
            if key in by_code:
                raise ValueError(f"code {key[1]} is matched by both {by_code[key].code} and {factor.code}")
            by_code[key] = factor
        factors.append(factor)
    codes = {f.code for f in factors}
    if len(codes) != len(factors):
        raise ValueError("factor codes must be unique")
    bands = tuple(sorted((Band(str(b["code"]), str(b.get("display") or b["code"]), num(b, "minScore"))
                          for b in data["bands"]), key=lambda b: -b.min_score))
    if not bands or bands[-1].min_score != 0:
        raise ValueError("bands must include one with minScore 0")
    combos = tuple(Combination(str(c["code"]), str(c.get("display") or c["code"]), tuple(c["factors"]), num(c, "bonus"))
                   for c in data.get("combinations") or [])
    for c in combos:
        if unknown := set(c.factors) - codes:
            raise ValueError(f"combination {c.code} names unknown factors {sorted(unknown)}")
    triggers = []
    for t in data.get("triggers") or []:
        if t.get("kind") not in TRIGGER_KINDS:
            raise ValueError(f"trigger {t.get('code')}: kind must be one of {sorted(TRIGGER_KINDS)}")
        if t.get("factor") not in codes:
            raise ValueError(f"trigger {t.get('code')}: unknown factor {t.get('factor')!r}")
        triggers.append(Trigger(
            str(t["code"]), str(t["kind"]), str(t.get("display") or t["code"]), str(t["factor"]),
            num(t, "activeDays", 30), tuple(t.get("agencies") or ()), tuple(t.get("episodes") or ()),
            tuple(t.get("codes") or ()), int(t.get("count", 2)), num(t, "withinDays", 30),
            num(t, "maxAgeYears") if "maxAgeYears" in t else None))
    sib = data.get("siblings") or {"code": "sibling-on-plan", "weight": 0, "episodes": []}
    corroboration = data.get("corroboration") or {}
    return RiskConfig(
        id=str(data["id"]), version=str(data["version"]), horizon_days=num(data, "horizonDays", 1095),
        max_occurrences=int(data.get("maxOccurrences", 3)),
        corroboration_agencies=int(corroboration.get("minAgencies", 2)),
        corroboration_multiplier=num(corroboration, "multiplier", 1.0),
        bands=bands, factors=tuple(factors),
        episodes=tuple(Weighted(str(e["code"]), str(e.get("display") or e["code"]), num(e, "weight"))
                       for e in data.get("episodes") or []),
        sibling=Weighted(str(sib["code"]), str(sib.get("display") or sib["code"]), num(sib, "weight")),
        sibling_episodes=tuple(sib.get("episodes") or ()),
        combinations=combos, triggers=tuple(triggers),
        lead_order=tuple(data.get("leadEpisodeOrder") or ()), by_code=by_code)
