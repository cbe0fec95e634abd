"""Storage of FHIR resources: versioning, history, search indexes and the outbox."""
