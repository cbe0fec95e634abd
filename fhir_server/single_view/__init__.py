"""The single view of one child across agencies: ``Patient/[id]/$everything`` and ``$family-summary``.

- :mod:`.links` — which Patient records are the same child (Patient.link, both ways);
- :mod:`.record` — collect everything about the child (the Patient compartment of every linked record,
  plus the resources it references) in a few queries;
- :mod:`.access` — the one place a filter (access control, consent) is applied to what was collected;
- :mod:`.family` (pure) and :mod:`.family_loader` — the family graph: carers, siblings, household;
- :mod:`.facts`, :mod:`.narrative`, :mod:`.document` (pure) — the family summary document.

Nothing here knows about HTTP: the operations in ``fhir_server/operations/`` parse, call and respond.
"""
