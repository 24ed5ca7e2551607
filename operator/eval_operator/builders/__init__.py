"""Pure functions that build the child objects of our custom resources (no I/O)."""
