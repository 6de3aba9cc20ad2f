"""Ingest: topic + bytes -> the one accept/reject decision -> committed with its forwards; receipts back."""
