"""The embedded broker is supervised and never orphaned: restarted when it dies, gone with its agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from host_agent.bus.broker import RESTART_PAUSE_S, STABLE_S, EmbeddedBroker, restart_pause
from host_agent.bus.mosquitto import free_port
from host_agent.store.sqlite import SQLiteStore
from tests.agent.conftest import (
    CountingPublisher,
    FakeDevice,
    add_own_webhook,
    agent_settings,
    agent_toml,
    serve_process,
    wait_for,
)


def _is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_supervisor_restarts_a_sigkilled_broker_and_readings_flow_again(start_agent):
    agent = start_agent(broker={"embedded": True, "port": 0}, auto_accept=True)
    device = FakeDevice(os.urandom(32))
    agent.broker.add_device(device.device_id, device.password(agent.broker.port))
    publisher = CountingPublisher(agent.broker.port, device)
    try:
        publisher.client.publish(device.topic("card"), device.card(), qos=1, retain=True).wait_for_publish(5)
        assert publisher.send(device.reading())
        wait_for(lambda: agent.store.count_readings() == 1, 10, "the first reading stored")
        first = agent.broker.mosquitto.process
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        wait_for(lambda: agent.broker.restarts == 1 and agent.broker.is_running, 10, "the broker restarted")
        assert agent.broker.mosquitto.process.pid != first.pid
        wait_for(lambda: agent.bus.is_connected, 15, "the agent back on its broker")
        wait_for(lambda: publisher.client.is_connected(), 15, "the device back on the broker")
        later = [device.reading() for _ in range(20)]
        assert all(publisher.send(data, 5.0) for data in later)
        wait_for(lambda: agent.store.count_readings() == 21, 15, "the readings after the restart stored")
    finally:
        publisher.close()


def test_restart_pause_doubles_while_the_broker_keeps_dying_up_to_30_s_and_resets_once_it_ran_10_s():
    waits, pause_s = [], RESTART_PAUSE_S
    for _ in range(9):  # each broker died 1 s after its start
        wait_s, pause_s = restart_pause(pause_s, 1.0)
        waits.append(wait_s)
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert restart_pause(pause_s, STABLE_S) == (0.0, RESTART_PAUSE_S)  # ran long enough: at once
    assert restart_pause(RESTART_PAUSE_S, STABLE_S - 0.1) == (0.5, 1.0)


def test_supervisor_restarts_a_broker_that_keeps_dying_after_growing_pauses(start_agent):
    agent = start_agent(broker={"embedded": True, "port": 0}, auto_accept=True)
    broker = agent.broker
    for kill in range(1, 4):  # each dies well within STABLE_S of its start
        process = broker.mosquitto.process
        process.send_signal(signal.SIGKILL)
        process.wait(5)
        wait_for(lambda k=kill: broker.restarts == k and broker.is_running, 15, f"restart {kill}")
        assert broker.mosquitto.process.pid != process.pid and broker.last_exit == "signal 9"
    assert list(broker.restart_pauses) == [0.5, 1.0, 2.0]  # the supervisor's own schedule, not wall time
    wait_for(lambda: agent.bus.is_connected, 15, "the agent back on its broker")


def test_a_stale_broker_of_ours_is_reclaimed_and_a_strangers_process_left_alone(tmp_path):
    port = free_port()
    workdir = tmp_path / "broker"
    first = EmbeddedBroker(workdir, "127.0.0.1", port)
    # as a killed agent leaves it where PR_SET_PDEATHSIG is not available: running, in its own session
    orphan = subprocess.Popen(first.mosquitto.command, start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        first.pid_file.write_text(f"{orphan.pid}\n")
        wait_for(lambda: _listening(port), 5, "the orphan listening")
        second = EmbeddedBroker(workdir, "127.0.0.1", port)
        second.start()
        try:
            assert orphan.wait(5) is not None  # reclaimed: stopped, and its port ours again
            assert second.is_running
            assert int(second.pid_file.read_text()) == second.mosquitto.process.pid
        finally:
            second.stop()
        assert not second.pid_file.exists()
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        first.pid_file.write_text(f"{stranger.pid}\n")  # a pid file outlives its process; the pid is reused
        third = EmbeddedBroker(workdir, "127.0.0.1", port)
        third.start()
        third.stop()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.mark.exclusive  # the forwarded-twice bound (1 %) counts what a kill finds in flight
def test_sigkilled_agent_takes_its_broker_along_and_serves_again_at_once(tmp_path, mosquitto, webhook):
    port = free_port()
    settings = agent_settings(tmp_path, mosquitto, auto_accept=True)
    settings["broker"] = {"embedded": True, "port": port, "client_id": "firstparty-agent"}
    config_path = tmp_path / "agent.toml"
    config_path.write_text(agent_toml(settings))
    log = tmp_path / "agent.log"
    runtime = tmp_path / "agent" / "agent.json"
    pid_file = tmp_path / "agent" / "broker" / "mosquitto.pid"
    device = FakeDevice(os.urandom(32))
    process = serve_process(config_path, log)
    publisher = None
    try:
        wait_for(runtime.exists, 20, "the agent to serve")
        _enrol(runtime, device, port)
        _add_webhook(runtime, webhook.url)  # in its store: the next agent forwards what this one had not
        publisher = CountingPublisher(port, device)
        publisher.client.publish(device.topic("card"), device.card(), qos=1, retain=True).wait_for_publish(5)
        # 600: what the killed agent had forwarded but not yet marked done goes again (a few), and
        # 1 % of 300 would be 3, the size of that batch
        sent = [device.reading() for _ in range(600)]
        for index, data in enumerate(sent[:150]):
            publisher.send(data, 0.5)
            if index == 100:
                broker_pid = int(pid_file.read_text())
                process.send_signal(signal.SIGKILL)
                process.wait(5)
                # gone with its agent (PR_SET_PDEATHSIG), before any new start could reclaim it
                wait_for(lambda pid=broker_pid: not _is_alive(pid), 5, "the killed agent's mosquitto gone")
                runtime.unlink()
                process = serve_process(config_path, log)  # at once: no port left taken
        wait_for(runtime.exists, 20, "the agent to serve again")
        assert "is taken" not in log.read_text()
        wait_for(lambda: publisher.client.is_connected(), 15, "the device back on the broker")
        for data in sent[150:]:
            publisher.send(data, 5.0)
        acknowledged = set(publisher.acknowledged)
        assert len(acknowledged) >= 550  # all but those sent while no broker listened
        store = SQLiteStore(tmp_path / "agent" / "firstparty.db")
        try:

            def stored() -> list[bytes]:
                return [bytes(r[0]) for r in store.query("SELECT raw FROM messages WHERE kind='reading'")]

            wait_for(lambda: acknowledged <= set(stored()), 30, "every acknowledged reading stored")
            rows = stored()
            assert len(rows) == len(set(rows))  # none twice
            assert set(rows) <= set(sent)
        finally:
            store.close()
        wait_for(lambda: {b for _, b in webhook.bodies} >= acknowledged, 30, "every reading forwarded")
        forwarded = [b for _, b in webhook.bodies]
        twice = len(forwarded) - len(set(forwarded))  # sent by the killed agent, not yet marked done
        print(f"acknowledged {len(acknowledged)}, forwarded {len(forwarded)}, twice {twice}")
        assert twice <= len(acknowledged) // 100  # duplicates within 1 %
    finally:
        if publisher:
            publisher.close()
        process.terminate()
        process.wait(10)
    assert not pid_file.exists()  # a clean stop leaves nothing behind


def _add_webhook(runtime: Path, url: str) -> None:
    import httpx

    info = json.loads(runtime.read_text())
    with httpx.Client(base_url=info["api"], headers={"authorization": f"Bearer {info['token']}"}) as admin:
        add_own_webhook(admin, url)


def _enrol(runtime: Path, device: FakeDevice, port: int) -> None:
    import httpx

    info = json.loads(runtime.read_text())
    headers = {"authorization": f"Bearer {info['token']}"}
    body = {"card_hex": device.card().hex(), "password": device.password(port)}
    response = httpx.post(info["api"] + "/devices/enrol", json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    time.sleep(0.3)  # the broker reloads its password file (SIGHUP)


# mosquitto's order at start (src/mosquitto.c main: listeners__start, then signal__setup): a
# client can connect before SIGHUP is handled, and until then SIGHUP's default action kills it
LATE_HANDLER = """
import signal, sys, time
time.sleep(0.5)
signal.signal(signal.SIGHUP, lambda *a: print("reloaded", flush=True))
time.sleep(5)
"""


def test_a_reload_sent_while_the_broker_is_still_starting_waits_for_its_handler(tmp_path):
    import sys

    broker = EmbeddedBroker(tmp_path / "broker", "127.0.0.1", 0)
    broker.mosquitto.process = subprocess.Popen(  # a stand-in for a mosquitto in that window
        [sys.executable, "-c", LATE_HANDLER], stdout=subprocess.PIPE, text=True
    )
    process = broker.mosquitto.process
    try:
        started = time.monotonic()
        broker.reload()
        assert 0.3 < time.monotonic() - started < 5  # it waited for the handler, boundedly
        time.sleep(0.2)
        assert process.poll() is None, "the reload killed a broker that was starting"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=5)
    assert output == "reloaded\n"
