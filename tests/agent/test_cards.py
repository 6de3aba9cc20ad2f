"""Device cards at the agent: the owner a card names moves only forward in time."""

from __future__ import annotations

import os

from fp import messages
from fp.ids import id_from_public_key
from tests.agent.conftest import BOTH_STORES, FakeDevice, wait_for

pytestmark = BOTH_STORES

T = 1796000000


def card(device: FakeDevice, time_s: int | None, owner_id: str | None) -> bytes:
    return messages.encode_card(device.sign, device.public, "sim", "0.1.0", time_s, owner_id)


def test_an_older_genuine_card_cannot_put_back_a_former_owner(start_agent, device, publisher):
    agent = start_agent(auto_accept=True)
    alice, bob = (id_from_public_key(os.urandom(32)) for _ in range(2))
    publisher.publish(device.topic("card"), card(device, T, alice))
    wait_for(
        lambda: (found := agent.store.device(device.device_id)) is not None and found.owner_id == alice,
        10,
        "alice's card",
    )

    publisher.publish(device.topic("card"), card(device, T + 100, bob))  # a hand-over to bob
    wait_for(lambda: agent.store.device(device.device_id).owner_id == bob, 10, "bob's card")

    for replayed in (card(device, T, alice), card(device, None, alice), card(device, T - 50, None)):
        publisher.publish(device.topic("card"), replayed)
    wait_for(lambda: agent.store.rejection_counts().get("replay") == 3, 10, "three stale cards refused")
    assert agent.store.device(device.device_id).owner_id == bob
    assert bytes(agent.store.card(device.device_id)) == card(device, T + 100, bob)

    # the same owner's card without a time (a board after a power cut, before NTP) is the card
    publisher.publish(device.topic("card"), card(device, None, bob))
    wait_for(lambda: bytes(agent.store.card(device.device_id)) == card(device, None, bob), 10, "fresh card")
    # ...and still no older card of another owner gets in after it
    publisher.publish(device.topic("card"), card(device, T + 99, alice))
    wait_for(lambda: agent.store.rejection_counts().get("replay") == 4, 10, "the fourth stale card refused")
    assert agent.store.device(device.device_id).owner_id == bob


def test_a_database_of_the_first_release_gains_the_card_time_column(tmp_path):
    import sqlite3

    from host_agent.store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE devices (device_id TEXT PRIMARY KEY, public_key BLOB NOT NULL, card BLOB NOT NULL,"
            " owner_id TEXT, name TEXT, board TEXT, firmware TEXT, state TEXT NOT NULL, first_seen REAL,"
            " last_seen REAL, last_status TEXT)"
        )
        db.execute(
            "INSERT INTO devices (device_id, public_key, card, state) VALUES ('d', x'00', x'00', 'accepted')"
        )
    store = SQLiteStore(path)
    try:
        assert store.query("SELECT device_id, card_time_s FROM devices") == [("d", None)]
    finally:
        store.close()
