"""``[base]/$intervention-impact`` (profiles/operations/intervention-impact.json): parameters in, a
Parameters resource out, or with ``output=measure-report`` a MeasureReport (impact/measure_report.py).
The study data are rebuilt when the database has changed since the last call (the outbox's highest id
is the version), so a busy server does not re-read 100,000 children for every question, and no answer
is ever computed from stale data."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_server.errors import BadRequest, NotFound
from fhir_server.operations.registry import OperationTarget
from fhir_server.rest.messages import FhirRequest, FhirResponse

from . import design as d
from .analysis import Evaluation, estimate, evaluate
from .chart import trajectory_attachment
from .data import EPISODE_TYPE, SOCIAL_CARE, data_version, read_records
from .estimators import Effect
from .measure_report import measure_report

if TYPE_CHECKING:
    from fhir_server.repository.sql import UnitOfWork

MODES = ("estimate", "evaluate")
OUTPUTS = ("parameters", "measure-report")
CAUTION = ("An estimate is the average effect among comparable past children in this partnership's data, not a "
           "prediction for any one child; it can be biased by anything that drives who is offered an intervention "
           "and is not recorded here. Two checks look for that and withhold or qualify a figure: the first-month "
           "check (a difference in the month help started, before it could work) and the E-value (how strong a "
           "hidden difference would have to be to explain the result away). Neither can prove there is none. On "
           "the synthetic benchmark, where help is offered on a family's risk as it rises and the agencies see "
           "that risk only through sparse, lagging records, 6 figures were given in 48 cells (2,500 families, 3 "
           "seeds), only 2 intervals contained the true effect, 4 of the 6 leaned towards harm (by up to +0.09 in "
           "the share with a plan within a year), and one intervention with no effect was reported as lowering "
           "plans with an E-value of 2.8 (docs/benchmarks.md). So a figure near zero does not show that an "
           "intervention does not help, nor a significant one that it does. Treat these figures as exploratory, "
           "not as evidence to decide on.")
METHOD = ("Propensity-score weighting for the effect on the treated (logistic regression on age, concern events "
          "by agency, A&E attendances, school absence, open and recently closed episodes and history, all as known "
          "at the end of the month before the start), weighted regression adjustment, standard errors clustered by "
          "family, E-values with every estimate; a first-month check (concern events in the month the "
          "intervention started, estimated the same way) withholds every figure when the groups already differ "
          "there; evaluate adds difference-in-differences on the monthly concern-event trajectory with a "
          "pre-trend check. Comparison cases: child-months when the child could have started an intervention "
          "and did not (at home, none open in the 3 months before), whatever happened later.")


def impact_handler(profiles: Path) -> Callable[["UnitOfWork", FhirRequest, OperationTarget], FhirResponse]:
    """The operation's handler (registered by :func:`impact.register_impact`, imported at its first call)."""
    return _handler(_Cache(), lambda: _intervention_types(profiles))


class _Cache:
    """The last study data built, with the data version it was built from."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, int] | None = None
        self._value: tuple[Any, d.Histories] | None = None

    def get(self, uow: "UnitOfWork") -> tuple[Any, d.Histories]:
        key = (str(uow.conn.engine.url), data_version(uow.conn))
        with self._lock:
            if self._key == key and self._value is not None:
                return self._value
        records = read_records(uow.conn)
        try:
            histories = d.build_histories(records)
        except d.EmptyData as exc:
            raise BadRequest(f"$intervention-impact has nothing to learn from: {exc}") from exc
        with self._lock:
            self._key, self._value = key, (records, histories)
        return records, histories


def _handler(cache: _Cache, types: Callable[[], frozenset[str]]):
    def handle(uow: "UnitOfWork", req: FhirRequest, _target: OperationTarget) -> FhirResponse:
        args = _arguments(req, types())
        records, h = cache.get(uow)
        results: list[Evaluation] = []
        if args["mode"] == "estimate":
            rows = []
            allowed = _visible(uow, [("Patient", ref.split("/", 1)[1]) for ref in args["patient"]])
            for ref in args["patient"]:
                unit = records.unit(ref.split("/", 1)[1])
                # a child the caller may not see is answered as one unknown: its existence is not disclosed
                if unit not in h.row_of or (allowed is not None and ("Patient", ref.split("/", 1)[1]) not in allowed):
                    raise NotFound(f"{ref} is not a child known to the partnership's data", expression="patient")
                rows.append(h.row_of[unit])
            for code in args["intervention"]:
                results.append(estimate(h, {code}, rows, args["outcome"], horizon=args["horizon"]))
        else:
            for code in args["intervention"]:
                results.append(evaluate(h, {code}, args["outcome"], horizon=args["horizon"],
                                        provider=args["provider"], start=args["start"], end=args["end"]))
        if args["mode"] == "evaluate" and uow.access is not None:
            for ev in results:  # the aggregates stay; the treated children's episodes only as far as visible
                allowed = _visible(uow, [("EpisodeOfCare", e) for e in ev.treated_episodes]) or set()
                ev.treated_episodes = [e for e in ev.treated_episodes if ("EpisodeOfCare", e) in allowed]
        if args["output"] == "measure-report":
            return FhirResponse(200, measure_report(args["mode"], results, method=METHOD, caution=CAUTION))
        return FhirResponse(200, _parameters(args["mode"], results))

    return handle


def _visible(uow: "UnitOfWork", refs: list[tuple[str, str]]) -> set[tuple[str, str]] | None:
    """Which of ``refs`` the caller may see (fhir_server/auth/policy.py Visibility); None: all of them
    (no access policy: authentication off, or the server's own work)."""
    return None if uow.access is None else uow.access.visible(uow.conn, refs)


# -- input -------------------------------------------------------------------------------------------------

def _arguments(req: FhirRequest, known_types: frozenset[str]) -> dict[str, Any]:
    pairs = _pairs(req)
    known = {"mode", "intervention", "patient", "outcome", "horizon", "provider", "start", "end", "output"}
    for name, _value in pairs:
        if name not in known and name not in ("_format", "_pretty"):
            raise BadRequest(f"$intervention-impact has no parameter '{name}'", expression=name)
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).extend(v.strip() for v in value.split(",") if v.strip())
    modes = values.get("mode", [])
    if len(modes) != 1 or modes[0] not in MODES:
        raise BadRequest("mode must be given once, as 'estimate' or 'evaluate'", expression="mode")
    mode = modes[0]
    interventions = values.get("intervention", [])
    if not interventions:
        raise BadRequest("At least one intervention type is needed", expression="intervention")
    for code in interventions:
        if code not in known_types:
            raise BadRequest(f"'{code}' is not an intervention type of {EPISODE_TYPE} "
                             f"(one of: {', '.join(sorted(known_types))})", expression="intervention")
    outcomes = values.get("outcome") or list(d.OUTCOMES)
    for name in outcomes:
        if name not in d.OUTCOMES:
            raise BadRequest(f"Unknown outcome '{name}' (one of: {', '.join(d.OUTCOMES)})", expression="outcome")
    patients = values.get("patient", [])
    for ref in patients:
        if not ref.startswith("Patient/") or not ref[len("Patient/"):]:
            raise BadRequest(f"patient must be a Patient reference such as Patient/123, not '{ref}'",
                             expression="patient")
    if mode == "estimate" and not patients:
        raise BadRequest("mode=estimate needs at least one patient", expression="patient")
    if mode == "evaluate" and patients:
        raise BadRequest("mode=evaluate covers everyone who received the intervention; patient is for estimate",
                         expression="patient")
    if mode == "estimate" and any(values.get(n) for n in ("provider", "start", "end")):
        raise BadRequest("provider, start and end filter an evaluation; they do not apply to an estimate",
                         expression="provider")
    provider = _single(values, "provider")
    if provider is not None:
        if not provider.startswith("Organization/"):
            raise BadRequest("provider must be an Organization reference such as Organization/123",
                             expression="provider")
        provider = provider.split("/", 1)[1]
    output = _single(values, "output") or OUTPUTS[0]
    if output not in OUTPUTS:
        raise BadRequest(f"output must be one of {', '.join(OUTPUTS)}, not '{output}'", expression="output")
    horizon = _single(values, "horizon")
    if horizon is not None and (not horizon.isdigit() or not 1 <= int(horizon) <= 120):
        raise BadRequest("horizon must be a whole number of months from 1 to 120", expression="horizon")
    return {"mode": mode, "intervention": list(dict.fromkeys(interventions)), "outcome": list(dict.fromkeys(outcomes)),
            "patient": patients, "horizon": int(horizon) if horizon else d.DEFAULT_HORIZON, "provider": provider,
            "start": _date(values, "start"), "end": _date(values, "end"), "output": output}


def _pairs(req: FhirRequest) -> list[tuple[str, str]]:
    pairs = list(req.query)
    body = req.body
    if req.method == "POST" and body is not None:
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise BadRequest("The body must be a Parameters resource", expression="resourceType")
        for i, p in enumerate(body.get("parameter") or []):
            value = _parameter_value(p)
            if value is None:
                raise BadRequest("Each parameter needs a name and a primitive value (valueCode, valueString, "
                                 "valueReference, valueInteger or valueDate)", expression=f"Parameters.parameter[{i}]")
            pairs.append((p["name"], value))
    return pairs


def _parameter_value(p: Any) -> str | None:
    if not isinstance(p, dict) or not isinstance(p.get("name"), str):
        return None
    for key in ("valueCode", "valueString", "valueDate", "valueUri"):
        if isinstance(p.get(key), str):
            return p[key]
    if isinstance(p.get("valueInteger"), int) and not isinstance(p.get("valueInteger"), bool):
        return str(p["valueInteger"])
    ref = p.get("valueReference")
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        return ref["reference"]
    coding = p.get("valueCoding")
    if isinstance(coding, dict) and isinstance(coding.get("code"), str):
        return coding["code"]
    return None


def _single(values: dict[str, list[str]], name: str) -> str | None:
    found = values.get(name, [])
    if len(found) > 1:
        raise BadRequest(f"{name} may be given once", expression=name)
    return found[0] if found else None


def _date(values: dict[str, list[str]], name: str) -> date | None:
    text = _single(values, name)
    if text is None:
        return None
    try:
        return date.fromisoformat(text if len(text) == 10 else f"{text}-01" if len(text) == 7 else text)
    except ValueError:
        raise BadRequest(f"{name} must be a date (YYYY-MM-DD or YYYY-MM), not '{text}'", expression=name) from None


@lru_cache(maxsize=4)
def _intervention_types(profiles: Path) -> frozenset[str]:
    """The intervention codes of our episode-type CodeSystem (read when first needed)."""
    path = profiles / "codesystems" / "episode-type.json"
    codes = {c["code"] for c in json.loads(path.read_text(encoding="utf-8"))["concept"]}
    return frozenset(codes - set(SOCIAL_CARE))


# -- output ------------------------------------------------------------------------------------------------

def _parameters(mode: str, results: list[Evaluation]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": "mode", "valueCode": mode}]
    if results:
        params.append({"name": "data-through", "valueDate": results[0].data_through.isoformat()})
    params.append({"name": "method", "valueString": METHOD})
    params.append({"name": "caution", "valueString": CAUTION})
    for ev in results:
        parts: list[dict[str, Any]] = [{"name": "intervention", "valueCoding": {
            "system": EPISODE_TYPE, "code": ev.intervention[0]}}]
        if mode == "estimate":
            parts += [{"name": "patient", "valueReference": {"reference": f"Patient/{c}"}} for c in ev.children]
            parts.append({"name": "comparable-cases", "valueInteger": ev.comparable or 0})
        else:
            parts += [{"name": "episode", "valueReference": {"reference": f"EpisodeOfCare/{e}"}}
                      for e in ev.treated_episodes]
        for o in ev.outcomes:
            parts.append({"name": "outcome", "part": [{"name": "code", "valueCode": o.outcome},
                                                      {"name": "description", "valueString": d.OUTCOMES[o.outcome]},
                                                      *_effect_parts(o.effect)]})
        if ev.check is not None:
            parts.append({"name": "first-month-check", "part": [
                {"name": "passed", "valueCode": {True: "passed", False: "failed", None: "not-made"}[ev.check.passed]},
                {"name": "statement", "valueString": ev.check.statement},
                *(p for p in _effect_parts(ev.check.effect, balance=False) if p["name"] not in ("statement", "e-value", "e-value-ci"))]})
        if ev.did is not None:
            traj: list[dict[str, Any]] = [*_effect_parts(ev.did.effect),
                                          {"name": "pre-trend", "valueString": ev.did.pre_trend_statement}]
            if ev.did.pre_trend_p is not None:
                traj.append({"name": "pre-trend-p-value", "valueDecimal": round(ev.did.pre_trend_p, 4)})
            for k, t, c in zip(ev.did.offsets, ev.did.treated_means, ev.did.comparison_means):
                point = [{"name": "month", "valueInteger": k}]
                if t is not None:
                    point.append({"name": "treated", "valueDecimal": round(t, 4)})
                if c is not None:
                    point.append({"name": "comparison", "valueDecimal": round(c, 4)})
                traj.append({"name": "point", "part": point})
            traj.append({"name": "chart", "valueAttachment": trajectory_attachment(
                ev.intervention[0], ev.did.offsets, ev.did.treated_means, ev.did.comparison_means)})
            parts.append({"name": "trajectory", "part": traj})
        params.append({"name": "result", "part": parts})
    return {"resourceType": "Parameters", "parameter": params}


def _effect_parts(e: Effect, *, balance: bool = True) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if e.estimate is not None:
        parts.append({"name": "estimate", "valueDecimal": round(e.estimate, 4)})
    parts += [{"name": name, "valueDecimal": value} for name, value in e.interval_figures()]
    parts += [{"name": "treated", "valueInteger": e.treated},
              {"name": "comparison", "valueInteger": e.comparison},
              {"name": "effective-comparison", "valueDecimal": round(e.effective_comparison, 1)},
              {"name": "statement", "valueString": e.statement}]
    for b in e.balance if balance else []:
        parts.append({"name": "balance", "part": [{"name": "covariate", "valueString": b.covariate},
                                                  {"name": "smd-before", "valueDecimal": round(b.before, 3)},
                                                  {"name": "smd-after", "valueDecimal": round(b.after, 3)}]})
    return parts
