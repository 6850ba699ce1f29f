"""The bank node (DESIGN §4-§5): evidence-chained books, booking engine, register checkpoints,
audit, recovery and restore. ``engine.BankEngine`` is the entry point; ``api``/``server`` put HTTP
in front of it."""
