"""Receipts end to end: the real firmware (unix port), a real agent, real mosquitto, real SQLite.

The broker is SIGKILLed three times while the device makes more than 100 readings a second. Under the
PUBACK rule the messages the broker had acknowledged and not yet delivered were lost with it
(issue 15); under the receipts rule the device keeps each reading until the agent's signed
receipt covers it, so every reading it produced is stored, exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from fp import ids, messages
from host_agent.api import tokens
from host_agent.bus.broker import STABLE_S
from host_agent.bus.mosquitto import Mosquitto
from host_agent.rig.simdevice import SimDevice
from host_agent.wire import nacl_public_key, nacl_verify
from tests.agent.conftest import BOTH_STORES, HAS_MICROPYTHON, api, run_on, wait_for

pytestmark = [
    BOTH_STORES,
    pytest.mark.skipif(not HAS_MICROPYTHON, reason="the micropython unix port is not installed"),
]
SENSOR = "n"  # the sim's counter sensor: its value is the sample number, so a gap is a lost reading
# What makes the kills a test: readings made and not stored yet while the broker is down, more than
# the 64 the device keeps in flight (fp.receipted), so that the outage's backlog is sent again from
# its flash queue. Issue 15 saw losses at 100-150 readings/s; that rate is printed, not required: a
# slower machine (90/s was seen in CI) builds the same backlog over the same outages, and the
# backlog is what the device's delivery must survive.
MIN_PEAK_BACKLOG = 100
# a 5 ms pause between samples, plus the signing: about 130 readings/s. A broker down for 1-4 s
# (the supervisor's restart pause doubles while it keeps dying, and the device's reconnect backoff
# doubles too) leaves 130-500 waiting on the device: more than the 128 slots of a board's default
# flash queue, hence the board's queue_slots
FAST_BOARD = {
    "name": "sim",
    "port": "unix",
    "pins": {},
    "sensors": [{"name": SENSOR, "type": "counter", "interval_s": 0.005}],
    "queue_slots": 1024,
}
KILLS = 3
READINGS_BETWEEN_KILLS = 150
# The next kill waits until at most this many readings wait on the device. Without it a kill could
# come while the last outage's backlog still drains (the stored count grows fastest then), the
# backlogs add up over the three kills, and on a loaded machine they outgrew the 1024 slots (a run
# saw 254 dropped). With it each outage has 1024 - 128 slots, about 7 s at 130/s: more than the
# longest one here (the supervisor's third pause, 2 s, then the device's reconnect backoff).
BACKLOG_BEFORE_KILL = 128


def _seeded_flash(folder: Path) -> tuple[Path, str]:
    """A flash folder whose device key is known in advance (the id goes into its destinations)."""
    folder.mkdir(parents=True)
    seed = os.urandom(32)
    (folder / "key.seed").write_bytes(seed)
    return folder, ids.id_from_public_key(nacl_public_key(seed))


def _http(device: SimDevice, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{device.http_port}{path}", timeout=5) as response:
        return response.read()


def _status(device: SimDevice) -> dict:
    return messages.parse_device_message(_http(device, "/status"), "status").body


def _stored_values(agent) -> list[int]:
    rows = agent.store.query("SELECT raw FROM messages WHERE kind='reading'")
    return [int(messages.parse_device_message(bytes(r[0]), "reading").body[0][2]) for r in rows]


def _latest_value(device) -> tuple[float, int]:
    """(now, the sensor's latest sample number): the device's production, read from its LAN API."""
    last = messages.parse_device_message(_http(device, f"/readings/latest/{SENSOR}"), "reading")
    return time.monotonic(), int(last.body[0][2])


def _sigkill_under_load(agent, device, kill_broker) -> dict:
    """Kill the broker KILLS times under load, stop the sensor, wait; return what was observed."""
    peak_backlog = 0

    def backlog() -> int:
        # readings made and not stored yet (in flight or waiting on the device; its /status is
        # signed at most every 5 s, so its `buffered` lags): sampled while the broker is down and
        # while its backlog drains
        nonlocal peak_backlog
        stored = agent.store.count_readings()
        waiting = _latest_value(device)[1] + 1 - stored
        peak_backlog = max(peak_backlog, waiting)
        return waiting

    def stored_at_least(count: int) -> bool:
        backlog()
        return agent.store.count_readings() >= count

    wait_for(lambda: agent.store.count_readings() >= 50, 30, "the first readings stored")
    stored_before = agent.store.count_readings()
    started_s, first_value = _latest_value(device)
    for _ in range(KILLS):
        target = agent.store.count_readings() + READINGS_BETWEEN_KILLS
        wait_for(lambda t=target: stored_at_least(t), 30, "readings stored under load")
        wait_for(lambda: _status(device)["buffered"] <= BACKLOG_BEFORE_KILL, 30, "the backlog drained")
        kill_broker(backlog)
    wait_for(lambda: stored_at_least(stored_before + KILLS * READINGS_BETWEEN_KILLS), 30, "more")
    ended_s, last_value = _latest_value(device)
    rate = (last_value - first_value) / (ended_s - started_s)  # readings made per second, kills included
    # stop producing: the last value the sensor gave is then the device's own count
    for _ in range(3):  # a command is not covered by receipts: the broker's restart may eat one
        result = run_on(
            agent, agent.command(device.device_id(), "set-interval", {"sensor": SENSOR, "interval_s": 86400})
        )
        if result.outcome == "applied":
            break
    assert result.outcome == "applied", (result, list(device.log)[-20:])
    time.sleep(0.5)
    last = messages.parse_device_message(_http(device, f"/readings/latest/{SENSOR}"), "reading")
    produced = int(last.body[0][2]) + 1
    _wait_every_reading_stored(agent, device, produced, 60)
    wait_for(lambda: _status(device)["buffered"] == 0, 30, "the device holding nothing any more")
    print(f"{rate:.0f} readings/s under load, at most {peak_backlog} made and not stored yet")
    return {"produced": produced, "status": _status(device), "rate": rate, "peak_backlog": peak_backlog}


def _wait_every_reading_stored(agent, device, produced: int, timeout_s: float) -> None:
    """Wait until `produced` readings are stored; or fail saying which are missing, whether they
    came later (within another timeout_s: late) or not at all, and what the device and agent say."""
    try:
        wait_for(
            lambda: agent.store.count_readings() >= produced, timeout_s, f"all {produced} readings stored"
        )
        return
    except AssertionError:
        pass
    missing = sorted(set(range(produced)) - set(_stored_values(agent)))
    try:
        info = run_on(agent, agent.command(device.device_id(), "get-info", {})).result
    except Exception as error:  # noqa: BLE001 - a diagnostic: the device may not answer either
        info = {"no answer": repr(error)}
    late_s = time.monotonic()
    try:
        wait_for(lambda: agent.store.count_readings() >= produced, timeout_s, "the missing readings")
        late_s = time.monotonic() - late_s
    except AssertionError:
        late_s = None
    if late_s is not None:
        why = f"late: stored {late_s:.1f} s after that"
    elif len(missing) > info.get("dropped", 0):
        why = "lost after being sent"
    else:
        # a reading the device dropped for a full queue was never covered by a receipt: it is
        # counted there (`dropped`), not lost after an acknowledgement
        why = "dropped: the queue overflowed"
    raise AssertionError(
        f"{len(missing)} readings missing after {timeout_s:g} s ({why}), first {missing[:10]}; the agent"
        f" rejected {dict(agent.ingest.rejected_counts)}; the device says {info}; its log ends"
        f" {list(device.log)[-15:]}"
    )


def _assert_each_stored_once(agent, produced: int, webhook) -> None:
    values = _stored_values(agent)
    assert len(values) == produced, f"{len(values)} stored rows for {produced} readings"
    assert sorted(values) == list(range(produced)), "a reading is missing or stored twice"
    resent = agent.ingest.rejected_counts["duplicate"]  # delivered again, acknowledged as stored
    wait_for(lambda: len(webhook.bodies) >= produced, 30, "every reading forwarded")
    bodies = [body for _, body in webhook.bodies]
    forwarded_twice = len(bodies) - len(set(bodies))
    print(f"produced {produced}, stored once each, sent again {resent}, forwarded twice {forwarded_twice}")
    assert forwarded_twice <= max(resent, produced) // 100


def _add_webhook(agent, webhook) -> None:
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    route = {"name": "hook", "destination": {"type": "webhook", "url": webhook.url}, "needs_agreement": False}
    assert admin.post("/routes", json=route).status_code == 201


@pytest.mark.exclusive  # the device's rate must not share its cores
def test_owner_side_broker_sigkilled_three_times_under_load_loses_no_reading(
    start_agent, mosquitto, tmp_path, webhook
):
    agent = start_agent(broker={"embedded": True, "port": 0}, auto_accept=True)
    broker_up_s = time.monotonic()  # the embedded broker runs once the agent has started
    _add_webhook(agent, webhook)
    flash, device_id = _seeded_flash(tmp_path / "flash")
    home = dict(agent.home_destination(device_id), name="home")
    assert home["receipts"] == agent.receipts.public.hex()
    (flash / "config.json").write_text(json.dumps({"destinations": [home]}))
    device = SimDevice(
        flash, (mosquitto.host, mosquitto.port), board=FAST_BOARD, owner_key=agent.owner.public
    ).start()
    try:
        assert device.device_id(20) == device_id
        device.enrol(agent)  # as `firstparty flash --config` does: its password's hash to the broker
        broker = agent.broker

        def kill_broker(backlog):
            restarts = broker.restarts
            if not restarts:
                # A broker up STABLE_S is restarted at once, so the pauses are 0, 0.5 and 1 s. Killed
                # sooner, they were 0.5, 1 and 2 s. The device's backoff could then reach its next
                # try 7.5 s after the last kill, past its free slots (1024 - 128 at 130/s: 6.9 s),
                # and the test measured the queue's size, not what a kill loses.
                time.sleep(max(0.0, broker_up_s + STABLE_S + 0.5 - time.monotonic()))
            broker.mosquitto.process.send_signal(signal.SIGKILL)

            def restarted() -> bool:
                backlog()  # sampled while the broker is down
                return broker.restarts > restarts and broker.is_running

            wait_for(restarted, 20, "the supervisor's restart")

        seen = _sigkill_under_load(agent, device, kill_broker)
        assert seen["peak_backlog"] >= MIN_PEAK_BACKLOG and list(broker.restart_pauses) == [0.0, 0.5, 1.0]
        status = seen["status"]
        assert status["delivery"] == {"home": "receipts"} and status["dropped"] == 0
        _assert_each_stored_once(agent, seen["produced"], webhook)
        assert agent.receipts.sent > 0
    finally:
        device.stop()


@pytest.mark.exclusive  # the device's rate must not share its cores
def test_vendor_side_broker_sigkilled_three_times_under_load_loses_no_reading(
    start_agent, mosquitto, tmp_path, webhook
):
    vendor = start_agent(role="vendor")  # on the vendor's own (plain) broker, not an embedded one
    _add_webhook(vendor, webhook)
    flash, device_id = _seeded_flash(tmp_path / "flash")
    endpoint = {"host": mosquitto.host, "port": mosquitto.port, "receipts": vendor.receipts.public.hex()}
    # the vendor agent's key is the owner's here too: the test stops the sensor by command
    device = SimDevice(
        flash,
        (mosquitto.host, mosquitto.port),
        board=FAST_BOARD,
        owner_key=vendor.owner.public,
        provision={"vendor": endpoint},
    )
    device.start()
    try:
        assert device.device_id(20) == device_id

        def kill_broker(backlog):  # nobody supervises this broker: the test starts it again
            mosquitto.process.send_signal(signal.SIGKILL)
            mosquitto.process.wait(5)
            # down at least 0.3 s, and until the outage has built the backlog the test is about
            # (0.3 s alone left 82 readings waiting at 128/s in a CI run)
            down_until = time.monotonic() + 0.3
            wait_for(
                lambda: backlog() >= MIN_PEAK_BACKLOG and time.monotonic() >= down_until,
                10,
                "a backlog while the broker is down",
            )
            mosquitto.start()

        seen = _sigkill_under_load(vendor, device, kill_broker)
        assert seen["peak_backlog"] >= MIN_PEAK_BACKLOG
        status = seen["status"]
        assert status["delivery"] == {"vendor": "receipts"} and status["dropped"] == 0
        _assert_each_stored_once(vendor, seen["produced"], webhook)
    finally:
        device.stop()


def test_forged_foreign_replayed_receipts_are_ignored_and_counted_and_lose_nothing(
    start_agent, mosquitto, tmp_path
):
    """A broker (here: anyone on a plain broker) sends the device receipts that would make
    it drop readings: signed by another key, for another device, with a broken signature, and a
    genuine one again. Each is refused and counted; every reading is still stored."""
    import paho.mqtt.client as mqtt

    from fp import topics
    from host_agent.wire import nacl_signer

    # on a plain broker that lets anyone publish anywhere: the worst a broker can do to receipts
    agent = start_agent(role="vendor")
    flash, device_id = _seeded_flash(tmp_path / "flash")
    endpoint = {"host": mosquitto.host, "port": mosquitto.port, "receipts": agent.receipts.public.hex()}
    board = dict(FAST_BOARD, sensors=[{"name": SENSOR, "type": "counter", "interval_s": 0.2}])
    device = SimDevice(
        flash,
        (mosquitto.host, mosquitto.port),
        board=board,
        owner_key=agent.owner.public,
        provision={"vendor": endpoint},
    ).start()
    attacker = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="attacker")
    genuine: list[bytes] = []
    attacker.on_message = lambda c, u, m: genuine.append(bytes(m.payload))
    attacker.connect(mosquitto.host, mosquitto.port)
    attacker.loop_start()
    try:
        assert device.device_id(20) == device_id
        topic = topics.topic(device_id, "receipt")
        attacker.subscribe(topic, 1)
        wait_for(lambda: genuine, 20, "a genuine receipt")
        everything = [[boot, 0, 0xFFFFFFFF] for boot in range(4)]
        other_seed = os.urandom(32)
        # a bit of the signature's R flipped: it cannot verify. (Its last byte set to 0, as this test
        # once did, left one receipt in about 15 intact, since S's top byte is often 0 already: a
        # genuine receipt for everything, which made the device drop what was not stored yet.)
        broken = bytearray(agent.receipts.receipt(device_id, everything))
        broken[-64] ^= 0x01
        forged = [
            messages.encode_receipt(
                nacl_signer(other_seed), nacl_public_key(other_seed), device_id, 2**62, everything
            ),
            agent.receipts.receipt("c" * 24, everything),  # the agent's key, for another device
            bytes(broken),  # signature broken
            genuine[0],  # replayed: its counter is not above the last one taken
            b"\xd2\x84garbage",
        ]

        def refused():
            info = run_on(agent, agent.command(device_id, "get-info", {})).result
            return info["receipts"]["vendor"][1] >= len(forged) and info

        # a device that reconnects under load (clean session) misses what was sent meanwhile:
        # the attacker sends the batch again, as a real one would, until it has all been seen
        info = None
        for _attempt in range(4):
            for data in forged:
                attacker.publish(topic, data, qos=1).wait_for_publish(5)
            try:
                info = wait_for(refused, 15, "every forged receipt refused")
                break
            except AssertionError:
                continue
        assert info, "the forged receipts were never all refused"
        assert info["dropped"] == 0 and info["delivery"] == {"vendor": "receipts"}
        assert _status(device)["receipts_refused"] >= len(forged)
        result = run_on(
            agent, agent.command(device_id, "set-interval", {"sensor": SENSOR, "interval_s": 86400})
        )
        assert result.outcome == "applied"
        time.sleep(0.5)
        last = messages.parse_device_message(_http(device, f"/readings/latest/{SENSOR}"), "reading")
        produced = int(last.body[0][2]) + 1
        _wait_every_reading_stored(agent, device, produced, 30)
        assert sorted(_stored_values(agent)) == list(range(produced))
    finally:
        attacker.loop_stop()
        attacker.disconnect()
        device.stop()


def test_a_destination_without_a_receipt_key_reports_puback_delivery_beside_one_with_receipts(
    start_agent, mosquitto, tmp_path
):
    """Each destination states its own rule: the agent's (receipt key) "receipts", a plain MQTT
    broker (none) "puback", in the device's status and get-info; both drain what they were sent."""
    agent = start_agent(role="vendor")
    flash, device_id = _seeded_flash(tmp_path / "flash")
    home = {"name": "home", "host": mosquitto.host, "port": mosquitto.port}
    home["receipts"] = agent.receipts.public.hex()
    # a broker of its own: on the agent's broker the device would subscribe to its commands twice,
    # and the second copy of each command, refused as a replay, could be answered first
    other = Mosquitto(tmp_path / "plain-broker").start()
    plain = {"name": "plain", "host": other.host, "port": other.port}
    (flash / "config.json").write_text(json.dumps({"destinations": [home, plain]}))
    board = dict(FAST_BOARD, sensors=[{"name": SENSOR, "type": "counter", "interval_s": 0.2}])
    device = SimDevice(
        flash, (mosquitto.host, mosquitto.port), board=board, owner_key=agent.owner.public
    ).start()
    try:
        assert device.device_id(20) == device_id
        wait_for(lambda: agent.store.count_readings() >= 5, 20, "readings stored")
        info = run_on(agent, agent.command(device_id, "get-info", {})).result
        assert info["delivery"] == {"home": "receipts", "plain": "puback"}, info
        assert set(info["receipts"]) == {"home"}  # receipt counters only where receipts are the rule
        assert _status(device)["delivery"] == {"home": "receipts", "plain": "puback"}
        assert info["dropped"] == 0
        result = run_on(
            agent, agent.command(device_id, "set-interval", {"sensor": SENSOR, "interval_s": 86400})
        )
        assert result.outcome == "applied"
        # no receipt ever names "plain": what it holds leaves on its broker's PUBACK alone
        wait_for(lambda: _status(device)["buffered"] == 0, 20, "both destinations drained")
    finally:
        device.stop()
        other.stop()


def test_readings_spill_from_ram_to_the_flash_ring_when_receipts_lag_and_survive_a_power_cut(
    start_agent, mosquitto, tmp_path
):
    """A broker that is up and acknowledges everything, but no receipt comes back (the agent
    behind it is slow or gone): past the RAM slots the device keeps what waits in its flash
    ring, so a power cut then loses none of it, and a receipt at last lets it all go."""
    import paho.mqtt.client as mqtt

    from fp import topics
    from fp.destinations import _ACK_SLOTS as ACK_SLOTS  # a const: no name on a board
    from fp.destinations import Destination
    from fp.receipted import RECEIPT_RAM_SLOTS
    from host_agent.bus.mosquitto import Mosquitto
    from host_agent.wire import nacl_signer

    agent = start_agent(role="vendor")  # on `mosquitto`: the device's commands and get-info
    lagging_broker = Mosquitto(tmp_path / "lagging").start()  # no agent on it: receipts never come
    flash, device_id = _seeded_flash(tmp_path / "flash")
    seed = os.urandom(32)  # the lagging destination's receipt key: the test signs with it at the end
    destinations = [
        {"name": "vendor", "host": mosquitto.host, "port": mosquitto.port},
        {
            "name": "lagging",
            "host": lagging_broker.host,
            "port": lagging_broker.port,
            "receipts": nacl_public_key(seed).hex(),
        },
    ]
    (flash / "config.json").write_text(json.dumps({"destinations": destinations}))
    board = dict(FAST_BOARD, sensors=[{"name": SENSOR, "type": "counter", "interval_s": 0.01}])
    device = SimDevice(flash, (mosquitto.host, mosquitto.port), board=board, owner_key=agent.owner.public)
    seen: list[tuple[int, int]] = []  # (boot, seq) of each reading the lagging broker carried

    def on_message(client, userdata, message):
        reading = messages.parse_device_message(bytes(message.payload), "reading")
        seen.append((reading.boot, reading.seq))

    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher")
    watcher.on_message = on_message
    watcher.connect(lagging_broker.host, lagging_broker.port)
    watcher.subscribe(topics.topic(device_id, "reading"), 1)
    watcher.loop_start()
    device.start()
    # at most this many wait in RAM: the RAM slots of the lagging destination and of the plain
    # one, and the acks of both
    in_ram = RECEIPT_RAM_SLOTS + Destination.ram_slots + 2 * ACK_SLOTS
    try:
        assert device.device_id(20) == device_id
        wait_for(lambda: len(seen) >= 10, 20, "readings on the lagging broker: its destination is up")
        wait_for(lambda: _status(device)["buffered"] >= 3 * in_ram, 30, "readings waiting for receipts")
        info = run_on(agent, agent.command(device_id, "get-info", {})).result
        assert info["delivery"] == {"vendor": "puback", "lagging": "receipts"}
        assert info["buffered"] >= 3 * in_ram and info["dropped"] == 0
        assert info["flash_writes"] >= info["buffered"] - in_ram, info  # beyond RAM: in flash
        first_boot = max(boot for boot, _ in seen)
        device.power_cut()  # nothing flushed: only what the ring holds survives
        carried = len(seen)
        device.start()
        # after the reboot, readings of the boot before it go out again: from flash, RAM is gone
        wait_for(
            lambda: any(boot == first_boot for boot, _ in seen[carried:]),
            30,
            "the old boot's readings resent",
        )
        result = run_on(
            agent, agent.command(device_id, "set-interval", {"sensor": SENSOR, "interval_s": 86400})
        )
        assert result.outcome == "applied"
        everything = [[boot, 0, 0xFFFFFFFF] for boot in range(first_boot + 2)]
        receipt = messages.encode_receipt(nacl_signer(seed), nacl_public_key(seed), device_id, 1, everything)
        watcher.publish(topics.topic(device_id, "receipt"), receipt, qos=1).wait_for_publish(5)
        wait_for(lambda: _status(device)["buffered"] == 0, 20, "the receipt letting everything go")
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        device.stop()
        lagging_broker.stop()


def test_receipts_are_signed_and_sent_while_every_worker_thread_of_the_agent_is_stuck(start_agent, mosquitto):
    """Receipts are signed in a thread of their own. A store call stuck in every worker thread of
    the agent's loop (a database that stopped answering) does not hold back the receipts that let
    devices free their queues."""
    import asyncio
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import paho.mqtt.client as mqtt

    from fp import topics
    from tests.protocol import examples

    agent = start_agent()
    device_id = examples.DEVICE_ID
    got: queue.Queue[bytes] = queue.Queue()
    subscribed = threading.Event()
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="receipt-watcher")
    watcher.on_message = lambda client, userdata, message: got.put(bytes(message.payload))
    watcher.on_subscribe = lambda *args: subscribed.set()
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.subscribe(topics.topic(device_id, "receipt"), 1)
    watcher.loop_start()
    release = threading.Event()

    async def stall_the_worker_threads() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        loop.run_in_executor(None, release.wait, 60)  # asyncio.to_thread's one thread, taken

    def commit_one_reading() -> None:  # as _after_commit does for a full receipt
        agent.receipts.committed(device_id, 1, 0, time.monotonic())
        agent.receipts_taken.put_nowait(agent.receipts.take(time.monotonic(), [device_id]))

    try:
        assert subscribed.wait(10)
        run_on(agent, stall_the_worker_threads())
        agent.loop.call_soon_threadsafe(commit_one_reading)
        receipt = messages.parse_receipt(got.get(timeout=10))
        messages.check_receipt(
            receipt, agent.receipts.public, agent.receipts.key_id, device_id, 0, nacl_verify
        )
        assert receipt.ranges == [[1, 0, 0]]
    finally:
        release.set()
        watcher.loop_stop()
        watcher.disconnect()
