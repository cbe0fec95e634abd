"""Structural validation of R4 resources with the ``fhir.resources.R4B`` models.

This is the only module that imports fhir.resources. The models validate; they never serialise what
we store or serve, because their round trip rewrites decimals and fractional seconds. R4B's fields are
identical to R4 for every type we accept; the R4 types R4B lacks or redefined are refused
(``UNSUPPORTED_TYPES``) rather than accepted unvalidated.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class  # the one import of fhir.resources
from pydantic import ValidationError

from ..errors import Issue, Unprocessable
from .resource_types import R4_RESOURCE_TYPES

# R4 types absent from R4B (the medication-definition and substance resources were remodelled) or
# whose R4B definition differs from R4 (Evidence, EvidenceVariable were rewritten in R4B).
UNSUPPORTED_TYPES: frozenset[str] = frozenset({
    "EffectEvidenceSynthesis", "RiskEvidenceSynthesis", "Evidence", "EvidenceVariable",
    "MedicinalProduct", "MedicinalProductAuthorization", "MedicinalProductContraindication",
    "MedicinalProductIndication", "MedicinalProductIngredient", "MedicinalProductInteraction",
    "MedicinalProductManufactured", "MedicinalProductPackaged", "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect", "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein",
    "SubstanceReferenceInformation", "SubstanceSourceMaterial", "SubstanceSpecification",
})

SUPPORTED_TYPES: frozenset[str] = R4_RESOURCE_TYPES - UNSUPPORTED_TYPES


def is_supported_type(resource_type: str) -> bool:
    return resource_type in SUPPORTED_TYPES


@lru_cache(maxsize=None)
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def validate_structure(resource: dict[str, Any]) -> None:
    """Check ``resource`` against its R4 structure: known elements, primitive formats, cardinality.

    Raises :class:`Unprocessable` (422) with one issue per problem, each naming the element in
    ``issue.expression`` as a FHIRPath (``Patient.name[0].given``).
    """
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in R4_RESOURCE_TYPES:
        raise Unprocessable(f"Unknown resource type {resource_type!r} (not an R4 resource)",
                            expression="resourceType")
    if resource_type in UNSUPPORTED_TYPES:
        raise Unprocessable(
            f"{resource_type} is not supported by this server: it has no R4-conformant validator here",
            expression="resourceType")
    try:
        _model(resource_type).model_validate(resource)
    except ValidationError as exc:
        raise Unprocessable(issues=_issues(exc, resource_type, ())) from None
    except (ValueError, TypeError) as exc:  # model-level validators that do not raise ValidationError
        raise Unprocessable(f"Invalid {resource_type}: {exc}", expression=resource_type) from None
    issues = _r4b_only_choices(resource, resource_type)
    if issues:
        raise Unprocessable(issues=issues)


# Data types R4B added (CodeableReference, RatioRange): its models accept them as choices of
# value[x] and friends (Extension.valueCodeableReference…), but R4 4.0.1 has no such types.
_R4B_ONLY_CHOICE = re.compile(r"_?[a-z][A-Za-z]*(CodeableReference|RatioRange)")


def _r4b_only_choices(node: Any, path: str) -> list[Issue]:
    """Elements whose choice type exists only in R4B (datatypes.html of R4 lists the types)."""
    issues: list[Issue] = []
    if isinstance(node, dict):
        for key, value in node.items():
            r4b_type = _R4B_ONLY_CHOICE.fullmatch(key)
            if r4b_type:
                issues.append(Issue("error", "structure", f"{key} is not an R4 element: R4 has no "
                                    f"{r4b_type.group(1)} data type", (f"{path}.{key}",)))
            elif isinstance(value, (dict, list)):
                issues.extend(_r4b_only_choices(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, (dict, list)):
                issues.extend(_r4b_only_choices(item, f"{path}[{i}]"))
    return issues


def primitive_extension_issues(element: Any, resource_type: str, loc: tuple[Any, ...]) -> list[Issue]:
    """Problems of the ``_x`` property of a primitive element (json.html#primitive: an object with
    an optional ``id`` and ``extension``), found at ``loc`` below a ``resource_type``; [] if none."""
    try:
        _model("FHIRPrimitiveExtension").model_validate(element)
    except ValidationError as exc:
        return _issues(exc, resource_type, loc)
    except (ValueError, TypeError) as exc:
        return [Issue("error", "value", str(exc), (element_path(resource_type, loc),))]
    return []


def _issues(exc: ValidationError, resource_type: str, prefix: tuple[Any, ...]) -> list[Issue]:
    return [Issue("error", "structure" if err["type"] == "extra_forbidden" else "value",
                  _message(err), (element_path(resource_type, (*prefix, *err["loc"])),))
            for err in exc.errors(include_url=False)]


def _message(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "Unknown element"
    if err["type"] == "missing":
        return "Required element is missing"
    return str(err.get("msg", "Invalid value")).removeprefix("Value error, ")


def element_path(resource_type: str, loc: tuple[Any, ...]) -> str:
    """The FHIRPath of a location as model validation reports it (``Patient.name[0].given``)."""
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        name = str(part)
        if name.startswith("function-") or name in ("__root__",):
            continue
        if name.endswith("__ext"):
            name = "_" + name[: -len("__ext")]
        elif name.endswith("_fhir"):
            name = name[: -len("_fhir")]
        path += f".{name}"
    return path


_TYPE_NAME = re.compile(r"\b(\w+)Type\b")


def element_is_list(resource_type: str, path: list[str]) -> bool | None:
    """Whether the element at ``path`` (names below the resource) repeats (max = *).

    Used by FHIRPath Patch ``add`` to know whether to create an array. None when unknown.
    """
    try:
        model = _model(resource_type)
        for position, name in enumerate(path):
            field = model.model_fields.get(name)
            if field is None:
                return None
            annotation = str(field.annotation)
            if position == len(path) - 1:
                return "List[" in annotation
            found = _TYPE_NAME.search(annotation)
            if not found:
                return None
            model = get_fhir_model_class(found.group(1))
    except (KeyError, ValueError, AttributeError):
        return None
    return None
