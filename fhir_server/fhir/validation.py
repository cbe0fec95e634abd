"""What every incoming resource must pass before it is stored (http.html#create, #update)."""
from __future__ import annotations

import re
from typing import Any

from ..errors import BadRequest, Issue, Unprocessable
from . import extension_primitives
from .models import element_path, primitive_extension_issues, validate_structure

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def check_id(res_id: str) -> None:
    """datatypes.html#id: 1–64 of ``A-Z a-z 0-9 - .``; anything else (path traversal, SQL) is refused."""
    if not ID_PATTERN.match(res_id):
        raise BadRequest(f"Invalid resource id {res_id!r}: ids are 1-64 characters of A-Z a-z 0-9 - .",
                         expression="id")


def validate_resource(content: Any, *, expected_type: str | None = None,
                      expected_id: str | None = None) -> dict[str, Any]:
    """Check the body of a create/update: a JSON object of the right type (400), whose id matches
    the URL on update (400), structurally valid R4 with required-binding codes respected (422)."""
    if not isinstance(content, dict):
        raise BadRequest("The body must be a JSON object holding a FHIR resource")
    res_type = content.get("resourceType")
    if not isinstance(res_type, str):
        raise BadRequest("The resource has no resourceType", expression="resourceType")
    if expected_type is not None and res_type != expected_type:
        raise BadRequest(f"resourceType {res_type!r} does not match the URL's type {expected_type!r}",
                         expression="resourceType")
    if expected_id is not None:
        if content.get("id") is None:
            raise BadRequest("An update must carry the resource id in the body (http.html#update)",
                             expression=f"{res_type}.id")
        if content.get("id") != expected_id:
            raise BadRequest(f"Body id {content.get('id')!r} does not match the URL id {expected_id!r}",
                             expression=f"{res_type}.id")
    check_structure(content)
    from .bindings import check_required_bindings  # late: loads the binding table once
    problems = check_required_bindings(content)
    if problems:
        raise Unprocessable(issues=problems)
    return content


def check_structure(content: dict[str, Any]) -> None:
    """:func:`validate_structure`, plus what the R4B models lack: primitive extensions on an
    Extension's own value (``_valueString``, json.html#primitive). Those are taken out, the rest is
    validated with the model, and each is checked on its own: a primitive choice of
    Extension.value[x], no value of another type beside it, the shape of a primitive's extension
    (``id``, ``extension``). Only a resource the model refuses is split (nothing extra to pay on the
    usual path). Raises :class:`Unprocessable` with every problem found."""
    try:
        validate_structure(content)
        return
    except Unprocessable:
        stripped, primitives = extension_primitives.split(content)
        if not primitives:
            raise
    res_type = str(content.get("resourceType"))
    issues: list[Issue] = []
    try:
        validate_structure(stripped)
    except Unprocessable as exc:
        issues.extend(exc.issues)
    for primitive in primitives:
        where = (*primitive.path, "_" + primitive.name)
        problem = extension_primitives.value_problem(primitive)
        if problem is not None:
            issues.append(Issue("error", "structure", problem, (element_path(res_type, where),)))
        issues.extend(primitive_extension_issues(primitive.element, res_type, where))
    if issues:
        raise Unprocessable(issues=issues) from None
