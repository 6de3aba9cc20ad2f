"""First-party terms over the vendor's broker: an owner's agent whose only link to the vendor is its
relay account proffers, is answered, and terminates there; nobody else can speak or listen for it."""

from __future__ import annotations

import os
import time

import paho.mqtt.client as paho
import pytest

from fp import terms
from host_agent import wire
from host_agent.owner import Owner
from host_agent.terms import mqtt as terms_mqtt
from tests.agent.conftest import FakeDevice, api, relay_account, start_vendor_and_home, wait_for


@pytest.fixture
def vendor_and_home(start_agent, tmp_path):
    return start_vendor_and_home(start_agent, tmp_path)


def _client(vendor, username: str, password: str, seen: list) -> paho.Client:
    host, port = vendor.devices_endpoint()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=username)
    client.username_pw_set(username, password)
    client.on_message = lambda c, u, m: seen.append((m.topic, bytes(m.payload)))
    client.connect(host, port)
    client.loop_start()
    return client


def test_a_proffer_over_the_vendors_broker_is_answered_recorded_alike_and_terminated(vendor_and_home):
    vendor, home, peer = vendor_and_home
    admin, vendor_admin = api(home), api(vendor)
    wait_for(lambda: home.terms.courier.policies.get(peer), 10, "the vendor's policy read from its broker")
    device = FakeDevice(os.urandom(32))
    body = {
        "agreement": "service-only@1",
        "to": peer,
        "recipient": "vendor",
        "devices": [device.device_id],
        "purpose": "service",
        "retention_days": 7,
    }
    proffered = admin.post("/agreements", json=body)
    assert proffered.status_code == 201, proffered.text
    agreement_id = proffered.json()["id"]
    done = wait_for(
        lambda: (a := admin.get(f"/agreements/{agreement_id}").json())["state"] == "accepted" and a,
        15,
        "the vendor's answer over MQTT",
    )
    assert done["recipient_id"] == vendor.owner.owner_id and done["peer"] == peer
    mine = admin.get(f"/agreements/{agreement_id}/record").content
    theirs = vendor_admin.get(f"/agreements/{agreement_id}/record").content
    assert mine == theirs  # both sides keep the same signed bytes

    ended = admin.post(f"/agreements/{agreement_id}/terminate", json={"reason": "moving out"})
    assert ended.status_code == 200 and ended.json()["state"] == "terminated"
    wait_for(
        lambda: admin.get(f"/agreements/{agreement_id}").json()["acknowledged_s"], 15, "the acknowledgement"
    )
    assert vendor_admin.get(f"/agreements/{agreement_id}").json()["state"] == "terminated"
    assert admin.get(f"/agreements/{agreement_id}/record").content == (
        vendor_admin.get(f"/agreements/{agreement_id}/record").content
    )


def test_a_relay_cannot_proffer_as_another_owner_nor_read_its_answers(vendor_and_home, tmp_path):
    vendor, home, peer = vendor_and_home
    wait_for(lambda: home.terms.courier.policies.get(peer), 10, "the vendor's policy read from its broker")
    mallory = Owner(tmp_path / "mallory.key")
    account = relay_account(vendor, "mallory", mallory.owner_id)
    seen: list = []
    spy = _client(vendor, account.username, account.password, seen)
    try:
        home_id = home.owner.owner_id
        spy.subscribe(terms_mqtt.PREFIX + "#", 1)  # everything it may read under the terms topics
        time.sleep(0.3)
        device = FakeDevice(os.urandom(32))
        answered = api(home).post(
            "/agreements",
            json={
                "agreement": "service-only@1",
                "to": peer,
                "devices": [device.device_id],
                "purpose": "service",
                "retention_days": 7,
            },
        )
        assert answered.status_code == 201, answered.text
        agreement_id = answered.json()["id"]
        wait_for(
            lambda: api(home).get(f"/agreements/{agreement_id}").json()["state"] == "accepted", 15, "accepted"
        )

        # a proffer signed by someone else, sent under mallory's own topic: refused as not-owner
        stranger_seed = os.urandom(32)
        proffer_body = terms.parse_proffer(_proffer_bytes(home, agreement_id), wire.nacl_verify).body
        forged = terms.encode_proffer(
            wire.nacl_signer(stranger_seed),
            wire.nacl_public_key(stranger_seed),
            os.urandom(16),
            int(time.time()),
            proffer_body,
        )
        spy.publish(terms_mqtt.topic(mallory.owner_id, "proffer"), forged, qos=1).wait_for_publish(5)
        # and the home owner's own proffer, replayed under the home owner's topic: the broker drops it
        spy.publish(terms_mqtt.topic(home_id, "proffer"), _proffer_bytes(home, agreement_id), qos=1)
        kinds = lambda: [e["kind"] for e in api(vendor).get("/audit").json()["entries"]]  # noqa: E731
        wait_for(lambda: "terms-refused" in kinds(), 10, "the forged proffer refused")
        refused = [e for e in api(vendor).get("/audit").json()["entries"] if e["kind"] == "terms-refused"]
        assert len(refused) == 1 and "not-owner" in refused[0]["data"]["why"]
        time.sleep(1.0)
        assert not [t for t, _ in seen if t.startswith(terms_mqtt.PREFIX + home_id)]  # nothing of home's
        assert [t for t, _ in seen] == [terms_mqtt.POLICY_TOPIC]  # the public policy, nothing else
        records = api(vendor).get("/agreements").json()
        assert [r["owner_id"] for r in records] == [home_id]  # nothing recorded for the forger
    finally:
        spy.loop_stop()
        spy.disconnect()


def test_claiming_a_device_proffers_the_owners_terms_to_the_vendor_over_its_broker(start_agent, tmp_path):
    """terms.vendor_api = mqtt://...: the vendor's default stream is agreed through the relay."""
    vendor, home, _ = start_vendor_and_home(start_agent, tmp_path, vendor_api=True)
    device = FakeDevice(os.urandom(32))
    response = api(home).post("/devices", json={"card_hex": device.card(home.owner.owner_id).hex()})
    assert response.status_code == 201, response.text
    found = wait_for(lambda: api(vendor).get("/agreements").json(), 15, "the vendor's record")
    assert found[0]["state"] == "accepted" and found[0]["devices"] == [device.device_id]
    agreement_id = found[0]["id"]
    wait_for(
        lambda: api(home).get(f"/agreements/{agreement_id}").json()["state"] == "accepted",
        15,
        "the answer home",
    )
    assert not home.terms.is_vendor_dropped(device.device_id)
    assert api(home).get(f"/agreements/{agreement_id}/record").content == (
        api(vendor).get(f"/agreements/{agreement_id}/record").content
    )


def test_a_proffer_to_a_broker_that_is_not_a_relay_is_refused_with_the_relays_named(vendor_and_home):
    _vendor, home, peer = vendor_and_home
    refused = api(home).post(
        "/agreements", json={"agreement": "service-only@1", "to": "mqtt://127.0.0.1:1", "purpose": "service"}
    )
    assert refused.status_code == 400 and peer in refused.json()["detail"]


def _proffer_bytes(agent, agreement_id: str) -> bytes:
    from host_agent.terms import records

    record = records.get(agent.store, agreement_id)
    assert record is not None
    return record.proffer
