"""Agency source formats → FHIR R4. One package per format: reader → typed records → FHIR + issues.

Mappers are pure and never raise on bad source data: they return :class:`~mappings.core.SourceIssue`
items naming the file, the line or XPath and the field. :mod:`mappings.loader` turns one mapped file
into one transaction Bundle (conditional updates on business identifiers, one Provenance).

Shared by every format package: :mod:`.core` (files, agencies, issues, upserts), :mod:`.fhir_shapes`
(extension URLs, categories, the agency reference, periods, demographics, Patients, resources keyed
by a source record), :mod:`.dates` (UK time, FHIR date text), :mod:`.csvutil` (CSV rows and their
values), :mod:`.codes` and :mod:`.systems` (our CodeSystems and identifier systems).
"""
