"""The Flask layer: HTTP in, FhirRequest to the router, FhirResponse out. No FHIR rules here."""
