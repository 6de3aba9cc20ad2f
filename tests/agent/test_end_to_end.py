"""End to end on a real broker and SQLite: device -> broker -> agent -> verified -> stored -> routed."""

from __future__ import annotations

import base64

import httpx

from fp import topics
from fp.ids import id_from_public_key
from host_agent.api import tokens
from host_agent.ingest.verifier import Verifier
from host_agent.routes.grants import parse_grant
from tests.agent.conftest import (
    BOTH_STORES,
    FakeDevice,
    Publisher,
    add_own_route,
    add_own_webhook,
    api,
    publish_card_and_readings,
    wait_for,
)

pytestmark = BOTH_STORES


def test_reading_is_verified_stored_and_forwarded_unchanged_to_mqtt_and_webhook(
    start_agent, device, publisher, webhook, mosquitto, tmp_path
):
    agent = start_agent(auto_accept=True)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    other = Publisher(mosquitto.host, mosquitto.port)
    other.subscribe("elsewhere/#")
    try:
        terms = {"recipient": "energy-coop", "purpose": "research", "retention_days": 30}
        hook = add_own_route(admin, "hook", {"type": "webhook", "url": webhook.url}, terms=terms)
        grant_hex = hook["grant_hex"]
        destination = {
            "type": "mqtt",
            "host": mosquitto.host,
            "port": mosquitto.port,
            "topic_prefix": "elsewhere",
        }
        add_own_route(admin, "broker", destination, metrics=["temp"])
        sent = publish_card_and_readings(publisher, device, 5)

        wait_for(lambda: len(webhook.bodies) == 5, 10, "5 webhook deliveries")
        wait_for(lambda: len(other.received) == 5, 10, "5 MQTT forwards")
        assert sorted(body for _, body in webhook.bodies) == sorted(sent)
        assert sorted(body for _, body in other.received) == sorted(sent)
        assert other.received[0][0] == "elsewhere/" + topics.topic(device.device_id, "reading")
        headers = webhook.bodies[0][0]
        assert headers["idempotency-key"].startswith(device.device_id + ":1:")
        grant = parse_grant(base64.b64decode(headers["x-firstparty-grant"]), agent.owner.public)
        assert grant.recipient == "energy-coop" and grant.purpose == "research"
        assert bytes.fromhex(grant_hex) == base64.b64decode(headers["x-firstparty-grant"])
        # a recipient holding only the card verifies what it got
        verifier = Verifier()
        verifier.learn_card(device.card())
        for _, body in webhook.bodies:
            verifier.check_detached(body)

        page = admin.get("/readings", params={"device": device.device_id, "limit": 3}).json()
        assert len(page["items"]) == 3 and page["next_after_id"]
        rest = admin.get("/readings", params={"after_id": page["next_after_id"]}).json()
        assert len(rest["items"]) == 2 and rest["next_after_id"] is None
        assert page["items"][0]["values"] == [{"n": "temp", "u": "Cel", "v": 21.5}]
        assert bytes.fromhex(page["items"][0]["message_hex"]) in sent
        audit = admin.get("/audit").json()
        assert audit["is_intact"]
        assert any(e["kind"] == "shared" and e["data"]["route"] == "hook" for e in audit["entries"])
    finally:
        other.close()


def test_pending_device_readings_are_held_then_forwarded_on_accept(start_agent, device, publisher, webhook):
    agent = start_agent()
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    add_own_webhook(admin, webhook.url)
    publisher.publish(device.topic("card"), device.card(), retain=True)
    for _ in range(3):
        publisher.publish(device.topic("reading"), device.reading())
    wait_for(lambda: agent.store.count_readings() == 3, 10, "3 held readings")
    assert [d["device_id"] for d in admin.get("/pending").json()] == [device.device_id]
    assert webhook.bodies == []
    assert admin.post(f"/pending/{device.device_id}/accept").status_code == 200
    wait_for(lambda: len(webhook.bodies) == 3, 10, "held readings forwarded after accept")
    assert admin.get("/pending").json() == []


def test_metrics_and_healthz(start_agent, device, publisher):
    agent = start_agent(auto_accept=True)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    publisher.publish(device.topic("card"), device.card(), retain=True)
    publisher.publish(device.topic("reading"), device.reading())
    wait_for(lambda: agent.store.count_readings() == 1, 10, "a reading")
    assert httpx.get(f"http://127.0.0.1:{agent.api_port}/healthz").json()["ok"] is True
    text = admin.get("/metrics").text
    assert 'firstparty_accepted_total{kind="reading"} 1.0' in text
    assert admin.get("/openapi.json").json()["info"]["title"] == "Firstparty host agent"


def test_a_card_claimed_for_this_owner_registers_as_accepted_and_another_owners_is_refused(
    start_agent, device, publisher
):
    agent = start_agent()
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    reader = api(agent, tokens.issue(agent.store, "reader", "read"))
    card = device.card(owner_id=agent.owner.owner_id)
    assert reader.post("/devices", json={"card_hex": card.hex()}).status_code == 403

    response = admin.post("/devices", json={"card_hex": card.hex()})
    assert response.status_code == 201, response.text
    assert response.json() == {"device_id": device.device_id, "state": "accepted", "board": "sim"}
    publisher.publish(device.topic("reading"), device.reading())
    wait_for(lambda: agent.store.count_readings() == 1, 10, "the registered device's reading stored")
    assert agent.store.readings()[0]["is_held"] is False  # accepted: nothing held

    stranger = FakeDevice(bytes(range(32)))
    theirs = stranger.card(owner_id=id_from_public_key(bytes(32)))
    refused = admin.post("/devices", json={"card_hex": theirs.hex()})
    assert refused.status_code == 400 and "not this agent's" in refused.json()["detail"]
    tampered = bytearray(card)
    tampered[-3] ^= 1
    refused = admin.post("/devices", json={"card_hex": bytes(tampered).hex()})
    assert refused.status_code == 400 and "not a valid device card" in refused.json()["detail"]
    assert agent.store.device(stranger.device_id) is None
