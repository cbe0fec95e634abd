"""interventions-csv records → FHIR R4 resources (as :class:`~mappings.core.Upsert`). Pure.

Per child a Patient, keyed on the LA child id like the CIN census and SSDA903 Patients of the same
local authority (one agency), and merged with them: this file adds the name, address and NHS number
those returns lack. Per row an EpisodeOfCare (type from episode-type, status and period from the
dates, ``careManager`` the lead professional, ``managingOrganization`` the provider). Per provider
an Organization; per lead professional a Practitioner. docs/formats/interventions-csv.md has the
table of what goes where and why.

Business identifiers (conditional-update keys), under ``source_record_system(LA, kind)``:
``episode_id`` for an episode (``intervention``), ``lead_professional_id`` for a Practitioner
(``practitioner``), the provider's folded name for an Organization (``intervention-provider``).
"""
from __future__ import annotations

from datetime import date
from typing import Any

from .. import systems
from ..core import Agency, Upsert, identifier_match
from ..fhir_shapes import EXTENSION, demographics, identifier, organization_reference, patient, period, source_record
from .records import Child, Intervention, InterventionsFile, LeadProfessional, Provider

EXT_REFERRAL_DATE = f"{EXTENSION}/intervention-referral-date"
EXT_END_REASON = f"{EXTENSION}/intervention-end-reason"

KIND_INTERVENTION, KIND_PRACTITIONER, KIND_PROVIDER = "intervention", "practitioner", "intervention-provider"


def to_fhir(found: InterventionsFile, agency: Agency, today: date) -> list[Upsert]:
    """Every resource of the file: the providers and practitioners the episodes name, each child's
    Patient, one EpisodeOfCare per intervention row."""
    providers = {key: _provider(p, agency) for key, p in found.providers.items()}
    leads = {lead_id: _practitioner(lead, agency) for lead_id, lead in found.leads.items()}
    patients = {child_id: _patient(child, agency) for child_id, child in found.children.items()}
    out = [*providers.values(), *leads.values(), *patients.values()]
    out += [_episode(i, agency, patients, providers, leads, today) for i in found.interventions]
    return out


def _patient(child: Child, agency: Agency) -> Upsert:
    """The child as the LA knows them, by the LA child id (merged, so that the CIN census's
    disabilities and the SSDA903 ethnicity stay); an unknown gender is kept as text."""
    elements, extensions = demographics(child, gender_label="gender")
    identifiers = []
    if child.nhs_number:
        identifiers.append(identifier(systems.NHS_NUMBER, child.nhs_number, "official"))
    if child.upn:
        identifiers.append(identifier(systems.UPN, child.upn, "official"))
    return patient(systems.la_child_id_system(agency.code), child.child_id, record=child.child_id,
                   identifiers=identifiers, extensions=extensions, managing=agency, **elements)


def _provider(provider: Provider, agency: Agency) -> Upsert:
    """The provider as an Organization of the LA's own: there is no national code for an early help
    hub or a commissioned charity, so it is keyed on its name within the LA (and the match is scoped
    to the LA, not shared: another agency's same-named team is not the same organisation). Only
    this format writes it, so it is replaced as mapped, like the episodes (not merged)."""
    system = systems.source_record_system(agency.code, KIND_PROVIDER)
    resource = {"resourceType": "Organization", "identifier": [identifier(system, provider.key)], "active": True,
                "name": provider.name}
    return Upsert(resource, identifier_match(system, provider.key))


def _practitioner(lead: LeadProfessional, agency: Agency) -> Upsert:
    """The lead professional, by the id the LA's system gives them. The file has one name column,
    so the name is ``HumanName.text`` (not split into given and family: "Aoife O'Brien" splits, a
    two-word surname would not). Replaced as mapped, like the provider."""
    system = systems.source_record_system(agency.code, KIND_PRACTITIONER)
    resource: dict[str, Any] = {"resourceType": "Practitioner",
                                "identifier": [identifier(system, lead.professional_id)]}
    if lead.name:
        resource["name"] = [{"use": "official", "text": lead.name}]
    return Upsert(resource, identifier_match(system, lead.professional_id))


def status(i: Intervention, today: date) -> str:
    """EpisodeOfCare.status (valueset-episode-of-care-status): ``finished`` once it has an end date,
    ``active`` from its start, ``planned`` before (referred, or a start date still to come)."""
    if i.end is not None:
        return "finished"
    if i.start is not None and i.start <= today:
        return "active"
    return "planned"


def _episode(i: Intervention, agency: Agency, patients: dict[str, Upsert], providers: dict[str, Upsert],
             leads: dict[str, Upsert], today: date) -> Upsert:
    """One intervention episode. ``managingOrganization`` is the provider ("the organization that
    has assumed the specific responsibilities for the specified duration", EpisodeOfCare), or the
    LA when the row names none; the LA stays the source (``meta.source``/``meta.tag``). The
    referral date and end reason have no element of their own (``referralRequest`` references a
    ServiceRequest the file does not describe), so they are extensions."""
    elements: dict[str, Any] = {"status": status(i, today), "type": [i.kind],
                                "patient": {"reference": patients[i.child_id].full_url}}
    if i.provider is not None:
        provider = providers[i.provider]
        elements["managingOrganization"] = {"reference": provider.full_url, "display": provider.resource["name"]}
    else:
        elements["managingOrganization"] = organization_reference(agency)
    if i.start is not None:
        elements["period"] = period(i.start, i.end)
    if i.lead_id is not None:
        manager = {"reference": leads[i.lead_id].full_url}
        name = leads[i.lead_id].resource.get("name", [{}])[0].get("text")
        if name:
            manager["display"] = name
        elements["careManager"] = manager
    elif i.lead_name:
        elements["careManager"] = {"display": i.lead_name}
    extensions: list[dict[str, Any]] = []
    if i.referral_date is not None:
        extensions.append({"url": EXT_REFERRAL_DATE, "valueDate": i.referral_date.isoformat()})
    if i.end_reason:
        extensions.append({"url": EXT_END_REASON, "valueString": i.end_reason})
    if extensions:
        elements = {"extension": extensions, **elements}
    return source_record("EpisodeOfCare", agency, KIND_INTERVENTION, i.episode_id, record=i.child_id, **elements)
