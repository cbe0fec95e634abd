"""``[base]/$triage`` (profiles/operations/triage.json): children ranked by current risk score.

Each row: the child, rank, score, band, trend against 7 and 30 days ago, the top contributing factors
per agency, the lead practitioner (``careManager`` of the open EpisodeOfCare), open episodes, the
RiskAssessment and any open escalation Flag. As a ``Parameters`` resource, or as CSV with
``_format=csv`` / ``Accept: text/csv``.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fhir_server.fhir.instants import format_instant, utcnow
from fhir_server.operations.registry import OperationTarget
from fhir_server.rest.messages import FhirRequest, FhirResponse

from .config import load_config
from .query import TriageQuery, parse_triage, ranked_page
from .resources import RISK_BAND

if TYPE_CHECKING:
    from fhir_server import Services
    from fhir_server.repository.sql import UnitOfWork

DEFINITION_FILE = Path("operations") / "triage.json"
TOP_PER_AGENCY = 3
CSV_MEDIA = "text/csv"
CSV_COLUMNS = ["rank", "patient", "score", "band", "trend_7d", "trend_30d", "local_authority", "birth_date",
               "lead_practitioner", "open_episodes", "top_factors", "triggers", "flag", "risk_assessment",
               "changed_at"]


def register_triage_operation(services: "Services") -> None:
    path = Path(services.settings.profiles_dir) / DEFINITION_FILE
    definition = json.loads(path.read_text(encoding="utf-8"))
    settings = services.settings

    def handle(uow: "UnitOfWork", req: FhirRequest, _target: OperationTarget) -> FhirResponse:
        config = load_config(settings.profiles_dir)
        params = list(req.query)
        if isinstance(req.body, dict) and req.body.get("resourceType") == "Parameters":
            params += [(p.get("name", ""), _param_value(p)) for p in req.body.get("parameter") or []]
        q = parse_triage(params, {b.code for b in config.bands})
        now = utcnow()
        total, rows, then = ranked_page(uow.conn, q, now, access=uow.access)
        items = [_item(q.offset + i + 1, row, then.get(row.child_id, {})) for i, row in enumerate(rows)]
        if uow.access is not None:
            withhold_factors(uow.conn, uow.access, items)
        if wants_csv(req):
            return FhirResponse(200, raw=to_csv(items).encode("utf-8"), media_type=f"{CSV_MEDIA}; charset=utf-8",
                                headers={"Content-Disposition": 'attachment; filename="triage.csv"'})
        return FhirResponse(200, to_parameters(items, total, q, settings.base_url, now, config.label))

    services.router.operations.register(definition, handle)


def wants_csv(req: FhirRequest) -> bool:
    fmt = (req.param("_format") or "").split(";")[0].strip().lower()
    if fmt:
        return fmt in ("csv", CSV_MEDIA)
    accept = (req.header("accept") or "").lower()
    return any(part.split(";")[0].strip() == CSV_MEDIA for part in accept.split(","))


def _param_value(p: dict[str, Any]) -> str:
    for key, value in p.items():
        if key.startswith("value"):
            return str(value)
    return ""


def top_factors(reasons: list[dict[str, Any]], per_agency: int = TOP_PER_AGENCY) -> dict[str, list[dict[str, Any]]]:
    """agency → its strongest reasons (combinations under ``multi-agency``), agencies by total."""
    by_agency: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in reasons:
        by_agency[r.get("agency") or "multi-agency"].append(r)
    ordered = sorted(by_agency.items(), key=lambda kv: -sum(r["contribution"] for r in kv[1]))
    return {agency: sorted(rs, key=lambda r: -r["contribution"])[:per_agency] for agency, rs in ordered}


def withhold_factors(conn: Any, access: Any, items: list[dict[str, Any]]) -> None:
    """Leave out the factors and triggers whose evidence the caller may not see (a police
    domestic-abuse Observation labelled SDV, for a school), and the open episodes, Flag and
    RiskAssessment it may
    not see; mark the row ``factors-withheld``. The score and band stay: they are the partnership's
    assessment, what the list is for; a row with factors withheld tells the caller to ask someone
    cleared for them (the MASH) — docs/security.md, "Derived views"."""
    refs: set[tuple[str, str]] = set()
    for it in items:
        for reasons in it["factors"].values():
            refs.update(_ref(e) for r in reasons for e in r["evidence"])
        refs.update(_ref(e) for f in it["fired"] for e in f.get("evidence") or ())
        refs.update(_ref(ep["reference"]) for ep in it["open_episodes"])
        refs.update(r for r in ((("Flag", it["flag_id"]) if it["flag_id"] else None),
                                (("RiskAssessment", it["assessment_id"]) if it["assessment_id"] else None)) if r)
    seen = access.visible(conn, refs)
    for it in items:
        factors: dict[str, list[dict[str, Any]]] = {}
        withheld = False
        for agency, reasons in it["factors"].items():
            kept = [r for r in reasons if all(_ref(e) in seen for e in r["evidence"])]
            withheld = withheld or len(kept) < len(reasons)
            if kept:
                factors[agency] = kept
        fired = [f for f in it["fired"] if all(_ref(e) in seen for e in f.get("evidence") or ())]
        withheld = withheld or len(fired) < len(it["fired"])
        it["factors"], it["fired"], it["factors_withheld"] = factors, fired, withheld
        it["open_episodes"] = [ep for ep in it["open_episodes"] if _ref(ep["reference"]) in seen]
        if it["flag_id"] and ("Flag", it["flag_id"]) not in seen:
            it["flag_id"] = None
        if it["assessment_id"] and ("RiskAssessment", it["assessment_id"]) not in seen:
            it["assessment_id"] = None


def _ref(reference: str) -> tuple[str, str]:
    res_type, _, res_id = reference.partition("/")
    return res_type, res_id.split("/", 1)[0]


def _item(rank: int, row: Any, then: dict[int, float]) -> dict[str, Any]:
    return {"rank": rank, "child_id": row.child_id, "score": row.score, "band": row.band,
            "trend": {days: round(row.score - then.get(days, 0.0), 1) for days in (7, 30)},
            "then": then, "local_authority": row.local_authority,
            "birth_date": row.birth_date.isoformat() if row.birth_date else None,
            "lead": row.lead, "open_episodes": row.open_episodes or [], "factors": top_factors(row.reasons or []),
            "fired": row.fired or [], "flag_id": row.flag_id, "assessment_id": row.assessment_id,
            "changed_at": row.changed_at}


def to_parameters(items: list[dict[str, Any]], total: int, q: TriageQuery, base_url: str, now: Any,
                  model: str) -> dict[str, Any]:
    out: list[dict[str, Any]] = [{"name": "total", "valueInteger": total},
                                 {"name": "generated", "valueInstant": format_instant(now)},
                                 {"name": "model", "valueString": model}]
    if q.offset + q.count < total:
        out.append({"name": "next", "valueUri": _page_url(base_url, q, q.offset + q.count)})
    if q.offset > 0:
        out.append({"name": "previous", "valueUri": _page_url(base_url, q, max(q.offset - q.count, 0))})
    for it in items:
        part: list[dict[str, Any]] = [
            {"name": "patient", "valueReference": {"reference": f"Patient/{it['child_id']}"}},
            {"name": "rank", "valueInteger": it["rank"]},
            {"name": "score", "valueDecimal": it["score"]},
            {"name": "band", "valueCoding": {"system": RISK_BAND, "code": it["band"]}},
            {"name": "trend-7d", "valueDecimal": it["trend"][7]},
            {"name": "trend-30d", "valueDecimal": it["trend"][30]},
        ]
        if it["local_authority"]:
            part.append({"name": "local-authority", "valueString": it["local_authority"]})
        if it["birth_date"]:
            part.append({"name": "birth-date", "valueDate": it["birth_date"]})
        if it["lead"]:
            part.append({"name": "lead-practitioner", "valueReference": it["lead"]})
        for ep in it["open_episodes"]:
            part.append({"name": "open-episode", "valueReference": {"reference": ep["reference"],
                                                                    "display": ep.get("display") or ep["code"]}})
        for agency, reasons in it["factors"].items():
            for r in reasons:
                part.append({"name": "factor", "part": [
                    {"name": "agency", "valueString": agency},
                    {"name": "code", "valueCode": r["factor"]},
                    {"name": "display", "valueString": r["display"]},
                    {"name": "contribution", "valueDecimal": r["contribution"]},
                    *({"name": "evidence", "valueReference": {"reference": ref}} for ref in r["evidence"])]})
        if it.get("factors_withheld"):
            part.append({"name": "factors-withheld", "valueBoolean": True})
        for f in it["fired"]:
            part.append({"name": "trigger", "valueCode": f["code"]})
        if it["flag_id"]:
            part.append({"name": "flag", "valueReference": {"reference": f"Flag/{it['flag_id']}"}})
        if it["assessment_id"]:
            part.append({"name": "risk-assessment", "valueReference": {"reference": f"RiskAssessment/{it['assessment_id']}"}})
        part.append({"name": "changed", "valueInstant": format_instant(it["changed_at"])})
        out.append({"name": "child", "part": part})
    return {"resourceType": "Parameters", "parameter": out}


def _page_url(base_url: str, q: TriageQuery, offset: int) -> str:
    params: list[tuple[str, str]] = [("band", b) for b in q.bands]
    params += [("local-authority", a) for a in q.local_authorities]
    params += [(k, str(v)) for k, v in (("age-min", q.age_min), ("age-max", q.age_max)) if v is not None]
    params += [("agency", a) for a in q.agencies]
    if q.changed_since is not None:
        params.append(("changed-since", format_instant(q.changed_since)))
    params += [("_count", str(q.count)), ("_offset", str(offset))]
    return f"{base_url.rstrip('/')}/$triage?{urlencode(params)}"


def to_csv(items: list[dict[str, Any]]) -> str:
    """One line per child; lists joined with "; " (RFC 4180 quoting by the csv module)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for it in items:
        factors = "; ".join(f"{agency}: {r['display']} +{r['contribution']}"
                            for agency, reasons in it["factors"].items() for r in reasons)
        lead = it["lead"] or {}
        writer.writerow([
            it["rank"], f"Patient/{it['child_id']}", it["score"], it["band"], it["trend"][7], it["trend"][30],
            it["local_authority"] or "", it["birth_date"] or "",
            lead.get("display") or lead.get("reference") or "",
            "; ".join(f"{ep.get('display') or ep['code']} ({ep['reference']})" for ep in it["open_episodes"]),
            factors, "; ".join(f["code"] for f in it["fired"]),
            f"Flag/{it['flag_id']}" if it["flag_id"] else "",
            f"RiskAssessment/{it['assessment_id']}" if it["assessment_id"] else "",
            format_instant(it["changed_at"])])
    return buf.getvalue()
