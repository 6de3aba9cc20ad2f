"""The open HTTP API: FastAPI app, bearer tokens, and the OpenAPI document."""
