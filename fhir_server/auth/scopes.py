"""SMART on FHIR scopes for clinical data, v2 and v1 syntax, as a permission check. Pure: no I/O.

SMART App Launch 2.x, scopes-and-launch-context.html#scopes-for-requesting-fhir-resources:

- v2: ``<context>/<type>.<cruds>[?param=value]`` where context is ``patient``, ``user`` or
  ``system``, type is a resource type or ``*``, and the permission letters are a non-empty subset
  of ``c r u d s`` in that order (``system/Patient.rs``, ``system/*.cruds``).
- v1 (still accepted, #scope-equivalence): ``.read`` = ``.rs``, ``.write`` = ``.cud``, ``.*`` = ``.cruds``.

What this server grants (docs/security.md, "Scopes"):

- ``system/`` (backend services) and ``user/`` (a practitioner's token) scopes grant their
  permissions on their type.
- ``patient/`` scopes parse but grant nothing: they need a patient launch context, which this server
  does not issue (fail closed rather than read them as "every patient").
- A scope with a ``?param=value`` constraint parses but grants nothing: fine-grained constraints are
  not enforced, so they are never granted (the token endpoint leaves them out of ``scope``).
- Anything else (``openid``, ``launch``, ``offline_access``…) is not a clinical scope: ignored.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

# Permission names used across the server, and the SMART v2 letter each stands for.
CREATE, READ, UPDATE, DELETE, SEARCH = "create", "read", "update", "delete", "search"
LETTERS: dict[str, str] = {CREATE: "c", READ: "r", UPDATE: "u", DELETE: "d", SEARCH: "s"}
ORDER = "cruds"
V1_PERMISSIONS: dict[str, str] = {"read": "rs", "write": "cud", "*": "cruds"}
CONTEXTS = ("patient", "user", "system")
# Contexts whose scopes grant access here (see the module docstring for patient/).
GRANTING_CONTEXTS = frozenset({"user", "system"})

_SCOPE = re.compile(r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{0,63})"
                    r"\.(?P<perms>[a-z*]+)(?:\?(?P<constraint>\S+))?$")


class ScopeError(ValueError):
    """A scope that looks like a clinical scope but is malformed (``system/Patient.xyz``)."""


@dataclass(frozen=True)
class Scope:
    """One clinical scope. ``permissions`` are v2 letters in ``cruds`` order."""

    context: str
    res_type: str  # a resource type or "*"
    permissions: str
    constraint: str | None = None
    text: str = ""  # as written (v1 or v2)

    @property
    def grants(self) -> bool:
        """Whether this scope can grant anything on this server (module docstring)."""
        return self.context in GRANTING_CONTEXTS and self.constraint is None

    def covers(self, permission: str, res_type: str) -> bool:
        return self.grants and LETTERS[permission] in self.permissions and self.res_type in ("*", res_type)

    def v2(self) -> str:
        tail = f"?{self.constraint}" if self.constraint else ""
        return f"{self.context}/{self.res_type}.{self.permissions}{tail}"


def parse_scope(text: str) -> Scope | None:
    """The clinical scope ``text`` stands for; None when it is not a clinical scope at all
    (``openid``, ``launch/patient``); :class:`ScopeError` when it is one but malformed."""
    if "/" not in text or text.split("/", 1)[0] not in CONTEXTS:
        return None
    m = _SCOPE.match(text)
    if m is None:
        raise ScopeError(f"Malformed SMART scope {text!r} (expected e.g. system/Patient.rs)")
    perms = m["perms"]
    if perms in V1_PERMISSIONS:
        letters = V1_PERMISSIONS[perms]
        if m["constraint"]:
            raise ScopeError(f"A v1 scope cannot carry a constraint: {text!r}")
    else:
        letters = "".join(c for c in ORDER if c in perms)
        if not perms or len(set(perms)) != len(perms) or letters != perms:
            raise ScopeError(f"SMART v2 permissions must be a subset of c, r, u, d, s in that order, "
                             f"not {perms!r} in {text!r}")
    return Scope(m["context"], m["type"], letters, m["constraint"], text)


def split_scopes(value: str | Iterable[str] | None) -> list[str]:
    """A space-delimited scope string (RFC 6749 §3.3) or an iterable of scopes, as a list without
    repeats, in order."""
    if value is None:
        return []
    items = value.split() if isinstance(value, str) else [s for v in value for s in str(v).split()]
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class ScopeSet:
    """The clinical scopes of a token. ``allows`` is the one permission check."""

    scopes: tuple[Scope, ...]

    @classmethod
    def parse(cls, value: str | Iterable[str] | None, *, strict: bool = False) -> "ScopeSet":
        """Malformed scopes raise :class:`ScopeError` when ``strict`` (the token endpoint, the
        client registry); otherwise they are dropped (a token we issued never holds one)."""
        out: list[Scope] = []
        for text in split_scopes(value):
            try:
                scope = parse_scope(text)
            except ScopeError:
                if strict:
                    raise
                continue
            if scope is not None:
                out.append(scope)
        return cls(tuple(out))

    def allows(self, permission: str, res_type: str) -> bool:
        """Whether any scope grants ``permission`` (create, read, update, delete, search) on
        ``res_type``. ``res_type="*"`` asks for the permission on every type at once (whole-system
        search and history), which only a wildcard scope grants."""
        return any(s.covers(permission, res_type) for s in self.scopes)

    def intersect(self, registered: "ScopeSet", *, contexts: Iterable[str] = ("system",)) -> list[str]:
        """The scopes to grant when a client asks for ``self`` and is registered for ``registered``
        (backend-services.html: the server grants at most what was asked and what is allowed).

        A requested scope wholly covered by one registered scope is granted as written (v1 stays
        v1); otherwise its overlap with each registered scope is granted in v2 syntax
        (``system/*.rs`` asked, ``system/Patient.cruds`` registered → ``system/Patient.rs``).
        Constrained and non-granting scopes, and contexts outside ``contexts``, are never granted.
        """
        allowed_contexts = set(contexts)
        granted: list[str] = []
        for want in self.scopes:
            if not want.grants or want.context not in allowed_contexts:
                continue
            overlaps: list[Scope] = []
            for have in registered.scopes:
                if not have.grants or have.context != want.context:
                    continue
                if have.res_type == "*":
                    res_type = want.res_type
                elif want.res_type in ("*", have.res_type):
                    res_type = have.res_type
                else:
                    continue
                letters = "".join(c for c in ORDER if c in want.permissions and c in have.permissions)
                if letters:
                    overlaps.append(Scope(want.context, res_type, letters))
            if any(o.res_type == want.res_type and o.permissions == want.permissions for o in overlaps):
                granted.append(want.text)
            else:
                granted.extend(o.v2() for o in overlaps)
        return list(dict.fromkeys(granted))

    def __bool__(self) -> bool:
        return bool(self.scopes)


@lru_cache(maxsize=1024)
def scope_set(scopes: frozenset[str]) -> ScopeSet:
    """:meth:`ScopeSet.parse` of a request context's scopes, cached (a token's scopes repeat on
    every request it makes)."""
    return ScopeSet.parse(sorted(scopes))


def needed_scope(permission: str, res_type: str, context: str = "system") -> str:
    """The narrowest v2 scope that would grant ``permission`` on ``res_type`` (for messages)."""
    return f"{context}/{res_type}.{LETTERS[permission]}"
