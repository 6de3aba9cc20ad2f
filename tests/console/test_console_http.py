"""The console over plain HTTP on a real agent and broker: sessions, CSRF, scopes, accounts,
escaping, sign-in links, and the downsampled series the plots draw."""

from __future__ import annotations

import json
import os
import re
import socket
import time

import httpx
import pytest

from host_agent import config as agent_config
from host_agent.api import tokens
from host_agent.console import auth
from tests.agent.conftest import (
    BOTH_STORES,
    FakeDevice,
    add_own_webhook,
    agent_settings,
    agent_toml,
    api,
    proffer_body,
    serve_process,
    wait_for,
)
from tests.console.conftest import accept_device, publish_card, reading_at

# every page reads the store: each test runs on SQLite and on PostgreSQL
pytestmark = BOTH_STORES

XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def test_pages_answer_401_with_the_sign_in_page_without_a_session_or_with_a_forged_cookie(
    start_agent, console_client
):
    agent = start_agent()
    anonymous = console_client(agent)
    for path in ("/", "/console/routes", "/console/records", "/console/devices/" + "a" * 24):
        response = anonymous.get(path)
        assert response.status_code == 401 and 'action="/console/login"' in response.text, path
    anonymous.http.cookies.set(auth.COOKIE, "forged-" + "x" * 40)
    forged = anonymous.get("/")
    assert forged.status_code == 401 and "your session ended" in forged.text
    assert anonymous.get("/console/series", params={"device": "a" * 24, "metric": "t"}).status_code == 401
    assert anonymous.post("/console/tokens", {"name": "sneaky", "scope": "admin"}).status_code == 401
    assert all(t.name != "sneaky" for t in agent.store.tokens())
    wrong = anonymous.http.post("/console/login", data={"token": "fpt_wrong"})
    assert wrong.status_code == 401 and "unknown or revoked token" in wrong.text
    # the API keeps its paths and its bearer tokens beside the console
    assert httpx.get(f"{anonymous.base_url}/devices").status_code == 401
    assert httpx.get(f"{anonymous.base_url}/healthz").status_code == 200
    missing = httpx.get(f"{anonymous.base_url}/no-such-route")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}


def test_session_cookie_is_httponly_and_samesite_strict_and_pages_forbid_framing(start_agent, console_client):
    agent = start_agent()
    client = console_client(agent)
    response = client.http.post("/console/login", data={"token": tokens.issue(agent.store, "me", "admin")})
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    page = client.get("/")
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_a_change_without_the_csrf_secret_or_from_another_site_is_refused_and_changes_nothing(
    start_agent, publisher, device, console_client
):
    agent = start_agent()
    publish_card(publisher, device)
    wait_for(lambda: agent.store.device(device.device_id), 10, "the pending device")
    admin = console_client(agent, tokens.issue(agent.store, "admin", "admin"))
    path = f"/console/devices/{device.device_id}/accept"
    assert admin.post(path, csrf=False).status_code == 403
    assert admin.post(path, {"csrf": "0" * 43}, csrf=False).status_code == 403
    assert admin.http.post(path, headers={"x-csrf-token": ""}).status_code == 403
    other_site = admin.post(path, headers={"origin": "http://evil.example"})
    assert other_site.status_code == 403 and "another site" in other_site.text
    assert agent.store.device(device.device_id).state == "pending"
    before = len(agent.store.tokens())
    assert admin.post("/console/tokens", {"name": "x", "scope": "admin"}, csrf=False).status_code == 403
    assert len(agent.store.tokens()) == before
    # the same request with the session's secret goes through
    accepted = admin.post(path, follow_redirects=False)
    assert accepted.status_code == 303 and agent.store.device(device.device_id).state == "accepted"
    kinds = [e["kind"] for e in agent.store.audit_entries()]
    assert kinds.count("device-accepted") == 1


def test_a_read_token_sees_no_buttons_and_every_change_it_posts_is_refused(
    start_agent, publisher, device, console_client
):
    agent = start_agent()
    accept_device(
        agent, publisher, device, [reading_at(device, [("temp", "Cel", 20.0)], time.time())], timeout_s=10
    )
    pending = FakeDevice(os.urandom(32))
    publish_card(publisher, pending)
    wait_for(lambda: agent.store.device(pending.device_id), 10, "the pending device")
    reader = console_client(agent, tokens.issue(agent.store, "reader", "read"))
    devices = reader.get("/")
    assert devices.status_code == 200 and device.device_id in devices.text
    assert pending.device_id not in devices.text  # pending devices do not exist for read tokens
    page = reader.get(f"/console/devices/{device.device_id}")
    assert page.status_code == 200
    main = page.text.split("<main>")[1]
    assert "<button" not in main.replace('<button type="button" class="range', "")  # only the range picker
    assert "<form" not in main and "Commands" not in main and "Where the data goes" not in page.text
    assert reader.get("/console/routes").status_code == 403
    assert reader.get("/console/records").status_code == 403
    refused = [
        reader.post(f"/console/devices/{pending.device_id}/accept"),
        reader.post(f"/console/devices/{device.device_id}/command", {"op": "reboot"}),
        reader.post(f"/console/devices/{device.device_id}/rename", {"name": "mine"}),
        reader.post(
            "/console/routes", {"device": device.device_id, "metric": "temp", "mode": "in-addition-to"}
        ),
        reader.post("/console/tokens", {"name": "more", "scope": "admin"}),
        reader.post("/console/tokens/reader/revoke"),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403, 403, 403]
    assert all("read-only" in r.text for r in refused)
    assert agent.store.routes() == [] and agent.store.device(device.device_id).name is None
    assert [t.name for t in agent.store.tokens() if t.is_live] == ["reader"]


def test_vendor_account_sees_only_its_devices_and_another_accounts_device_is_not_found(
    start_agent, publisher, console_client
):
    agent = start_agent(role="vendor", auto_accept=True)
    alice, bob = FakeDevice(os.urandom(32)), FakeDevice(os.urandom(32))
    alice_owner, bob_owner = "a" * 24, "b" * 24
    for device, owner in ((alice, alice_owner), (bob, bob_owner)):
        publish_card(publisher, device, owner)
        publisher.publish(device.topic("reading"), reading_at(device, [("temp", "Cel", 20.0)], time.time()))
    wait_for(lambda: agent.store.count_readings() == 2, 10, "both readings")
    client = console_client(agent, tokens.issue(agent.store, "alice", "admin", account=alice_owner))
    listing = client.get("/")
    assert alice.device_id in listing.text and bob.device_id not in listing.text
    assert client.get(f"/console/devices/{alice.device_id}").status_code == 200
    theirs = client.get(f"/console/devices/{bob.device_id}")
    assert theirs.status_code == 404 and bob.device_id in theirs.text  # the id it asked for, nothing else
    assert "temp" not in theirs.text
    assert (
        client.get("/console/series", params={"device": bob.device_id, "metric": "temp"}).status_code == 404
    )
    assert client.post(f"/console/devices/{bob.device_id}/rename", {"name": "x"}).status_code == 404
    assert client.post(f"/console/devices/{bob.device_id}/command", {"op": "reboot"}).status_code == 404
    routes = client.post("/console/routes", {"device": bob.device_id, "metric": "temp", "mode": "vendor"})
    assert routes.status_code == 404
    assert agent.store.device(bob.device_id).name is None
    tokens.issue(agent.store, "bob", "admin", account=bob_owner)
    assert client.post("/console/tokens/bob/revoke").status_code == 403
    records = client.get("/console/records").text
    assert "<td>alice</td>" in records and "<td>bob</td>" not in records  # an account sees its own tokens
    assert [t.name for t in agent.store.tokens() if t.is_live] == [
        "alice",
        "bob",
    ]


def test_a_device_name_with_markup_is_shown_as_text_on_every_page(
    start_agent, publisher, device, console_client
):
    agent = start_agent()
    accept_device(
        agent, publisher, device, [reading_at(device, [("temp", "Cel", 20.0)], time.time())], timeout_s=10
    )
    admin = console_client(agent, tokens.issue(agent.store, "admin", "admin"))
    renamed = admin.post(f"/console/devices/{device.device_id}/rename", {"name": XSS}, follow_redirects=False)
    assert renamed.status_code == 303
    assert agent.store.device(device.device_id).name == XSS
    for path in ("/", f"/console/devices/{device.device_id}", "/console/routes", "/console/records"):
        html = admin.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
    assert (
        "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"
        in admin.get("/").text
    )
    too_long = admin.post(f"/console/devices/{device.device_id}/rename", {"name": "x" * 65})
    assert too_long.status_code == 400


def test_a_revoked_tokens_session_and_open_stream_end_at_once(start_agent, publisher, device, console_client):
    agent = start_agent()
    accept_device(agent, publisher, device)
    client = console_client(agent, tokens.issue(agent.store, "soon-gone", "read"))
    assert client.get("/").status_code == 200
    with client.http.stream("GET", "/console/stream", params={"device": device.device_id}) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith(": firstparty console live readings")
        tokens.revoke(agent.store, "soon-gone")
        started = time.monotonic()
        ending = [line for line in lines if line.startswith("event:")]
        assert ending == ["event: signed-out"] and time.monotonic() - started < 5
    assert client.get("/").status_code == 401
    assert client.get("/console/session").status_code == 401


def test_a_sign_in_link_signs_in_once_and_not_after_it_expires(start_agent, console_client):
    agent = start_agent()
    token = tokens.issue(agent.store, "linked", "admin")
    code = auth.create_link_code(agent.store, token)
    client = console_client(agent)
    first = client.get(auth.link_url("", code))
    assert first.status_code == 200 and first.headers["set-cookie"].startswith(auth.COOKIE)
    assert 'signed in as <b id="who-name">linked</b>' in client.get("/").text
    again = console_client(agent).get(auth.link_url("", code))
    assert again.status_code == 401 and "set-cookie" not in again.headers
    old = auth.create_link_code(agent.store, token, now_s=time.time() - auth.LINK_TTL_S - 1)
    assert console_client(agent).get(auth.link_url("", old)).status_code == 401
    revoked_link = auth.create_link_code(agent.store, token)
    tokens.revoke(agent.store, "linked")
    assert console_client(agent).get(auth.link_url("", revoked_link)).status_code == 401
    assert client.get("/").status_code == 401


def test_series_buckets_hold_min_avg_max_and_the_hourly_sums_agree_with_the_readings(
    start_agent, publisher, device, store_url
):
    agent = start_agent()
    now = int(time.time() // 3600 * 3600)
    # 3 days of readings every 20 minutes, values 0..N-1: the exact aggregates are known
    times = [now - 3 * 86400 + i * 1200 for i in range(3 * 72)]
    readings = [
        reading_at(device, [("temp", "Cel", float(i)), ("ok", None, True)], t) for i, t in enumerate(times)
    ]
    accept_device(agent, publisher, device, readings, timeout_s=10)
    reader = api(agent, tokens.issue(agent.store, "reader", "read"))
    path = f"/devices/{device.device_id}/series"

    def fetch(**params):
        response = reader.get(path, params={"metric": "temp", **params})
        assert response.status_code == 200, response.text
        return response.json()

    wait_for(
        lambda: sum(fetch(since_s=now - 4 * 86400, until_s=now + 1)["count"]) == len(times), 10, "indexed"
    )
    fine = fetch(since_s=now - 3 * 86400, until_s=now, points=216)  # 1,200 s steps: one reading each
    assert (
        fine["step_s"] == 1200
        and fine["count"] == [1] * 216
        and fine["avg"] == [float(i) for i in range(216)]
    )
    coarse = fetch(since_s=now - 3 * 86400, until_s=now, points=3)  # one day per bucket: the hourly sums
    assert coarse["step_s"] == 86400 and coarse["count"] == [72, 72, 72]
    assert coarse["min"] == [0.0, 72.0, 144.0] and coarse["max"] == [71.0, 143.0, 215.0]
    assert coarse["avg"] == [35.5, 107.5, 179.5]
    assert len(fetch(since_s=now - 3 * 86400, until_s=now, points=7)["t"]) <= 7
    assert reader.get(path, params={"metric": "ok"}).json()["count"] == []  # booleans are not plotted
    for params, status in (
        ({"since_s": now, "until_s": now - 1}, 400),
        ({"since_s": 0, "until_s": 1e12}, 400),
        ({"points": 0}, 422),
        ({"points": 2001}, 422),
        ({"since_s": "nan"}, 400),
    ):
        assert reader.get(path, params={"metric": "temp", **params}).status_code == status, params
    limited = api(agent, tokens.issue(agent.store, "hum-only", "read", metrics=["hum"]))
    assert limited.get(path, params={"metric": "temp"}).status_code == 403
    assert reader.get(f"/devices/{'a' * 24}/series", params={"metric": "temp"}).status_code == 404
    if store_url is None:  # PostgreSQL's plans at a realistic size: tests/agent/test_postgres_indexes.py
        plans = agent.store.query_plans(device.device_id, "temp", now - 86400, now)
        assert "SEARCH series USING PRIMARY KEY" in plans["series buckets"][0], plans
        assert "SEARCH series_hour USING PRIMARY KEY" in plans["series hourly buckets"][0], plans
        assert not [
            line
            for plan in plans.values()
            for line in plan
            if re.match(r"SCAN (messages|series|series_hour|devices)\b", line)
        ], plans


def test_console_route_changes_are_the_agents_signed_and_audited_routes(
    start_agent, publisher, device, console_client, webhook
):
    agent = start_agent(command_timeout_s=1.0)
    accept_device(
        agent, publisher, device, [reading_at(device, [("temp", "Cel", 20.0)], time.time())], timeout_s=10
    )
    admin = console_client(agent, tokens.issue(agent.store, "admin", "admin"))
    wait_for(lambda: "temp" in admin.get("/console/routes").text, 10, "the temp stream listed")
    share = {
        "device": device.device_id,
        "metric": "temp",
        "mode": "in-addition-to",
        "type": "webhook",
        "url": webhook.url,
        "recipient": "co-op",
        "purpose": "study",
        "until": "2099-12-31",
    }
    assert admin.post("/console/routes", share, follow_redirects=False).status_code == 303
    [route] = agent.store.routes()
    assert route.terms == {"recipient": "co-op", "purpose": "study", "expires_s": 4102444799}
    assert route.grant_hex and route.devices == [device.device_id] and route.metrics == ["temp"]
    page = admin.get("/console/routes").text
    assert "who: co-op" in page and "why: study" in page and "2099-12-31" in page
    assert route.needs_agreement and "only under an agreement the recipient signed" in page
    assert admin.post("/console/routes", dict(share, mode="instead-of")).status_code == 303
    [changed] = agent.store.routes()
    assert changed.mode == "instead-of" and changed.id == route.id
    bad = admin.post("/console/routes", dict(share, type="ftp"))
    assert bad.status_code == 400 and "destination type" in bad.text
    assert admin.post("/console/routes", dict(share, until="someday")).status_code == 400
    assert admin.post("/console/routes", dict(share, name="../x")).status_code == 400
    assert admin.post("/console/routes", dict(share, mode="vendor")).status_code == 303
    assert agent.store.routes() == []
    kinds = [e["kind"] for e in agent.store.audit_entries()]
    assert kinds.count("route-added") == 1 and kinds.count("route-changed") == 1
    assert kinds.count("route-removed") == 1
    assert kinds.count("command") == 2  # set-destinations, signed, for the switch in and out of instead-of


def test_tokens_made_in_the_console_are_shown_once_and_revoked_there(start_agent, console_client):
    agent = start_agent()
    admin = console_client(agent, tokens.issue(agent.store, "admin", "admin"))
    created = admin.post("/console/tokens", {"name": "coop", "scope": "read", "metrics": "temp, hum"})
    assert created.status_code == 200
    secret = created.text.split('<code id="new-token">')[1].split("</code>")[0]
    assert agent.store.token(secret).metrics == ["temp", "hum"]
    assert secret not in admin.get("/console/records").text  # shown once
    assert admin.post("/console/tokens", {"name": "coop", "scope": "read"}).status_code == 400
    assert admin.post("/console/tokens", {"name": "x", "scope": "root"}).status_code == 400
    revoked = admin.post("/console/tokens/coop/revoke", follow_redirects=False)
    assert revoked.status_code == 303 and agent.store.token(secret) is None
    assert admin.post("/console/tokens/nobody/revoke").status_code == 400
    entries = agent.store.audit_entries()
    assert [e["kind"] for e in entries[-2:]] == ["token-granted", "token-revoked"]
    assert json.dumps(entries[-2]["data"]).count(secret) == 0


def test_records_name_the_first_bad_audit_entry_and_the_reasons_of_refused_messages(
    start_agent, publisher, device, console_client
):
    agent = start_agent()
    accept_device(agent, publisher, device)
    admin = console_client(agent, tokens.issue(agent.store, "admin", "admin"))
    forger = FakeDevice(os.urandom(32))
    forged = reading_at(forger, [("temp", "Cel", 99.0)], time.time())
    publisher.publish(device.topic("reading"), forged)  # signed by another key, under this device's topic
    wait_for(lambda: agent.store.rejections(), 10, "the refusal stored")
    records = admin.get("/console/records").text
    assert "The chain is intact" in records and "BROKEN" not in records
    assert "wrong-topic" in records or "bad-signature" in records
    agent.store.query("UPDATE audit SET data=? WHERE seq=1", ('{"name":"someone else"}',))  # tampered with
    broken = admin.get("/console/records").text
    assert "The chain is BROKEN at entry 1: " in broken and '<tr class="bad"><td>1</td>' in broken


def test_where_the_data_goes_shows_a_failing_destination_with_its_last_error(
    start_agent, publisher, device, console_client, webhook
):
    agent = start_agent()
    accept_device(agent, publisher, device)
    webhook.status = 503
    admin = console_client(agent, tokens.issue(agent.store, "admin", "admin"))
    share = {
        "device": device.device_id,
        "metric": "*",
        "mode": "in-addition-to",
        "type": "webhook",
        "url": webhook.url,
        "own": "on",
    }
    assert admin.post("/console/routes", share).status_code == 303
    publisher.publish(device.topic("reading"), reading_at(device, [("temp", "Cel", 20.0)], time.time()))
    wait_for(lambda: agent.outbox.failed >= 1, 10, "a failed delivery")
    page = admin.get("/console/routes").text
    assert "failing: 1 queued, 0 delivered; last error:" in page and "503" in page
    webhook.status = 200
    wait_for(lambda: "delivered: 0 queued, 1 delivered" in admin.get("/console/routes").text, 15, "delivered")


def test_reject_and_commands_go_through_the_agent_and_bad_arguments_are_refused(
    start_agent, publisher, device, console_client
):
    agent = start_agent(command_timeout_s=1.0)
    accept_device(agent, publisher, device)
    stranger = FakeDevice(os.urandom(32))
    publish_card(publisher, stranger)
    wait_for(lambda: agent.store.device(stranger.device_id), 10, "the pending device")
    publisher.subscribe(device.topic("command"))
    admin = console_client(agent, tokens.issue(agent.store, "admin", "admin"))
    rejected = admin.post(f"/console/devices/{stranger.device_id}/reject", headers={"hx-request": "true"})
    assert rejected.status_code == 200 and "Device rejected." in rejected.text
    assert agent.store.device(stranger.device_id).state == "rejected"
    assert admin.post(f"/console/devices/{stranger.device_id}/accept").status_code == 400  # not pending
    path = f"/console/devices/{device.device_id}/command"
    for fields in (
        {"op": "erase-everything"},
        {"op": "set-interval", "sensor": "env", "interval_s": "soon"},
        {"op": "set-interval", "sensor": "env", "interval_s": "0"},
        {"op": "hand-over", "owner_hex": "zz"},
    ):
        assert admin.post(path, fields).status_code == 400, fields
    sent = admin.post(path, {"op": "reboot"})
    assert sent.status_code == 200 and "no signed acknowledgement" in sent.text  # a fake device never answers
    wait_for(lambda: publisher.received, 5, "the signed command on the device's topic")
    audited = [e["data"] for e in agent.store.audit_entries() if e["kind"] == "command"]
    assert [a["op"] for a in audited] == ["reboot"]


def test_records_list_the_agreements_with_their_terms_and_state(start_agent, console_client, device):
    agent = start_agent()
    body = proffer_body(device, recipient="vendor <b>co</b>", metrics=["temp"], retention_days=7)
    made = api(agent).post("/agreements", json=body)  # no `to`: it waits for an answer as a file
    assert made.status_code == 201, made.text
    admin = console_client(agent, tokens.issue(agent.store, "admin", "admin"))
    page = admin.get("/console/records").text
    row = page.split(f'data-agreement="{made.json()["id"]}"')[1].split("</tr>")[0]
    assert "service-only@1" in row and "temp" in row and ">proffered<" in row
    assert "vendor &lt;b&gt;co&lt;/b&gt;" in row and "<b>co</b>" not in row  # the recipient's name as text


def _device_row(html: str, device_id: str) -> list[str]:
    """The cells of the device's row in the devices list, as text."""
    table = html.split('<table id="device-list">')[1].split("</table>")[0]
    [row] = [r for r in table.split("<tr>") if f"<code>{device_id}</code>" in r]
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]


def _status(device, state: str, buffered: int, dropped: int) -> bytes:
    from fp import messages

    seq = device.seq
    device.seq += 1
    info = {"buffered": buffered, "dropped": dropped}
    return messages.encode_status(
        device.sign, device.device_id, device.boot, seq, state, info, int(time.time())
    )


def test_devices_list_shows_last_seen_the_link_and_the_buffered_and_dropped_counters_of_the_signed_status(
    start_agent, publisher, device, console_client
):
    agent = start_agent()
    accept_device(agent, publisher, device)
    silent = FakeDevice(os.urandom(32))
    accept_device(agent, publisher, silent)
    with agent.store.transaction() as db:  # its card came 2 hours ago
        db.mark_seen([(time.time() - 7300, silent.device_id)])
    admin = console_client(agent, tokens.issue(agent.store, "admin", "admin"))
    columns = ["Last seen", "Link", "Buffered", "Dropped"]
    header = admin.get("/").text.split('<table id="device-list">')[1].split("</thead>")[0]
    assert [c for c in re.findall(r"<th>(.*?)</th>", header) if c in columns] == columns
    # cells 6..9: last seen, link, buffered, dropped
    assert _device_row(admin.get("/").text, silent.device_id)[6:] == ["2 h ago", "offline", "-", "-"]
    publisher.publish(device.topic("status"), _status(device, "online", 3, 1), retain=True)
    wait_for(
        lambda: (found := agent.store.device(device.device_id)) is not None and found.last_seen,
        10,
        "the status stored",
    )
    wait_for(lambda: _device_row(admin.get("/").text, device.device_id)[7] == "online", 10, "online")
    last_seen, link, buffered, dropped = _device_row(admin.get("/").text, device.device_id)[6:]
    assert re.fullmatch(r"\d{1,2} s ago", last_seen) and (link, buffered, dropped) == ("online", "3", "1")
    # its will: the broker publishes it when the device drops off; the counters are the will's
    publisher.publish(device.topic("status"), _status(device, "offline", 7, 2), retain=True)
    wait_for(lambda: _device_row(admin.get("/").text, device.device_id)[7] == "offline", 10, "offline")
    assert _device_row(admin.get("/").text, device.device_id)[8:] == ["7", "2"]
    assert _device_row(admin.get("/").text, silent.device_id)[6:] == ["2 h ago", "offline", "-", "-"]


def _dl(section: str) -> dict[str, str]:
    """The <dt>/<dd> pairs of a section of a page, as text."""
    pairs = re.findall(r"<dt>(.*?)</dt>\s*<dd>(.*?)</dd>", section, re.S)
    return {re.sub(r"<[^>]+>", "", k).strip(): re.sub(r"<[^>]+>", "", v).strip() for k, v in pairs}


def test_a_device_page_shows_its_card_and_id_and_its_status_panel_follows_the_signed_status(
    start_agent, publisher, device, console_client
):
    agent = start_agent()
    accept_device(agent, publisher, device)
    agent.store.rename(device.device_id, "kitchen")
    publisher.publish(device.topic("status"), _status(device, "online", 4, 0), retain=True)
    wait_for(
        lambda: (found := agent.store.device(device.device_id)) is not None and found.status,
        10,
        "the status stored",
    )
    admin = console_client(agent, tokens.issue(agent.store, "admin", "admin"))
    html = admin.get(f"/console/devices/{device.device_id}").text
    assert f'<span id="device-title">kitchen</span> <code>{device.device_id}</code>' in html
    card = _dl(html.split('<section class="card-info">')[1].split("</section>")[0])
    stored = agent.store.card(device.device_id)
    assert stored == device.card()
    assert card["Id"] == device.device_id and card["Board"] == "sim" and card["Firmware"] == "0.1.0"
    assert card["Claimed"] == "no"
    assert card["Signed card"].startswith(stored.hex()[:48] + "...")
    assert f"({len(stored)} bytes, GET /devices/{device.device_id}/card)" in card["Signed card"]
    panel = _dl(html.split('<div id="status"')[1].split("</div>")[0])
    assert panel["State"] == "accepted" and panel["Link"] == "online"
    assert panel["buffered"] == "4" and panel["dropped"] == "0" and panel["state"] == "online"
    assert re.fullmatch(r"\d{1,2} s ago \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)", panel["Last seen"])
    # the panel the page polls: the will turns it offline
    publisher.publish(device.topic("status"), _status(device, "offline", 5, 1), retain=True)
    fragment = f"/console/devices/{device.device_id}/status"
    wait_for(lambda: _dl(admin.get(fragment).text)["Link"] == "offline", 10, "the panel offline")
    assert {k: v for k, v in _dl(admin.get(fragment).text).items() if k in ("buffered", "dropped")} == {
        "buffered": "5",
        "dropped": "1",
    }
    claimed = FakeDevice(os.urandom(32))
    publish_card(publisher, claimed, agent.owner.owner_id)
    wait_for(lambda: agent.store.device(claimed.device_id), 10, "the claimed device's card")
    page = admin.get(f"/console/devices/{claimed.device_id}").text
    assert _dl(page.split('<section class="card-info">')[1].split("</section>")[0])["Claimed"] == "by you"


def _table_rows(html: str, table_id: str) -> list[list[str]]:
    """The body rows of a table of a page, each as its cells' text."""
    body = html.split(f'<table id="{table_id}">')[1].split("<tbody>")[1].split("</tbody>")[0]
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in body.split("</tr>")
        if "<td" in row
    ]


def test_records_list_each_share_grant_with_its_terms_its_signed_grant_and_whether_it_is_active(
    start_agent, publisher, device, console_client, webhook
):
    agent = start_agent()
    accept_device(agent, publisher, device)
    admin = console_client(agent, tokens.issue(agent.store, "admin", "admin"))
    assert _table_rows(admin.get("/console/records").text, "grants") == [["No shares."]]
    bearer = api(agent, tokens.issue(agent.store, "api", "admin"))
    share = {
        "name": "coop",
        "destination": {"type": "webhook", "url": webhook.url},
        "devices": [device.device_id],
        "metrics": ["temp"],
        "terms": {"recipient": "co-op", "purpose": "study", "expires_s": 4102444799},
    }
    assert bearer.post("/routes", json=share).status_code == 201
    add_own_webhook(bearer, webhook.url, "mine")
    assert bearer.delete("/routes/mine").status_code == 200
    routes = {r.name: r for r in agent.store.routes(True)}
    rows = {row[0]: row for row in _table_rows(admin.get("/console/records").text, "grants")}
    assert rows["coop"] == [
        "coop",
        "co-op",
        "study",
        "2099-12-31 23:59:59 UTC",
        "yes",
        routes["coop"].grant_hex[:24] + "...",
    ]
    assert rows["mine"] == ["mine", "-", "-", "no end", "no", routes["mine"].grant_hex[:24] + "..."]
    assert routes["coop"].grant_hex != routes["mine"].grant_hex and len(rows) == 2


def test_a_token_limited_to_devices_sees_only_those_devices_in_the_console(
    start_agent, publisher, device, console_client
):
    agent = start_agent()
    other = FakeDevice(os.urandom(32))
    for each in (device, other):
        accept_device(agent, publisher, each)
        publisher.publish(each.topic("reading"), reading_at(each, [("temp", "Cel", 20.0)], time.time()))
    wait_for(lambda: agent.store.count_readings() == 2, 10, "both readings")
    for scope in ("read", "admin"):
        limited = console_client(agent, tokens.issue(agent.store, f"one-{scope}", scope, [device.device_id]))
        listing = limited.get("/").text
        assert device.device_id in listing and other.device_id not in listing, scope
        assert limited.get(f"/console/devices/{device.device_id}").status_code == 200
        assert limited.get(f"/console/devices/{other.device_id}").status_code == 404
        assert limited.get(f"/console/devices/{other.device_id}/status").status_code == 404
        for path in ("/console/series", "/console/stream"):
            params = {"device": other.device_id, "metric": "temp"}
            assert limited.get(path, params=params).status_code == 404, (scope, path)
        mine = limited.get("/console/series", params={"device": device.device_id, "metric": "temp"})
        assert mine.status_code == 200, scope
    routes = limited.get("/console/routes").text  # the admin one: only its device's streams
    assert f'data-device="{device.device_id}"' in routes and other.device_id not in routes
    changed = limited.post(f"/console/devices/{other.device_id}/rename", {"name": "not yours"})
    assert changed.status_code == 404 and agent.store.device(other.device_id).name is None


def test_a_token_limited_to_metrics_sees_only_those_metrics_in_plots_and_live_readings(
    start_agent, publisher, device, console_client
):
    agent = start_agent()
    both = [("temp", "Cel", 20.0), ("hum", "%RH", 40.0)]
    accept_device(agent, publisher, device, [reading_at(device, both, time.time())])
    client = console_client(agent, tokens.issue(agent.store, "hum-only", "read", metrics=["hum"]))
    full = console_client(agent, tokens.issue(agent.store, "all", "read"))
    path = f"/console/devices/{device.device_id}"
    wait_for(lambda: "temp" in full.get(path).text, 10, "the metrics indexed")
    assert "data-metrics='[\"hum\"]'" in client.get(path).text
    assert 'data-metrics=\'["hum", "temp"]\'' in full.get(path).text
    query = {"device": device.device_id}
    assert client.get("/console/series", params={**query, "metric": "temp"}).status_code == 403
    hum = client.get("/console/series", params={**query, "metric": "hum"})
    assert hum.status_code == 200 and sum(hum.json()["count"]) == 1
    with client.http.stream("GET", "/console/stream", params=query) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith(": firstparty console live readings")
        publisher.publish(device.topic("reading"), reading_at(device, [("temp", "Cel", 21.0)], time.time()))
        publisher.publish(device.topic("reading"), reading_at(device, both, time.time()))
        data = next(line for line in lines if line.startswith("data: "))
    item = json.loads(data.removeprefix("data: "))  # the temp-only reading is not sent at all
    assert [v["n"] for v in item["values"]] == ["hum"] and item["is_partial"] is True
    assert "message_hex" not in item and "temp" not in data


def _lan_address() -> str | None:
    """This machine's address on its network, if it has one (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_serve_puts_the_console_on_loopback_when_the_config_names_no_address(tmp_path, mosquitto):
    settings = agent_settings(tmp_path, mosquitto)
    settings["api"] = {"port": 0}  # no host: the default
    config_path = tmp_path / "agent.toml"
    config_path.write_text(agent_toml(settings))
    assert agent_config.load(config_path).api.host == "127.0.0.1"
    log = tmp_path / "agent.log"
    process = serve_process(config_path, log)
    try:
        announced = r"firstparty: console http://([0-9.]+):(\d+)/ \(sign in once with (\S+) within"
        wait_for(lambda: re.search(announced, log.read_text()), 20, "the console's address printed")
        found = re.search(announced, log.read_text())
        assert found
        host, port, link = found.group(1), int(found.group(2)), found.group(3)
        assert host == "127.0.0.1" and link.startswith(f"http://127.0.0.1:{port}/console/link?code=fpl_")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as browser:
            assert browser.get(link).status_code == 200 and browser.cookies.get(auth.COOKIE)
            assert '<b id="who-name">' in browser.get("/").text  # the link signed it in
        lan = _lan_address()
        if lan is not None:  # the port is not open on the machine's network address
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://{lan}:{port}/console/login", timeout=2)
    finally:
        process.terminate()
        process.wait(20)
