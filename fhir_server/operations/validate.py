"""``$validate`` (R4 resource-operation-validate.html): would this content be accepted?

``POST [base]/[type]/$validate`` and ``POST [base]/[type]/[id]/$validate`` take the resource as the body
or a Parameters resource with ``resource``, ``mode`` and ``profile``. The answer is always 200 with an
OperationOutcome (information "All OK" or the errors, each with ``expression``); a 4xx means the
validation itself could not be done. Nothing is ever written. The checks are those of a create or an
update (fhir.validation.validate_resource), plus, when asked, a held profile's differential
(:func:`profile_checker`); the definition is profiles/operations/validate.json.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

from ..conformance import ConformanceSet, read_conformance_resources
from ..errors import BadRequest, FhirError, Issue, operation_outcome
from ..fhir.validation import validate_resource
from .registry import Handler, OperationTarget

if TYPE_CHECKING:
    from ..config import Settings
    from ..repository.sql import UnitOfWork
    from ..rest.messages import FhirRequest, FhirResponse

DEFINITION_FILE = "validate.json"
MODES = ("create", "update", "delete")  # ValueSet resource-validation-mode (required)
PARAMETER_NAMES = ("resource", "mode", "profile")


@dataclass(frozen=True)
class ValidateRequest:
    resource: Any = None
    mode: str | None = None
    profile: str | None = None


def make_handler(settings: "Settings") -> Handler:
    """The handler, reading the profiles we hold from ``settings.profiles_dir`` (cached)."""

    def handle(uow: "UnitOfWork", req: "FhirRequest", target: OperationTarget) -> "FhirResponse":
        return validate(uow, req, target, settings)

    return handle


def validate(uow: "UnitOfWork", req: "FhirRequest", target: OperationTarget,
             settings: "Settings") -> "FhirResponse":
    from ..rest.messages import FhirResponse

    asked = parse_request(req, target)
    if asked.mode is not None and asked.mode not in MODES:
        raise BadRequest(f"mode must be one of {', '.join(MODES)}, not {asked.mode!r}", expression="mode")
    if asked.mode in ("update", "delete") and target.level != "instance":
        raise BadRequest(f"mode={asked.mode} is only allowed at instance level ([type]/[id]/$validate)",
                         expression="mode")
    if asked.mode == "delete":
        return FhirResponse(200, operation_outcome([_delete_outcome(uow, target)]))
    if asked.resource is None:
        raise BadRequest("Nothing to validate: send the resource as the body or as the 'resource' parameter",
                         expression="resource")
    res_type = target.res_type or ""
    check_profile = None
    if asked.profile:
        check_profile = profile_checker(asked.profile, res_type,
                                        read_conformance_resources(settings.profiles_dir))
    issues = content_issues(asked.resource, res_type,
                            expected_id=target.res_id if asked.mode == "update" else None)
    if not issues and check_profile is not None:
        issues = check_profile(asked.resource)
    if not issues:
        issues = [Issue("information", "informational", "All OK")]
    return FhirResponse(200, operation_outcome(issues))


def content_issues(resource: Any, res_type: str, *, expected_id: str | None = None) -> list[Issue]:
    """What a create (or, with ``expected_id``, an update) of ``resource`` at ``res_type`` would
    object to; empty when it would be accepted."""
    try:
        validate_resource(resource, expected_type=res_type, expected_id=expected_id)
    except FhirError as exc:
        return [Issue("error", i.code, i.diagnostics, i.expression) for i in exc.issues]
    return []


def _delete_outcome(uow: "UnitOfWork", target: OperationTarget) -> Issue:
    """mode=delete: this server enforces no referential integrity, so any delete is acceptable."""
    ref = f"{target.res_type}/{target.res_id}"
    if uow.exists(target.res_type or "", target.res_id or ""):
        return Issue("information", "informational", f"All OK: {ref} may be deleted")
    return Issue("information", "informational",
                 f"All OK: {ref} does not exist (or is deleted); deleting it would change nothing")


def parse_request(req: "FhirRequest", target: OperationTarget) -> ValidateRequest:
    """The operation's inputs from a Parameters body, a bare resource body, and/or the URL."""
    query = {k: v for k, v in req.query if k in ("mode", "profile")}
    unknown = [k for k, _ in req.query if k not in ("mode", "profile", "_format", "_pretty")]
    if unknown:
        raise BadRequest(f"Unknown $validate parameter(s): {', '.join(unknown)}", expression=unknown[0])
    body = req.body
    if body is None:
        return ValidateRequest(None, query.get("mode"), query.get("profile"))
    if not isinstance(body, dict):
        raise BadRequest("The body must be a FHIR resource or a Parameters resource")
    if _is_parameters_wrapper(body, target):
        return _from_parameters(body, query)
    return ValidateRequest(body, query.get("mode"), query.get("profile"))


def _is_parameters_wrapper(body: dict[str, Any], target: OperationTarget) -> bool:
    """A Parameters body holds the inputs, except when a Parameters resource is what is validated
    (``Parameters/$validate`` with no ``resource`` parameter)."""
    if body.get("resourceType") != "Parameters":
        return False
    if target.res_type != "Parameters":
        return True
    return any(isinstance(p, dict) and p.get("name") == "resource" for p in body.get("parameter") or [])


def _from_parameters(body: dict[str, Any], query: dict[str, str]) -> ValidateRequest:
    values: dict[str, Any] = dict(query)  # a parameter in the body wins over the same in the URL
    given: set[str] = set()
    for i, param in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(param, dict) or param.get("name") not in PARAMETER_NAMES:
            name = param.get("name") if isinstance(param, dict) else None
            raise BadRequest(f"Unknown $validate parameter {name!r}", expression=where)
        name = param["name"]
        if name in given:
            raise BadRequest(f"Parameter {name!r} is given more than once (max 1)", expression=where)
        given.add(name)
        if name == "resource":
            if not isinstance(param.get("resource"), dict):
                raise BadRequest("Parameter 'resource' must hold a resource", expression=f"{where}.resource")
            values[name] = param["resource"]
        else:
            values[name] = _primitive(param, where)
    return ValidateRequest(values.get("resource"), values.get("mode"), values.get("profile"))


def _primitive(param: dict[str, Any], where: str) -> str:
    for key in ("valueCode", "valueUri", "valueCanonical", "valueString", "valueUrl"):
        if isinstance(param.get(key), str):
            return str(param[key])
    raise BadRequest(f"Parameter {param['name']!r} needs a code/uri value", expression=where)


# -- profiles (profiling.html): the differential of a StructureDefinition we hold ------------------

BASE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"
ProfileCheck = Callable[[dict[str, Any]], list[Issue]]
# ElementDefinition keys that document but do not constrain instances.
_DOCUMENTATION = frozenset({"id", "extension", "path", "short", "definition", "comment", "requirements",
                            "alias", "label", "code", "mustSupport", "isSummary", "mapping", "example",
                            "meaningWhenMissing", "isModifierReason", "representation"})
_CHECKED = frozenset({"min", "max", "maxLength", "type", "binding"})


class ProfileNotSupported(BadRequest):
    code = "not-supported"


def profile_checker(url: str, res_type: str, held: ConformanceSet) -> ProfileCheck | None:
    """The check for ``profile=url``: None for the base definition of ``res_type`` (whose rules the
    general validation already applies); a function giving the differential's issues for a held
    constraint on ``res_type``. Raises 400 "profile validation not supported" otherwise."""
    rules: list[_Rule] = []
    seen: set[str] = set()
    current = url
    while current.partition("|")[0] != BASE_PROFILE + res_type:
        if current in seen:
            _unsupported(url, f"its baseDefinition chain loops at {current}")
        seen.add(current)
        sd = held.by_url(current)
        if sd is None or sd.get("resourceType") != "StructureDefinition":
            _unsupported(url, f"this server does not hold {current}" if current != url
                         else "this server does not hold it")
        if sd.get("type") != res_type or sd.get("derivation") != "constraint" or sd.get("kind") != "resource":
            _unsupported(url, f"{current} is not a constraint on {res_type}")
        rules += [rule for e in (sd.get("differential") or {}).get("element") or []
                  if (rule := _rule(url, current.partition("|")[0], e, held)) is not None]
        current = str(sd.get("baseDefinition") or "")
    if not rules:
        return None
    return lambda resource: [issue for rule in rules for issue in rule.check(resource)]


def _unsupported(url: str, why: str) -> NoReturn:
    raise ProfileNotSupported(f"profile validation not supported: {url} ({why})", expression="profile")


@dataclass(frozen=True)
class _Rule:
    """The checkable constraints of one differential element."""

    profile: str
    path: str  # Observation.value[x], Patient.name.given
    min: int | None = None
    max: str | None = None
    max_length: int | None = None
    types: tuple[str, ...] = ()  # allowed choice types
    fixed: Any = None
    pattern: Any = None
    codes: frozenset[tuple[str | None, str]] | None = None  # required binding: (system, code)

    def check(self, resource: dict[str, Any]) -> list[Issue]:
        issues: list[Issue] = []
        *parents, last = self.path.split(".")
        for where, parent in _instances(resource, parents[1:], parents[0]):
            found = _children(parent, last, where)
            self._cardinality(found, f"{where}.{last}", issues)
            for expr, key, value in found:
                self._value(expr, key, value, issues)
        return issues

    def _cardinality(self, found: list[tuple[str, str, Any]], where: str, issues: list[Issue]) -> None:
        if self.min is not None and len(found) < self.min:
            issues.append(self._issue("required", f"{self.path}: minimum {self.min}, found {len(found)}", where))
        if self.max not in (None, "*") and len(found) > int(str(self.max)):
            issues.append(self._issue("structure", f"{self.path}: maximum {self.max}, found {len(found)}", where))

    def _value(self, expr: str, key: str, value: Any, issues: list[Issue]) -> None:
        stem = self.path.rsplit(".", 1)[-1].removesuffix("[x]")
        if self.types and key.removeprefix(stem) not in self.types:
            issues.append(self._issue("structure", f"{key} is not allowed; types: {', '.join(self.types)}", expr))
        if self.fixed is not None and not _equal(value, self.fixed):
            issues.append(self._issue("value", f"must be exactly {self.fixed!r}", expr))
        if self.pattern is not None and not _matches(value, self.pattern):
            issues.append(self._issue("value", f"must match the pattern {self.pattern!r}", expr))
        if self.max_length is not None and isinstance(value, str) and len(value) > self.max_length:
            issues.append(self._issue("too-long", f"longer than {self.max_length} characters", expr))
        if self.codes is not None and not _in_value_set(value, self.codes):
            issues.append(self._issue("code-invalid", "not in the required value set", expr))

    def _issue(self, code: str, message: str, where: str) -> Issue:
        return Issue("error", code, f"{message} (profile {self.profile})", (where,))


def _rule(url: str, profile: str, element: dict[str, Any], held: ConformanceSet) -> _Rule | None:
    """The rule for one differential element of ``profile`` (reached from the requested ``url``)."""
    path = str(element.get("path", ""))
    keys = set(element)
    unknown = sorted(k for k in keys - _DOCUMENTATION - _CHECKED
                     if not k.startswith(("fixed", "pattern")))
    if ":" in str(element.get("id", "")) or {"sliceName", "slicing"} & keys:
        _unsupported(url, f"element {element.get('id') or path} uses slicing")
    if unknown:
        _unsupported(url, f"element {element.get('id') or path} uses {', '.join(unknown)}")
    if "." not in path:
        return None  # the root element: cardinality and types of the resource itself are fixed
    fixed = [element[k] for k in keys if k.startswith("fixed")]
    pattern = [element[k] for k in keys if k.startswith("pattern")]
    types: tuple[str, ...] = ()
    for t in element.get("type") or []:
        if set(t) - {"code"}:
            _unsupported(url, f"element {path} constrains type profiles")
        types += (t["code"][:1].upper() + t["code"][1:],)
    binding = element.get("binding") or {}
    codes = None
    if binding.get("strength") == "required":
        codes = _value_set_codes(url, str(binding.get("valueSet", "")), held)
    max_length = element.get("maxLength")
    return _Rule(profile, path, element.get("min"), element.get("max"),
                 int(max_length) if max_length is not None else None,
                 types if path.endswith("[x]") else (), fixed[0] if fixed else None,
                 pattern[0] if pattern else None, codes)


def _value_set_codes(url: str, value_set: str, held: ConformanceSet) -> frozenset[tuple[str | None, str]]:
    """The (system, code) pairs of a held ValueSet that enumerates its concepts or includes whole
    held CodeSystems of ``content`` complete; anything else cannot be checked here."""
    vs = held.by_url(value_set)
    if vs is None or vs.get("resourceType") != "ValueSet":
        _unsupported(url, f"its required binding {value_set} is not a ValueSet this server holds")
    compose = vs.get("compose") or {}
    if compose.get("exclude"):
        _unsupported(url, f"{value_set} uses compose.exclude")
    codes: set[tuple[str | None, str]] = set()
    for inc in compose.get("include") or []:
        system = inc.get("system")
        if inc.get("filter") or inc.get("valueSet") or not system:
            _unsupported(url, f"{value_set} uses filters or imports")
        if inc.get("concept"):
            codes.update((system, c["code"]) for c in inc["concept"])
            continue
        cs = held.by_url(system)
        if cs is None or cs.get("resourceType") != "CodeSystem" or cs.get("content") != "complete":
            _unsupported(url, f"{value_set} includes {system}, which this server does not hold in full")
        stack = list(cs.get("concept") or [])
        while stack:
            concept = stack.pop()
            codes.add((system, concept["code"]))
            stack.extend(concept.get("concept") or [])
    return frozenset(codes)


def _instances(resource: dict[str, Any], steps: list[str], root: str) -> list[tuple[str, dict[str, Any]]]:
    current = [(root, resource)]
    for step in steps:
        current = [(expr, value) for where, node in current
                   for expr, _key, value in _children(node, step, where) if isinstance(value, dict)]
    return current


def _children(node: dict[str, Any], name: str, where: str) -> list[tuple[str, str, Any]]:
    """(FHIRPath, JSON key, value) of each occurrence of element ``name`` (``value[x]`` = any type)."""
    if name.endswith("[x]"):
        stem = name[:-3]
        keys = [k for k in node if k.startswith(stem) and k[len(stem):len(stem) + 1].isupper()]
    else:
        keys = [name] if name in node or f"_{name}" in node else []
    out = []
    for key in keys:
        value = node.get(key, node.get(f"_{key}"))
        if isinstance(value, list):
            out += [(f"{where}.{key}[{i}]", key, v) for i, v in enumerate(value)]
        elif value is not None:
            out.append((f"{where}.{key}", key, value))
    return out


def _equal(value: Any, fixed: Any) -> bool:
    if isinstance(value, (int, float, Decimal)) and isinstance(fixed, (int, float, Decimal)):
        return Decimal(str(value)) == Decimal(str(fixed))
    return bool(value == fixed)


def _matches(value: Any, pattern: Any) -> bool:
    """profiling.html#pattern: every element of the pattern is present with the same value; a repeating
    element matches when each pattern item matches some item of the instance."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and _matches(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches(v, p) for v in value) for p in pattern)
    return _equal(value, pattern)


def _in_value_set(value: Any, codes: frozenset[tuple[str | None, str]]) -> bool:
    """code: any system; Coding: system and code; CodeableConcept: at least one of its codings."""
    if isinstance(value, str):
        return any(code == value for _system, code in codes)
    if isinstance(value, dict) and "coding" in value:
        return any(_in_value_set(c, codes) for c in value.get("coding") or [])
    if isinstance(value, dict):
        return (value.get("system"), value.get("code")) in codes
    return False
