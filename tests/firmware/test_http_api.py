"""The device's local HTTP API (fp.http_api): real HTTP requests to the real firmware under the unix port."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import cbor2
import pytest

from fp import messages
from host_agent import wire
from host_agent.ingest.verifier import Verifier
from host_agent.owner import Owner
from tests.firmware.conftest import counter_board, owner_command, wait_for
from tests.helpers import run_firmware_script


def _get(device, path: str) -> tuple[int, str, bytes]:
    url = f"http://127.0.0.1:{device.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def _raw(device, data: bytes, shut_write: bool = False, timeout_s: float = 6.0) -> tuple[int, float]:
    """Send raw bytes, read the answer to the end; return its status code (0: none) and the time taken."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", device.http_port), timeout=timeout_s) as connection:
        if data:
            connection.sendall(data)
        if shut_write:
            connection.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := connection.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass  # closed with our request unread (a busy device): the kernel may drop its answer
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.0 ") else 0
    return status, time.monotonic() - started


def _board() -> dict:
    board = counter_board(0.2)
    board["sensors"].append({"name": "slow", "type": "counter", "interval_s": 3600})  # one reading, ever
    return board


@pytest.fixture
def running(mosquitto, collector_factory, sim_devices, tmp_path):
    vendor = collector_factory(mosquitto)
    owner = Owner(tmp_path / "owner.key")
    device = sim_devices(
        tmp_path / "flash", (mosquitto.host, mosquitto.port), _board(), owner_key=owner.public
    ).start()
    device_id = device.device_id()
    wait_for(lambda: len(vendor.values("n")) >= 3 and vendor.values("slow"), 15, "readings at the vendor")
    return vendor, owner, device, device_id


def test_card_latest_readings_and_status_over_http_verify_with_pynacl(running):
    vendor, _, device, device_id = running
    status, content_type, card_bytes = _get(device, "/card")
    assert status == 200 and content_type.startswith("application/cose")
    third_party = Verifier()  # holds nothing but what HTTP gave it
    card = third_party.learn_card(card_bytes)
    assert card.device_id == device_id and card.board == "sim"

    with vendor.lock:
        published_before = max(r.seq for r in vendor.readings if r.body[0][0] == "n")
    status, content_type, body = _get(device, "/readings/latest")
    assert status == 200 and content_type == "application/cbor"
    latest = cbor2.loads(body)
    assert set(latest) == {"n", "slow"}
    for name, raw in latest.items():
        reading = third_party.check_detached(raw, "reading")
        wire.nacl_verify(card.public_key, reading.message.to_be_signed(), reading.message.signature)
        assert reading.device_id == device_id and reading.body[0][0] == name
    # the newest: taken no earlier than anything the vendor had before the request...
    assert messages.parse_device_message(latest["n"], "reading").seq >= published_before
    assert messages.parse_device_message(latest["slow"], "reading").body[0][2] == 0
    # ...and the very bytes that went over MQTT
    wait_for(lambda: latest["n"] in {r.raw for r in vendor.readings}, 5, "the same reading over MQTT")

    status, content_type, one = _get(device, "/readings/latest/slow")
    assert status == 200 and content_type.startswith("application/cose") and one == latest["slow"]

    status, content_type, status_bytes = _get(device, "/status")
    assert status == 200 and content_type.startswith("application/cose")
    signed_status = third_party.check_detached(status_bytes, "status")
    assert signed_status.body["state"] == "online" and signed_status.body["fw"]
    assert "mode" not in signed_status.body  # only a safe-mode device says so


def test_bad_requests_get_errors_within_the_timeouts_and_the_device_keeps_publishing(running):
    vendor, owner, device, device_id = running
    before = len(vendor.values("n"))

    assert _get(device, "/nope")[0] == 404
    assert _get(device, "/readings/latest/ghost")[0] == 404
    assert _raw(device, b"POST /card HTTP/1.0\r\nContent-Length: 0\r\n\r\n")[0] == 405
    assert _raw(device, b"DELETE /status HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 405
    assert _raw(device, b"hello\r\n\r\n")[0] == 400
    assert _raw(device, b"GET /card\r\n\r\n")[0] == 400  # no version
    assert _raw(device, b"GET /\xff\xfe HTTP/1.0\r\n\r\n")[0] == 400  # not text
    assert _raw(device, b"GET /card HTTP/1.0\r\n", shut_write=True)[0] == 400  # closed mid-head
    # oversized: a head that never ends within the 1024 bytes the device reads
    head = b"GET /card HTTP/1.0\r\nX-Padding: "
    assert _raw(device, head + b"a" * (1024 - len(head)))[0] == 431
    # slow: a client that stops mid-request, or never says anything, is answered 408 after ~2 s
    status, took_s = _raw(device, b"GET /ca")
    assert status == 408 and 1.5 < took_s < 4.0
    # more than two at once: the third is turned away at once, while two silent ones hold theirs
    silent = [socket.create_connection(("127.0.0.1", device.http_port)) for _ in range(2)]
    try:
        time.sleep(0.2)
        status, took_s = _raw(device, b"GET /card HTTP/1.0\r\n\r\n")
        assert status in (503, 0) and took_s < 1.0  # 0: reset, when the request beat the close
        for connection in silent:
            connection.settimeout(5)
            assert connection.recv(64).startswith(b"HTTP/1.0 408 ")
    finally:
        for connection in silent:
            connection.close()

    # none of it stopped the device: readings kept coming, in order, and the API still answers
    wait_for(lambda: len(vendor.values("n")) >= before + 20, 15, "readings during the bad requests")
    values = vendor.values("n")
    assert values == list(range(values[0], values[0] + len(values)))
    assert _get(device, "/card")[0] == 200
    info = owner_command(owner, vendor, device_id, "get-info", {})["result"]
    assert info["http"] == [1, 13]  # [served, refused]: every bad request above was counted


def test_http_port_zero_turns_the_api_off(mosquitto, collector_factory, sim_devices, tmp_path):
    vendor = collector_factory(mosquitto)
    device = sim_devices(
        tmp_path / "flash", (mosquitto.host, mosquitto.port), counter_board(), http_port=0
    ).start()
    device.device_id()
    wait_for(lambda: len(vendor.values("n")) >= 3, 15, "readings")
    assert not [line for line in device.log if "http" in line]


# The server alone, on a stand-in device, answering two requests it serves through asyncio's own
# client in the same loop, each taken after the answer was read and the connection closed.
REQUEST_LIFETIME = """
import asyncio, sys
from fp.http_api import HttpApi
class Device:
    latest = {"env": b"reading"}
    def card(self):  # answered while the handler is loaded
        return b"loaded" if "fp.http_request" in sys.modules else b"not loaded"
async def get(path):
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    writer.write(b"GET %s HTTP/1.0\\r\\n\\r\\n" % path)
    await writer.drain()
    answer = await reader.read(-1)
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.1)  # the server's side of the connection closed too
    return answer.split(b"\\r\\n")[0].decode(), answer.split(b"\\r\\n\\r\\n")[1]
async def main():
    api = HttpApi(Device(), print)
    await api.start("127.0.0.1", PORT)
    print("fp.http_request" in sys.modules)
    for path in (b"/card", b"/readings/latest/env", b"/nope"):
        print(await get(path), "fp.http_request" in sys.modules)
    print(api.served, api.refused, api.clients)
asyncio.run(main())
"""


def test_a_request_s_handler_is_loaded_for_it_and_dropped_after(tmp_path):
    """The listening server stays; fp.http_request, which reads and answers a request, is in the
    heap only while one is served (a board's requests are rare)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = REQUEST_LIFETIME.replace("PORT", str(port))
    lines = run_firmware_script("micropython", script, cwd=tmp_path).strip().splitlines()
    assert lines[-5:] == [
        "False",
        "('HTTP/1.0 200 OK', b'loaded') False",
        "('HTTP/1.0 200 OK', b'reading') False",
        "('HTTP/1.0 404 Not Found', b'Not Found\\n') False",
        "2 1 0",
    ], lines
