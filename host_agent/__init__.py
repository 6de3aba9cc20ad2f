"""Firstparty host agent: verifies signed device readings and lets the owner route them."""

__version__ = "0.1.0"
