"""Ingest: topic + bytes -> the one accept/reject decision -> committed with its forwards; receipts back.

Its modules are imported by path; the package re-exports nothing: `verifier` (the accept/reject
core), `intake` (a message committed with its forwards, or a reason) and `receipts` (signed
receipts back to the devices).
"""

__all__: list[str] = []
