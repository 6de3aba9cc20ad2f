"""Forged, replayed, malformed, oversized and wrong-topic messages: refused with their reason,
counted, visible in the API; nothing stored or forwarded."""

from __future__ import annotations

import os
import time

from fp import topics
from host_agent.api import tokens
from tests.agent.conftest import BOTH_STORES, FakeDevice, api, wait_for

pytestmark = BOTH_STORES


def test_bad_messages_are_rejected_with_reasons_and_nothing_is_stored_or_forwarded(
    start_agent, device, publisher, webhook
):
    agent = start_agent(auto_accept=True)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    admin.post(
        "/routes",
        json={
            "name": "hook",
            "destination": {"type": "webhook", "url": webhook.url},
            "needs_agreement": False,
        },
    )
    publisher.publish(device.topic("card"), device.card(), retain=True)
    genuine = device.reading()
    publisher.publish(device.topic("reading"), genuine)
    wait_for(lambda: len(webhook.bodies) == 1, 10, "the genuine reading forwarded")

    impostor = FakeDevice(os.urandom(32))
    forged = FakeDevice(impostor.seed)
    forged.device_id = device.device_id  # claims to be the device, signs with another key
    other = FakeDevice(os.urandom(32))
    publisher.publish(device.topic("reading"), forged.reading(seq=100))  # bad-signature
    publisher.publish(
        device.topic("reading"), device.reading(values=[("temp", "Cel", 99.0)], seq=0)
    )  # replay
    publisher.publish(device.topic("reading"), genuine)  # duplicate: acked, not stored twice, not an attack
    publisher.publish(device.topic("reading"), b"\xd2\x84garbage")  # malformed
    publisher.publish(device.topic("reading"), b"\x00" * 2000)  # oversized
    publisher.publish(topics.topic(other.device_id, "reading"), device.reading())  # wrong-topic
    publisher.publish(other.topic("reading"), other.reading())  # unknown-device (no card)
    publisher.publish("fp/v1/not-an-id/reading", genuine)  # wrong-topic

    expected = {
        "bad-signature": 1,
        "replay": 1,
        "malformed": 1,
        "oversized": 1,
        "wrong-topic": 2,
        "unknown-device": 1,
    }
    counted = dict(expected, duplicate=1)  # counted apart, never logged or recorded as an attack
    wait_for(lambda: admin.get("/rejections").json()["counts"] == counted, 10, "every rejection counted")
    time.sleep(0.5)
    assert agent.store.count_readings() == 1
    assert len(webhook.bodies) == 1
    recent = admin.get("/rejections").json()["recent"]
    assert {r["reason"] for r in recent} == set(expected)
    assert 'firstparty_rejected_total{reason="bad-signature"} 1.0' in admin.get("/metrics").text
