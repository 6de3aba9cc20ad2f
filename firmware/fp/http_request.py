"""One request to the device's local HTTP API: read its head, answer it, write the answer.

fp.http_api, the listening server, loads this for a request and drops it once no request is
being served: code loaded from .mpy lives in the heap, and a board serves a request rarely, so
the heap between requests holds the server only (docs/device-api.md).
"""

import asyncio
import time

from fp import cbor, const, ids

_MAX_REQUEST_BYTES = const(1024)
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


class HttpError(Exception):
    """A request that gets an error status instead of an answer."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


async def serve(api, reader, writer):
    """Answer one request on `api` (fp.http_api.HttpApi: the device, the log, the counters, the
    cache); the caller closes the connection."""
    try:
        try:
            path = await asyncio.wait_for(read_path(reader), _READ_TIMEOUT_S)
            content_type, body = answer(api, path)
            status = 200
        except HttpError as error:
            status = error.status
        except asyncio.TimeoutError:
            status = 408
        except Exception as error:  # an error here never reaches the rest of the device
            api.log("http: %s %s" % (type(error).__name__, error))
            status = 500
        if status == 200:
            api.served += 1
        else:
            api.refused += 1
            content_type, body = "text/plain", (_STATUS_TEXT[status] + "\n").encode()
        await asyncio.wait_for(write(writer, status, content_type, body), _WRITE_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError):
        pass  # the client went away, or does not read its answer: dropped


async def read_path(reader):
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


def answer(api, path):
    """Return (content type, body) for a path, or raise HttpError(404)."""
    device = api.device
    now = time.ticks_ms()
    if path == "/card" or path == "/status":
        cached = api.cached.get(path)
        if cached is None or time.ticks_diff(now, cached[0]) > _CACHE_MS:
            cached = (now, device.card() if path == "/card" else device.status("online"))
            api.cached[path] = cached
        return _COSE, cached[1]
    if path == _LATEST:
        return "application/cbor", cbor.encode(device.latest)
    if path.startswith(_LATEST + "/") and path[len(_LATEST) + 1 :] in device.latest:
        return _COSE, device.latest[path[len(_LATEST) + 1 :]]
    if path.startswith(_PASSWORD + "/"):
        host, _, port = path[len(_PASSWORD) + 1 :].rpartition(":")
        if not host or len(host) > 253 or not port.isdigit() or not 0 < int(port) < 65536:
            raise HttpError(400)
        # only while the claim window is open (the button): the owner's physical presence. A
        # claim ends the window for claims, not for this: the owner enrols the device with
        # their agent as part of claiming it
        if not device.is_claim_window_running():
            raise HttpError(403)
        return "text/plain", ids.broker_password(device.identity.seed, host, int(port)).encode()
    raise HttpError(404)


async def write(writer, status, content_type, body):
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
