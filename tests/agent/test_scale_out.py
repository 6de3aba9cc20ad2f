"""Two agents on one MQTT shared subscription ($share/...) split one stream: nothing lost or
duplicated in the store they share, and each forward delivered by one of them."""

from __future__ import annotations

import json
import time

from host_agent.api import tokens
from host_agent.ingest.intake import Ingest
from host_agent.routes import rules as routing
from host_agent.store import open_store
from tests.agent.conftest import BOTH_STORES, api, wait_for

# Both tests are about the store the agents share (claims, leases, one copy of each reading): on
# SQLite and on PostgreSQL (where tests/agent/test_postgres.py also runs agent processes).
pytestmark = BOTH_STORES


def test_two_agents_on_a_shared_subscription_split_the_stream_without_loss_or_duplicates(
    start_agent, device, publisher, tmp_path
):
    first = start_agent(broker={"shared_group": "ingest", "client_id": "agent-a"})
    second = start_agent(broker={"shared_group": "ingest", "client_id": "agent-b"}, auto_accept=True)
    out = tmp_path / "agent" / "files" / "forwards.jsonl"  # in the agents' files_dir
    admin = api(first, tokens.issue(first.store, "admin", "admin"))
    route = {"name": "file", "destination": {"type": "file", "path": str(out)}}
    assert admin.post("/routes", json=route).status_code == 201
    second.ingest.reload_routes()  # the route was added through the first agent
    publisher.publish(device.topic("card"), device.card())
    wait_for(lambda: first.store.device(device.device_id), 10, "the card stored by one of them")
    first.store.set_state(device.device_id, "accepted")
    total = 600
    sent = [device.reading() for _ in range(total)]
    for data in sent:
        publisher.client.publish(device.topic("reading"), data, qos=1)
    wait_for(lambda: first.store.count_readings() == total, 30, f"{total} readings in the shared store")
    stored = [bytes(r[0]) for r in first.store.query("SELECT raw FROM messages WHERE kind='reading'")]
    assert sorted(stored) == sorted(sent)
    share_a, share_b = first.ingest.counts["reading"], second.ingest.counts["reading"]
    assert share_a + share_b == total
    assert share_a > 0 and share_b > 0, (share_a, share_b)
    assert first.ingest.rejected_counts["replay"] + second.ingest.rejected_counts["replay"] == 0

    # both outboxes deliver from the one store: each claims what it delivers, so no copies
    wait_for(lambda: first.store.outbox_pending() == 0, 30, "every forward delivered")
    time.sleep(0.3)  # a second copy, if one were on its way
    keys = [json.loads(line)["idempotency_key"] for line in out.read_text().splitlines()]
    assert len(keys) == total and len(set(keys)) == total
    assert first.outbox.delivered > 0 and second.outbox.delivered > 0


def test_a_claimed_forward_is_left_to_its_agent_for_the_lease_then_due_again(tmp_path, device, store_url):
    store = open_store(tmp_path / "firstparty.db", store_url)
    spec = routing.validate({"destination": {"type": "file", "path": str(tmp_path / "f")}})
    store.add_route("file", spec, None)
    ingest = Ingest(store, auto_accept=True, shared=True)
    ingest.process([(device.topic("card"), device.card())])
    ingest.process([(device.topic("reading"), device.reading())])
    now = time.time() + 1
    claimed = store.claim_due(now, 10, lease_s=60)
    assert len(claimed) == 1
    assert store.claim_due(now + 59, 10, lease_s=60) == [], "another agent gets nothing while it is leased"
    again = store.claim_due(now + 61, 10, lease_s=60)  # its agent died without marking it
    assert [r[0] for r in again] == [claimed[0][0]]
    store.mark_delivered([again[0][0]], "file", {})
    assert store.claim_due(now + 200, 10, lease_s=60) == [] and store.outbox_pending() == 0
    store.close()
