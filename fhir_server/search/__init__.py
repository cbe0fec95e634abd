"""FHIR search (search.html): parameter registry, index extraction on write, query parsing and SQL."""
