"""Runnable example services (see each module)."""
