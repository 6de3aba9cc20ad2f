"""The `firstparty` command line: one module per verb; nothing in the service imports it.

Its modules are imported by path; the package re-exports nothing. `main` builds the parser from
the verb modules (`serve`, `devices`, `routes`, `command`, `tokens`, `terms`, `status`, `audit`,
`verify`, `flash`, `build`, `release`, `console_link`, `api_spec`); `common` is what they share.
"""

__all__: list[str] = []
