"""What each FHIR interaction needs from a token's scopes, and the guard the Router runs on every
request and every Bundle entry.

``classify`` names the interaction a request is (http.html's restful-interaction codes) from its
method and path alone; ``required`` lists the (permission, resource type) pairs it needs:

=========================================  ====================================================
interaction                                needs
=========================================  ====================================================
capabilities (``GET metadata``)            nothing: public
batch / transaction (``POST [base]``)      a valid token; each entry is checked on its own
read, vread, history-instance              read on the type
create                                     create (+ search with ``If-None-Exist``)
update / patch                             update (+ search when conditional); an update that
                                           creates (201) also needs create
delete                                     delete (+ search when conditional)
search-type, history-type                  search on the type
search-system, history-system              search on each ``_type``, or on ``*``
compartment search (``Patient/1/Type``)    search on Type (``*``: on every type)
``_include`` / ``_revinclude``             read on every type it may bring in
chained parameters, ``_has``               search on the types they look into
operation                                  read on its types, or create+update when it
                                           ``affectsState``; system level with no types: ``*``
async job status                           a valid token (the job's owner check is the job's)
=========================================  ====================================================

Anything else fails closed (403): a new route must be classified here before tokens reach it.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qsl

from . import events
from .errors import AccessDenied, InsufficientScope, InvalidToken
from .scopes import CREATE, READ, SEARCH, UPDATE, DELETE, needed_scope, scope_set

if TYPE_CHECKING:
    from ..operations.registry import OperationRegistry
    from ..rest.messages import FhirRequest, FhirResponse
    from ..search.parse import Criterion, HasCriterion, ParamSource

ALL = "*"
PUBLIC = frozenset({"capabilities"})
TOKEN_ONLY = frozenset({"batch", "async-status"})
# Conditional interactions carry their criteria in the query (http.html#cond-update etc.).
_CONDITIONAL_ON_TYPE = {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_INSTANCE = {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Interaction:
    """A request as an interaction: ``code`` is a restful-interaction code (read, vread, update,
    patch, delete, history-instance, history-type, history-system, create, search-type,
    search-system, capabilities, batch, operation), or async-status, or unknown."""

    code: str
    res_type: str | None = None
    res_id: str | None = None
    operation: str | None = None  # the name without "$"
    level: str | None = None  # operations: system | type | instance
    conditional: bool = False
    compartment: str | None = None  # compartment search: "Patient/[id]" (res_type: the type, or "*")


def classify(method: str, path: str) -> Interaction:
    """The interaction ``method`` on ``path`` (relative to the FHIR base) stands for."""
    s = [p for p in path.split("?", 1)[0].strip("/").split("/") if p]
    n, m = len(s), method.upper()
    if n == 0:
        return Interaction({"GET": "search-system", "POST": "batch"}.get(m, "unknown"))
    head = s[0]
    if head.startswith("$"):
        return Interaction("operation", operation=head[1:], level="system") if n == 1 else Interaction("unknown")
    if head == "metadata" and n == 1:
        return Interaction("capabilities")
    if head == "_history" and n == 1:
        return Interaction("history-system")
    if head == "_search" and n == 1:
        return Interaction("search-system")
    if head == "_async" and n == 2:
        return Interaction("async-status")
    if head.startswith("_"):
        return Interaction("unknown")
    if n == 1:
        if m == "GET":
            return Interaction("search-type", head)
        if m == "POST":
            return Interaction("create", head)
        code = _CONDITIONAL_ON_TYPE.get(m)
        return Interaction(code, head, conditional=True) if code else Interaction("unknown", head)
    second = s[1]
    if n == 2 and second == "_search":
        return Interaction("search-type", head)
    if n == 2 and second == "_history":
        return Interaction("history-type", head)
    if n == 2 and second.startswith("$"):
        return Interaction("operation", head, operation=second[1:], level="type")
    if n == 2:
        return Interaction(_INSTANCE.get(m, "unknown"), head, second)
    third = s[2]
    if n == 3 and third == "_history":
        return Interaction("history-instance", head, second)
    if n == 3 and third.startswith("$"):
        return Interaction("operation", head, second, operation=third[1:], level="instance")
    if n == 3 and head == "Patient" and not third.startswith("_"):
        return Interaction("search-type", third, compartment=f"Patient/{second}")
    if n == 4 and third == "_history":
        return Interaction("vread", head, second)
    return Interaction("unknown", head)


class Guard(Protocol):
    """A check the Router runs around every interaction (fhir_server/rest/router.py): ``before``
    the handler (raise to refuse), ``after`` it with its response (raise to refuse and roll back).
    Later policies (agency/role, consent, security labels) are guards too."""

    def before(self, req: "FhirRequest") -> None: ...

    def after(self, req: "FhirRequest", response: "FhirResponse") -> None: ...


class ScopeGuard:
    """Refuses what the token's SMART scopes do not grant (403 naming the missing scope), and
    anything but ``metadata`` without a verified token (401)."""

    def __init__(self, operations: "OperationRegistry", registry: "ParamSource") -> None:
        self.operations = operations
        self.registry = registry

    def before(self, req: "FhirRequest") -> None:
        interaction = classify(req.method, req.path)
        if interaction.code in PUBLIC:
            return
        if not req.ctx.authenticated:
            events.denied("no-credentials", None, _info(req), "no verified token reached the router")
            raise InvalidToken("This request needs a bearer token (Authorization: Bearer ...)",
                               reason="no-credentials", oauth_error=None)
        if interaction.code == "batch":
            self._check_transaction(req)
        if interaction.code in TOKEN_ONLY:
            return
        if interaction.code == "unknown":
            events.denied("unclassified", req.ctx, _info(req))
            raise AccessDenied(f"No authorisation rule covers {req.method} {req.path}", reason="unclassified")
        self._check(req, self.required(interaction, req))

    def after(self, req: "FhirRequest", response: "FhirResponse") -> None:
        interaction = classify(req.method, req.path)
        if interaction.code == "update" and response.status == 201 and interaction.res_type:
            # update-as-create (http.html#upsert) creates: it needs the create permission too
            self._check(req, [(CREATE, interaction.res_type)])

    def _check(self, req: "FhirRequest", needs: Iterable[tuple[str, str]], where: str | None = None) -> None:
        granted = scope_set(req.ctx.scopes)
        for permission, res_type in dict.fromkeys(needs):
            if not granted.allows(permission, res_type):
                scope = needed_scope(permission, res_type)
                what = "every resource type" if res_type == ALL else res_type
                prefix = f"{where} ({req.method} {req.url})" if where else f"{req.method} {req.path or '/'}"
                events.denied("insufficient-scope", req.ctx, _info(req), f"{where or ''} needs {scope}".strip())
                raise InsufficientScope(f"{prefix} needs {permission} access to {what}: the token's scopes do "
                                        f"not include {scope} (or a wider scope)",
                                        scope=scope, expression=(where,) if where else ())

    def _check_transaction(self, req: "FhirRequest") -> None:
        """A transaction is all or nothing (http.html#trules): every entry's needs are checked
        before any of it runs — including the searches that resolve conditional entries first."""
        from ..errors import FhirError
        from ..rest.messages import FhirRequest

        body = req.body
        if not isinstance(body, dict) or body.get("type") != "transaction":
            return  # a batch: each entry is checked as it runs, and fails on its own
        entries = body.get("entry")
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            request = entry.get("request") if isinstance(entry, dict) else None
            if not isinstance(request, dict):
                continue  # malformed: the Bundle processor answers 400
            method, url = request.get("method"), request.get("url")
            if not isinstance(method, str) or not isinstance(url, str):
                continue
            path, _, query = url.removeprefix(req.ctx.base_url).lstrip("/").partition("?")
            headers = {"if-none-exist": request["ifNoneExist"]} if request.get("ifNoneExist") else {}
            entry_req = FhirRequest("GET" if method == "HEAD" else method, path, req.ctx,
                                    parse_qsl(query, keep_blank_values=True), headers, entry.get("resource"))
            interaction = classify(entry_req.method, path)
            if interaction.code in PUBLIC or interaction.code in TOKEN_ONLY or interaction.code == "unknown":
                continue
            try:
                needs = self.required(interaction, entry_req)
            except FhirError:
                continue  # an unknown operation, a bad search parameter: the entry's own error follows
            self._check(entry_req, needs, where=f"Bundle.entry[{i}]")

    # -- what an interaction needs --------------------------------------------------------------

    def required(self, interaction: Interaction, req: "FhirRequest") -> list[tuple[str, str]]:
        code, res_type = interaction.code, interaction.res_type or ALL
        needs: list[tuple[str, str]] = []
        if code in ("read", "vread", "history-instance"):
            needs.append((READ, res_type))
        elif code == "create":
            needs.append((CREATE, res_type))
            if req.header("if-none-exist"):
                needs.append((SEARCH, res_type))
        elif code in ("update", "patch"):
            needs.append((UPDATE, res_type))
        elif code == "delete":
            needs.append((DELETE, res_type))
        elif code == "history-type":
            needs.append((SEARCH, res_type))
        elif code == "history-system":
            needs.append((SEARCH, ALL))
        elif code in ("search-type", "search-system"):
            needs.extend(self._search_needs(interaction, req))
        elif code == "operation":
            needs.extend(self._operation_needs(interaction, req))
        if interaction.conditional:
            needs.append((SEARCH, res_type))
        return needs

    def _search_needs(self, interaction: Interaction, req: "FhirRequest") -> Iterator[tuple[str, str]]:
        from ..search.parse import parse_search

        params = list(req.query) + _form_params(req)
        types = [interaction.res_type] if interaction.res_type and interaction.res_type != ALL else None
        parsed = parse_search(params, self.registry, types)
        for t in parsed.resource_types or (ALL,):
            yield SEARCH, t
        for criterion in parsed.criteria:
            yield from _criterion_needs(criterion)
        for inc in parsed.includes:
            if inc.reverse:
                yield READ, inc.source_type or ALL
            elif inc.target_type is not None:
                yield READ, inc.target_type
            elif inc.param is not None and inc.param.targets:
                for target in inc.param.targets:
                    yield READ, target
            else:
                yield READ, ALL

    def _operation_needs(self, interaction: Interaction, req: "FhirRequest") -> list[tuple[str, str]]:
        from ..operations.registry import OperationTarget

        target = OperationTarget(interaction.level or "system", interaction.res_type, interaction.res_id)
        op = self.operations.find(interaction.operation or "", target, req.method)
        if interaction.res_type:
            types = [interaction.res_type]
        else:
            declared = [t for t in (op.definition.get("resource") or []) if t != "Resource"]
            types = declared or [ALL]
        permissions = (CREATE, UPDATE) if op.affects_state else (READ,)
        return [(p, t) for t in types for p in permissions]


def _criterion_needs(criterion: "Criterion | HasCriterion") -> Iterator[tuple[str, str]]:
    from ..search.parse import HasCriterion
    from ..search.special import SpecialCriterion

    if isinstance(criterion, SpecialCriterion):  # _list reads the List; _text/_content nothing more
        yield from ((SEARCH, t) for t in criterion.reads)
        return
    if isinstance(criterion, HasCriterion):
        yield SEARCH, criterion.source_type
        yield from _criterion_needs(criterion.criterion)
        return
    for target, sub in criterion.chain:
        yield SEARCH, target
        yield from _criterion_needs(sub)


def _form_params(req: "FhirRequest") -> list[tuple[str, str]]:
    if req.method != "POST" or req.content_type != "application/x-www-form-urlencoded":
        return []
    body = req.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return parse_qsl(body, keep_blank_values=True) if isinstance(body, str) else []


def _info(req: "FhirRequest") -> events.RequestInfo:
    return events.RequestInfo(req.method, req.path, req.ctx.remote_addr, None, req.ctx.request_id)
