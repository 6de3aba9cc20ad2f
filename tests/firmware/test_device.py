"""The real firmware under the MicroPython unix port (board `sim`) against real mosquitto brokers."""

from __future__ import annotations

import hashlib
import time

import pytest

from fp import messages, topics
from host_agent import wire
from host_agent.bus.mosquitto import Mosquitto
from host_agent.owner import Owner
from tests.firmware.conftest import HEAP_BUDGET, counter_board, wait_for


def test_sim_device_publishes_signed_readings_that_verify_with_pynacl(
    mosquitto, collector_factory, sim_devices, tmp_path
):
    vendor = collector_factory(mosquitto)
    device = sim_devices(tmp_path / "flash", (mosquitto.host, mosquitto.port), counter_board()).start()
    device_id = device.device_id()
    wait_for(lambda: len(vendor.values("n")) >= 5, 15, "five verified readings")
    assert vendor.rejections == []
    card = vendor.verifier.devices[device_id].card
    assert card.device_id == device_id and card.board == "sim"
    reading = vendor.readings[0]
    # verify once more, explicitly, with libsodium and the key from the card
    wire.nacl_verify(card.public_key, reading.message.to_be_signed(), reading.message.signature)
    assert len(reading.raw) <= 150


def test_counters_strictly_increase_across_power_cuts_and_no_boot_seq_is_reused(
    mosquitto, collector_factory, sim_devices, tmp_path
):
    vendor = collector_factory(mosquitto)
    device = sim_devices(tmp_path / "flash", (mosquitto.host, mosquitto.port), counter_board())
    seen: list[tuple[int, int]] = []
    for _ in range(3):
        device.start()
        before = len(vendor.readings)
        wait_for(lambda before=before: len(vendor.readings) >= before + 3, 15, "readings after boot")
        device.power_cut()
    seen = [(reading.boot, reading.seq) for reading in vendor.readings]
    assert len(seen) == len(set(seen)), "a (boot, seq) was reused"
    boots = sorted({boot for boot, _ in seen})
    assert len(boots) == 3 and boots == sorted(boots)
    assert [r for r in vendor.rejections if r[1] == "replay"] == []


def test_broker_outage_delivers_every_reading_oldest_first(collector_factory, sim_devices, tmp_path):
    # The broker keeps sessions across its restart, so the collector misses nothing while it
    # reconnects, whichever of it and the device is back first.
    broker = Mosquitto(
        tmp_path / "broker", extra_config=f"persistence true\npersistence_location {tmp_path / 'broker'}/\n"
    ).start()
    try:
        vendor = collector_factory(broker, client_id="outage-collector")
        device = sim_devices(tmp_path / "flash", (broker.host, broker.port), counter_board()).start()
        device.device_id()
        wait_for(lambda: len(vendor.values("n")) >= 3, 15, "first readings")
        broker.stop()
        before = len(vendor.values("n"))
        time.sleep(3.0)  # about 15 readings are taken while the broker is down
        broker.start()
        wait_for(lambda: len(vendor.values("n")) >= before + 25, 30, "the buffered readings and new ones")
        values = vendor.values("n")
        # none missing, none out of order: those of the outage came from the device's queue
        assert values == list(range(len(values))), "a reading is missing or out of order"
    finally:
        broker.stop()


def test_network_cut_buffers_and_drains_in_order(mosquitto, collector_factory, sim_devices, tmp_path):
    vendor = collector_factory(mosquitto)
    device = sim_devices(tmp_path / "flash", (mosquitto.host, mosquitto.port), counter_board()).start()
    wait_for(lambda: len(vendor.values("n")) >= 3, 15, "first readings")
    device.cut_network()
    time.sleep(2.5)
    during = len(vendor.values("n"))
    device.restore_network()
    wait_for(lambda: len(vendor.values("n")) >= during + 15, 30, "the drain after the network returns")
    values = vendor.values("n")
    assert values == list(range(values[0], values[0] + len(values)))


def _command(owner: Owner, collector, broker_client, device_id: str, op: str, args: dict):
    data = owner.command(device_id, op, args)
    digest = messages.parse_command(data).digest()
    broker_client.publish(topics.topic(device_id, "command"), data, qos=1)
    wait_for(lambda: digest in collector.acks, 10, f"the ack of {op}")
    return collector.acks[digest]


def test_owner_switches_destinations_instead_of_and_in_addition_to(
    mosquitto, collector_factory, sim_devices, tmp_path
):
    home_broker = Mosquitto(tmp_path / "home").start()
    try:
        vendor, home = collector_factory(mosquitto), collector_factory(home_broker)
        owner = Owner(tmp_path / "owner.key")
        device = sim_devices(
            tmp_path / "flash", (mosquitto.host, mosquitto.port), counter_board(), owner_key=owner.public
        ).start()
        device_id = device.device_id()
        wait_for(lambda: len(vendor.values("n")) >= 3, 15, "readings at the vendor")
        home_spec = {"name": "home", "host": home_broker.host, "port": home_broker.port}

        ack = _command(
            owner, vendor, vendor.client, device_id, "set-destinations", {"destinations": [home_spec]}
        )
        assert ack["outcome"] == "applied"
        wait_for(lambda: len(home.values("n")) >= 3, 15, "readings at home")
        time.sleep(0.5)
        vendor_count = len(vendor.values("n"))
        time.sleep(2.0)
        assert len(vendor.values("n")) == vendor_count, "instead-of: the vendor still receives readings"

        ack = _command(
            owner,
            home,
            home.client,
            device_id,
            "set-destinations",
            {"destinations": [{"name": "vendor"}, home_spec]},
        )
        assert ack["outcome"] == "applied"
        wait_for(lambda: len(vendor.values("n")) >= vendor_count + 5, 15, "readings at the vendor again")
        home_before, vendor_before = len(home.values("n")), len(vendor.values("n"))
        time.sleep(1.5)
        assert len(home.values("n")) > home_before and len(vendor.values("n")) > vendor_before
        # both copies are the very same signed bytes
        common = {r.raw for r in vendor.readings} & {r.raw for r in home.readings}
        assert common
    finally:
        home_broker.stop()


def test_a_command_reaching_the_device_by_two_paths_is_applied_once_and_answered_once(
    mosquitto, collector_factory, sim_devices, tmp_path
):
    """The vendor's relay and the owner's broker both carry commands: the agent sends each one
    through both, and the copy that comes second must not be answered 'replay' (or, for a
    claim, 'not-owner'), since that answer could reach the agent before the applied one."""
    import json

    home_broker = Mosquitto(tmp_path / "home").start()
    try:
        vendor, home = collector_factory(mosquitto), collector_factory(home_broker)
        owner = Owner(tmp_path / "owner.key")
        flash = tmp_path / "flash"
        home_spec = {"name": "home", "host": home_broker.host, "port": home_broker.port}
        flash.mkdir()
        (flash / "config.json").write_text(json.dumps({"destinations": [{"name": "vendor"}, home_spec]}))
        device = sim_devices(flash, (mosquitto.host, mosquitto.port), counter_board()).start()
        device_id = device.device_id()
        wait_for(lambda: vendor.values("n") and home.values("n"), 15, "readings at both")

        def both_paths(data: bytes) -> dict:
            digest = hashlib.sha256(data).digest()
            for collector in (vendor, home):
                collector.client.publish(topics.topic(device_id, "command"), data, qos=1)
            wait_for(lambda: digest in vendor.acks and digest in home.acks, 10, "the ack at both")
            return vendor.acks[digest]

        device.press_button()
        wait_for(lambda: any("claim window" in line for line in device.log), 10, "the claim window")
        claim = owner.command(device_id, "claim", {"owner": owner.public})
        assert both_paths(claim)["outcome"] == "applied"
        commands = [owner.command(device_id, "get-info", {}) for _ in range(3)]
        for data in commands:
            assert both_paths(data)["outcome"] == "applied"
        info = both_paths(owner.command(device_id, "get-info", {}))
        assert info["result"]["refused"] == 0
        for collector in (vendor, home):
            with collector.lock:
                outcomes = [ack["outcome"] for ack in collector.ack_log]
            assert outcomes == ["applied"] * 5, outcomes  # one ack per command, at each broker
    finally:
        home_broker.stop()


def test_forged_replayed_expired_misaddressed_and_malformed_commands_change_nothing(
    owned_counter_device,
):
    vendor, owner, device, device_id = owned_counter_device
    wait_for(lambda: len(vendor.acks) == 0 and vendor.values("n"), 15, "the device up")

    applied = owner.command(device_id, "get-info", {})
    now = int(time.time())
    stranger = wire.nacl_signer(bytes([7] * 32))
    cases = {
        "bad-signature": messages.encode_command(
            stranger,
            owner.public,
            device_id,
            10**15,
            now,
            now + 60,
            "set-destinations",
            {"destinations": [{"name": "x", "host": "127.0.0.1", "port": 1}]},
        ),
        "expired": messages.encode_command(
            owner.sign,
            owner.public,
            device_id,
            10**15 + 1,
            now - 100,
            now - 10,
            "set-interval",
            {"sensor": "n", "interval_s": 99},
        ),
        "not-for-me": messages.encode_command(
            owner.sign, owner.public, "a" * 24, 10**15 + 2, now, now + 60, "reboot", {}
        ),
    }

    def send(data: bytes) -> dict:
        """Publish a command and return the ack that answers it (acks bind the command's SHA-256)."""
        digest = hashlib.sha256(data).digest()
        count = len(vendor.ack_log)
        vendor.client.publish(topics.topic(device_id, "command"), data, qos=1)
        wait_for(lambda: len(vendor.ack_log) > count, 10, "an ack")
        ack = vendor.ack_log[count]
        assert ack["cmd"] == digest
        return ack

    assert send(applied)["outcome"] == "applied"
    # a copy of the command applied last (a second path, a broker's redelivery) gets no second
    # ack: the next ack in the log answers the next command
    vendor.client.publish(topics.topic(device_id, "command"), applied, qos=1)
    assert send(owner.command(device_id, "get-info", {}))["outcome"] == "applied"
    # an older command sent again is a replay
    assert send(applied)["outcome"] == "replay"
    for reason, data in cases.items():
        assert send(data)["outcome"] == reason
    assert send(b"\xd2\x84garbage")["outcome"] == "malformed"
    info = send(owner.command(device_id, "get-info", {}))
    assert info["outcome"] == "applied"
    assert info["result"]["destinations"] == ["vendor"]
    assert info["result"]["intervals"] == {}
    assert info["result"]["refused"] == 5


def test_device_killed_while_buffering_keeps_its_buffer_and_drains_it_first(
    mosquitto, collector_factory, sim_devices, tmp_path
):
    vendor = collector_factory(mosquitto)
    device = sim_devices(tmp_path / "flash", (mosquitto.host, mosquitto.port), counter_board())
    device.start()
    wait_for(lambda: len(vendor.values("n")) >= 3, 15, "first readings")
    device.cut_network()
    time.sleep(2.5)  # about 12 readings go to the flash ring buffer
    device.power_cut()
    device.start()  # boots again, still without network, and keeps buffering
    time.sleep(1.0)
    device.restore_network()
    wait_for(
        lambda: len({r.boot for r in vendor.readings}) == 2 and len(vendor.values("n")) >= 20, 30, "the drain"
    )
    time.sleep(0.5)
    with vendor.lock:
        readings = [(r.boot, r.body[0][2]) for r in vendor.readings]
    first_boot = [value for boot, value in readings if boot == readings[0][0]]
    assert first_boot == list(range(len(first_boot))) and len(first_boot) >= 12, first_boot
    boots = [boot for boot, _ in readings]
    assert boots == sorted(boots), "a reading of the second boot overtook one of the first"


@pytest.mark.slow
def test_compiled_firmware_runs_in_its_heap_budget_without_growth(
    mosquitto, collector_factory, sim_devices, tmp_path
):
    import os

    from host_agent.board.build import compile_firmware

    build = compile_firmware("x64", tmp_path / "build")
    vendor = collector_factory(mosquitto)
    owner = Owner(tmp_path / "owner.key")
    device = sim_devices(
        tmp_path / "flash",
        (mosquitto.host, mosquitto.port),
        counter_board(0.05),
        owner_key=owner.public,
        heapsize=HEAP_BUDGET,
        code=build.path,
    ).start()
    device_id = device.device_id()
    readings = int(os.environ.get("FP_SOAK_READINGS", "150"))
    samples = []
    while len(vendor.values("n")) < readings or len(samples) < 3:
        time.sleep(1.0)
        samples.append(
            _command(owner, vendor, vendor.client, device_id, "get-info", {})["result"]["heap_bytes"]
        )
        assert device.process and device.process.poll() is None, "\n".join(device.log)
    values = vendor.values("n")
    assert values == list(range(len(values)))
    # Each sample also holds what waits in RAM for its PUBACK (up to 8 signed readings of about
    # 150 bytes, fp.destinations._RAM_SLOTS): it goes up and down with the broker's pace, by up to
    # a kilobyte on a busy machine, and a buffer allocated once may land at any sample. A leak
    # raises the floor, so the floor of the later samples is held to that of the earlier ones.
    # (The first sample is left out: the first command loads what every later one reuses.)
    half = len(samples) // 2 + 1
    assert min(samples[half:]) - min(samples[1:half]) <= 1024, f"heap grew: {samples}"
