"""Scoring children and keeping everything that follows from a score up to date, in the caller's
transaction: the ``risk_score`` row and its history, the child's RiskAssessment (a new version only when
the score or band changes) and the escalation Flag (raised once, updated when the escalation grows,
closed on de-escalation), each Flag change with a Provenance.

Escalation rules (the Flag's state is kept on the score row):

* no open Flag: raise one when the band rises (from the previous score; a child scored for the first
  time rises from the lowest band) or a trigger is active;
* open Flag: update it when the band rises above the band it was raised at or a new trigger fires;
  close it (status inactive, period.end) when no trigger is active and either the band fell below
  the Flag's band or the Flag was raised by triggers alone;
* otherwise nothing is written, so rescoring the same data never makes a duplicate.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fhir_server.fhir import jsonio
from fhir_server.fhir.instants import format_instant
from fhir_server.repository.context import RequestContext

from . import resources, store
from .config import RiskConfig
from .model import RiskScore, score_child

if TYPE_CHECKING:
    from fhir_server.repository.sql import UnitOfWork

CLIENT_ID = "triage"


@dataclass
class Stats:
    scored: int = 0
    changed: int = 0
    assessments: int = 0
    flags_raised: int = 0
    flags_updated: int = 0
    flags_closed: int = 0
    removed: int = 0
    raised_ids: list[str] = field(default_factory=list)

    def add(self, other: "Stats") -> None:
        for name in ("scored", "changed", "assessments", "flags_raised", "flags_updated", "flags_closed", "removed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class FlagDecision:
    action: str  # none | raise | update | close
    band: str | None = None
    by_band: bool = False
    triggers: tuple[str, ...] = ()
    causes: tuple[str, ...] = ()


def decide_flag(config: RiskConfig, old_band: str | None, flag_open: bool, flag_band: str | None,
                flag_by_band: bool, flag_triggers: tuple[str, ...], score: RiskScore) -> FlagDecision:
    """The escalation rules of the module docstring. Pure."""
    new_rank = config.band_rank(score.band)
    fired = tuple(sorted(f.code for f in score.fired))
    if not flag_open:
        rose = new_rank > max(config.band_rank(old_band), 0)
        if rose or fired:
            return FlagDecision("raise", score.band, rose, fired, (("band-rise",) if rose else ()) + fired)
        return FlagDecision("none")
    flag_rank = config.band_rank(flag_band)
    new_triggers = tuple(t for t in fired if t not in flag_triggers)
    if new_rank > flag_rank or new_triggers:
        band = score.band if new_rank > flag_rank else flag_band
        by_band = flag_by_band or new_rank > flag_rank
        triggers = tuple(sorted({*flag_triggers, *fired}))
        return FlagDecision("update", band, by_band, triggers, (("band-rise",) if by_band else ()) + triggers)
    if not fired and (new_rank < flag_rank or not flag_by_band):
        return FlagDecision("close")
    return FlagDecision("none", flag_band, flag_by_band, flag_triggers)


def assessment_id(child_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{resources.ASSESSMENT_SYSTEM}/{child_id}"))


class Scorer:
    """Scores batches of children inside one unit of work. ``writer`` is the unit of work, or a
    :class:`~fhir_server.repository.bulk.DeferredCreates` around it for full recomputes."""

    def __init__(self, uow: "UnitOfWork", config: RiskConfig, now: datetime, *, writer: Any = None) -> None:
        self.uow = uow
        self.writer = writer or uow
        self.config = config
        self.now = now
        self.base_url = uow.repo.settings.base_url
        self.ctx = RequestContext.system(self.base_url).with_changes(client_id=CLIENT_ID)
        self._device_ready = False
        self._known_assessments: set[str] = set()

    def rescore(self, child_ids: list[str], *, stale: list[str] = ()) -> Stats:
        """Score ``child_ids``; ``stale`` are ids that are no longer children (now linked to a master,
        or deleted): their rows go and their open Flag is closed."""
        stats = Stats()
        conn = self.uow.conn
        inputs, authority = store.load_inputs(conn, child_ids, self.base_url, self.now)
        # records linked into a master since they were scored on their own
        stale = [*stale, *(r for data in inputs.values() for r in data.record_ids)]
        existing = store.current_rows(conn, [*child_ids, *stale])
        gone = list(dict.fromkeys(c for c in [*child_ids, *stale] if c not in inputs and c in existing))
        # a record now linked to a master hands its open escalation over to the master's
        masters = store.masters_linking(conn, [c for c in gone if existing[c].flag_id], self.base_url)
        carried: dict[str, Any] = {}
        for child in gone:
            row = existing[child]
            master = next(iter(sorted(masters.get(child, ()))), None)
            if row.flag_id and master in inputs and master not in carried and \
                    not (existing.get(master) is not None and existing[master].flag_id):
                carried[master] = row
                continue
            if row.flag_id:
                self._close_flag(row.flag_id, f"Patient/{child} is no longer scored on its own "
                                              "(linked to a master record, or deleted)")
                stats.flags_closed += 1
        if gone:
            store.delete_rows(conn, gone)
            stats.removed += len(gone)
        new_rows, changed_rows, history = [], [], []
        # RiskAssessments left from an earlier time a child was scored (one query, not one per child)
        self._known_assessments = store.existing_ids(
            conn, "RiskAssessment", [assessment_id(c) for c in inputs if c not in existing])
        for child, data in inputs.items():
            score = score_child(data, self.config, self.now)
            old = existing.get(child)
            handed = carried.get(child)
            stats.scored += 1
            moved = old is None or old.score != score.score or old.band != score.band
            assessment = old.assessment_id if old is not None else None
            if moved:
                assessment = self._write_assessment(score, assessment)
                stats.assessments += 1
                history.append({"child_id": child, "scored_at": self.now, "score": score.score,
                                "band": score.band, "config_version": self.config.label})
            row = self._row(score, authority.get(child), data.birth_date, assessment,
                            old.changed_at if old is not None and not moved else self.now)
            flag_state = self._flags(score, old, row, stats, handed)
            row.update(flag_state)
            if old is None:
                new_rows.append(row)
            elif _differs(old, row):
                changed_rows.append(row)
            if moved:
                stats.changed += 1
        if hasattr(self.writer, "flush"):
            self.writer.flush()
        store.write_rows(conn, new_rows, changed_rows, history)
        return stats

    # -- pieces ----------------------------------------------------------------------------------

    def _row(self, score: RiskScore, authority: str | None, birth_date: Any, assessment: str | None,
             changed_at: datetime) -> dict[str, Any]:
        kinds = sorted({a.split("/", 1)[0] for a in score.agencies})
        return {
            "child_id": score.child_id, "score": score.score, "band": score.band,
            "reasons": [r.as_json() for r in score.reasons],
            "fired": [{"code": f.code, "display": f.display, "evidence": list(f.evidence)} for f in score.fired],
            "agencies": "|" + "".join(f"{a}|" for a in [*kinds, *score.agencies]) if score.agencies else "",
            "local_authority": authority, "birth_date": birth_date, "lead": score.lead,
            "open_episodes": [{"reference": e.ref, "code": e.code, "display": e.display, "agency": e.agency,
                               **({"start": e.start.date().isoformat()} if e.start else {})}
                              for e in score.open_episodes],
            "config_version": self.config.label, "scored_at": self.now, "changed_at": changed_at,
            "assessment_id": assessment,
        }

    def _write_assessment(self, score: RiskScore, current: str | None) -> str:
        content = resources.risk_assessment(score, self.config, self.now)
        if current is None:
            res_id = assessment_id(score.child_id)
            if res_id in self._known_assessments:  # a child scored before, then unscored
                self.writer.update(self.ctx, "RiskAssessment", res_id, {**content, "id": res_id})
            else:
                self.writer.create(self.ctx, content, res_id=res_id)
            return res_id
        self.writer.update(self.ctx, "RiskAssessment", current, {**content, "id": current})
        return current

    def _flags(self, score: RiskScore, old: Any, row: dict[str, Any], stats: Stats,
               handed: Any = None) -> dict[str, Any]:
        """Raise, grow or close the child's escalation Flag; ``handed`` is the score row of a record
        that was linked into this master with its Flag open (the Flag moves to the master)."""
        if handed is not None:
            old = _HandedOver(handed, old)
        flag_id = old.flag_id if old is not None else None
        triggers = tuple(old.flag_triggers or ()) if old is not None and old.flag_triggers else ()
        decision = decide_flag(self.config, old.band if old is not None else None, flag_id is not None,
                               old.flag_band if old is not None else None,
                               bool(old.flag_by_band) if old is not None else False, triggers, score)
        keep = {"flag_id": flag_id, "flag_band": old.flag_band if old is not None else None,
                "flag_by_band": old.flag_by_band if old is not None else None,
                "flag_triggers": list(triggers) if flag_id else None}
        if decision.action == "none" and handed is not None:
            decision = FlagDecision("update", keep["flag_band"], bool(keep["flag_by_band"]), triggers,
                                    (("band-rise",) if keep["flag_by_band"] else ()) + triggers)
        if decision.action == "none":
            return keep
        if decision.action == "close":
            self._close_flag(flag_id, f"De-escalated: score {score.score}, band {score.band}, no trigger active",  # type: ignore[arg-type]
                             score)
            stats.flags_closed += 1
            return {"flag_id": None, "flag_band": None, "flag_by_band": None, "flag_triggers": None}
        self.ensure_device()
        causes = list(decision.causes)
        why_parts = [f"band rose to {score.band} (score {score.score})"] if "band-rise" in causes else []
        why = "; ".join([*why_parts, *(f.display for f in score.fired)])
        evidence = list(dict.fromkeys([*(r for f in score.fired for r in f.evidence), *score.evidence]))
        if decision.action == "raise":
            start = format_instant(self.now)
            flag = resources.escalation_flag(score, self.config, causes=causes, start=start,
                                             assessment_id=row["assessment_id"])
            stored = self.writer.create(self.ctx, flag)
            flag_id = stored.res_id
            self.writer.create(self.ctx, resources.provenance(
                f"Flag/{flag_id}/_history/1", "CREATE", f"Escalation raised: {why}", evidence, self.now))
            stats.flags_raised += 1
            stats.raised_ids.append(flag_id)
        else:
            current = self.uow.read("Flag", flag_id).content or {}  # type: ignore[arg-type]
            start = (current.get("period") or {}).get("start") or format_instant(self.now)
            flag = resources.escalation_flag(score, self.config, causes=causes, start=start,
                                             assessment_id=row["assessment_id"])
            result = self.writer.update(self.ctx, "Flag", flag_id, {**flag, "id": flag_id})
            self.writer.create(self.ctx, resources.provenance(
                f"Flag/{flag_id}/_history/{result.stored.version_id}", "UPDATE", f"Escalation updated: {why or 'moved to the master record'}",
                evidence, self.now))
            stats.flags_updated += 1
        return {"flag_id": flag_id, "flag_band": decision.band, "flag_by_band": decision.by_band,
                "flag_triggers": list(decision.triggers)}

    def _close_flag(self, flag_id: str, reason: str, score: RiskScore | None = None) -> None:
        try:
            current = dict(self.uow.read("Flag", flag_id).content or {})
        except Exception:  # noqa: BLE001 - deleted by someone: nothing to close
            return
        if current.get("status") != "active":
            return
        current["status"] = "inactive"
        current["period"] = {**(current.get("period") or {}), "end": format_instant(self.now)}
        result = self.writer.update(self.ctx, "Flag", flag_id, current)
        self.writer.create(self.ctx, resources.provenance(
            f"Flag/{flag_id}/_history/{result.stored.version_id}", "UPDATE", reason,
            score.evidence if score else [], self.now))

    def ensure_device(self) -> None:
        if self._device_ready:
            return
        device = resources.device(self.config)
        self.writer.update(self.ctx, "Device", resources.DEVICE_ID, device)
        self._device_ready = True


class _HandedOver:
    """The master's previous state, with the escalation of a record linked into it."""

    def __init__(self, record_row: Any, master_row: Any) -> None:
        self._record, self._master = record_row, master_row

    def __getattr__(self, name: str) -> Any:
        if name.startswith("flag_"):
            return getattr(self._record, name)
        if name == "band" and self._master is None:
            return self._record.band
        return getattr(self._master, name) if self._master is not None else None


_COMPARED = ("score", "band", "reasons", "fired", "agencies", "local_authority", "birth_date", "lead",
             "open_episodes", "config_version", "assessment_id", "flag_id", "flag_band", "flag_by_band",
             "flag_triggers", "changed_at")


_JSON_COLUMNS = frozenset({"reasons", "fired", "lead", "open_episodes", "flag_triggers"})


def _differs(old: Any, row: dict[str, Any]) -> bool:
    """Whether the stored row needs rewriting; JSON columns compared as JSON text (they come back from
    the database with Decimal numbers, the new row has floats)."""
    return any(jsonio.dumps(getattr(old, name)) != jsonio.dumps(row[name]) if name in _JSON_COLUMNS
               else getattr(old, name) != row[name] for name in _COMPARED)
