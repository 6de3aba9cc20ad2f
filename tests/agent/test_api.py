"""The HTTP API on a real agent and broker: route replacement, metric and device limits of tokens,
pending devices, health, hand-over (down to the real firmware), and which routes are open."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time

import httpx
import pytest
from fastapi.routing import APIRoute

from fp import messages, topics
from host_agent.api import app as api_module
from host_agent.api import tokens
from host_agent.bus.mosquitto import Mosquitto
from host_agent.cli.common import load_config, write_runtime
from host_agent.cli.main import main
from host_agent.owner import Owner
from host_agent.rig.simdevice import SimDevice
from host_agent.routes.grants import parse_grant
from host_agent.webapp import build_offline_app
from tests.agent.conftest import BOTH_STORES, HAS_MICROPYTHON, FakeDevice, Publisher, Webhook, api, wait_for

MIXED = (("temp", "Cel", 20.0), ("hum", "%RH", 40))
TEMP_ONLY = (("temp", "Cel", 21.0),)
HUM_ONLY = (("hum", "%RH", 41),)
pytestmark = BOTH_STORES


def _commands_seen(publisher: Publisher, device: FakeDevice) -> list:
    return [messages.parse_command(p) for t, p in publisher.received if t == device.topic("command")]


def _publish_card(publisher: Publisher, device: FakeDevice, owner_id: str | None = None) -> None:
    publisher.publish(device.topic("card"), device.card(owner_id), retain=True)


# --- 1. PUT /routes/{name} ----------------------------------------------------------------------


def test_put_route_with_a_bad_body_keeps_the_route_and_a_good_one_replaces_it_in_place(
    start_agent, device, publisher, webhook
):
    agent = start_agent(auto_accept=True, command_timeout_s=1.0)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    publisher.subscribe(device.topic("command"))
    _publish_card(publisher, device)
    wait_for(lambda: agent.store.device(device.device_id), 10, "the device's card")
    later = Webhook()
    try:
        route = {
            "name": "coop",
            "needs_agreement": False,  # the test's own destination
            "destination": {"type": "webhook", "url": webhook.url},
            "devices": [device.device_id],
            "terms": {"recipient": "co-op", "purpose": "study"},
        }
        created = admin.post("/routes", json=route)
        assert created.status_code == 201, created.text

        bad = admin.put("/routes/coop", json={"destination": {"type": "ftp", "url": "x"}})
        assert bad.status_code == 400 and "destination.type" in bad.json()["detail"]
        [kept] = [r for r in admin.get("/routes").json() if r["is_active"]]
        assert kept["name"] == "coop" and kept["destination"]["url"] == webhook.url
        assert kept["grant_hex"] == created.json()["grant_hex"]

        # in-addition-to -> instead-of: a new grant, and the device told to drop the vendor
        changed = admin.put(
            "/routes/coop",
            json={
                "needs_agreement": False,  # the test's own destination
                "destination": {"type": "webhook", "url": later.url},
                "devices": [device.device_id],
                "mode": "instead-of",
                "terms": {"recipient": "new co-op", "purpose": "study"},
            },
        )
        assert changed.status_code == 200, changed.text
        result = changed.json()
        grant = parse_grant(bytes.fromhex(result["grant_hex"]), agent.owner.public)
        assert grant.recipient == "new co-op"
        assert [c["op"] for c in result["device_commands"]] == ["set-destinations"]
        wait_for(lambda: _commands_seen(publisher, device), 5, "set-destinations on the device's topic")
        [sent] = _commands_seen(publisher, device)
        assert [d["name"] for d in sent.args["destinations"]] == ["home"]
        [active] = [r for r in admin.get("/routes").json() if r["is_active"]]
        assert active["id"] == kept["id"] and active["destination"]["url"] == later.url

        publisher.publish(device.topic("reading"), device.reading())
        wait_for(lambda: len(later.bodies) == 1, 10, "the reading delivered to the new destination")
        assert webhook.bodies == []

        # instead-of -> in-addition-to: the device gets the vendor back
        back = admin.put(
            "/routes/coop",
            json={"destination": {"type": "webhook", "url": later.url}, "needs_agreement": False},
        )
        assert back.status_code == 200 and len(back.json()["device_commands"]) == 1
        wait_for(lambda: len(_commands_seen(publisher, device)) == 2, 5, "a second set-destinations")
        names = [d["name"] for d in _commands_seen(publisher, device)[1].args["destinations"]]
        assert names == ["vendor", "home"]

        missing = admin.put("/routes/nope", json={"destination": {"type": "file", "path": "x.jsonl"}})
        assert missing.status_code == 400 and "no route 'nope'" in missing.json()["detail"]
        kinds = [e["kind"] for e in admin.get("/audit").json()["entries"]]
        assert kinds.count("route-changed") == 2 and "route-removed" not in kinds
    finally:
        later.close()


def test_put_route_keeps_the_undelivered_forwards_the_new_route_still_carries(
    start_agent, device, publisher, webhook
):
    agent = start_agent(auto_accept=True)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    webhook.status = 503
    route = {
        "name": "hook",
        "needs_agreement": False,  # the test's own destination
        "destination": {"type": "webhook", "url": webhook.url},
        "metrics": ["temp", "hum"],
    }
    assert admin.post("/routes", json=route).status_code == 201
    _publish_card(publisher, device)
    hum_only, temp_only = device.reading(HUM_ONLY), device.reading(TEMP_ONLY)
    for data in (hum_only, temp_only):
        publisher.publish(device.topic("reading"), data)
    wait_for(lambda: agent.outbox.failed >= 2, 10, "both forwards failing while the webhook is down")
    changed = admin.put(
        "/routes/hook",
        json={"destination": route["destination"], "metrics": ["temp"], "needs_agreement": False},
    )
    assert changed.status_code == 200, changed.text
    webhook.status = 200
    wait_for(lambda: webhook.bodies, 15, "the backlog delivered")
    time.sleep(1.5)  # a dropped forward would have come by now
    assert [body for _, body in webhook.bodies] == [temp_only]
    assert agent.store.outbox_pending() == 0


# --- 2. metric-limited tokens -----------------------------------------------------------------


def test_metric_limited_token_gets_the_signed_message_only_of_readings_it_may_see_whole(
    start_agent, device, publisher
):
    agent = start_agent(auto_accept=True)
    _publish_card(publisher, device)
    mixed, temp_only, hum_only = device.reading(MIXED), device.reading(TEMP_ONLY), device.reading(HUM_ONLY)
    for data in (mixed, temp_only, hum_only):
        publisher.publish(device.topic("reading"), data)
    wait_for(lambda: agent.store.count_readings() == 3, 10, "three readings")
    reader = api(agent, tokens.issue(agent.store, "temp-only", "read", metrics=["temp"]))

    first, second = reader.get("/readings").json()["items"]
    assert first["values"] == [{"n": "temp", "u": "Cel", "v": 20.0}]
    assert first["is_partial"] is True and "message_hex" not in first
    assert "hum" not in json.dumps(first) and mixed.hex() not in json.dumps(first)
    assert second["is_partial"] is False and bytes.fromhex(second["message_hex"]) == temp_only
    whole = api(agent, tokens.issue(agent.store, "all", "read")).get("/readings").json()["items"]
    assert [i["is_partial"] for i in whole] == [False, False, False]
    assert [bytes.fromhex(i["message_hex"]) for i in whole] == [mixed, temp_only, hum_only]


def test_readings_of_devices_the_token_cannot_see_are_an_empty_page_not_an_error(
    start_agent, device, publisher
):
    """Found by the property pass on PostgreSQL: no visible device made "IN ()", which it refuses."""
    agent = start_agent(auto_accept=True)
    _publish_card(publisher, device)
    publisher.publish(device.topic("reading"), device.reading(TEMP_ONLY))
    wait_for(lambda: agent.store.count_readings() == 1, 10, "a reading")
    reader = api(agent, tokens.issue(agent.store, "all", "read"))
    answer = reader.get("/readings", params={"device": "b" * 24})
    assert answer.status_code == 200 and answer.json() == {"items": [], "next_after_id": None}
    assert len(reader.get("/readings", params={"device": device.device_id}).json()["items"]) == 1


def test_metric_limited_stream_sends_what_readings_lists(start_agent, device, publisher):
    agent = start_agent(auto_accept=True)
    _publish_card(publisher, device)
    wait_for(lambda: agent.store.device(device.device_id), 10, "the device's card")
    reader = api(agent, tokens.issue(agent.store, "temp-only", "read", metrics=["temp"]))
    events = []
    with reader.stream("GET", "/stream") as response:
        lines = response.iter_lines()
        assert next(lines) == ": firstparty live readings"  # from here on, the stream listens
        for values in (MIXED, HUM_ONLY, TEMP_ONLY):
            publisher.publish(device.topic("reading"), device.reading(values))
        wait_for(lambda: agent.store.count_readings() == 3, 10, "three readings")
        last_id = max(r[0] for r in agent.store.query("SELECT id FROM messages WHERE kind='reading'"))
        for line in lines:
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
                if events[-1]["id"] == last_id:
                    break
    items = reader.get("/readings").json()["items"]
    assert [e["id"] for e in events] == [i["id"] for i in items]
    for event, item in zip(events, items, strict=True):
        assert set(item) - set(event) == {"time_s", "received_s", "is_held"}
        assert event == {key: item[key] for key in event}
    assert [e["is_partial"] for e in events] == [True, False]


def test_metric_limited_paging_walks_every_reading_it_may_see_in_full_pages(start_agent, device, publisher):
    agent = start_agent(auto_accept=True)
    _publish_card(publisher, device)
    for values in (TEMP_ONLY, TEMP_ONLY, TEMP_ONLY, MIXED, TEMP_ONLY, TEMP_ONLY, HUM_ONLY, HUM_ONLY):
        publisher.publish(device.topic("reading"), device.reading(values))
    wait_for(lambda: agent.store.count_readings() == 8, 10, "eight readings")
    everything = api(agent, tokens.issue(agent.store, "all", "read")).get("/readings").json()["items"]
    wanted = [i["id"] for i in everything if any(v["n"] == "hum" for v in i["values"])]
    reader = api(agent, tokens.issue(agent.store, "hum-only", "read", metrics=["hum"]))
    pages, after_id = [], 0
    while after_id is not None and len(pages) < 10:
        page = reader.get("/readings", params={"limit": 2, "after_id": after_id}).json()
        pages.append([i["id"] for i in page["items"]])
        after_id = page["next_after_id"]
    assert [i for page in pages for i in page] == wanted
    assert [len(page) for page in pages] == [2, 1]


# --- 3. device limits on admin actions --------------------------------------------------------


def test_device_limited_admin_token_acts_only_on_its_devices(start_agent, publisher):
    agent = start_agent(command_timeout_s=1.0)
    mine, theirs, newcomer = (FakeDevice(os.urandom(32)) for _ in range(3))
    for device in (mine, theirs):
        _publish_card(publisher, device)
    wait_for(lambda: len(agent.store.devices()) == 2, 10, "two pending devices")
    limited = api(agent, tokens.issue(agent.store, "mine", "admin", [mine.device_id]))
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))

    for action in ("accept", "reject"):
        refused = limited.post(f"/pending/{theirs.device_id}/{action}")
        assert refused.status_code == 404, refused.text
    assert agent.store.device(theirs.device_id).state == "pending"
    refused = limited.post(f"/devices/{theirs.device_id}/commands", json={"op": "get-info"})
    assert refused.status_code == 404
    card = newcomer.card(owner_id=agent.owner.owner_id)
    refused = limited.post("/devices", json={"card_hex": card.hex()})
    assert refused.status_code == 403 and newcomer.device_id in refused.json()["detail"]
    assert agent.store.device(newcomer.device_id) is None

    assert [d["device_id"] for d in limited.get("/pending").json()] == [mine.device_id]
    assert limited.post(f"/pending/{mine.device_id}/accept").status_code == 200
    assert agent.store.device(mine.device_id).state == "accepted"
    assert admin.post("/devices", json={"card_hex": card.hex()}).status_code == 201
    assert admin.post(f"/pending/{theirs.device_id}/reject").status_code == 200


# --- 4. pending devices -----------------------------------------------------------------------


def test_read_token_does_not_see_a_pending_device_or_its_card(start_agent, device, publisher):
    agent = start_agent()
    _publish_card(publisher, device)
    wait_for(lambda: agent.store.device(device.device_id), 10, "the pending device")
    reader = api(agent, tokens.issue(agent.store, "reader", "read"))
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    assert reader.get("/devices").json() == []
    assert reader.get(f"/devices/{device.device_id}").status_code == 404
    assert reader.get(f"/devices/{device.device_id}/card").status_code == 404
    assert admin.get(f"/devices/{device.device_id}").json()["state"] == "pending"
    assert admin.get(f"/devices/{device.device_id}/card").content == device.card()
    assert admin.post(f"/pending/{device.device_id}/accept").status_code == 200
    assert reader.get(f"/devices/{device.device_id}").json()["state"] == "accepted"
    assert reader.get(f"/devices/{device.device_id}/card").content == device.card()


# --- 5. /healthz --------------------------------------------------------------------------------


def test_healthz_is_503_while_the_broker_is_disconnected(start_agent, tmp_path):
    own = Mosquitto(tmp_path / "own-broker").start()
    try:
        agent = start_agent(broker={"host": own.host, "port": own.port})
        url = f"http://127.0.0.1:{agent.api_port}/healthz"
        assert httpx.get(url).status_code == 200
        own.stop()
        wait_for(lambda: httpx.get(url).status_code == 503, 10, "healthz to answer 503")
        body = httpx.get(url).json()
        assert body["ok"] is False and body["broker"] == "disconnected" and body["store"] == "ok"
    finally:
        own.stop()


def test_healthz_is_503_while_the_store_cannot_commit(start_agent, device, publisher, store_url):
    if store_url is not None:
        pytest.skip("SQLite's page cap plays the full disk; on PostgreSQL, test_postgres.py stops the server")
    agent = start_agent(auto_accept=True)
    url = f"http://127.0.0.1:{agent.api_port}/healthz"
    _publish_card(publisher, device)
    publisher.publish(device.topic("reading"), device.reading())
    wait_for(lambda: agent.store.count_readings() == 1, 10, "first reading")
    agent.store.set_max_page_count(agent.store.query("PRAGMA page_count")[0][0] + 2)
    for _ in range(300):
        publisher.client.publish(device.topic("reading"), device.reading(), qos=1)
    wait_for(lambda: agent.status()["store"] != "ok", 15, "the agent to report the full store")
    response = httpx.get(url)
    assert response.status_code == 503
    # SQLITE_FULL: the page cap plays the full disk
    assert response.json()["ok"] is False and response.json()["store"] == "disk-full"
    agent.store.set_max_page_count(1_000_000)
    wait_for(lambda: httpx.get(url).status_code == 200, 20, "healthz back to 200")


# --- 6. hand-over -------------------------------------------------------------------------------


def test_hand_over_takes_the_new_key_as_hex_and_sends_it_as_bytes(start_agent, device, publisher, tmp_path):
    agent = start_agent(auto_accept=True, command_timeout_s=1.0)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    publisher.subscribe(device.topic("command"))
    _publish_card(publisher, device)
    wait_for(lambda: agent.store.device(device.device_id), 10, "the device's card")
    path = f"/devices/{device.device_id}/commands"
    new_owner = Owner(tmp_path / "new-owner" / "owner.key")
    for args in (
        {},
        {"owner": new_owner.public.hex()},
        {"owner_hex": "zz" * 32},
        {"owner_hex": new_owner.public.hex()[:-2]},
        {"owner_hex": 7},
        {"owner_hex": new_owner.public.hex(), "extra": 1},
    ):
        refused = admin.post(path, json={"op": "hand-over", "args": args})
        assert refused.status_code == 400, (args, refused.text)
        assert "owner_hex" in refused.json()["detail"] and "64 hex" in refused.json()["detail"]
    sent = admin.post(path, json={"op": "hand-over", "args": {"owner_hex": new_owner.public.hex().upper()}})
    assert sent.status_code == 200 and sent.json()["outcome"] == "timeout"  # a fake device never answers
    wait_for(lambda: _commands_seen(publisher, device), 5, "the command on the device's topic")
    [command] = _commands_seen(publisher, device)
    assert command.op == "hand-over" and command.args == {"owner": new_owner.public}
    audited = [e["data"] for e in admin.get("/audit").json()["entries"] if e["kind"] == "command"]
    assert audited[-1]["args"] == {"owner": new_owner.public.hex()}


@pytest.mark.skipif(not HAS_MICROPYTHON, reason="the micropython unix port is not installed")
def test_real_device_handed_over_with_the_cli_obeys_only_the_new_owner(
    start_agent, mosquitto, tmp_path, capsys
):
    agent = start_agent(auto_accept=True)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    config = tmp_path / "agent.toml"
    config.write_text(f'data_dir = "{tmp_path / "agent"}"\n')
    write_runtime(load_config(argparse.Namespace(config=config)), agent.api_port, agent.store)
    new_owner = Owner(tmp_path / "new-owner" / "owner.key")
    device = SimDevice(
        tmp_path / "flash", (mosquitto.host, mosquitto.port), owner_key=agent.owner.public
    ).start()
    watcher = Publisher(mosquitto.host, mosquitto.port)
    try:
        device_id = device.device_id(20)
        watcher.subscribe(topics.topic(device_id, "ack"))
        wait_for(lambda: agent.store.device(device_id), 20, "the device's card")
        argv = ["command", device_id, "hand-over", json.dumps({"owner_hex": new_owner.public.hex()})]
        assert main([*argv, "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert f"{device_id} hand-over: applied" in out and new_owner.owner_id in out
        wait_for(
            lambda: (
                (found := agent.store.device(device_id)) is not None and found.owner_id == new_owner.owner_id
            ),
            10,
            "the device's new card naming the new owner",
        )

        old = admin.post(f"/devices/{device_id}/commands", json={"op": "get-info"}).json()
        assert old["outcome"] == "not-owner", old

        data = new_owner.command(device_id, "set-interval", {"sensor": "env", "interval_s": 7})
        watcher.publish(topics.topic(device_id, "command"), data)

        def answer():
            for _, payload in watcher.received:
                body = messages.parse_device_message(payload, "ack").body
                if body["cmd"] == hashlib.sha256(data).digest():
                    return body
            return None

        body = wait_for(answer, 10, "the device's ack to the new owner's command")
        assert body["outcome"] == "applied", body
        assert body["result"] == {"sensor": "env", "interval_s": 7}
    finally:
        device.stop()
        watcher.close()


# --- 7. what is open --------------------------------------------------------------------------


def test_only_healthz_and_the_api_description_answer_without_a_token_as_the_docstring_says(
    start_agent,
):
    agent = start_agent()
    base = f"http://127.0.0.1:{agent.api_port}"
    open_paths, closed = set(), []
    for route in build_offline_app().routes:
        for method in sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"}):
            path = route.path.replace("{device_id}", "a" * 24).replace("{name}", "x")
            response = httpx.request(method, base + path, timeout=10)
            if response.status_code == 401:
                closed.append(route.path)
                assert isinstance(route, APIRoute), route.path
            else:
                # the second party's inboxes of first-party terms: open, and an empty body is no message
                expected = 400 if method == "POST" and route.path.startswith("/terms/") else 200
                assert response.status_code == expected, (method, route.path, response.status_code)
                open_paths.add(route.path)
    assert open_paths == {
        "/healthz",
        "/openapi.json",
        "/docs",
        "/redoc",
        "/.well-known/firstparty-terms",
        "/terms/roster",
        "/terms/proffers",
        "/terms/terminations",
    }
    assert len(closed) >= 20
    doc = api_module.__doc__ or ""
    named = {path for path in open_paths if re.search(re.escape(path) + r"(?![\w/-])", doc)}
    assert named == open_paths, f"the docstring of host_agent/api/app.py does not name {open_paths - named}"
