"""Compartments (compartmentdefinition.html): which resources belong to one patient.

The R4 Patient CompartmentDefinition (profiles/r4/compartment-patient.json) names, per resource
type, the reference search parameters that put a resource in a patient's compartment (Observation:
subject, performer). A compartment search ``GET [base]/Patient/[id]/[type]`` is a search of
``[type]`` restricted to resources where any of those parameters points at the patient; the same
membership test serves ``Patient/[id]/$everything``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sqlalchemy import ColumnElement, and_, exists, or_, select

from ..storage.tables import idx_reference, resource

PATIENT_COMPARTMENT = "http://hl7.org/fhir/CompartmentDefinition/patient"


@dataclass(frozen=True)
class Compartment:
    """Membership of one compartment instance, e.g. ("Patient", "123")."""

    compartment_type: str
    compartment_id: str
    params: dict[str, tuple[str, ...]]  # resource type → reference parameters

    def clause(self, res_type: str) -> ColumnElement[bool]:
        """SQL condition on ``resource`` rows of ``res_type`` that belong to this compartment."""
        params = self.params.get(res_type, ())
        member = exists(select(idx_reference.c.resource_pk).where(
            idx_reference.c.resource_pk == resource.c.pk, idx_reference.c.res_type == res_type,
            idx_reference.c.param.in_(params), idx_reference.c.target_type == self.compartment_type,
            idx_reference.c.target_id == self.compartment_id)) if params else None
        itself = and_(resource.c.res_type == self.compartment_type, resource.c.res_id == self.compartment_id) \
            if res_type == self.compartment_type else None
        parts = [p for p in (member, itself) if p is not None]
        return or_(*parts) if parts else resource.c.pk.is_(None)


@lru_cache(maxsize=4)
def patient_compartment_params(profiles_dir: Path) -> dict[str, tuple[str, ...]]:
    """Resource type → the parameters linking it to a Patient (types with none are not members)."""
    definition = json.loads((profiles_dir / "r4" / "compartment-patient.json").read_text(encoding="utf-8"))
    return {r["code"]: tuple(p for p in r.get("param", []) if p != "{def}")
            for r in definition.get("resource", []) if r.get("param")}


def patient_compartment(profiles_dir: Path, patient_id: str) -> Compartment:
    return Compartment("Patient", patient_id, patient_compartment_params(profiles_dir))
