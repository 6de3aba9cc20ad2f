"""First-party terms end to end: two real agents (the owner's and one in the vendor role), a real
broker, real SQLite. Proffer, accept, alternative, decline, the outbox held until an agreement
both parties signed, expiry and early termination, and both parties' records compared byte for byte."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

from fp import cbor, cose, messages, terms, topics
from host_agent import wire
from host_agent.bus.mosquitto import free_port
from host_agent.terms import records
from host_agent.terms.view import AgreementView
from tests.agent.conftest import BOTH_STORES, FakeDevice, api, proffer_body, wait_for

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
    # the response is the desk's AgreementView, key for key and in its order; followed_by only after a counter-offer
    assert list(agreement) == [key for key in AgreementView.__annotations__ if key != "followed_by"]

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
    # signed by the owner, but a field of the wrong type: refused at the boundary (400), never a 500
    message = cose.parse_sign1(proffer, 4096)
    body = cbor.decode(message.payload)
    header = {
        cose.H_ALG: cose.ALG_EDDSA,
        cose.H_CONTENT_TYPE: messages.CT_PROFFER,
        cose.H_CWT_CLAIMS: message.claims,
    }
    for wrong in ({"devices": [1]}, {"from": "soon"}, {"agreement": ["service-only", True]}):
        forged = cose.sign1(owner.owner.sign, header, cbor.encode(dict(body, **wrong)))
        refused = httpx.post(inbox, content=forged)
        assert refused.status_code == 400 and refused.json()["detail"].startswith("malformed"), refused.text
    assert api(vendor).get("/agreements").json() == []
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


def test_a_vendor_that_declines_keeps_the_device_when_the_owners_policy_says_keep_vendor(
    start_agent, tmp_path, device, mosquitto
):
    from tests.agent.conftest import Publisher

    owner, vendor = start_pair(
        start_agent,
        tmp_path,
        vendor_terms={"accepts": []},
        owner_terms={"vendor_api": "VENDOR", "on_vendor_decline": "keep-vendor"},
    )
    listener = Publisher(mosquitto.host, mosquitto.port)
    try:
        listener.subscribe(topics.topic(device.device_id, "command"))
        claim = api(owner).post("/devices", json={"card_hex": device.card(owner.owner.owner_id).hex()})
        assert claim.status_code == 201
        wait_for(lambda: "terms-vendor-kept" in audit_kinds(owner), 15, "the audit saying so")
        kept = [e["data"] for e in owner.store.audit_entries(0, 1000) if e["kind"] == "terms-vendor-kept"]
        assert kept == [
            {
                "device": device.device_id,
                "agreement": "service-only@1",
                "answer": "declined",
                "action": "keep-vendor",
            }
        ]
        assert "terms-vendor-dropped" not in audit_kinds(owner)
        assert api(vendor).get("/agreements").json()[0]["state"] == "declined"
        assert not owner.terms.is_vendor_dropped(device.device_id)
        time.sleep(1.0)
        assert listener.received == []  # no set-destinations: the device still sends to the vendor
        # an instead-of route takes the vendor off the device; once it is gone, the vendor is back
        route = {"name": "r", "destination": {"type": "file", "path": "r.jsonl"}, "mode": "instead-of"}
        assert api(owner).post("/routes", json={**route, "devices": [device.device_id]}).status_code == 201
        assert api(owner).delete("/routes/r").status_code == 200
        commands = wait_for(lambda: listener.received[1:], 10, "the destinations after the route is gone")
        first = messages.parse_command(listener.received[0][1])
        assert [d["name"] for d in first.args["destinations"]] == ["home"]
        last = messages.parse_command(commands[-1][1])
        assert [d["name"] for d in last.args["destinations"]] == ["vendor", "home"]
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


def cli_run(main, capsys, *argv: str) -> tuple[int, str, str]:
    """Run `firstparty ARGV` in this process; its exit status, stdout and stderr."""
    capsys.readouterr()
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_cli_walks_proffers_through_policy_answers_list_show_termination_and_acknowledgement(
    start_agent, tmp_path, device, capsys
):
    import json

    from host_agent.cli.common import write_runtime
    from host_agent.cli.main import main

    owner, vendor = start_pair(start_agent, tmp_path)
    owner_toml, vendor_toml = tmp_path / "owner.toml", tmp_path / "vendor.toml"
    owner_toml.write_text(f'data_dir = "{owner.config.data_dir}"\n')
    vendor_toml.write_text(f'role = "vendor"\ndata_dir = "{vendor.config.data_dir}"\n')
    for agent in (owner, vendor):
        write_runtime(agent.config, agent.api_port, agent.store)
    mine, theirs = ["--config", str(owner_toml)], ["--config", str(vendor_toml)]

    def run(*argv: str, status: int = 0) -> str:
        got, out, err = cli_run(main, capsys, *argv)
        assert got == status, f"firstparty {' '.join(argv)} -> {got}: {out}{err}"
        return out + err

    # the policy: the vendor's own, as its configuration says, and as another agent reads it
    published = httpx.get(url(vendor) + "/.well-known/firstparty-terms").json()
    local = json.loads(run("terms", "policy", *theirs))
    assert [a["id"] for a in local["accepts"]] == ["service-only"]
    assert all(published[key] == value for key, value in local.items())
    assert json.loads(run("terms", "policy", "--url", url(vendor), *mine)) == published
    assert json.loads(run("terms", "policy", *mine))["accepts"] == []  # an owner accepts nothing unasked
    unreachable = run("terms", "policy", "--url", "http://127.0.0.1:9", *mine, status=2)
    assert "cannot read the terms policy of http://127.0.0.1:9" in unreachable
    assert "Traceback" not in unreachable

    listed = run("terms", "roster").splitlines()[::2]  # each agreement: a title line, a terms line
    known = httpx.get(url(owner) + "/terms/roster").json()["agreements"]
    assert [line.split(":")[0] for line in listed] == [f"{a['id']}@{a['version']}" for a in known]

    # proffered to the vendor's agent: accepted at once; listed and shown on both sides
    out = run(
        "terms",
        "proffer",
        "service-only@1",
        "--to",
        url(vendor),
        "--recipient",
        "vendor",
        "--device",
        device.device_id,
        "--metric",
        "temp",
        "--purpose",
        "service",
        "--retention-days",
        "30",
        *mine,
    )
    agreed = api(owner).get("/agreements").json()
    assert len(agreed) == 1 and agreed[0]["state"] == "accepted"
    vendor_id = agreed[0]["id"]
    assert f"agreement {vendor_id}: service-only@1" in out and "- accepted" in out
    assert f"-> vendor ({vendor.owner.owner_id})" in out
    listed = run("terms", "list", *mine).splitlines()
    assert len(listed) == 1 and listed[0].split()[:4] == [vendor_id, "first", "accepted", "service-only@1"]
    assert run("terms", "list", *theirs).split()[:3] == [vendor_id, "second", "accepted"]
    shown = run("terms", "show", vendor_id, *mine)
    assert f"devices {device.device_id} metrics temp" in shown and ": accept" in shown
    assert "retention 30 days" in shown and "terminated" not in shown
    assert "no agreement 00ff" in run("terms", "show", "00ff", *mine, status=2)

    # terminated early with the CLI: the vendor's agent acknowledges, both records stay alike
    out = run("terms", "terminate", vendor_id, "--reason", "moving out", *mine)
    assert "- terminated" in out and "acknowledged -" not in out
    assert api(vendor).get(f"/agreements/{vendor_id}").json()["state"] == "terminated"
    assert records_of(owner, vendor, vendor_id)[0] == records_of(owner, vendor, vendor_id)[1]
    assert "not accepted" in run("terms", "terminate", vendor_id, *mine, status=2)

    # a recipient that runs nothing of ours: decline, one alternative, accept then acknowledge
    key = tmp_path / "coop.key"
    coop_id = run("terms", "keygen", "--key", str(key)).split()[1]

    def offline_proffer(name: str) -> tuple[str, Path]:
        path = tmp_path / f"{name}.cbor"
        run(
            "terms",
            "proffer",
            "community-energy@1",
            "--recipient",
            "energy co-op",
            "--device",
            device.device_id,
            "--metric",
            "temp",
            "--purpose",
            "research",
            "--retention-days",
            "30",
            "--out",
            str(path),
            *mine,
        )
        parts = records.parse_record(path.read_bytes())
        return terms.parse_proffer(parts["proffer"], wire.nacl_verify).nonce.hex(), path

    declined_id, declined_file = offline_proffer("declined")
    answer = tmp_path / "decline.cose"
    out = run(
        "terms", "decline", str(declined_file), "--key", str(key), "--reason", "no need", "--out", str(answer)
    )
    assert out.startswith(f"decline of {declined_id} signed by {coop_id}")
    out = run("terms", "import", declined_id, str(answer), *mine)
    assert "- declined" in out and ": decline (no need)" in out

    countered_id, countered_file = offline_proffer("countered")
    answer = tmp_path / "offer.cose"
    unknown = run(
        "terms", "offer", str(countered_file), "nosuch@9", "--key", str(key), "--out", str(answer), status=2
    )
    assert "nosuch@9" in unknown and not answer.exists()
    out = run(
        "terms",
        "offer",
        str(countered_file),
        "research-open-models@1",
        "--key",
        str(key),
        "--out",
        str(answer),
    )
    assert out.startswith(f"alternative of {countered_id} signed by {coop_id}")
    out = run("terms", "import", countered_id, str(answer), *mine)
    # the owner accepts no alternative it did not list: the counter-offer is refused, nothing follows
    assert "- refused" in out and ": alternative research-open-models@1" in out

    accepted_id, accepted_file = offline_proffer("accepted")
    answer = tmp_path / "accept.cose"
    run("terms", "accept", str(accepted_file), "--key", str(key), "--out", str(answer))
    assert "- accepted" in run("terms", "import", accepted_id, str(answer), *mine)
    ended, ack = tmp_path / "ended.cbor", tmp_path / "ack.cose"
    out = run("terms", "terminate", accepted_id, "--reason", "done", "--out", str(ended), *mine)
    assert "- terminated" in out and "acknowledged -" in out and str(ended) in out
    wrong = run(
        "terms",
        "acknowledge",
        str(ended),
        "--proffer",
        str(countered_file),
        "--key",
        str(key),
        "--out",
        str(ack),
        status=2,
    )
    assert "the termination does not hold" in wrong and not ack.exists()
    run(
        "terms",
        "acknowledge",
        str(ended),
        "--proffer",
        str(accepted_file),
        "--key",
        str(key),
        "--out",
        str(ack),
    )
    out = run("terms", "import", accepted_id, str(ack), *mine)
    assert "acknowledged -" not in out and "acknowledged 20" in out
    assert "replay" in run("terms", "import", accepted_id, str(ack), *mine, status=2)

    states = {a["id"]: a["state"] for a in api(owner).get("/agreements").json()}
    assert states == {
        vendor_id: "terminated",
        declined_id: "declined",
        countered_id: "refused",
        accepted_id: "terminated",
    }
    listed = run("terms", "list", *mine).splitlines()
    assert sorted(line.split()[0] for line in listed) == sorted(states)
    record = records.parse_record(api(owner).get(f"/agreements/{accepted_id}/record").content)
    assert set(record) == set(records.PARTS)  # proffer, answer, termination and its acknowledgement
    proffer = terms.parse_proffer(record["proffer"], wire.nacl_verify)
    assert terms.parse_answer(record["answer"], proffer, wire.nacl_verify).signer_id == coop_id
    assert owner.store.audit_verify() is None


def test_a_read_token_can_neither_change_nor_read_agreements_but_reads_the_public_terms(
    start_agent, tmp_path, device
):
    from host_agent.api import tokens

    owner, vendor = start_pair(start_agent, tmp_path)
    admin = api(owner)
    accepted = admin.post("/agreements", json=proffer_body(device, to=url(vendor))).json()
    offline = admin.post("/agreements", json=proffer_body(device, recipient="energy co-op")).json()
    assert (accepted["state"], offline["state"]) == ("accepted", "proffered")
    proffer = records.parse_record(admin.get(f"/agreements/{offline['id']}/record").content)["proffer"]
    coop_seed = os.urandom(32)
    accept = terms.encode_answer(
        wire.nacl_signer(coop_seed), wire.nacl_public_key(coop_seed), proffer, "accept", int(time.time())
    )

    def terms_kinds(agent) -> list[str]:
        return [kind for kind in audit_kinds(agent) if kind.startswith("terms-")]

    before = (admin.get("/agreements").json(), terms_kinds(owner), terms_kinds(vendor))

    reader = api(owner, tokens.issue(owner.store, "reader", "read"))
    answer = {"message_hex": accept.hex()}
    for method, path, body in (
        ("GET", "/agreements", None),
        ("GET", f"/agreements/{accepted['id']}", None),
        ("GET", f"/agreements/{accepted['id']}/record", None),
        ("POST", "/agreements", proffer_body(device, to=url(vendor))),
        ("POST", f"/agreements/{offline['id']}/answer", answer),
        ("POST", f"/agreements/{accepted['id']}/terminate", {"reason": "a reader says so"}),
        ("POST", f"/agreements/{accepted['id']}/termination-ack", answer),
    ):
        refused = reader.request(method, path, json=body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["detail"] == "this token is read-only: use an admin token"
    vendor_reader = api(vendor, tokens.issue(vendor.store, "reader", "read"))
    assert vendor_reader.get("/agreements").status_code == 403
    assert vendor_reader.get(f"/agreements/{accepted['id']}/record").status_code == 403
    # nothing changed: no record, no state, no terms entry in the audit of either agent
    assert (admin.get("/agreements").json(), terms_kinds(owner), terms_kinds(vendor)) == before

    # what any party may read, a reader may too: the published policy and the roster
    for path in ("/.well-known/firstparty-terms", "/terms/roster"):
        assert reader.get(path).json() == httpx.get(url(owner) + path).json()
    assert reader.get("/terms/roster").json()["agreements"][0]["id"] == "service-only"
    # the refused answer was sound: an admin token's same request takes it
    assert admin.post(f"/agreements/{offline['id']}/answer", json=answer).json()["state"] == "accepted"


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed server certificate for localhost (EC P-256), made by openssl."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        cwd=folder, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return folder / f"{name}.pem", folder / f"{name}.key"


def _tls_front(cert: Path, key: Path, api_port: int) -> tuple[subprocess.Popen, int]:
    """HTTPS in front of an agent's API, as a reverse proxy would put it (socat: TLS to plain TCP)."""
    port = free_port()
    front = subprocess.Popen(
        ["socat", f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={cert},key={key},verify=0",
         f"TCP:127.0.0.1:{api_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(lambda: _accepts(port), 10, "the HTTPS front")
    return front, port


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_proffer_over_https_reaches_a_recipient_whose_certificate_is_trusted_and_no_other(
    start_agent, tmp_path, device, monkeypatch
):
    trusted = _self_signed(tmp_path, "vendor")
    stranger = _self_signed(tmp_path, "stranger")  # the same name, a key nobody trusts
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted[0]))  # the owner's agent trusts the vendor's
    owner, vendor = start_pair(start_agent, tmp_path)
    good, good_port = _tls_front(*trusted, vendor.api_port)
    bad, bad_port = _tls_front(*stranger, vendor.api_port)
    try:
        refused = api(owner).post(
            "/agreements", json=proffer_body(device, to=f"https://localhost:{bad_port}")
        )
        assert refused.status_code == 400 and "CERTIFICATE_VERIFY_FAILED" in refused.text, refused.text
        assert api(vendor).get("/agreements").json() == []  # nothing reached the vendor

        result = api(owner).post(
            "/agreements", json=proffer_body(device, to=f"https://localhost:{good_port}")
        )
        assert result.status_code == 201, result.text
        agreement = result.json()
        assert agreement["state"] == "accepted" and agreement["recipient_id"] == vendor.owner.owner_id
        mine, theirs = records_of(owner, vendor, agreement["id"])
        assert mine == theirs
    finally:
        for front in (good, bad):
            front.terminate()
            front.wait(10)
