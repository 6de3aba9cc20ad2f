"""The `firstparty` command line: one module per verb; nothing in the service imports it."""
