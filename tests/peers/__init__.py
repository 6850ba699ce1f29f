"""MicroPython peer scripts for the link tests (also importable on CPython)."""
