"""The open HTTP API: FastAPI app, bearer tokens, and the OpenAPI document.

Its modules are imported by path; the package re-exports nothing. `app` builds the FastAPI app
from the routers `devices`, `readings`, `routes`, `terms` and `health`; `agent` is the typed
interface those routers ask of the agent; `auth`, `scope` and `tokens` decide who calls and what
a token may see; `models` holds the request and response shapes; `body_limit` caps request
bodies and `no_nul` refuses a NUL byte in a path or query; `client` is the running agent's API as the CLI reaches it.
"""

__all__: list[str] = []
