"""The agent with the real firmware (MicroPython unix port, board `sim`): in addition to, then
instead of the vendor, carried out on the device by a signed set-destinations command."""

from __future__ import annotations

import pytest

from tests.agent.conftest import HAS_MICROPYTHON, add_own_webhook, wait_for


@pytest.mark.skipif(not HAS_MICROPYTHON, reason="the micropython unix port is not installed")
def test_real_device_in_addition_to_then_instead_of_the_vendor(vendor_switch, webhook):
    rig = vendor_switch
    agent, admin, device_id = rig.agent, rig.admin, rig.device_id
    other, other_view, vendor_view = rig.other, rig.other_view, rig.vendor_view
    rig.device.enrol(agent)  # as `firstparty flash --config` does: its password for the owner's broker
    rig.accept("the device pending (card seen through the vendor)")
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
    rig.assert_only_the_owner_receives()
    assert {t for t, _ in other_view.received} == {f"fp/v1/{device_id}/reading"}
    stored_raw = {bytes(r[0]) for r in agent.store.query("SELECT raw FROM messages WHERE kind='reading'")}
    assert {b for _, b in other_view.received} <= stored_raw  # original signed bytes, unchanged
    assert (
        admin.get("/rejections").json()["counts"] == {}
        or "duplicate" in admin.get("/rejections").json()["counts"]
    )
