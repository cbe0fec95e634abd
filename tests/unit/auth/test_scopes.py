"""SMART scopes, v2 and v1 (scopes-and-launch-context.html), as a permission check."""
from __future__ import annotations

import pytest

from fhir_server.auth.scopes import CREATE, DELETE, READ, SEARCH, UPDATE, ScopeError, ScopeSet, needed_scope, \
    parse_scope, split_scopes


@pytest.mark.parametrize("text, context, res_type, perms", [
    ("system/Patient.rs", "system", "Patient", "rs"),
    ("system/Observation.cruds", "system", "Observation", "cruds"),
    ("system/*.rs", "system", "*", "rs"),
    ("user/Patient.r", "user", "Patient", "r"),
    ("system/*.read", "system", "*", "rs"),  # v1 read = v2 rs
    ("system/Patient.write", "system", "Patient", "cud"),  # v1 write = v2 cud
    ("user/*.*", "user", "*", "cruds"),  # v1 * = v2 cruds
    ("patient/Observation.read", "patient", "Observation", "rs"),
])
def test_parse(text: str, context: str, res_type: str, perms: str) -> None:
    scope = parse_scope(text)
    assert scope is not None
    assert (scope.context, scope.res_type, scope.permissions, scope.text) == (context, res_type, perms, text)


@pytest.mark.parametrize("text", ["openid", "fhirUser", "launch", "launch/patient", "offline_access"])
def test_non_clinical_scopes_are_not_scopes(text: str) -> None:
    assert parse_scope(text) is None


@pytest.mark.parametrize("text", ["system/Patient.sr", "system/Patient.rr", "system/Patient.x", "system/Patient.",
                                  "system/patient.rs", "system/Patient", "system/*.read?code=1"])
def test_malformed_scopes(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_constraint_parses_but_grants_nothing() -> None:
    scope = parse_scope("system/Observation.rs?category=laboratory")
    assert scope is not None and scope.constraint == "category=laboratory"
    assert not ScopeSet((scope,)).allows(READ, "Observation")


def test_allows() -> None:
    scopes = ScopeSet.parse("system/Patient.rs system/Observation.cruds openid")
    assert scopes.allows(READ, "Patient") and scopes.allows(SEARCH, "Patient")
    assert not scopes.allows(CREATE, "Patient") and not scopes.allows(UPDATE, "Patient")
    assert all(scopes.allows(p, "Observation") for p in (CREATE, READ, UPDATE, DELETE, SEARCH))
    assert not scopes.allows(READ, "Encounter")
    assert not scopes.allows(SEARCH, "*"), "a whole-system search needs a wildcard scope"


def test_wildcards_and_v1() -> None:
    scopes = ScopeSet.parse("system/*.read system/Patient.write")
    assert scopes.allows(READ, "Encounter") and scopes.allows(SEARCH, "*")
    assert scopes.allows(CREATE, "Patient") and scopes.allows(DELETE, "Patient")
    assert not scopes.allows(CREATE, "Observation")


def test_patient_scopes_grant_nothing_without_a_patient_context() -> None:
    assert not ScopeSet.parse("patient/*.cruds").allows(READ, "Patient")


def test_user_scopes_grant() -> None:
    assert ScopeSet.parse("user/Patient.rs").allows(READ, "Patient")


def test_lenient_parse_drops_malformed_scopes() -> None:
    assert ScopeSet.parse("system/Patient.zz system/Patient.r").allows(READ, "Patient")
    with pytest.raises(ScopeError):
        ScopeSet.parse("system/Patient.zz", strict=True)


@pytest.mark.parametrize("requested, registered, granted", [
    ("system/Patient.rs", "system/*.cruds", ["system/Patient.rs"]),
    ("system/*.read", "system/*.cruds", ["system/*.read"]),  # kept as written (v1)
    ("system/*.rs", "system/Patient.cruds system/Observation.r", ["system/Patient.rs", "system/Observation.r"]),
    ("system/Patient.cruds", "system/Patient.rs", ["system/Patient.rs"]),
    ("system/Patient.write", "system/Patient.rs", []),
    ("system/Encounter.rs", "system/Patient.rs", []),
    ("user/Patient.rs", "system/*.cruds", []),  # client_credentials: system/ scopes only
    ("system/Observation.rs?category=x", "system/*.cruds", []),
    ("openid system/Patient.r system/Patient.r", "system/Patient.rs", ["system/Patient.r"]),
])
def test_intersect(requested: str, registered: str, granted: list[str]) -> None:
    assert ScopeSet.parse(requested).intersect(ScopeSet.parse(registered)) == granted


def test_split_and_needed() -> None:
    assert split_scopes(" a  b a ") == ["a", "b"]
    assert split_scopes(["a b", "c"]) == ["a", "b", "c"]
    assert needed_scope(UPDATE, "Patient") == "system/Patient.u"
