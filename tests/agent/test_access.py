"""Token scopes, audit tampering, expiring routes, the vendor role, the embedded broker's ACLs,
and the configuration's named errors."""

from __future__ import annotations

import os
import time

import pytest

from host_agent import config as agent_config
from host_agent.api import tokens
from host_agent.cli.main import main
from host_agent.errors import UserError
from tests.agent.conftest import BOTH_STORES, FakeDevice, api, wait_for

pytestmark = BOTH_STORES


def test_read_only_token_cannot_change_routes_or_see_other_devices(start_agent, publisher):
    agent = start_agent(auto_accept=True)
    mine, theirs = FakeDevice(os.urandom(32)), FakeDevice(os.urandom(32))
    for device in (mine, theirs):
        publisher.publish(device.topic("card"), device.card(), retain=True)
        publisher.publish(
            device.topic("reading"), device.reading([("temp", "Cel", 20.0), ("hum", "%RH", 40)])
        )
    wait_for(lambda: agent.store.count_readings() == 2, 10, "two readings")
    reader = api(agent, tokens.issue(agent.store, "coop", "read", [mine.device_id], ["temp"]))
    route = {"name": "x", "destination": {"type": "file", "path": "/tmp/x.jsonl"}}
    assert reader.post("/routes", json=route).status_code == 403
    assert reader.get("/routes").status_code == 403
    assert reader.post(f"/devices/{mine.device_id}/commands", json={"op": "reboot"}).status_code == 403
    assert [d["device_id"] for d in reader.get("/devices").json()] == [mine.device_id]
    assert reader.get(f"/devices/{theirs.device_id}").status_code == 404
    items = reader.get("/readings").json()["items"]
    assert [i["device_id"] for i in items] == [mine.device_id]
    assert items[0]["values"] == [{"n": "temp", "u": "Cel", "v": 20.0}]
    assert reader.get("/readings", params={"metric": "hum"}).status_code == 403
    assert api(agent, "fpt_wrong").get("/devices").status_code == 401
    tokens.revoke(agent.store, "coop")
    assert reader.get("/devices").status_code == 401


def test_audit_tampering_is_detected_and_the_first_bad_entry_named(start_agent, tmp_path, capsys):
    agent = start_agent()
    for name in ("a", "b", "c"):
        tokens.issue(agent.store, name, "read")
    config = tmp_path / "agent.toml"
    store_line = f'[store]\nurl = "{agent.config.store.url}"\n' if agent.config.store.url else ""
    config.write_text(f'data_dir = "{tmp_path / "agent"}"\n' + store_line)
    assert main(["audit", "verify", "--config", str(config)]) == 0
    assert "intact: 3 entries" in capsys.readouterr().out
    # someone with the database's files (or its password) edits an entry, then removes one
    agent.store.query("UPDATE audit SET data=replace(data, '\"b\"', '\"z\"') WHERE seq=2")
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert "BROKEN at entry 2: its content was changed" in capsys.readouterr().out
    agent.store.query("UPDATE audit SET data=replace(data, '\"z\"', '\"b\"') WHERE seq=2")
    agent.store.query("DELETE FROM audit WHERE seq=2")
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert "BROKEN at entry 3" in capsys.readouterr().out


def test_expired_route_stops_by_itself(start_agent, device, publisher, webhook):
    agent = start_agent(auto_accept=True)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    route = {
        "name": "brief",
        "needs_agreement": False,  # the test's own destination
        "destination": {"type": "webhook", "url": webhook.url},
        "terms": {"recipient": "visitor", "purpose": "demo", "expires_s": time.time() + 1.5},
    }
    assert admin.post("/routes", json=route).status_code == 201
    publisher.publish(device.topic("card"), device.card(), retain=True)
    publisher.publish(device.topic("reading"), device.reading())
    wait_for(lambda: len(webhook.bodies) == 1, 10, "delivery before expiry")
    wait_for(lambda: admin.get("/routes").json()[0]["is_active"] is False, 10, "the route to expire")
    publisher.publish(device.topic("reading"), device.reading())
    wait_for(lambda: agent.store.count_readings() == 2, 10, "the later reading stored")
    time.sleep(1.0)
    assert len(webhook.bodies) == 1
    kinds = [e["kind"] for e in admin.get("/audit").json()["entries"]]
    assert "route-expired" in kinds


def test_vendor_role_shows_each_account_only_the_devices_it_claimed(start_agent, publisher):
    agent = start_agent(role="vendor")
    alice, bob = FakeDevice(os.urandom(32)), FakeDevice(os.urandom(32))
    alice_id = "a" * 24
    bob_id = "b" * 24
    publisher.publish(alice.topic("card"), alice.card(owner_id=alice_id), retain=True)
    publisher.publish(bob.topic("card"), bob.card(owner_id=bob_id), retain=True)
    for device in (alice, bob):
        publisher.publish(device.topic("reading"), device.reading())
    wait_for(lambda: agent.store.count_readings() == 2, 10, "both stored (vendor accepts every device)")
    as_alice = api(agent, tokens.issue(agent.store, "alice", "read", account=alice_id))
    assert [d["device_id"] for d in as_alice.get("/devices").json()] == [alice.device_id]
    assert [i["device_id"] for i in as_alice.get("/readings").json()["items"]] == [alice.device_id]
    assert as_alice.get(f"/devices/{bob.device_id}").status_code == 404


def test_config_errors_name_file_key_expected_and_found(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('role = "boss"\n[api]\nport = "x"\nsurprise = 1\n')
    with pytest.raises(UserError) as caught:
        agent_config.load(path)
    text = str(caught.value)
    assert f"{path}: role must be one of owner, vendor, found 'boss'" in text
    assert "api.port must be an integer, found str 'x'" in text
    assert "unknown key 'api.surprise'" in text
