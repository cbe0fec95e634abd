"""FHIR content rules: JSON handling, validation (the only user of fhir.resources), dates, references."""
