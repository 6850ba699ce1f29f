"""Sub-commands of `hubi`, one module per group."""
