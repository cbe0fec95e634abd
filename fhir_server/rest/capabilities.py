"""``GET [base]/metadata``: the CapabilityStatement of this server (http.html#capabilities,
capabilitystatement.html), generated from what is implemented: the supported types, the search
parameters the engine indexes, the registered operations. Built once per process.

Every claim here is exercised by tests/functional/test_conformance.py; keep them in step.
"""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ..search.compartment import PATIENT_COMPARTMENT
from ..search.special import capability_search_params
from ..errors import BadRequest, Issue
from ..fhir.models import SUPPORTED_TYPES
from .messages import FhirRequest

if TYPE_CHECKING:
    from ..config import Settings
    from ..operations.registry import Operation, OperationRegistry
    from ..search.model import SearchParam
    from ..search.registry import SearchRegistry

FHIR_VERSION = "4.0.1"
SOFTWARE_NAME = "Safeguarding FHIR Server"
# search.html#ptypes this engine indexes. Composite parameters and ``near`` are listed where
# search/composite.py and search/geo.py evaluate them; the special _text, _content and _list are answered
# by search/special.py and listed from there.
SEARCHABLE_TYPES = frozenset({"number", "date", "string", "token", "reference", "quantity", "uri"})
# search_filter.html, implemented by search/filter.py (R4 publishes no SearchParameter for it).
FILTER_PARAM = {"name": "_filter", "type": "special",
                "documentation": "search_filter.html: and/or/not, chains and [filters] through references; "
                                 "operators eq ne co sw ew gt lt ge le ap sa eb pr po re; ss sb in ni on tokens "
                                 "against the CodeSystems and ValueSets held here, ss sb on uri"}
TYPE_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type",
                     "create", "search-type")
SYSTEM_INTERACTIONS = ("transaction", "batch", "search-system", "history-system")
MODES = ("full", "normative", "terminology")


class CapabilityBuilder:
    """``build(req)`` answers the capabilities interaction; the statement is built once."""

    def __init__(self, settings: "Settings", registry: "SearchRegistry", operations: "OperationRegistry") -> None:
        self.settings = settings
        self.registry = registry
        self.operations = operations
        self._statement: dict[str, Any] | None = None  # shared by every request: never mutated
        self._lock = threading.Lock()

    def build(self, req: FhirRequest) -> dict[str, Any]:
        """http.html#capabilities: ``mode=full`` (default) or ``normative`` (the same here: every
        element of an R4 CapabilityStatement is normative); ``terminology`` asks for a
        TerminologyCapabilities resource, which this server does not offer."""
        mode = req.param("mode") or "full"
        if mode not in MODES:
            raise BadRequest(f"mode must be one of {', '.join(MODES)}, not {mode!r}", expression="mode")
        if mode == "terminology":
            raise BadRequest(issues=[Issue("error", "not-supported",
                                           "This server has no terminology service (TerminologyCapabilities)",
                                           ("mode",))])
        with self._lock:
            if self._statement is None:
                self._statement = self.statement()
            statement = self._statement
        summary, elements = req.param("_summary"), req.param("_elements")
        if summary in (None, "false") and elements is None:
            return statement
        from ..search.summary import apply_summary, load_summary_elements
        return apply_summary(statement, summary, elements.split(",") if elements else None,
                             load_summary_elements(self.settings.profiles_dir))

    def statement(self) -> dict[str, Any]:
        now = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        rev: dict[str, list[str]] = {}
        for source in sorted(SUPPORTED_TYPES):
            for p in self._search_params(source):
                if p.type == "reference":
                    for target in (p.targets or sorted(SUPPORTED_TYPES)):
                        rev.setdefault(target, []).append(f"{source}:{p.code}")
        rest: dict[str, Any] = {
            "mode": "server",
            "resource": [self._resource(t, sorted(rev.get(t, []))) for t in sorted(SUPPORTED_TYPES)],
            "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
            "searchParam": self._system_search_params(),
            # GET [base]/Patient/[id]/[type] (rest/searching.compartment_search)
            "compartment": [PATIENT_COMPARTMENT],
        }
        system_ops = [self._operation(op) for op in self.operations.all() if op.definition.get("system")]
        if system_ops:
            rest["operation"] = system_ops
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": now,
            "publisher": SOFTWARE_NAME,
            "kind": "instance",
            "software": {"name": SOFTWARE_NAME, "version": _software_version()},
            "implementation": {"description": f"{SOFTWARE_NAME} at {self.settings.base_url}",
                               "url": self.settings.base_url},
            "fhirVersion": FHIR_VERSION,
            "format": ["application/fhir+json", "json"],
            "patchFormat": ["application/json-patch+json", "application/fhir+json"],  # JSON / FHIRPath Patch
            "rest": [rest],
        }

    def _resource(self, res_type: str, rev_includes: list[str]) -> dict[str, Any]:
        """capabilitystatement-definitions.html#CapabilityStatement.rest.resource, as rest/crud.py,
        rest/history.py and the search engine implement them."""
        params = self._search_params(res_type)
        entry: dict[str, Any] = {
            "type": res_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{res_type}",
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "versioning": "versioned-update",  # If-Match honoured, 412 when stale
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,  # If-None-Exist
            "conditionalRead": "full-support",  # If-None-Match and If-Modified-Since → 304
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical"],  # stored as sent; searchable, :identifier too
            "searchInclude": sorted(f"{res_type}:{p.code}" for p in params if p.type == "reference"),
            "searchRevInclude": rev_includes,
            "searchParam": [_search_param(p) for p in params] + capability_search_params(res_type) + [FILTER_PARAM],
        }
        operations = [self._operation(op) for op in self.operations.all() if _runs_on(op, res_type)]
        if operations:
            entry["operation"] = operations
        return {k: v for k, v in entry.items() if v != []}

    def _search_params(self, res_type: str) -> list["SearchParam"]:
        return sorted((p for p in self.registry.params_for(res_type).values()
                       if (p.type in SEARCHABLE_TYPES or self._special_supported(p)) and p.url),
                      key=lambda p: p.code)

    def _special_supported(self, param: "SearchParam") -> bool:
        """Composite parameters search/composite.py can evaluate, and ``near`` (search/geo.py)."""
        from ..search import composite, geo

        if param.type == "composite":
            return composite.is_supported(self.registry, param)
        return param.type == "special" and geo.is_supported(param)

    def _system_search_params(self) -> list[dict[str, Any]]:
        """Whole-system search accepts the parameters common to all resources (search.html#all)."""
        from ..search.parse import COMMON_PARAMS
        any_type = min(SUPPORTED_TYPES)
        found = [self.registry.get(any_type, code) for code in sorted(COMMON_PARAMS)]
        return ([_search_param(p) for p in found if p is not None and p.type in SEARCHABLE_TYPES]
                + capability_search_params(None) + [FILTER_PARAM])

    @staticmethod
    def _operation(op: "Operation") -> dict[str, Any]:
        return {"name": op.name, "definition": op.definition["url"]}


def _runs_on(op: "Operation", res_type: str) -> bool:
    from ..operations.registry import OperationTarget
    return op.runs_at(OperationTarget("type", res_type)) or op.runs_at(OperationTarget("instance", res_type, "x"))


def _search_param(p: "SearchParam") -> dict[str, Any]:
    return {"name": p.code, "definition": p.url, "type": p.type}


def _software_version() -> str:
    try:
        return version("safeguarding-fhir-server")
    except PackageNotFoundError:
        return "0.1.0"
