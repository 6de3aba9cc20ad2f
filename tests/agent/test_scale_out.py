"""Two agents on one MQTT shared subscription ($share/...) split one stream: nothing lost or
duplicated in the store they share."""

from __future__ import annotations

from tests.agent.conftest import wait_for


def test_two_agents_on_a_shared_subscription_split_the_stream_without_loss_or_duplicates(
    start_agent, device, publisher
):
    first = start_agent(broker={"shared_group": "ingest", "client_id": "agent-a"})
    second = start_agent(broker={"shared_group": "ingest", "client_id": "agent-b"}, auto_accept=True)
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
