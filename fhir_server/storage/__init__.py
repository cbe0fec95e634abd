"""SQLAlchemy tables and engine set-up; one schema for PostgreSQL and SQLite."""
