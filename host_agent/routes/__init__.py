"""Routes: which readings go where, on which terms, under the owner's signed grants.

Its modules are imported by path; the package re-exports nothing: `rules` (route validation and
matching, pure) and `grants` (the owner's signed share grants).
"""

__all__: list[str] = []
