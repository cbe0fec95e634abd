"""Regenerate the committed R4 conformance inputs in ``profiles/r4/`` from the official package.

Source: npm ``hl7.fhir.r4.examples@4.0.1`` (HL7 International, licence CC0-1.0), fetched and
verified by :func:`scripts.fetch_r4_package.ensure_package`. Outputs (compact, one entry a line so
diffs stay readable):

* ``search-parameters.json`` — a Bundle (collection) of the R4 base SearchParameters
  (search.html, searchparameter-registry.html), trimmed to what a server needs.
* ``compartment-patient.json`` — the Patient CompartmentDefinition (compartmentdefinition.html),
  narrative removed; used by ``Patient/[id]/$everything`` and compartment search.
* ``summary-elements.json`` — per resource type, the top-level JSON keys that are ``isSummary``
  (search.html#summary, ``_summary=true``) and the mandatory ones (``min > 0``; ``_summary=data``
  / ``_elements`` keep them). Choice elements are expanded to their JSON keys.
* ``required-bindings.json`` — per resource and complex datatype, every ``code`` element with a
  ``required`` binding (terminologies.html#required) whose ValueSet expands from the package's
  CodeSystems, with the allowed codes.

The server reads these files at start-up; run this script only to regenerate them.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

if __package__ in (None, ""):  # run as a file: make `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.fetch_r4_package import PACKAGE, VERSION, ensure_package  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent.parent / "profiles" / "r4"
BASE_SP_URL = "http://hl7.org/fhir/SearchParameter/"
SP_KEEP = ("resourceType", "id", "url", "version", "name", "status", "experimental", "description",
           "code", "base", "type", "expression", "target", "modifier", "comparator", "multipleOr",
           "multipleAnd", "chain", "component")
# Resource-level parameters listed in search.html#all that live in Resource-*/DomainResource-*.
RESOURCE_LEVEL_IDS = ("Resource-id", "Resource-lastUpdated", "Resource-tag", "Resource-profile",
                      "Resource-security", "Resource-source", "Resource-query", "Resource-content",
                      "DomainResource-text")
MAX_DESCRIPTION = 200


def provenance(today: dt.date) -> dict[str, str]:
    return {
        "package": f"{PACKAGE}@{VERSION}",
        "source": f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz",
        "publisher": "HL7 International",
        "license": "CC0-1.0",
        "generated": today.isoformat(),
        "generator": "scripts/import_r4_definitions.py",
    }


def load_package(package_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every resource in the package, grouped by resourceType."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(package_dir.glob("*.json")):
        if path.name in ("package.json", ".index.json"):
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "resourceType" in data:
            out.setdefault(data["resourceType"], []).append(data)
    return out


# --- search-parameters.json -------------------------------------------------------------------

def short_description(text: str) -> str:
    """The first meaningful line, markdown links reduced to their text, cut to MAX_DESCRIPTION.

    Multi-type descriptions ("Multiple Resources: * [Patient](patient.html): A patient's name …")
    keep one compact line per type ("* Patient: A patient's name") so each type keeps its own text.
    """
    lines = [_unlink(ln.strip()) for ln in text.replace("\r", "").split("\n") if ln.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Multiple Resources") and len(lines) > 1:
        return "\n".join(["Multiple Resources:"] + [_cut(ln) for ln in lines[1:] if ln.startswith("*")])
    return _cut(lines[0])


def _unlink(line: str) -> str:
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line)


def _cut(line: str) -> str:
    return line if len(line) <= MAX_DESCRIPTION else line[:MAX_DESCRIPTION - 1].rstrip() + "…"


def is_base_definition(sp: dict[str, Any]) -> bool:
    """R4 base parameters: canonical under hl7.org/fhir/SearchParameter and not experimental
    (the experimental ones are the spec's examples and extension-defined parameters)."""
    return sp.get("url", "").startswith(BASE_SP_URL) and not sp.get("experimental", False)


def trim_search_parameter(sp: dict[str, Any]) -> dict[str, Any]:
    out = {k: sp[k] for k in SP_KEEP if k in sp}
    out["description"] = short_description(sp.get("description", ""))
    return out


def search_parameter_bundle(resources: dict[str, list[dict[str, Any]]], today: dt.date) -> dict[str, Any]:
    params = [trim_search_parameter(sp) for sp in resources.get("SearchParameter", []) if is_base_definition(sp)]
    ids = {p["id"] for p in params}
    missing = [i for i in RESOURCE_LEVEL_IDS if i not in ids]
    if missing:
        raise SystemExit(f"Resource-level parameters missing from the package: {missing}")
    params.sort(key=lambda p: p["id"])
    src = provenance(today)
    return {
        "resourceType": "Bundle",
        "id": "r4-base-search-parameters",
        "meta": {"source": f"npm:{src['package']} ({src['license']}) via {src['generator']} on {src['generated']}"},
        "type": "collection",
        "timestamp": f"{today.isoformat()}T00:00:00Z",
        "entry": [{"fullUrl": p["url"], "resource": p} for p in params],
    }


# --- compartment-patient.json -----------------------------------------------------------------

def patient_compartment(resources: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    comp = next(c for c in resources["CompartmentDefinition"] if c.get("code") == "Patient")
    return {k: v for k, v in comp.items() if k not in ("text", "extension", "contact")}


# --- StructureDefinition helpers ----------------------------------------------------------------

def base_definitions(resources: dict[str, list[dict[str, Any]]], kinds: Iterable[str]) -> list[dict[str, Any]]:
    """Core (non-profile) StructureDefinitions of the given kinds."""
    wanted = set(kinds)
    return sorted((sd for sd in resources.get("StructureDefinition", [])
                   if sd.get("kind") in wanted and sd.get("derivation") == "specialization"
                   and not sd.get("abstract") and sd.get("url", "").startswith("http://hl7.org/fhir/StructureDefinition/")),
                  key=lambda sd: sd["type"])


def json_keys(element: dict[str, Any]) -> list[str]:
    """JSON property names of a top-level element: ``value[x]`` -> ``valueQuantity``, ..."""
    name = element["path"].split(".")[-1]
    if not name.endswith("[x]"):
        return [name]
    stem = name[:-3]
    return [stem + t["code"][0].upper() + t["code"][1:] for t in element.get("type", [])]


def summary_elements(resources: dict[str, list[dict[str, Any]]], today: dt.date) -> dict[str, Any]:
    out: dict[str, Any] = {"_source": provenance(today) | {
        "note": "summary: isSummary top-level JSON keys (_summary=true); mandatory: min>0 top-level keys. "
                "Choice elements are listed as their concrete JSON keys."}}
    for sd in base_definitions(resources, ["resource"]):
        summary: list[str] = []
        mandatory: list[str] = []
        for el in sd["snapshot"]["element"]:
            if el["path"].count(".") != 1:
                continue
            keys = json_keys(el)
            if el.get("isSummary"):
                summary.extend(keys)
            if int(el.get("min", 0)) > 0:
                mandatory.extend(keys)
        out[sd["type"]] = {"summary": summary, "mandatory": mandatory}
    return out


# --- required-bindings.json -------------------------------------------------------------------

class Expander:
    """Expands ValueSets from the package's own CodeSystems (valueset.html#compose).

    Handles whole-system includes (content=complete, nested concept hierarchies flattened),
    enumerated concepts, ``is-a``/``descendent-of`` filters on hierarchical systems, nested
    ``valueSet`` imports and excludes. Anything else (external systems such as BCP-13 MIME types,
    other filters) makes the ValueSet unexpandable: it returns None.
    """

    def __init__(self, resources: dict[str, list[dict[str, Any]]]) -> None:
        self.value_sets = {vs["url"]: vs for vs in resources.get("ValueSet", [])}
        self.code_systems = {cs["url"]: cs for cs in resources.get("CodeSystem", [])}
        self._cache: dict[str, list[str] | None] = {}

    def expand(self, url: str, _seen: frozenset[str] = frozenset()) -> list[str] | None:
        url = url.split("|", 1)[0]
        if url in self._cache:
            return self._cache[url]
        if url in _seen:
            return None
        vs = self.value_sets.get(url)
        result = self._expand_compose(vs.get("compose") or {}, _seen | {url}) if vs else None
        self._cache[url] = result
        return result

    def _expand_compose(self, compose: dict[str, Any], seen: frozenset[str]) -> list[str] | None:
        if not compose.get("include"):
            return None
        codes: dict[str, None] = {}
        for inc in compose["include"]:
            part = self._expand_include(inc, seen)
            if part is None:
                return None
            codes.update(dict.fromkeys(part))
        for exc in compose.get("exclude", []):
            part = self._expand_include(exc, seen)
            if part is None:
                return None
            for code in part:
                codes.pop(code, None)
        return list(codes)

    def _expand_include(self, inc: dict[str, Any], seen: frozenset[str]) -> list[str] | None:
        result: list[str] | None = None
        if "system" in inc:
            if inc.get("concept"):
                result = [c["code"] for c in inc["concept"]]
            else:
                cs = self.code_systems.get(inc["system"])
                if cs is None or cs.get("content") != "complete":
                    return None
                result = self._filtered(cs.get("concept", []), inc.get("filter", []))
                if result is None:
                    return None
        for vs_url in inc.get("valueSet", []):
            other = self.expand(vs_url, seen)
            if other is None:
                return None
            result = other if result is None else [c for c in result if c in set(other)]
        return result

    def _filtered(self, concepts: list[dict[str, Any]], filters: list[dict[str, Any]]) -> list[str] | None:
        if not filters:
            return [code for code, _ in _walk(concepts)]
        if len(filters) != 1 or filters[0].get("property") != "concept" or filters[0].get("op") not in ("is-a", "descendent-of"):
            return None
        root_code, op = filters[0]["value"], filters[0]["op"]
        for code, node in _walk(concepts):
            if code == root_code:
                below = [c for c, _ in _walk(node.get("concept", []))]
                return ([code] if op == "is-a" else []) + below
        return None


def _walk(concepts: list[dict[str, Any]]) -> Iterable[tuple[str, dict[str, Any]]]:
    for c in concepts:
        yield c["code"], c
        yield from _walk(c.get("concept", []))


def required_bindings(resources: dict[str, list[dict[str, Any]]], today: dt.date) -> tuple[dict[str, Any], Counter[str]]:
    expander = Expander(resources)
    stats: Counter[str] = Counter()
    skipped: dict[str, str] = {}
    types: dict[str, dict[str, list[str]]] = {}
    for sd in base_definitions(resources, ["resource", "complex-type"]):
        for el in sd["snapshot"]["element"]:
            binding = el.get("binding") or {}
            if binding.get("strength") != "required" or [t["code"] for t in el.get("type", [])] != ["code"]:
                continue
            vs_url = binding.get("valueSet", "")
            codes = expander.expand(vs_url) if vs_url else None
            if codes is None:
                stats["skipped"] += 1
                skipped[el["path"]] = vs_url.split("|", 1)[0]
                continue
            stats["expanded"] += 1
            types.setdefault(sd["type"], {})[el["path"]] = codes
    out = {"_source": provenance(today) | {
               "note": "For each resource type and complex datatype: element path -> the codes its required "
                       "binding allows. Element paths are snapshot paths (nested backbone elements included; "
                       "elements reached through a contentReference or a datatype use that definition's path)."},
           "_skipped": dict(sorted(skipped.items()))}
    out.update(types)
    return out, stats


# --- writing ------------------------------------------------------------------------------------

def dumps_compact(value: Any) -> str:
    """Compact JSON, one top-level entry (or Bundle entry) a line, for readable diffs."""
    def one(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, dict) and isinstance(value.get("entry"), list):
        head = {k: v for k, v in value.items() if k != "entry"}
        body = ",\n".join(one(e) for e in value["entry"])
        return one(head)[:-1] + ',"entry":[\n' + body + "\n]}\n"
    if isinstance(value, dict):
        return "{\n" + ",\n".join(f"{one(k)}:{one(v)}" for k, v in value.items()) + "\n}\n"
    return one(value) + "\n"


README = """# profiles/r4 — FHIR R4 base definitions

Generated by `scripts/import_r4_definitions.py` from the npm package `{package}`
({source}), published by HL7 International under **CC0-1.0** (public domain dedication),
on {generated}. Do not edit by hand: change the script and re-run it.

| File | Content |
|---|---|
| `search-parameters.json` | Bundle of the {n_params} R4 base SearchParameters (non-experimental, canonical under `http://hl7.org/fhir/SearchParameter/`), narrative/xpath/contact removed, descriptions shortened. Includes the Resource-level `_id`, `_lastUpdated`, `_tag`, `_profile`, `_security`, `_source`, `_query`, `_content`, `_text`, and `_filter`. |
| `compartment-patient.json` | The Patient CompartmentDefinition (for `$everything` and compartment search). |
| `summary-elements.json` | Per resource type: `summary` (isSummary top-level JSON keys) and `mandatory` (min > 0) keys; choice elements expanded to JSON keys. |
| `required-bindings.json` | Per resource type and complex datatype: `code` elements with a required binding → allowed codes. {n_expanded} bindings expanded, {n_skipped} skipped (ValueSet not expandable from the package, listed under `_skipped`). |
"""


def main() -> int:
    today = dt.date.today()
    package_dir = ensure_package()
    resources = load_package(package_dir)
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    bundle = search_parameter_bundle(resources, today)
    (OUT_DIR / "search-parameters.json").write_text(dumps_compact(bundle), encoding="utf-8")
    (OUT_DIR / "compartment-patient.json").write_text(dumps_compact(patient_compartment(resources)), encoding="utf-8")
    (OUT_DIR / "summary-elements.json").write_text(dumps_compact(summary_elements(resources, today)), encoding="utf-8")
    bindings, stats = required_bindings(resources, today)
    (OUT_DIR / "required-bindings.json").write_text(dumps_compact(bindings), encoding="utf-8")
    src = provenance(today)
    (OUT_DIR / "README.md").write_text(README.format(
        package=src["package"], source=src["source"], generated=src["generated"],
        n_params=len(bundle["entry"]), n_expanded=stats["expanded"], n_skipped=stats["skipped"]), encoding="utf-8")

    print(f"package: {package_dir}")
    print(f"search-parameters.json: {len(bundle['entry'])} SearchParameters")
    print(f"summary-elements.json: {sum(1 for k in summary_elements(resources, today) if not k.startswith('_'))} resource types")
    print(f"required-bindings.json: {stats['expanded']} bindings expanded, {stats['skipped']} skipped "
          f"(not expandable: {sorted(set(bindings['_skipped'].values()))})")
    for name in ("search-parameters.json", "compartment-patient.json", "summary-elements.json", "required-bindings.json"):
        print(f"  {name}: {(OUT_DIR / name).stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
