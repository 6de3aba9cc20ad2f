"""The device's open local API: a small read-only HTTP/1.0 server for anyone on the LAN.

GET /card, /status, /readings/latest (a CBOR map: sensor name -> that sensor's latest signed
reading) and /readings/latest/<sensor> (the signed reading itself). Everything served is signed
by the device, so a client trusts the signature, not the network (docs/device-api.md).
GET /broker-password/<host>:<port> is the one answer that is not signed and not public: the
device's password for that broker, only while its claim window is open (the owner pressed the
button), so the owner's agent can enrol it without the password crossing the vendor's broker.

This module is the listening server; each request is read and answered by fp.http_request,
loaded for it and dropped once no request is being served: a request is rare, and the heap
between requests holds neither its code nor its buffer. A slow or hostile client cannot hold
memory or the loop: at most MAX_CLIENTS connections are served at once (others get 503 at once,
without loading anything), and fp.http_request bounds the rest (the request head must fit
MAX_REQUEST_BYTES and arrive within READ_TIMEOUT_S, the answer must be taken within
WRITE_TIMEOUT_S, and the card and status are signed at most once per CACHE_MS whatever the
request rate).
"""

import asyncio

from fp import const
from fp.runtime import unload

_MAX_CLIENTS = const(2)  # two, so a client's next request never meets its previous one still closing
_BUSY = const(
    b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)


class HttpApi:
    """The server and its counters; `device` provides card(), status(state) and latest."""

    def __init__(self, device, log):
        self.device = device
        self.log = log
        self.clients = 0  # being served now
        self.served = 0
        self.refused = 0
        self.server = None
        self.cached = {}  # "/card", "/status" -> (ticks_ms when signed, signed body)

    async def start(self, host, port):
        """Listen on host:port; log and return False if the port cannot be had (the device runs on)."""
        try:
            self.server = await asyncio.start_server(self._serve, host, port, 2)
        except OSError as error:
            self.log("http: cannot listen on %s:%d: %s; local API off" % (host, port, error))
            return False
        self.log("http: local API on %s:%d" % (host, port))
        return True

    async def _serve(self, reader, writer):
        """Serve one connection with fp.http_request, loaded for it and dropped once no request is
        being served; a connection beyond MAX_CLIENTS gets 503 without it."""
        if self.clients >= _MAX_CLIENTS:
            self.refused += 1
            try:
                writer.write(_BUSY)  # a non-blocking send of what fits; never waited for
                await writer.wait_closed()
            except OSError:
                pass
            return
        self.clients += 1
        try:
            from fp import http_request

            await http_request.serve(self, reader, writer)
        finally:
            self.clients -= 1
            if not self.clients:
                unload("http_request")
            try:
                await writer.wait_closed()
            except OSError:
                pass
