"""The device's open local API: a small read-only HTTP/1.0 server for anyone on the LAN.

GET /card, /status, /readings/latest (a CBOR map: sensor name -> that sensor's latest signed
reading) and /readings/latest/<sensor> (the signed reading itself). Everything served is signed
by the device, so a client trusts the signature, not the network (docs/device-api.md).
GET /broker-password/<host>:<port> is the one answer that is not signed and not public: the
device's password for that broker, only while its claim window is open (the owner pressed the
button), so the owner's agent can enrol it without the password crossing the vendor's broker.

A slow or hostile client cannot hold memory or the loop: at most MAX_CLIENTS connections are
served at once (others get 503 at once), the request head must fit MAX_REQUEST_BYTES (one buffer
per request, allocated when it comes and dropped with it: a request is rare, and the heap between
requests holds none) and arrive within READ_TIMEOUT_S, the answer must be taken within
WRITE_TIMEOUT_S, and the card and status are signed at most once per CACHE_MS whatever the request
rate.
"""

import asyncio
import time

from fp import cbor, const

_MAX_REQUEST_BYTES = const(1024)
_MAX_CLIENTS = const(2)  # two, so a client's next request never meets its previous one still closing
_READ_TIMEOUT_S = const(2)
_WRITE_TIMEOUT_S = const(5)
_CACHE_MS = const(5000)
_COSE = const('application/cose; cose-type="cose-sign1"')
_LATEST = const("/readings/latest")
# /broker-password/<host>:<port>: the owner's enrolment (docs/security.md)
_PASSWORD = const("/broker-password")
_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}
_BUSY = const(
    b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)


class HttpError(Exception):
    """A request that gets an error status instead of an answer."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


class HttpApi:
    """The server and its counters; `device` provides card(), status(state) and latest."""

    def __init__(self, device, log):
        self.device = device
        self.log = log
        self.clients = 0  # being served now
        self.served = 0
        self.refused = 0
        self.server = None
        self._cached = {}  # "/card", "/status" -> (ticks_ms when signed, signed body)

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
            try:
                path = await asyncio.wait_for(self._read_path(reader), _READ_TIMEOUT_S)
                content_type, body = self._answer(path)
                status = 200
            except HttpError as error:
                status = error.status
            except asyncio.TimeoutError:
                status = 408
            except Exception as error:  # an error here never reaches the rest of the device
                self.log("http: %s %s" % (type(error).__name__, error))
                status = 500
            if status == 200:
                self.served += 1
            else:
                self.refused += 1
                content_type, body = "text/plain", (_STATUS_TEXT[status] + "\n").encode()
            await asyncio.wait_for(self._write(writer, status, content_type, body), _WRITE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):
            pass  # the client went away, or does not read its answer: dropped
        finally:
            self.clients -= 1
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def _read_path(self, reader):
        """Read the request head (at most MAX_REQUEST_BYTES); return the path of a GET, or raise HttpError."""
        buffer = bytearray(_MAX_REQUEST_BYTES)
        view = memoryview(buffer)
        size = 0
        while True:
            if size == _MAX_REQUEST_BYTES:
                raise HttpError(431)
            count = await reader.readinto(view[size:])
            if count is None:
                continue
            if not count:
                raise HttpError(400)  # closed before the blank line that ends the head
            start = size - 3 if size > 3 else 0
            size += count
            if buffer.find(b"\r\n\r\n", start, size) >= 0 or buffer.find(b"\n\n", start, size) >= 0:
                break
        try:
            line = bytes(view[: buffer.find(b"\n")]).decode().strip()
        except UnicodeError:
            raise HttpError(400)
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
            raise HttpError(400)
        if parts[0] != "GET":
            raise HttpError(405)
        return parts[1].split("?")[0]

    def _answer(self, path):
        """Return (content type, body) for a path, or raise HttpError(404)."""
        device = self.device
        now = time.ticks_ms()
        if path == "/card" or path == "/status":
            cached = self._cached.get(path)
            if cached is None or time.ticks_diff(now, cached[0]) > _CACHE_MS:
                cached = (now, device.card() if path == "/card" else device.status("online"))
                self._cached[path] = cached
            return _COSE, cached[1]
        if path == _LATEST:
            return "application/cbor", cbor.encode(device.latest)
        if path.startswith(_LATEST + "/") and path[len(_LATEST) + 1 :] in device.latest:
            return _COSE, device.latest[path[len(_LATEST) + 1 :]]
        if path.startswith(_PASSWORD + "/"):
            host, _, port = path[len(_PASSWORD) + 1 :].rpartition(":")
            if not host or len(host) > 253 or not port.isdigit() or not 0 < int(port) < 65536:
                raise HttpError(400)
            password = device.local_password(host, int(port))
            if password is None:
                raise HttpError(403)  # only while the claim window is open (the button)
            return "text/plain", password.encode()
        raise HttpError(404)

    async def _write(self, writer, status, content_type, body):
        head = "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
            status,
            _STATUS_TEXT[status],
            content_type,
            len(body),
        )
        if status == 405:
            head += "Allow: GET\r\n"
        writer.write((head + "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode())
        writer.write(body)
        await writer.drain()
