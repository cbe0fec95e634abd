"""Agency source formats → FHIR R4. One package per format: reader → typed records → FHIR + issues.

Mappers are pure and never raise on bad source data: they return :class:`~mappings.core.SourceIssue`
items naming the file, the line or XPath and the field. :mod:`mappings.loader` turns one mapped file
into one transaction Bundle (conditional updates on business identifiers, one Provenance).
"""
