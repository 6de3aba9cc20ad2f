"""Every bad input refused and nothing leaked (issue 16), on a real agent, broker and SQLite file.

Each test is a row of docs/security.md's table "Hostile input": what an attacker sends, and the
refusal (a 4xx, never a 500) or the absence of the secret that shows the agent held.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import threading
import time

import httpx
import pytest

from host_agent.api import tokens
from tests.agent.conftest import BOTH_STORES, FakeDevice, Publisher, api, wait_for

pytestmark = BOTH_STORES

MB = 1024 * 1024


def _peak_rss_reset() -> None:
    """Make the process's peak resident size (VmHWM) its current size (Linux: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as file:
        return int(re.search(r"VmHWM:\s+(\d+) kB", file.read()).group(1)) * 1024


def _raw_post(port: int, head: bytes, chunks, max_chunks: int) -> int:
    """Send a request head, then body chunks until the server answers or closes; return the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for _ in range(max_chunks):
                sock.sendall(next(chunks))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: the rest was never taken
        answer = b""
        try:
            while b"\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    return int(answer.split(b" ", 2)[1])


def test_a_100_mb_post_without_a_token_is_refused_before_it_is_read_and_memory_stays_flat(start_agent):
    agent = start_agent()
    port = agent.api_port
    megabyte = b"x" * MB
    chunk_head = f"{MB:x}\r\n".encode()

    def plain():
        while True:
            yield megabyte

    def chunked():
        while True:
            yield chunk_head + megabyte + b"\r\n"

    _peak_rss_reset()
    before = _peak_rss_bytes()
    declared = (
        b"POST /routes HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"Content-Length: 104857600\r\n\r\n"
    )
    assert _raw_post(port, declared, plain(), 100) == 413
    streamed = (
        b"POST /devices HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    assert _raw_post(port, streamed, chunked(), 100) == 413
    risen = _peak_rss_bytes() - before
    assert risen < 20 * MB, f"the agent's memory rose {risen / MB:.0f} MB for refused bodies"
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_the_body_cap_is_configurable_and_a_long_purpose_is_refused_under_it(start_agent, webhook):
    agent = start_agent(api={"max_body_bytes": 8 * MB})
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    route = {"name": "big", "destination": {"type": "webhook", "url": webhook.url}, "needs_agreement": False}
    too_big = admin.post("/routes", json=dict(route, terms={"purpose": "p" * (9 * MB)}))
    assert too_big.status_code == 413
    too_long = admin.post("/routes", json=dict(route, terms={"purpose": "p" * (2 * MB)}))
    assert too_long.status_code == 422 and "purpose" in too_long.text
    assert admin.post("/routes", json=dict(route, terms={"purpose": "p" * 500})).status_code == 201
    entries = admin.get("/audit").json()["entries"]
    assert max(len(json.dumps(e)) for e in entries) < 4096
    stored = agent.store.query("SELECT SUM(LENGTH(data)) FROM audit")[0][0]
    stored += agent.store.query("SELECT SUM(LENGTH(spec)) FROM routes")[0][0]
    assert stored < MB


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/readings?after_id=9223372036854775808", None),
        ("GET", "/readings?after_id=-1", None),
        ("GET", "/readings?since_s=nan", None),
        ("GET", "/readings?until_s=inf", None),
        ("GET", "/audit?after_seq=99999999999999999999", None),
        ("GET", "/rejections?limit=100000", None),
        ("POST", "/devices/DEVICE/commands", '{"op": "get-info", "timeout_s": NaN}'),
        ("POST", "/devices/DEVICE/commands", '{"op": "get-info", "timeout_s": Infinity}'),
        ("POST", "/devices/DEVICE/commands", '{"op": "get-info", "args": ' + "[" * 200 + "]" * 200 + "}"),
        ("POST", "/devices/DEVICE/commands", '{"op": "x", "args": {"a": ' + "[" * 200 + "]" * 200 + "}}"),
        (
            "POST",
            "/devices/DEVICE/commands",
            '{"op": "set-interval", "args": {"n": 99999999999999999999999}}',
        ),
        ("POST", "/devices/DEVICE/commands", '{"op": "get-info", "args": {"a": "' + "x" * 4000 + '"}}'),
        (
            "POST",
            "/routes",
            '{"name": "r", "destination": {"type": "file", "path": "f"}, "terms": {"expires_s": NaN}}',
        ),
        (
            "POST",
            "/routes",
            '{"name": "r", "destination": {"type": "file", "path": "f"}, "terms": {"retention_days": -Infinity}}',
        ),
        (
            "POST",
            "/routes",
            '{"name": "r", "destination": {"type": "file", "path": "f"}, "terms": {"expires_s": 1e300}}',
        ),
        ("POST", "/routes", '{"name": "r", "destination": {"type": "mqtt", "host": "h", "port": NaN}}'),
        (
            "PUT",
            "/routes/r",
            '{"destination": {"type": "file", "path": "f"}, "terms": {"retention_days": NaN}}',
        ),
    ],
)
def test_out_of_range_numbers_nan_and_deep_nesting_get_a_4xx_never_a_500(
    start_agent, publisher, method, path, body
):
    agent = start_agent(auto_accept=True, command_timeout_s=0.5)
    device = FakeDevice(os.urandom(32))
    publisher.publish(device.topic("card"), device.card(), retain=True)
    wait_for(lambda: agent.store.device(device.device_id), 10, "the device")
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    assert (
        admin.post("/routes", json={"name": "r", "destination": {"type": "file", "path": "f"}}).status_code
        == 201
    )
    before = admin.get("/routes").json()
    response = admin.request(
        method,
        path.replace("DEVICE", device.device_id),
        content=body,
        headers={"content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert admin.get("/routes").json() == before  # nothing changed
    assert admin.get("/healthz").status_code == 200


def test_a_nul_byte_in_a_path_or_query_is_refused_with_400_on_either_store(start_agent, publisher):
    """PostgreSQL cannot hold a NUL in a text: `GET /readings?metric=%00` was a 500 there."""
    agent = start_agent(auto_accept=True)
    device = FakeDevice(os.urandom(32))
    publisher.publish(device.topic("card"), device.card(), retain=True)
    wait_for(lambda: agent.store.device(device.device_id), 10, "the device")
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    for path in (
        "/readings?metric=temp%00",
        f"/readings?device={device.device_id}%00",
        "/devices/%00x",
        "/routes/r%00",
        "/audit?kind=%00",
    ):
        response = admin.get(path)
        assert response.status_code == 400 and "NUL" in response.text, (path, response.status_code)
    # a literal "%00" (written %2500) is text like any other
    assert admin.get("/readings?metric=%2500").status_code == 200
    assert admin.get("/healthz").status_code == 200


def test_a_stream_ends_within_a_second_of_its_token_revocation(start_agent):
    agent = start_agent()
    token = tokens.issue(agent.store, "watcher", "read")
    ended = threading.Event()
    revoked_at: list[float] = []

    def watch():
        url = f"http://127.0.0.1:{agent.api_port}/stream"
        with httpx.stream("GET", url, headers={"authorization": f"Bearer {token}"}, timeout=30) as stream:
            for _ in stream.iter_raw():
                pass
        ended.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait_for(lambda: agent.live, 5, "the stream open")
    time.sleep(0.3)
    assert not ended.is_set()
    tokens.revoke(agent.store, "watcher")
    revoked_at.append(time.monotonic())
    assert ended.wait(5), "the stream kept going after its token was revoked"
    assert time.monotonic() - revoked_at[0] < 1.5
    wait_for(lambda: not agent.live, 2, "the stream's queue dropped")


def test_a_device_limited_admin_token_makes_and_changes_routes_only_for_its_devices(
    start_agent, publisher, webhook
):
    agent = start_agent(auto_accept=True)
    mine, theirs = FakeDevice(os.urandom(32)), FakeDevice(os.urandom(32))
    for device in (mine, theirs):
        publisher.publish(device.topic("card"), device.card(), retain=True)
    wait_for(lambda: len(agent.store.devices()) == 2, 10, "two devices")
    limited = api(agent, tokens.issue(agent.store, "mine", "admin", [mine.device_id]))
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    hook = {"type": "webhook", "url": webhook.url}

    for devices in (["*"], [theirs.device_id], [mine.device_id, theirs.device_id]):
        refused = limited.post("/routes", json={"name": "grab", "destination": hook, "devices": devices})
        assert refused.status_code == 403, (devices, refused.text)
    assert limited.post("/routes", json={"name": "grab", "destination": hook}).status_code == 403  # default *
    assert agent.store.routes() == []

    assert (
        admin.post("/routes", json={"name": "all", "destination": hook, "needs_agreement": False}).status_code
        == 201
    )
    own = limited.post(
        "/routes",
        json={"name": "own", "destination": hook, "devices": [mine.device_id], "needs_agreement": False},
    )
    assert own.status_code == 201
    widen = limited.put("/routes/own", json={"destination": hook, "devices": ["*"]})
    assert widen.status_code == 403
    assert (
        limited.put("/routes/all", json={"destination": hook, "devices": [mine.device_id]}).status_code == 400
    )
    assert limited.delete("/routes/all").status_code == 400
    assert [r["name"] for r in limited.get("/routes").json()] == ["own"]
    assert [g["route"] for g in limited.get("/grants").json()] == ["own"]
    assert {r.name: r.devices for r in agent.store.routes()} == {"all": ["*"], "own": [mine.device_id]}

    # the route of its device carries its device's readings, and nothing of the other's
    publisher.publish(theirs.topic("reading"), theirs.reading())
    publisher.publish(mine.topic("reading"), mine.reading())
    wait_for(lambda: agent.store.count_readings() == 2, 10, "both readings")
    wait_for(lambda: len(webhook.bodies) == 3, 10, "two forwards for 'all' and one for 'own'")


@pytest.mark.parametrize(
    "destination,name,status,words",
    [
        ({"type": "mqtt", "host": "h", "port": 99999}, "r", 400, "port must be 1-65535"),
        ({"type": "mqtt", "host": "h", "port": 0}, "r", 400, "port must be 1-65535"),
        ({"type": "homeassistant", "host": "h", "port": -1}, "r", 400, "port must be 1-65535"),
        ({"type": "webhook", "url": "file:///etc/passwd"}, "r", 400, "http:// or https://"),
        ({"type": "webhook", "url": "gopher://h/"}, "r", 400, "http:// or https://"),
        ({"type": "webhook", "url": "http://"}, "r", 400, "http:// or https://"),
        ({"type": "webhook", "url": "http://h:99999/"}, "r", 400, "http:// or https://"),
        ({"type": "file", "path": "../escape.jsonl"}, "r", 400, "inside"),
        ({"type": "file", "path": "a/../../escape.jsonl"}, "r", 400, "inside"),
        ({"type": "file", "path": "/etc/cron.d/x"}, "r", 400, "inside"),
        ({"type": "file", "path": "."}, "r", 400, "inside"),
        ({"type": "file", "path": "x\x00y"}, "r", 400, "NUL"),
        ({"type": "mqtt", "host": "h" * 300}, "r", 400, "longer than"),
        ({"type": "webhook", "url": "http://h/"}, "a\x00b", 422, "name"),
        ({"type": "webhook", "url": "http://h/"}, "../x", 422, "name"),
        ({"type": "webhook", "url": "http://h/"}, "a/b", 422, "name"),
        ({"type": "webhook", "url": "http://h/"}, "", 422, "name"),
        ({"type": "webhook", "url": "http://h/"}, "x" * 65, 422, "name"),
    ],
)
def test_routes_with_bad_ports_schemes_paths_or_names_are_refused(
    start_agent, destination, name, status, words
):
    agent = start_agent()
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    response = admin.post("/routes", json={"name": name, "destination": destination})
    assert response.status_code == status and words in response.text, response.text
    assert agent.store.routes() == []


def test_a_file_route_writes_inside_files_dir_and_the_cli_store_name_check_agrees(
    start_agent, publisher, tmp_path
):
    files = tmp_path / "exports"
    agent = start_agent(auto_accept=True, files_dir=str(files))
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    device = FakeDevice(os.urandom(32))
    inside = admin.post(
        "/routes", json={"name": "f", "destination": {"type": "file", "path": "sub/out.jsonl"}}
    )
    assert inside.status_code == 201, inside.text
    absolute = admin.post(
        "/routes", json={"name": "g", "destination": {"type": "file", "path": str(files / "abs.jsonl")}}
    )
    assert absolute.status_code == 201, absolute.text
    paths = {r["name"]: r["destination"]["path"] for r in admin.get("/routes").json()}
    assert paths == {"f": str(files.resolve() / "sub" / "out.jsonl"), "g": str(files.resolve() / "abs.jsonl")}
    publisher.publish(device.topic("card"), device.card(), retain=True)
    publisher.publish(device.topic("reading"), device.reading())
    wait_for(
        lambda: (files / "sub" / "out.jsonl").exists() and (files / "abs.jsonl").exists(), 10, "both files"
    )
    # a link inside the folder that points out of it is resolved, and refused
    (files / "link").symlink_to(tmp_path)
    escape = admin.post(
        "/routes", json={"name": "h", "destination": {"type": "file", "path": "link/x.jsonl"}}
    )
    assert escape.status_code == 400 and "inside" in escape.text


def test_data_dir_is_0700_and_database_files_0600_under_umask_022(
    start_agent, device, publisher, tmp_path, store_url
):
    if store_url is not None:
        pytest.skip("the SQLite store's files; PostgreSQL keeps its own, as its server's user")
    previous = os.umask(0o022)
    try:
        agent = start_agent(auto_accept=True)
        publisher.publish(device.topic("card"), device.card(), retain=True)
        publisher.publish(device.topic("reading"), device.reading())
        wait_for(lambda: agent.store.count_readings() == 1, 10, "a reading stored")
    finally:
        os.umask(previous)
    data_dir = tmp_path / "agent"
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    files = [
        agent.store.path,
        *(agent.store.path.with_name(agent.store.path.name + s) for s in ("-wal", "-shm")),
    ]
    for path in files:
        assert path.exists(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_an_existing_world_readable_database_and_folder_are_closed_at_start(start_agent, tmp_path, store_url):
    if store_url is not None:
        pytest.skip("the SQLite store's files; PostgreSQL keeps its own, as its server's user")
    data_dir = tmp_path / "agent"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    for suffix in ("", "-wal"):
        path = data_dir / f"firstparty.db{suffix}"
        path.touch()
        os.chmod(path, 0o644)
    agent = start_agent()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for suffix in ("", "-wal"):
        assert stat.S_IMODE((data_dir / f"firstparty.db{suffix}").stat().st_mode) == 0o600
    assert agent.store.routes() == []


def test_route_and_command_passwords_are_never_in_the_audit_nor_in_any_answer(
    start_agent, publisher, tmp_path
):
    agent = start_agent(auto_accept=True, command_timeout_s=0.5)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    device = FakeDevice(os.urandom(32))
    publisher.publish(device.topic("card"), device.card(), retain=True)
    wait_for(lambda: agent.store.device(device.device_id), 10, "the device")
    first, second = "first-S3cret-pw", "second-S3cret-pw"
    destination = {"type": "mqtt", "host": "127.0.0.1", "port": 1, "username": "u", "password": first}
    answers = [admin.post("/routes", json={"name": "m", "destination": destination})]
    answers.append(admin.put("/routes/m", json={"destination": dict(destination, password=second)}))
    answers.append(admin.put("/routes/m", json={"destination": dict(destination, password=second)}))
    answers.append(admin.post("/routes", json={"name": "n", "destination": dict(destination, port="x")}))
    command = {"destinations": [{"name": "b", "host": "127.0.0.1", "user": "u", "password": first}]}
    answers.append(
        admin.post(f"/devices/{device.device_id}/commands", json={"op": "set-destinations", "args": command})
    )
    for path in ("/routes", "/grants", "/audit", "/status", "/devices"):
        answers.append(admin.get(path))
    assert [a.status_code for a in answers[:4]] == [201, 200, 200, 400]
    for answer in answers:
        assert first not in answer.text and second not in answer.text, answer.request.url
    [route] = [r for r in admin.get("/routes").json() if r["is_active"]]
    assert route["destination"]["has_password"] is True and "password" not in route["destination"]
    entries = admin.get("/audit").json()["entries"]
    changes = [e["data"]["spec"]["destination"] for e in entries if e["kind"] == "route-changed"]
    assert [c["password_changed"] for c in changes] == [True, False]
    [added] = [e["data"]["spec"]["destination"] for e in entries if e["kind"] == "route-added"]
    assert added["has_password"] is True
    [sent] = [e["data"]["args"] for e in entries if e["kind"] == "command"]
    assert sent["destinations"][0]["has_password"] is True
    # the store keeps the password, for the outbox, in a file only the agent's user reads
    assert agent.store.routes()[0].destination["password"] == second
    raw = "\n".join(row[0] for row in agent.store.query("SELECT data FROM audit"))
    assert first not in raw and second not in raw


def test_a_1_mb_message_is_counted_oversized_in_rejections_status_and_metrics(start_agent, device, mosquitto):
    agent = start_agent(auto_accept=True)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    sender = Publisher(mosquitto.host, mosquitto.port)
    try:
        sender.publish(device.topic("card"), device.card(), retain=True)
        sender.publish(device.topic("reading"), b"\xd2" * MB)
        sender.publish(device.topic("reading"), device.reading())  # the link goes on after it
    finally:
        sender.close()
    wait_for(lambda: agent.store.count_readings() == 1, 10, "the reading after the big message")
    wait_for(lambda: admin.get("/rejections").json()["counts"].get("oversized") == 1, 10, "oversized counted")
    [recent] = admin.get("/rejections").json()["recent"]
    assert recent["reason"] == "oversized" and recent["topic"] == device.topic("reading")
    assert str(MB) in recent["detail"]
    assert admin.get("/status").json()["rejected"] == {"oversized": 1}
    assert 'firstparty_rejected_total{reason="oversized"} 1.0' in admin.get("/metrics").text
