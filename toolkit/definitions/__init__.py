"""Definition files: schema, loading with file:line:column marks, search path (spec §1)."""
