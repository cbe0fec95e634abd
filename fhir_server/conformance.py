"""Our own conformance resources (profiles/): read at start-up and published through the API.

Every ``*.json`` under the profiles directory, except the generated R4 tables in ``profiles/r4/``, is
a FHIR resource (or a ``collection`` Bundle of them) with a fixed id: OperationDefinitions in
``profiles/operations/``, later CodeSystems, ValueSets, StructureDefinitions, SearchParameters.
Conformance resources are resources like any other (conformance-module.html), so the way to make
them readable (``GET [base]/OperationDefinition/validate``, ``GET [base]/SearchParameter?base=Patient``)
is to store them: :func:`load_conformance_resources` upserts them at their ids. An unchanged
resource makes no new version (http.html#update, "no change"), so running it at every start is cheap.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import FhirError
from .fhir.validation import check_id, validate_resource
from .repository.context import RequestContext

if TYPE_CHECKING:
    from .config import Settings
    from .repository.sql import SqlRepository, UnitOfWork
    from .search.registry import SearchRegistry

# The canonical base of the conformance resources we define (their ``url``). Fixed, independent of
# where a server is deployed, so that a profile or operation keeps its identity across servers.
CANONICAL_BASE = "https://w3id.org/sg-fhir"
GENERATED_DIR = "r4"  # profiles/r4/: tables generated from the R4 package, not resources
RISK_MODEL_DIR = "risk"  # profiles/risk/: the risk model's configuration (triage/config.py), not a resource
SEARCH_TYPES_INDEXED = frozenset({"number", "date", "string", "token", "reference", "quantity", "uri"})


class ConformanceError(ValueError):
    """A file under profiles/ is not a valid, uniquely identified FHIR resource (fails start-up)."""


@dataclass(frozen=True)
class ConformanceSet:
    """The resources read from profiles/, looked up by canonical URL or by type."""

    resources: tuple[dict[str, Any], ...]
    _by_url: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for res in self.resources:
            if isinstance(res.get("url"), str):
                self._by_url[res["url"]] = res

    def by_url(self, canonical: str) -> dict[str, Any] | None:
        """The resource whose ``url`` is ``canonical`` (a ``|version`` suffix must match ``version``)."""
        url, _, version = canonical.partition("|")
        found = self._by_url.get(url)
        if found is not None and version and found.get("version") != version:
            return None
        return found


_cache: dict[Path, ConformanceSet] = {}
_lock = threading.Lock()


def read_conformance_resources(profiles_dir: Path) -> ConformanceSet:
    """Read and check (once per process) our conformance resources under ``profiles_dir``.

    Each must be valid R4 (structure and required bindings) with an id; (type, id) and ``url`` must
    be unique. Raises :class:`ConformanceError` naming the file otherwise.
    """
    key = Path(profiles_dir).resolve()
    with _lock:
        if key not in _cache:
            _cache[key] = ConformanceSet(tuple(_read_all(key)))
        return _cache[key]


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def _read_all(profiles_dir: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], Path] = {}
    urls: dict[str, Path] = {}
    for path in sorted(profiles_dir.rglob("*.json")):
        if path.is_relative_to(profiles_dir / GENERATED_DIR) or path.is_relative_to(profiles_dir / RISK_MODEL_DIR):
            continue
        for res in _resources_in(path):
            key = (res["resourceType"], res["id"])
            if key in seen:
                raise ConformanceError(f"{path}: {key[0]}/{key[1]} is also defined in {seen[key]}")
            seen[key] = path
            url = res.get("url")
            if isinstance(url, str):
                if url in urls:
                    raise ConformanceError(f"{path}: url {url} is also used in {urls[url]}")
                urls[url] = path
            found.append(res)
    return found


def _resources_in(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConformanceError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise ConformanceError(f"{path}: not a FHIR resource (profiles/ holds conformance resources only; "
                               f"generated tables belong in profiles/{GENERATED_DIR}/)")
    if data["resourceType"] == "Bundle" and data.get("type") == "collection":
        items = [e.get("resource") for e in data.get("entry") or []]
    else:
        items = [data]
    for res in items:
        _check(path, res)
    return items


def _check(path: Path, res: Any) -> None:
    if not isinstance(res, dict) or not isinstance(res.get("id"), str):
        raise ConformanceError(f"{path}: every conformance resource needs a fixed id")
    try:
        check_id(res["id"])
        validate_resource(res)
    except FhirError as exc:
        raise ConformanceError(f"{path}: {res.get('resourceType')}/{res['id']} is invalid: "
                               f"{exc.diagnostics} at {', '.join(e for i in exc.issues for e in i.expression)}"
                               ) from None


@dataclass
class LoadReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0

    def __str__(self) -> str:
        return (f"conformance resources: {len(self.created)} created, {len(self.updated)} updated, "
                f"{self.unchanged} unchanged")


def load_conformance_resources(repo: "SqlRepository", settings: "Settings", *,
                               base_search_parameters: bool = True) -> LoadReport:
    """Upsert our conformance resources, and (``base_search_parameters``) the R4 base
    SearchParameters this server can search on, at their fixed ids, in one transaction.

    Idempotent: an unchanged resource keeps its version. Resources removed from profiles/ are not
    deleted (their history is the record of what was once published).
    """
    ours = read_conformance_resources(settings.profiles_dir).resources
    wanted = list(ours)
    if base_search_parameters:
        own_ids = {r["id"] for r in ours if r["resourceType"] == "SearchParameter"}
        wanted += [sp for sp in supported_base_search_parameters(repo.registry) if sp["id"] not in own_ids]
    ctx = RequestContext.system(settings.base_url)
    report = LoadReport()
    with repo.unit_of_work() as uow:
        current = uow.read_many([(r["resourceType"], r["id"]) for r in wanted])
        changed, missing = [], []
        for res in wanted:
            stored = current.get((res["resourceType"], res["id"]))
            if stored is None:
                missing.append(res)
            elif _same(stored, res):
                report.unchanged += 1
            else:
                changed.append(res)
        if missing and not _create_all(uow, ctx, missing):
            changed = missing + changed  # some id was used before (now deleted): update one by one
        elif missing:
            report.created += [f"{r['resourceType']}/{r['id']}" for r in missing]
        for res in changed:
            result = uow.update(ctx, res["resourceType"], res["id"], res)
            if result.created:
                report.created.append(f"{res['resourceType']}/{res['id']}")
            elif result.changed:
                report.updated.append(f"{res['resourceType']}/{res['id']}")
            else:
                report.unchanged += 1
    return report


def _create_all(uow: "UnitOfWork", ctx: RequestContext, resources: list[dict[str, Any]]) -> bool:
    """Create never-seen resources in a few batched statements (the first start writes ~1,300
    SearchParameters); False, with nothing written, if one of the ids exists (as a deletion)."""
    from sqlalchemy.exc import IntegrityError

    from .repository.bulk import DeferredCreates

    try:
        with uow.conn.begin_nested():
            batch = DeferredCreates(uow)
            for res in resources:
                batch.create(ctx, res, res_id=res["id"])
            batch.flush()
    except IntegrityError:
        return False
    return True


def supported_base_search_parameters(registry: "SearchRegistry") -> list[dict[str, Any]]:
    """The R4 base SearchParameters (``http://hl7.org/fhir/SearchParameter/…``) the search engine
    uses for a supported type: composite and special only where search/composite.py and search/geo.py
    evaluate them, not ``_text``, ``_content``,
    ``_query``, ``_filter`` (no expression), not replaced by one of ours, not only for types this
    server refuses. The CapabilityStatement lists the same parameters."""
    from .fhir.models import SUPPORTED_TYPES
    from .search import composite, geo

    in_use = {p.url for t in SUPPORTED_TYPES for p in registry.params_for(t).values()
              if p.type in SEARCH_TYPES_INDEXED or composite.is_supported(registry, p) or geo.is_supported(p)}
    return [sp for sp in registry.definitions()
            if str(sp.get("url", "")).startswith("http://hl7.org/fhir/SearchParameter/")
            and sp["url"] in in_use and sp.get("id")]


def _same(stored: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Equal apart from the server-owned id and meta.versionId/lastUpdated (cheap pre-check)."""
    if stored is None:
        return False
    from .fhir.jsonio import dumps_sorted

    def strip(res: dict[str, Any]) -> str:
        body = {k: v for k, v in res.items() if k != "id"}
        meta = {k: v for k, v in (body.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        body.pop("meta", None)
        if meta:
            body["meta"] = meta
        return dumps_sorted(body)

    return strip(stored) == strip(wanted)
