"""Extended operations (operations.html): a registry, and one module per ``$operation``."""
