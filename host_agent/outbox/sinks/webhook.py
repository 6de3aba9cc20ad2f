"""Webhook destination: each forward POSTed as its signed bytes, with its idempotency key."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import httpx

from host_agent.outbox.forward import DeliveryError, Forward

__all__ = ["WebhookSink"]


class WebhookSink:
    """POST application/cose to the route's URL; any answer but 2xx fails the batch."""

    is_kept = False

    def __init__(self, destination: dict[str, Any], grant_hex: str | None, http: httpx.AsyncClient):
        self.url: str = destination["url"]
        self.grant_hex = grant_hex
        self.http = http

    async def deliver(self, forwards: Sequence[Forward]) -> None:
        for forward in forwards:
            headers = {
                "content-type": 'application/cose; cose-type="cose-sign1"',
                "idempotency-key": forward.idempotency_key,
                "x-firstparty-device": forward.device_id,
            }
            if self.grant_hex:
                headers["x-firstparty-grant"] = base64.b64encode(bytes.fromhex(self.grant_hex)).decode()
            try:
                response = await self.http.post(self.url, content=forward.raw, headers=headers)
            except httpx.HTTPError as error:
                raise DeliveryError(f"{type(error).__name__}: {error}") from None
            if response.status_code >= 300:
                raise DeliveryError(f"HTTP {response.status_code}")

    async def stop(self) -> None:
        """Nothing held: the HTTP client is the outbox's."""
