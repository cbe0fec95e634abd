"""Which interaction a request is, and what it needs from the token's scopes (auth/access.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.auth.access import ScopeGuard, classify
from fhir_server.auth.errors import AccessDenied, InsufficientScope, InvalidToken
from fhir_server.config import REPO_ROOT, Settings
from fhir_server.operations.builtin import register_builtin_operations
from fhir_server.repository.context import RequestContext
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.search.registry import SearchRegistry

PROFILES: Path = REPO_ROOT / "profiles"
BASE = "http://localhost/fhir"


@pytest.mark.parametrize("method, path, code, res_type", [
    ("GET", "metadata", "capabilities", None),
    ("GET", "", "search-system", None),
    ("POST", "", "batch", None),
    ("GET", "_history", "history-system", None),
    ("POST", "_search", "search-system", None),
    ("GET", "Patient", "search-type", "Patient"),
    ("POST", "Patient", "create", "Patient"),
    ("PUT", "Patient", "update", "Patient"),
    ("DELETE", "Patient", "delete", "Patient"),
    ("PATCH", "Patient", "patch", "Patient"),
    ("POST", "Patient/_search", "search-type", "Patient"),
    ("GET", "Patient/_history", "history-type", "Patient"),
    ("GET", "Patient/1", "read", "Patient"),
    ("PUT", "Patient/1", "update", "Patient"),
    ("PATCH", "Patient/1", "patch", "Patient"),
    ("DELETE", "Patient/1", "delete", "Patient"),
    ("GET", "Patient/1/_history", "history-instance", "Patient"),
    ("GET", "Patient/1/_history/2", "vread", "Patient"),
    ("GET", "Patient/1/Observation", "search-type", "Observation"),
    ("GET", "Patient/1/*", "search-type", "*"),
    ("POST", "$import-agency-data", "operation", None),
    ("POST", "Patient/$validate", "operation", "Patient"),
    ("POST", "Patient/1/$validate", "operation", "Patient"),
    ("GET", "_async/abc", "async-status", None),
    ("GET", "_unknown", "unknown", None),
    ("GET", "Patient/1/_history/2/more", "unknown", "Patient"),
])
def test_classify(method: str, path: str, code: str, res_type: str | None) -> None:
    interaction = classify(method, path)
    assert (interaction.code, interaction.res_type) == (code, res_type)


def test_conditional_and_compartment_details() -> None:
    assert classify("PUT", "Patient").conditional
    assert not classify("PUT", "Patient/1").conditional
    assert classify("GET", "Patient/7/Observation").compartment == "Patient/7"


@pytest.fixture(scope="module")
def guard() -> ScopeGuard:
    settings = Settings(profiles_dir=PROFILES)
    registry = SearchRegistry.load(PROFILES)
    return ScopeGuard(register_builtin_operations(settings, registry), registry)


def request(method: str, path: str, scopes: str = "", query: list[tuple[str, str]] | None = None,
            headers: dict[str, str] | None = None, authenticated: bool = True, body: object = None) -> FhirRequest:
    ctx = RequestContext(BASE, scopes=frozenset(scopes.split()), authenticated=authenticated)
    return FhirRequest(method, path, ctx, query or [], headers or {}, body)


def needs(guard: ScopeGuard, req: FhirRequest) -> set[tuple[str, str]]:
    return set(guard.required(classify(req.method, req.path), req))


def test_needs_of_plain_interactions(guard: ScopeGuard) -> None:
    assert needs(guard, request("GET", "Patient/1")) == {("read", "Patient")}
    assert needs(guard, request("GET", "Patient/1/_history")) == {("read", "Patient")}
    assert needs(guard, request("POST", "Patient")) == {("create", "Patient")}
    assert needs(guard, request("POST", "Patient", headers={"if-none-exist": "identifier=x|1"})) == \
        {("create", "Patient"), ("search", "Patient")}
    assert needs(guard, request("PUT", "Patient", query=[("identifier", "x|1")])) == \
        {("update", "Patient"), ("search", "Patient")}
    assert needs(guard, request("DELETE", "Patient/1")) == {("delete", "Patient")}
    assert needs(guard, request("GET", "_history")) == {("search", "*")}
    assert needs(guard, request("GET", "Patient/_history")) == {("search", "Patient")}


def test_needs_of_searches(guard: ScopeGuard) -> None:
    assert needs(guard, request("GET", "Patient", query=[("name", "x")])) == {("search", "Patient")}
    assert needs(guard, request("GET", "", query=[("_type", "Patient,Observation")])) == \
        {("search", "Patient"), ("search", "Observation")}
    assert needs(guard, request("GET", "")) == {("search", "*")}
    assert needs(guard, request("GET", "Observation", query=[("_include", "Observation:subject:Patient")])) == \
        {("search", "Observation"), ("read", "Patient")}
    assert ("read", "Group") in needs(guard, request("GET", "Observation", query=[("_include", "Observation:subject")]))
    assert needs(guard, request("GET", "Patient", query=[("_revinclude", "Observation:subject")])) == \
        {("search", "Patient"), ("read", "Observation")}
    assert ("read", "*") in needs(guard, request("GET", "Patient", query=[("_include", "*")]))
    assert needs(guard, request("GET", "Observation", query=[("subject:Patient.name", "x")])) == \
        {("search", "Observation"), ("search", "Patient")}
    assert needs(guard, request("GET", "Patient", query=[("_has:Observation:subject:code", "1")])) == \
        {("search", "Patient"), ("search", "Observation")}
    assert needs(guard, request("POST", "Patient/_search", body=b"_revinclude=Observation:subject")) == \
        {("search", "Patient")}, "form parameters count only with the form media type"
    form = request("POST", "Patient/_search", body=b"_revinclude=Observation:subject")
    form.content_type = "application/x-www-form-urlencoded"
    assert needs(guard, form) == {("search", "Patient"), ("read", "Observation")}


def test_needs_of_operations(guard: ScopeGuard) -> None:
    assert needs(guard, request("POST", "Patient/$validate")) == {("read", "Patient")}
    assert needs(guard, request("POST", "Patient/1/$validate")) == {("read", "Patient")}


def test_guard_before(guard: ScopeGuard) -> None:
    guard.before(request("GET", "metadata", authenticated=False))
    with pytest.raises(InvalidToken):
        guard.before(request("GET", "Patient/1", authenticated=False))
    guard.before(request("GET", "Patient/1", "system/Patient.r"))
    with pytest.raises(InsufficientScope) as refused:
        guard.before(request("GET", "Patient/1", "system/Patient.s"))
    assert refused.value.scope == "system/Patient.r"
    assert "system/Patient.r" in refused.value.diagnostics
    with pytest.raises(AccessDenied):
        guard.before(request("GET", "_nothing_here", "system/*.cruds"))
    guard.before(request("POST", "", "system/Patient.r", body={"resourceType": "Bundle", "type": "batch"}))


def test_update_that_creates_needs_create(guard: ScopeGuard) -> None:
    req = request("PUT", "Patient/new", "system/Patient.ru")
    guard.before(req)
    guard.after(req, FhirResponse(200))
    with pytest.raises(InsufficientScope):
        guard.after(req, FhirResponse(201))


def test_a_transaction_is_checked_entry_by_entry_before_it_runs(guard: ScopeGuard) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": f"{BASE}/Observation?code=1"}},
        {"resource": {"resourceType": "Observation"}, "request": {"method": "PUT", "url": "Observation?code=1"}},
    ]}
    guard.before(request("POST", "", "system/Patient.c system/Observation.rus", body=bundle))
    with pytest.raises(InsufficientScope) as refused:
        guard.before(request("POST", "", "system/Patient.c system/Observation.ru", body=bundle))
    assert refused.value.issues[0].expression == ("Bundle.entry[1]",)


def test_needs_of_special_search_parameters(guard: ScopeGuard) -> None:
    """_list looks into the List (search/special.py); _text and _content only the searched type."""
    assert needs(guard, request("GET", "Patient", query=[("_list", "42")])) == \
        {("search", "Patient"), ("search", "List")}
    assert needs(guard, request("GET", "Patient", query=[("_text", "x"), ("_content", "y")])) == \
        {("search", "Patient")}
