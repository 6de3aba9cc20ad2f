"""First-party terms end to end: two real agents (the owner's and one in the vendor role), a real
broker, real SQLite. Proffer, accept, alternative, decline, the outbox held until an agreement
both parties signed, expiry and early termination, and both parties' records compared byte for byte."""

from __future__ import annotations

import os
import time

import httpx

from fp import messages, terms, topics
from host_agent import wire
from host_agent.terms import records
from tests.agent.conftest import BOTH_STORES, FakeDevice, api, wait_for

pytestmark = BOTH_STORES


def url(agent) -> str:
    return f"http://127.0.0.1:{agent.api_port}"


def start_pair(start_agent, tmp_path, vendor_terms=None, owner_terms=None, **owner_extra):
    vendor = start_agent(
        role="vendor",
        data_dir=str(tmp_path / "vendor"),
        broker={"client_id": "vendor-agent"},
        terms=vendor_terms or {},
    )
    owner_settings = {"terms": {**(owner_terms or {})}}
    if owner_terms and owner_terms.get("vendor_api") == "VENDOR":
        owner_settings["terms"]["vendor_api"] = url(vendor)
    owner = start_agent(
        data_dir=str(tmp_path / "owner"),
        broker={"client_id": "owner-agent"},
        auto_accept=True,
        **owner_settings,
    )
    return owner, vendor


def now_reading(device: FakeDevice, values=(("temp", "Cel", 21.5),)) -> bytes:
    device.seq += 1
    return messages.encode_reading(
        device.sign, device.device_id, device.boot, device.seq, list(values), int(time.time())
    )


def proffer_body(device: FakeDevice, **changes) -> dict:
    body = {
        "agreement": "service-only@1",
        "recipient": "vendor",
        "devices": [device.device_id],
        "metrics": ["*"],
        "purpose": "service",
        "retention_days": 30,
    }
    body.update(changes)
    return body


def records_of(owner, vendor, agreement_id: str) -> tuple[bytes, bytes]:
    return api(owner).get(f"/agreements/{agreement_id}/record").content, api(vendor).get(
        f"/agreements/{agreement_id}/record"
    ).content


def audit_kinds(agent) -> list[str]:
    return [entry["kind"] for entry in agent.store.audit_entries(0, 1000)]


def test_the_vendor_publishes_its_policy_and_countersigns_the_baseline_and_both_records_match(
    start_agent, tmp_path, device
):
    owner, vendor = start_pair(start_agent, tmp_path)
    published = httpx.get(url(vendor) + "/.well-known/firstparty-terms").json()
    assert [a["id"] for a in published["accepts"]] == ["service-only"] and published["role"] == "vendor"
    assert published["key_id"] == vendor.owner.owner_id

    result = api(owner).post("/agreements", json=proffer_body(device, to=url(vendor)))
    assert result.status_code == 201, result.text
    agreement = result.json()
    assert agreement["state"] == "accepted" and agreement["decision"] == "accept"
    assert agreement["recipient_id"] == vendor.owner.owner_id

    mine, theirs = records_of(owner, vendor, agreement["id"])
    assert mine == theirs and len(mine) > 200
    parts = records.parse_record(mine)
    proffer = terms.parse_proffer(parts["proffer"], wire.nacl_verify)
    assert terms.parse_answer(parts["answer"], proffer, wire.nacl_verify).signer_id == vendor.owner.owner_id
    assert api(vendor).get(f"/agreements/{agreement['id']}").json()["side"] == "second"
    for agent in (owner, vendor):
        assert "terms-accepted" in audit_kinds(agent) and agent.store.audit_verify() is None
    digests = {
        e["data"]["record_sha256"]
        for a in (owner, vendor)
        for e in a.store.audit_entries(0, 1000)
        if e["kind"] == "terms-accepted"
    }
    assert len(digests) == 1  # both audit chains commit to the very same record


def test_a_proffer_the_vendor_does_not_accept_is_declined_and_signed_so(start_agent, tmp_path, device):
    owner, vendor = start_pair(start_agent, tmp_path)
    body = proffer_body(device, agreement="community-energy@1", purpose="research", to=url(vendor))
    agreement = api(owner).post("/agreements", json=body).json()
    assert agreement["state"] == "declined" and "not one this party accepts" in agreement["reason"]
    mine, theirs = records_of(owner, vendor, agreement["id"])
    assert mine == theirs


def test_a_counter_offer_the_owner_does_not_accept_is_refused_and_one_it_accepts_is_proffered_and_signed(
    start_agent, tmp_path, device
):
    owner, broker = start_pair(
        start_agent,
        tmp_path,
        vendor_terms={
            "accepts": ["resale-same-terms@1", "research-open-models@1"],
            "alternative": "resale-same-terms@1",
        },
        owner_terms={"accepts": ["research-open-models@1"]},
    )
    body = proffer_body(device, agreement="community-energy@1", purpose="research", to=url(broker))
    refused = api(owner).post("/agreements", json=body).json()
    assert refused["state"] == "refused" and refused["alternative"] == "resale-same-terms@1"
    assert "terms-refused" in audit_kinds(owner)
    assert api(broker).get(f"/agreements/{refused['id']}").json()["state"] == "alternative"

    owner.terms.policy = owner.terms.policy.__class__(("research-open-models@1",), None)
    broker.terms.policy = broker.terms.policy.__class__(("research-open-models@1",), "research-open-models@1")
    countered = api(owner).post("/agreements", json=body).json()
    assert countered["state"] == "alternative" and countered["followed_by"]["state"] == "accepted"
    assert countered["followed_by"]["agreement"] == "research-open-models@1"


def test_no_forward_leaves_before_the_countersignature_and_held_ones_follow_it(
    start_agent, tmp_path, device, publisher, webhook
):
    owner, _vendor = start_pair(start_agent, tmp_path)
    admin = api(owner)
    route = {
        "name": "coop",
        "destination": {"type": "webhook", "url": webhook.url},
        "devices": [device.device_id],
        "terms": {"recipient": "energy co-op", "purpose": "energy-planning", "retention_days": 30},
    }  # needs_agreement left out: a route to a second party needs one
    assert admin.post("/routes", json=route).status_code == 201
    publisher.publish(device.topic("card"), device.card(), retain=True)
    sent = [now_reading(device) for _ in range(3)]
    for data in sent:
        publisher.publish(device.topic("reading"), data)
    wait_for(lambda: owner.store.count_readings() == 3, 10, "3 readings stored")
    time.sleep(1.5)  # the proffer comes seconds after the readings: it covers them from the route's start
    assert webhook.bodies == [] and owner.store.outbox_pending() == 3  # held, not dropped
    agreement = admin.post("/agreements", json={"agreement": "community-energy@1", "route": "coop"}).json()
    assert agreement["state"] == "proffered" and agreement["devices"] == [device.device_id]
    time.sleep(0.5)
    assert webhook.bodies == [] and owner.store.outbox_pending() == 3

    # the co-op runs nothing of ours: it answers with a key of its own (what `terms accept` does)
    coop_seed = os.urandom(32)
    proffer = bytes.fromhex(admin.get(f"/agreements/{agreement['id']}/record").content.hex())
    proffer = records.parse_record(proffer)["proffer"]
    sign, key = wire.nacl_signer(coop_seed), wire.nacl_public_key(coop_seed)
    other = terms.encode_proffer(
        owner.owner.sign,
        owner.owner.public,
        os.urandom(16),
        int(time.time()),
        terms.parse_proffer(proffer, wire.nacl_verify).body,
    )
    of_another = terms.encode_answer(sign, key, other, "accept", int(time.time()))
    refused = admin.post(f"/agreements/{agreement['id']}/answer", json={"message_hex": of_another.hex()})
    assert refused.status_code == 400 and refused.json()["detail"].startswith("wrong-proffer")
    accept = terms.encode_answer(sign, key, proffer, "accept", int(time.time()), reason="agreed")
    altered = accept.replace(b"agreed", b"agreeD")
    refused = admin.post(f"/agreements/{agreement['id']}/answer", json={"message_hex": altered.hex()})
    assert refused.status_code == 400 and refused.json()["detail"].startswith("bad-signature")
    time.sleep(0.5)
    assert webhook.bodies == []

    taken = admin.post(f"/agreements/{agreement['id']}/answer", json={"message_hex": accept.hex()})
    assert taken.status_code == 200 and taken.json()["state"] == "accepted"
    wait_for(lambda: len(webhook.bodies) == 3, 10, "the held forwards delivered after the countersignature")
    assert sorted(body for _, body in webhook.bodies) == sorted(sent)
    replayed = admin.post(f"/agreements/{agreement['id']}/answer", json={"message_hex": accept.hex()})
    assert replayed.status_code == 409 and replayed.json()["detail"].startswith("replay")
    assert {"terms-answer-refused", "terms-accepted"} <= set(audit_kinds(owner))


def test_early_termination_reaches_the_recipient_is_acknowledged_and_nothing_follows_it(
    start_agent, tmp_path, device, publisher, webhook
):
    owner, vendor = start_pair(start_agent, tmp_path)
    admin = api(owner)
    route = {
        "name": "vendor-extra",
        "destination": {"type": "webhook", "url": webhook.url},
        "needs_agreement": True,
        "terms": {"recipient": "vendor", "purpose": "service", "retention_days": 7},
    }
    assert admin.post("/routes", json=route).status_code == 201
    agreement = admin.post(
        "/agreements", json={"agreement": "service-only@1", "route": "vendor-extra", "to": url(vendor)}
    ).json()
    assert agreement["state"] == "accepted"
    publisher.publish(device.topic("card"), device.card(), retain=True)
    publisher.publish(device.topic("reading"), now_reading(device))
    wait_for(lambda: len(webhook.bodies) == 1, 10, "a forward under the agreement")

    ended = admin.post(f"/agreements/{agreement['id']}/terminate", json={"reason": "moving out"}).json()
    assert ended["state"] == "terminated" and ended["acknowledged_s"] is not None
    theirs = api(vendor).get(f"/agreements/{agreement['id']}").json()
    assert theirs["state"] == "terminated" and theirs["terminated_s"] == ended["terminated_s"]
    mine, theirs_record = records_of(owner, vendor, agreement["id"])
    assert mine == theirs_record and set(records.parse_record(mine)) == set(records.PARTS)

    time.sleep(1.0)  # a reading made after the termination second
    for _ in range(3):
        publisher.publish(device.topic("reading"), now_reading(device))
    wait_for(lambda: owner.store.count_readings() == 4, 10, "readings after the termination stored")
    wait_for(lambda: owner.store.outbox_pending() == 0, 10, "the forwards withheld")
    assert len(webhook.bodies) == 1
    assert "terms-withheld" in audit_kinds(owner) and "terms-terminated" in audit_kinds(vendor)
    again = admin.post(f"/agreements/{agreement['id']}/terminate", json={})
    assert again.status_code == 409


def test_expiry_stops_the_stream_by_itself(start_agent, tmp_path, device, publisher, webhook):
    owner, vendor = start_pair(start_agent, tmp_path)
    admin = api(owner)
    route = {"name": "short", "destination": {"type": "webhook", "url": webhook.url}, "needs_agreement": True}
    assert admin.post("/routes", json=route).status_code == 201
    until = int(time.time()) + 3
    body = proffer_body(device, route="short", to=url(vendor), until_s=until)
    assert admin.post("/agreements", json=body).json()["state"] == "accepted"
    publisher.publish(device.topic("card"), device.card(), retain=True)
    publisher.publish(device.topic("reading"), now_reading(device))
    wait_for(lambda: len(webhook.bodies) == 1, 10, "a forward before expiry")
    while time.time() < until + 0.2:
        time.sleep(0.1)
    publisher.publish(device.topic("reading"), now_reading(device))
    wait_for(lambda: "terms-expired" in audit_kinds(owner), 10, "the expiry audited")
    wait_for(lambda: owner.store.outbox_pending() == 0, 10, "the late forward withheld")
    assert len(webhook.bodies) == 1


def test_the_public_inboxes_refuse_what_is_not_a_valid_terms_message(start_agent, tmp_path, device):
    owner, vendor = start_pair(start_agent, tmp_path)
    inbox = url(vendor) + "/terms/proffers"
    assert httpx.post(inbox, content=b"\x00" * 5000).status_code == 413
    assert httpx.post(inbox, content=b"not cbor").status_code == 400
    assert httpx.post(inbox, content=device.card()).json()["detail"].startswith("wrong-kind")
    agreement = api(owner).post("/agreements", json=proffer_body(device)).json()  # offline: kept
    proffer = records.parse_record(api(owner).get(f"/agreements/{agreement['id']}/record").content)["proffer"]
    tampered = bytearray(proffer)
    tampered[-5] ^= 1
    assert httpx.post(inbox, content=bytes(tampered)).json()["detail"].startswith("bad-signature")
    first = httpx.post(inbox, content=proffer)
    assert first.status_code == 200
    assert httpx.post(inbox, content=proffer).content == first.content  # a retry: the same answer
    stray = terms.encode_termination(owner.owner.sign, owner.owner.public, b"another", int(time.time()))
    refused = httpx.post(url(vendor) + "/terms/terminations", content=stray)
    assert refused.status_code == 400 and refused.json()["detail"].startswith("wrong-proffer")
    assert api(vendor).get("/agreements").json()[0]["state"] == "accepted"
    assert httpx.get(url(vendor) + "/agreements").status_code == 401
    vendor.terms.max_from_one_owner = 1  # a flood of proffers from one owner stops at the cap
    another = api(owner).post("/agreements", json=proffer_body(device)).json()
    data = records.parse_record(api(owner).get(f"/agreements/{another['id']}/record").content)["proffer"]
    flood = httpx.post(inbox, content=data)
    assert flood.status_code == 429 and flood.json()["detail"].startswith("too-many")
    assert len(api(vendor).get("/agreements").json()) == 1


def test_claiming_a_device_proffers_the_owners_terms_to_the_vendor(start_agent, tmp_path, device):
    owner, vendor = start_pair(start_agent, tmp_path, owner_terms={"vendor_api": "VENDOR"})
    response = api(owner).post("/devices", json={"card_hex": device.card(owner.owner.owner_id).hex()})
    assert response.status_code == 201
    found = wait_for(lambda: api(vendor).get("/agreements").json(), 10, "the vendor's record")
    assert not owner.terms.is_vendor_dropped(device.device_id)
    assert found[0]["state"] == "accepted" and found[0]["devices"] == [device.device_id]
    assert found[0]["agreement"] == "service-only@1"
    mine, theirs = records_of(owner, vendor, found[0]["id"])
    assert mine == theirs


def test_a_vendor_that_declines_is_dropped_from_the_device_by_the_owners_policy(
    start_agent, tmp_path, device, mosquitto
):
    from tests.agent.conftest import Publisher

    owner, vendor = start_pair(
        start_agent, tmp_path, vendor_terms={"accepts": []}, owner_terms={"vendor_api": "VENDOR"}
    )
    listener = Publisher(mosquitto.host, mosquitto.port)
    try:
        listener.subscribe(topics.topic(device.device_id, "command"))
        assert (
            api(owner)
            .post("/devices", json={"card_hex": device.card(owner.owner.owner_id).hex()})
            .status_code
            == 201
        )
        commands = wait_for(lambda: listener.received, 10, "a command to the device")
        command = messages.parse_command(commands[0][1])
        assert command.op == "set-destinations"
        assert [d["name"] for d in command.args["destinations"]] == ["home"]  # the vendor is gone
        wait_for(lambda: "terms-vendor-dropped" in audit_kinds(owner), 15, "the audit saying so")
        assert api(vendor).get("/agreements").json()[0]["state"] == "declined"
        assert owner.terms.is_vendor_dropped(device.device_id)
        # a route that would give the vendor back (an instead-of route removed) does not
        route = {
            "name": "r",
            "destination": {"type": "file", "path": "r.jsonl"},  # inside files_dir
            "mode": "instead-of",
        }
        assert api(owner).post("/routes", json={**route, "devices": [device.device_id]}).status_code == 201
        assert api(owner).delete("/routes/r").status_code == 200
        commands = wait_for(lambda: listener.received[2:], 10, "the destinations after the route is gone")
        last = messages.parse_command(commands[-1][1])
        assert [d["name"] for d in last.args["destinations"]] == ["home"]
    finally:
        listener.close()


def test_an_offline_recipient_answers_with_the_cli_and_verify_agreement_refuses_readings_outside_it(
    start_agent, tmp_path, device, publisher, webhook, capsys
):
    from host_agent.cli.common import write_runtime
    from host_agent.cli.main import main

    owner, _vendor = start_pair(start_agent, tmp_path)
    write_runtime(owner.config, owner.api_port, owner.store)
    config = tmp_path / "owner.toml"
    config.write_text(f'data_dir = "{owner.config.data_dir}"\n')
    route = {
        "name": "coop",
        "destination": {"type": "webhook", "url": webhook.url},
        "metrics": ["temp"],
        "terms": {"recipient": "energy co-op", "purpose": "research", "retention_days": 30},
        "needs_agreement": True,
    }
    assert api(owner).post("/routes", json=route).status_code == 201
    proffer_file, key, answer_file, record_file = (
        tmp_path / n for n in ("p.cbor", "coop.key", "a.cose", "r.cbor")
    )
    cli = ["--config", str(config)]
    assert (
        main(["terms", "proffer", "community-energy@1", "--route", "coop", "--out", str(proffer_file), *cli])
        == 0
    )
    assert "community-energy@1" in capsys.readouterr().out
    agreement_id = terms.parse_proffer(
        records.parse_record(proffer_file.read_bytes())["proffer"], wire.nacl_verify
    ).nonce.hex()
    assert main(["terms", "keygen", "--key", str(key)]) == 0
    assert main(["terms", "show", str(proffer_file)]) == 0
    assert "Community energy planning" in capsys.readouterr().out
    assert main(["terms", "accept", str(proffer_file), "--key", str(key), "--out", str(answer_file)]) == 0
    publisher.publish(device.topic("card"), device.card(), retain=True)
    inside = now_reading(device)
    publisher.publish(device.topic("reading"), inside)
    wait_for(lambda: owner.store.count_readings() == 1, 10, "the reading stored")
    time.sleep(0.5)
    assert webhook.bodies == []
    assert main(["terms", "import", agreement_id, str(answer_file), *cli]) == 0
    wait_for(lambda: len(webhook.bodies) == 1, 10, "the forward after the offline countersignature")
    assert main(["terms", "export", agreement_id, "--out", str(record_file), *cli]) == 0
    assert main(["terms", "import", agreement_id, str(answer_file), *cli]) == 2  # a replay, refused

    card = tmp_path / "device.card"
    card.write_bytes(device.card())
    files = []
    outside_metric = now_reading(device, (("power", "W", 3.0),))
    before = device.reading(seq=100)  # made in 2025: before the agreement's window
    for name, data in (("in", webhook.bodies[0][1]), ("metric", outside_metric), ("old", before)):
        path = tmp_path / f"{name}.reading"
        path.write_bytes(data)
        files.append(str(path))
    capsys.readouterr()
    assert main(["verify", "--card", str(card), "--agreement", str(record_file), *files]) == 1
    out = capsys.readouterr().out
    assert f"{files[0]}: verified" in out
    assert f"{files[1]}: REFUSED out-of-terms" in out and f"{files[2]}: REFUSED out-of-terms" in out
    forged = bytearray(record_file.read_bytes())
    forged[-10] ^= 1
    record_file.write_bytes(bytes(forged))
    assert main(["verify", "--card", str(card), "--agreement", str(record_file), files[0]]) == 2
