"""What goes onto a board: board data files, the firmware build, and flashing.

Its modules are imported by path; the package re-exports nothing: `files` (board data files),
`build` (the firmware build) and `flash` (flashing and provisioning a board).
"""

__all__: list[str] = []
