"""The agent with the real firmware (MicroPython unix port, board `sim`): in addition to, then
instead of the vendor, carried out on the device by a signed set-destinations command."""

from __future__ import annotations

import pytest

from host_agent.api import tokens
from host_agent.bus.mosquitto import Mosquitto
from host_agent.rig.simdevice import SimDevice
from tests.agent.conftest import HAS_MICROPYTHON, Publisher, add_own_webhook, api, wait_for


@pytest.mark.skipif(not HAS_MICROPYTHON, reason="the micropython unix port is not installed")
def test_real_device_in_addition_to_then_instead_of_the_vendor(start_agent, mosquitto, tmp_path, webhook):
    vendor = mosquitto
    agent = start_agent(
        broker={"embedded": True, "port": 0, "relay_brokers": [f"{vendor.host}:{vendor.port}"]}
    )
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    other = Mosquitto(tmp_path / "other").start()
    vendor_view = Publisher(vendor.host, vendor.port)
    other_view = Publisher(other.host, other.port)
    device = SimDevice(tmp_path / "flash", (vendor.host, vendor.port), owner_key=agent.owner.public).start()
    try:
        device_id = device.device_id(20)
        device.enrol(agent)  # as `firstparty flash --config` does: its password for the owner's broker
        vendor_view.subscribe(f"fp/v1/{device_id}/reading")
        other_view.subscribe(f"fp/v1/{device_id}/reading")
        wait_for(
            lambda: admin.get("/pending").json(), 20, "the device pending (card seen through the vendor)"
        )
        assert admin.post(f"/pending/{device_id}/accept").status_code == 200
        result = admin.post(
            f"/devices/{device_id}/commands",
            json={"op": "set-interval", "args": {"sensor": "env", "interval_s": 1}},
        ).json()
        assert result["outcome"] == "applied", result

        # in addition to: the agent forwards what it reads; the vendor keeps receiving
        add_own_webhook(admin, webhook.url)
        wait_for(lambda: len(webhook.bodies) >= 2, 20, "readings forwarded to the webhook")
        wait_for(lambda: len(vendor_view.received) >= 2, 10, "the vendor receiving")

        # instead of: the device itself drops the vendor and publishes to the owner's broker
        response = admin.post(
            "/routes",
            json={
                "name": "coop",
                "needs_agreement": False,  # the test's own destination
                "destination": {"type": "mqtt", "host": other.host, "port": other.port},
                "mode": "instead-of",
                "metrics": ["temp", "hum", "press"],  # the sim's env sensor: a BME280
                "terms": {"recipient": "coop", "purpose": "heating study"},
            },
        )
        assert response.status_code == 201, response.text
        [outcome] = response.json()["device_commands"]
        assert outcome["outcome"] == "applied", outcome
        wait_for(lambda: len(other_view.received) >= 1, 20, "forwards to the other broker")
        import time

        time.sleep(2)  # the switch settles
        vendor_count = len(vendor_view.received)
        stored = agent.store.count_readings()
        time.sleep(4)
        assert len(vendor_view.received) == vendor_count, "the vendor still receives"
        assert agent.store.count_readings() >= stored + 2, "the owner stopped receiving"
        assert {t for t, _ in other_view.received} == {f"fp/v1/{device_id}/reading"}
        stored_raw = {bytes(r[0]) for r in agent.store.query("SELECT raw FROM messages WHERE kind='reading'")}
        assert {b for _, b in other_view.received} <= stored_raw  # original signed bytes, unchanged
        assert (
            admin.get("/rejections").json()["counts"] == {}
            or "duplicate" in admin.get("/rejections").json()["counts"]
        )
    finally:
        device.stop()
        vendor_view.close()
        other_view.close()
        other.stop()
