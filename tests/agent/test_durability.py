"""Nothing lost: a destination down then back, the agent SIGKILLed mid-stream, a full disk."""

from __future__ import annotations

import json
import signal

import paho.mqtt.client as mqtt
import pytest

from host_agent.api import tokens
from host_agent.bus.mosquitto import Mosquitto
from host_agent.store.sqlite import SQLiteStore
from tests.agent.conftest import (
    BOTH_STORES,
    add_own_webhook,
    agent_settings,
    agent_toml,
    api,
    publish_card_and_readings,
    publish_killing_one_midway,
    serve_process,
    wait_for,
)


# The outbox's retries and claims are the store's: the two destination tests run on both stores.
# A SIGKILLed agent process on PostgreSQL: tests/agent/test_postgres.py; the full disk here is
# SQLite's page cap (PostgreSQL's own full disk: test_disk_full.py says why it is not played).
@BOTH_STORES
def test_destination_down_then_back_loses_nothing(start_agent, device, publisher, webhook):
    agent = start_agent(auto_accept=True)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    add_own_webhook(admin, webhook.url)
    publisher.publish(device.topic("card"), device.card(), retain=True)
    webhook.status = 503
    sent = [device.reading() for _ in range(20)]
    for data in sent:
        publisher.publish(device.topic("reading"), data)
    wait_for(lambda: agent.store.count_readings() == 20, 10, "20 stored")
    wait_for(lambda: agent.outbox.failed >= 20, 10, "failed attempts while down")
    assert webhook.bodies == []
    webhook.status = 200
    wait_for(lambda: len(webhook.bodies) >= 20, 15, "everything delivered once the destination is back")
    assert {body for _, body in webhook.bodies} == set(sent)


@BOTH_STORES
def test_mqtt_destination_down_then_back_loses_nothing(start_agent, device, publisher, tmp_path):
    """The agent's MQTT sink (paho on the agent's event loop) notices the broker go, fails the
    batch, and reconnects when the outbox retries; the recipient's persistent session gets all."""
    vendor_dir = tmp_path / "vendor"
    vendor = Mosquitto(vendor_dir, extra_config=f"persistence true\npersistence_location {vendor_dir}/\n")
    vendor.start()
    recipient = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="recipient", clean_session=False)
    received: set[bytes] = set()
    recipient.on_message = lambda c, u, m: received.add(bytes(m.payload))
    recipient.on_connect = lambda c, u, f, rc, p: c.subscribe("out/#", 1)
    recipient.reconnect_delay_set(0.1, 0.5)
    recipient.connect(vendor.host, vendor.port)
    recipient.loop_start()
    try:
        agent = start_agent(auto_accept=True)
        admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
        destination = {"type": "mqtt", "host": vendor.host, "port": vendor.port, "topic_prefix": "out"}
        assert (
            admin.post(
                "/routes", json={"name": "vendor", "destination": destination, "needs_agreement": False}
            ).status_code
            == 201
        )
        before = publish_card_and_readings(publisher, device, 5)
        wait_for(lambda: received >= set(before), 10, "the first forwards at the recipient")

        vendor.stop()
        during = [device.reading() for _ in range(10)]
        for data in during:
            publisher.publish(device.topic("reading"), data)
        wait_for(lambda: agent.store.count_readings() == 15, 10, "15 stored")
        wait_for(lambda: agent.outbox.failed >= 10, 10, "failed attempts while the broker is down")
        assert agent.store.outbox_pending() == 10

        vendor.start()
        wait_for(lambda: received >= set(during), 20, "everything delivered once the broker is back")
        wait_for(lambda: agent.store.outbox_pending() == 0, 10, "every forward marked delivered")
    finally:
        recipient.loop_stop()
        recipient.disconnect()
        vendor.stop()


@pytest.mark.exclusive  # the forwarded-twice bound (1 %) counts what a kill finds in flight
def test_sigkill_mid_stream_stores_each_reading_once_and_delivers_each_at_least_once(
    tmp_path, mosquitto, device, publisher, webhook
):
    settings = agent_settings(tmp_path, mosquitto, auto_accept=True)
    settings["api"] = {"port": 0}
    config_path = tmp_path / "agent.toml"
    config_path.write_text(agent_toml(settings))
    log = tmp_path / "agent.log"
    process = serve_process(config_path, log)
    try:
        runtime = tmp_path / "agent" / "agent.json"
        wait_for(runtime.exists, 20, "the agent to serve")
        info = json.loads(runtime.read_text())
        import httpx

        headers = {"authorization": f"Bearer {info['token']}"}
        route = {
            "name": "hook",
            "destination": {"type": "webhook", "url": webhook.url},
            "needs_agreement": False,
        }
        assert httpx.post(info["api"] + "/routes", json=route, headers=headers).status_code == 201
        publisher.publish(device.topic("card"), device.card(), retain=True)
        total = 400

        def kill() -> None:
            process.send_signal(signal.SIGKILL)
            process.wait(5)

        sent = publish_killing_one_midway(publisher, device, total, kill)
        runtime.unlink()
        process = serve_process(config_path, log)
        wait_for(runtime.exists, 20, "the agent to serve again")
        store = SQLiteStore(tmp_path / "agent" / "firstparty.db")
        wait_for(lambda: store.count_readings() == total, 30, f"{total} readings stored")
        stored = [bytes(r[0]) for r in store.query("SELECT raw FROM messages WHERE kind='reading'")]
        assert sorted(stored) == sorted(sent)  # each exactly once
        wait_for(lambda: {b for _, b in webhook.bodies} == set(sent), 30, "every reading delivered")
        store.close()
    finally:
        process.kill()
        process.wait(5)


def test_full_disk_stops_acknowledging_reports_and_loses_nothing(start_agent, device, publisher):
    agent = start_agent(auto_accept=True)
    publisher.publish(device.topic("card"), device.card(), retain=True)
    publisher.publish(device.topic("reading"), device.reading())
    wait_for(lambda: agent.store.count_readings() == 1, 10, "first reading")
    pages = agent.store.query("PRAGMA page_count")[0][0]
    agent.store.set_max_page_count(pages + 2)
    sent = [device.reading() for _ in range(300)]
    for data in sent:
        publisher.client.publish(device.topic("reading"), data, qos=1)
    wait_for(lambda: agent.status()["store"] != "ok", 15, "the agent to report the full store")
    admin = api(agent, "x")
    assert admin.get("/healthz").json()["ok"] is False
    stuck = agent.store.count_readings()
    assert stuck < 301
    agent.store.set_max_page_count(1_000_000)
    wait_for(lambda: agent.store.count_readings() == 301, 20, "every reading stored once space returns")
    wait_for(lambda: agent.status()["store"] == "ok", 5, "the store reported healthy again")
    assert agent.ingest.rejected_counts["replay"] == 0


@BOTH_STORES
def test_each_commit_is_on_the_disk_before_ingest_acknowledges_it(tmp_path, store_url, request):
    """A power cut must not take a batch back after the broker (or a device's receipt) was told.

    SQLite's WAL at synchronous=NORMAL survives a killed process but not a power cut; PostgreSQL
    at synchronous_commit=off neither. The store asks for the durable setting on every connection,
    so a database whose default is off (an administrator's choice for other loads) does not weaken it.
    """
    if store_url is None:
        store = SQLiteStore(tmp_path / "firstparty.db")
        try:
            assert store.query("PRAGMA journal_mode")[0][0] == "wal"
            assert store.query("PRAGMA synchronous")[0][0] == 2  # FULL
        finally:
            store.close()
        return
    import psycopg

    from host_agent.store.postgres import PostgresStore

    with psycopg.connect(store_url, autocommit=True) as db:
        name = db.info.dbname
        db.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    try:
        with psycopg.connect(store_url) as db:  # a plain connection takes the database's default
            assert db.execute("SHOW synchronous_commit").fetchone()[0] == "off"
        store = PostgresStore(store_url)
        try:
            assert store.query("SHOW synchronous_commit")[0][0] == "on"
            with store.transaction() as tx:
                assert tx.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        finally:
            store.close()
    finally:
        with psycopg.connect(store_url, autocommit=True) as db:
            db.execute(f'ALTER DATABASE "{name}" RESET synchronous_commit')
