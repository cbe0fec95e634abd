"""Unit tests of fhir_server.search (pure: no database)."""
