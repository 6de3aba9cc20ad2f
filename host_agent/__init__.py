"""Firstparty host agent: verifies signed device readings and lets the owner route them.

Its subpackages read as the pipeline, bus -> ingest -> store -> routes + outbox -> api, with
commands, terms, console, board, cli and rig beside it; each is imported by path.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
