"""Who is looking at the console: sign-in with an API token or a one-time link, sessions, CSRF.

A session is a random id in an HttpOnly, SameSite=Strict cookie; the agent keeps, in memory, the
session's token (as its SHA-256, as the store does) and its CSRF secret. Every request looks the
token up again, so a token revoked (here, with the CLI or the API) ends its sessions at once.
Every POST carries the session's CSRF secret (form field `csrf` or header `X-CSRF-Token`).

A sign-in link holds a one-time code: its hash and the token it signs in as are in the store
(`console_links`), so the CLI (another process) can make one; the agent deletes it on first use,
and it is worth nothing after LINK_TTL_S.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from host_agent.store.base import Store, token_hash
from host_agent.store.records import Token

COOKIE = "fp_session"
SESSION_IDLE_S = 12 * 3600
MAX_SESSIONS = 1000
LINK_TTL_S = 600


@dataclass(slots=True)
class Session:
    token_hash: str
    csrf: str
    last_s: float = field(default_factory=time.time)


class Sessions:
    """The console's sessions, bounded in number and idle time (the oldest goes first)."""

    def __init__(self) -> None:
        self.by_id: dict[str, Session] = {}

    def open(self, hashed_token: str) -> tuple[str, Session]:
        while len(self.by_id) >= MAX_SESSIONS:
            oldest = min(self.by_id, key=lambda key: self.by_id[key].last_s)
            del self.by_id[oldest]
        session_id = secrets.token_urlsafe(32)
        session = Session(hashed_token, secrets.token_urlsafe(32))
        self.by_id[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self.by_id.get(session_id)
        if session is None:
            return None
        now = time.time()
        if now - session.last_s > SESSION_IDLE_S:
            del self.by_id[session_id]
            return None
        session.last_s = now
        return session

    def close(self, session_id: str | None) -> None:
        self.by_id.pop(session_id or "", None)


def is_csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())


def token_by_hash(store: Store, hashed: str) -> Token | None:
    """The live token with this hash (as Store.token gives it), or None if unknown or revoked."""
    return store.token_by_hash(hashed)


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def create_link_code(store: Store, token: str, now_s: float | None = None) -> str:
    """A one-time code that signs in as `token` (a live token), for the link the CLI prints."""
    now = now_s if now_s is not None else time.time()
    code = "fpl_" + secrets.token_urlsafe(24)
    store.add_console_link(_code_hash(code), token_hash(token), now + LINK_TTL_S, now)
    return code


def redeem_link_code(store: Store, code: str, now_s: float | None = None) -> str | None:
    """The token hash a link code signs in as, used up; None when unknown, used or expired."""
    now = now_s if now_s is not None else time.time()
    row = store.take_console_link(_code_hash(code), now)
    if row is None or row[1] < now:
        return None
    return row[0]


def link_url(api_base: str, code: str) -> str:
    return f"{api_base.rstrip('/')}/console/link?code={code}"
