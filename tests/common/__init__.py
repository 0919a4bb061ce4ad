"""Shared test helpers and synthetic fixtures (format-exact dataset fixtures, ...)."""
