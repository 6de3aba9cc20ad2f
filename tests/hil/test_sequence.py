"""One sequence, two targets: the virtual board (default) or a real one (--board NAME --port DEV).

flash -> boot -> first signed reading verified by the agent -> owner reroutes to the home broker
instead of the vendor -> duplicates to both -> reset -> counters continue, no (boot, seq) reused
-> outage -> buffered readings drain -> forged command refused -> an update confirmed by its first
delivered reading -> a release that cannot start rolled back. One scenario: the steps share one
rig and run in the order of STEPS; the first that fails ends it, named in the failure.
"""

from __future__ import annotations

import os
import time

import paho.mqtt.client as mqtt
import pytest
import serial

from fp import messages, topics
from host_agent import config as agent_config
from host_agent import wire
from host_agent.api import tokens
from host_agent.board import files as boards
from host_agent.bus.mosquitto import Mosquitto, free_port
from host_agent.cli.common import write_runtime
from host_agent.cli.main import main
from host_agent.rig.virtual_board import VirtualBoard
from host_agent.service import start_in_thread
from tests.agent.conftest import Publisher, Webhook, agent_settings, api, wait_for

READING_WAIT_S = 20


class VendorView(Publisher):
    """The vendor's traffic as the rig sees it, in arrival order, across restarts of the vendor."""

    def __init__(self, vendor: Mosquitto):
        self.received: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="hil-vendor-view", clean_session=False
        )
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.on_connect = lambda c, u, flags, code, p: c.subscribe("fp/v1/+/#", 1)
        self.client.connect(vendor.host, vendor.port)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10, "the rig's view of the vendor connected")


class Rig:
    """The brokers, the agent and the board under test, shared by the steps of the sequence."""

    def __init__(self, config, workdir):
        self.board_name = config.getoption("--board") or "sim"
        self.is_virtual = config.getoption("--board") is None
        self.rig_host = config.getoption("--rig-host")
        self.wifi = config.getoption("--wifi")
        self.workdir = workdir
        # the vendor keeps sessions across its restart (test 6): what it queued for the rig's view
        # while the view reconnects is not lost
        extra = f"persistence true\npersistence_location {workdir}/vendor/\n"
        board_port = free_port()
        if self.rig_host != "127.0.0.1":  # a real board reaches the vendor on the rig's LAN address
            extra += f"listener {board_port} {self.rig_host}\nallow_anonymous true\n"
        self.vendor = Mosquitto(workdir / "vendor", extra_config=extra).start()
        self.vendor_endpoint = (
            f"{self.rig_host}:{board_port}"
            if self.rig_host != "127.0.0.1"
            else f"127.0.0.1:{self.vendor.port}"
        )
        settings = agent_settings(
            workdir,
            self.vendor,
            broker={
                "embedded": True,
                "host": self.rig_host,
                "port": 0,
                "relay_brokers": [f"{self.vendor.host}:{self.vendor.port}"],
            },
        )
        self.agent, self.agent_thread = start_in_thread(agent_config.from_dict(settings))
        # what `firstparty serve` leaves for the CLI on this machine, so that flash --config finds
        # the running agent and registers the device with it
        self.config_path = workdir / "firstparty.toml"
        self.config_path.write_text(f'data_dir = "{self.agent.config.data_dir}"\n')
        write_runtime(self.agent.config, self.agent.api_port, self.agent.store)
        wait_for(lambda: self.agent.bus.is_connected, 10, "the agent connected")
        self.admin = api(self.agent, tokens.issue(self.agent.store, "admin", "admin"))
        self.vendor_view = VendorView(self.vendor)
        self.webhook = Webhook()
        self.board: VirtualBoard | None = None
        if self.is_virtual:
            self.board = VirtualBoard(workdir / "flash").start()
            self.port = self.board.port
        else:
            self.port = config.getoption("--port")
        self.device_id = ""
        self.card = b""
        # the sensor the sequence speeds up: the chip's own temperature needs no wiring
        fitted = boards.load(self.board_name)["sensors"]
        chip = [s["name"] for s in fitted if s["type"] == "internal-temp"]
        self.sensor = chip[0] if chip else fitted[0]["name"]

    def vendor_readings(self) -> list[messages.DeviceMessage]:
        topic = topics.topic(self.device_id, "reading")
        return [
            messages.parse_device_message(data, "reading")
            for t, data in list(self.vendor_view.received)
            if t == topic
        ]

    def stored_counters(self) -> list[tuple[int, int]]:
        rows = self.agent.store.query(
            "SELECT boot, seq FROM messages WHERE device_id=? AND kind='reading' ORDER BY id",
            (self.device_id,),
        )
        return [(int(boot), int(seq)) for boot, seq in rows]

    def tail(self, lines: int = 15) -> str:
        """The board's last lines (virtual board only), for failure messages."""
        rejected = f"agent rejections: {self.agent.store.rejection_counts()}\n"
        if not self.board:
            return rejected + "(a real board: see its serial port)"
        return rejected + "\n".join(list(self.board.output)[-lines:])

    def reset(self) -> None:
        """A soft reset through the REPL, as a user's Ctrl-D: boot.py and main.py run again."""
        with serial.Serial(self.port, 115200, timeout=0.1) as link:
            link.write(b"\r\x03\x03\r\x02")
            time.sleep(0.3)
            link.write(b"\x04")

    def close(self) -> None:
        if self.board:
            self.board.stop()
        self.vendor_view.close()
        self.webhook.close()
        self.agent.request_stop()
        self.agent_thread.join(10)
        self.vendor.stop()


@pytest.fixture
def rig(request, tmp_path_factory):
    built = Rig(request.config, tmp_path_factory.mktemp("hil"))
    yield built
    built.close()


def step_1_flash_writes_the_firmware_and_reads_back_a_card_naming_the_owner(rig, capsys):
    args = ["flash", "--board", rig.board_name, "--vendor", rig.vendor_endpoint]
    args += ["--config", str(rig.config_path), "--card-out", str(rig.workdir / "device.card")]
    if rig.port:
        args += ["--port", rig.port]
    if rig.wifi:
        args += ["--wifi", rig.wifi]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    rig.card = (rig.workdir / "device.card").read_bytes()
    card = wire.parse_card(rig.card)
    assert card.owner_id == rig.agent.owner.owner_id
    rig.device_id = card.device_id
    assert f"firmware running as {card.device_id}" in out  # booted: boot.py, main.py
    assert f"registered with the agent as claimed: {card.device_id} accepted" in out
    assert rig.agent.store.device(card.device_id).state == "accepted"


def step_2_first_signed_reading_is_verified_by_the_agent(rig):
    assert rig.device_id, "flash failed"
    # registered as claimed at flash time: no pending step
    assert rig.admin.get("/pending").json() == []
    result = rig.admin.post(
        f"/devices/{rig.device_id}/commands",
        json={"op": "set-interval", "args": {"sensor": rig.sensor, "interval_s": 1}},
    ).json()
    assert result["outcome"] == "applied", result
    wait_for(lambda: rig.stored_counters(), READING_WAIT_S, "a reading verified and stored by the agent")
    # and anyone holding only the card verifies the vendor's copy too
    from host_agent.ingest.verifier import Verifier

    verifier = Verifier()
    verifier.learn_card(rig.card)
    topic = topics.topic(rig.device_id, "reading")
    copies = wait_for(
        lambda: [d for t, d in list(rig.vendor_view.received) if t == topic], 10, "a vendor copy"
    )
    assert verifier.check(topic, copies[0]).device_id == rig.device_id


def step_3_owner_reroutes_to_home_instead_of_the_vendor(rig):
    response = rig.admin.post(
        "/routes",
        json={
            "name": "home",
            "needs_agreement": False,  # the test's own destination
            "destination": {"type": "webhook", "url": rig.webhook.url},
            "mode": "instead-of",
        },
    )
    assert response.status_code == 201, response.text
    assert [c["outcome"] for c in response.json()["device_commands"]] == ["applied"]
    time.sleep(2)  # the switch settles
    vendor_count, stored = len(rig.vendor_readings()), len(rig.stored_counters())
    time.sleep(4)
    assert len(rig.vendor_readings()) == vendor_count, "the vendor still receives:\n" + rig.tail()
    assert len(rig.stored_counters()) >= stored + 2, "home stopped receiving:\n" + rig.tail()


def step_4_duplicates_to_both_in_addition_to_the_vendor(rig):
    response = rig.admin.put(
        "/routes/home",
        json={
            "destination": {"type": "webhook", "url": rig.webhook.url},
            "mode": "in-addition-to",
            "needs_agreement": False,
        },
    )
    assert response.status_code == 200, response.text
    vendor_count, stored = len(rig.vendor_readings()), len(rig.stored_counters())
    wait_for(lambda: len(rig.vendor_readings()) >= vendor_count + 2, 15, "the vendor receiving again")
    assert len(rig.stored_counters()) >= stored + 2
    home = set(rig.stored_counters())
    assert {(m.boot, m.seq) for m in rig.vendor_readings()[-2:]} <= home | set(rig.stored_counters())


def step_5_after_a_reset_counters_continue_and_no_boot_seq_is_reused(rig):
    before = rig.stored_counters()
    last_boot = max(boot for boot, _ in before)
    rig.reset()
    wait_for(
        lambda: any(boot > last_boot for boot, _ in rig.stored_counters()), 30, "a reading of the next boot"
    )
    home = rig.stored_counters()
    assert len(home) == len(set(home)), "a (boot, seq) stored twice"
    assert min(boot for boot, _ in home if boot > last_boot) == last_boot + 1, "the boot counter skipped"
    # home and vendor get the same signed bytes in addition-to mode; a (boot, seq) reused would be
    # two different messages under one counter
    by_counter: dict[tuple[int, int], bytes] = {}
    rows = rig.agent.store.query(
        "SELECT boot, seq, raw FROM messages WHERE device_id=? AND kind='reading'", (rig.device_id,)
    )
    copies = [(int(b), int(s), bytes(raw)) for b, s, raw in rows]
    copies += [(m.boot, m.seq, m.raw) for m in rig.vendor_readings()]
    for boot, seq, raw in copies:
        assert by_counter.setdefault((boot, seq), raw) == raw, f"({boot}, {seq}) signed twice"
    assert "replay" not in rig.agent.store.rejection_counts()


def step_6_a_broker_outage_buffers_on_the_device_and_drains_oldest_first(rig):
    # in addition-to mode (test 4) the device publishes to the vendor and to home: the vendor's
    # broker goes down, home stays up and sees every reading taken meanwhile
    boot = max(b for b, _ in rig.stored_counters())
    arrivals_before = len(rig.vendor_view.received)
    down_s = time.time()
    rig.vendor.stop()
    time.sleep(6)
    up_s = time.time()
    rig.vendor.start()
    during = {
        int(seq)
        for (seq,) in rig.agent.store.query(
            "SELECT seq FROM messages WHERE device_id=? AND kind='reading' AND boot=?"
            " AND received_s BETWEEN ? AND ?",
            (rig.device_id, boot, down_s + 1, up_s),
        )
    }
    assert len(during) >= 3, "home stopped receiving while the vendor was down:\n" + rig.tail()

    def vendor_after():
        topic = topics.topic(rig.device_id, "reading")
        return [
            messages.parse_device_message(data, "reading").seq
            for t, data in list(rig.vendor_view.received)[arrivals_before:]
            if t == topic
        ]

    wait_for(lambda: during <= set(vendor_after()), 40, "the readings buffered for the vendor drained")
    arrived = list(dict.fromkeys(vendor_after()))  # a QoS 1 redelivery may repeat the last one
    assert arrived == sorted(arrived), f"not oldest first: {arrived}"
    stored = rig.stored_counters()
    assert len(stored) == len(set(stored)), "a drained reading was stored twice"


def step_7_a_forged_command_is_refused_and_changes_nothing(rig):
    forger_seed = os.urandom(32)
    forger = wire.nacl_public_key(forger_seed)
    now = int(time.time())
    forged = messages.encode_command(
        wire.nacl_signer(forger_seed), forger, rig.device_id, 1 << 40, now, now + 300, "set-interval",
        {"sensor": rig.sensor, "interval_s": 3600},
    )  # fmt: skip
    ack_topic = topics.topic(rig.device_id, "ack")
    acks_before = len([1 for t, _ in rig.vendor_view.received if t == ack_topic])
    rig.vendor_view.publish(topics.topic(rig.device_id, "command"), forged)

    def refusal():
        acks = [d for t, d in list(rig.vendor_view.received) if t == ack_topic][acks_before:]
        for data in acks:
            body = messages.parse_device_message(data, "ack").body
            if body.get("outcome") != "applied":
                return body
        return None

    body = wait_for(refusal, 15, "the device's signed refusal")
    assert body["outcome"] == "not-owner"
    stored = len(rig.stored_counters())
    time.sleep(3)
    assert len(rig.stored_counters()) >= stored + 1, "the forged 3600 s interval took effect"


def _owner_release(rig, name: str, version: str, counter: int, broken: bool = False):
    """A release of the firmware for the board, signed by the owner alone (`firstparty release`);
    `broken`: its application raises as it is imported (signed and whole, but it cannot start)."""
    import hashlib
    import json

    folder = rig.workdir / name
    arch = boards.load(rig.board_name)["mpy_arch"]
    assert (
        main(
            ["release", "build", str(folder), "--arch", arch, "--version", version, "--counter", str(counter)]
        )
        == 0
    )
    if broken:
        (folder / "files" / "fp" / "app.mpy").unlink()
        (folder / "files" / "fp" / "app.py").write_text("raise RuntimeError('this release is broken')\n")
        listing = json.loads((folder / "release.json").read_text())
        listing["files"] = [
            [
                p.relative_to(folder / "files").as_posix(),
                p.stat().st_size,
                hashlib.sha256(p.read_bytes()).hexdigest(),
            ]
            for p in sorted((folder / "files").rglob("*"))
            if p.is_file()
        ]
        (folder / "release.json").write_text(json.dumps(listing))
    assert main(["release", "sign", str(folder), "--key", str(rig.agent.config.owner_key)]) == 0
    return folder


def _update_state(rig) -> str:
    return rig.admin.get(f"/devices/{rig.device_id}/update").json()["state"]


def _update(rig, folder) -> tuple[int, str]:
    """`firstparty update DEVICE --release FOLDER`: its exit status and what it printed."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["update", rig.device_id, "--release", str(folder), "--config", str(rig.config_path)])
    return code, out.getvalue()


def step_8_an_update_boots_on_probation_and_its_first_delivered_reading_confirms_it(rig):
    folder = _owner_release(rig, "release-0.2.0", "0.2.0", 1)
    code, out = _update(rig, folder)
    assert code == 0, out + rig.tail()
    assert "installed-on-probation" in out
    wait_for(lambda: _update_state(rig) == "confirmed", 60, "the new release confirmed\n" + rig.tail())
    update = rig.admin.get(f"/devices/{rig.device_id}/update").json()["update"]
    assert update["version"] == [0, 2, 0]
    stored = len(rig.stored_counters())
    wait_for(lambda: len(rig.stored_counters()) > stored, READING_WAIT_S, "readings from the new release")


def step_9_a_release_that_cannot_start_rolls_back_by_itself(rig):
    folder = _owner_release(rig, "release-0.3.0-broken", "0.3.0", 2, broken=True)
    code, out = _update(rig, folder)
    assert code == 0, out + rig.tail()
    wait_for(lambda: _update_state(rig) == "rolled-back", 60, "the broken release rolled back\n" + rig.tail())
    update = rig.admin.get(f"/devices/{rig.device_id}/update").json()["update"]
    assert update["version"] == [0, 3, 0]  # the release that was refused its place
    stored = len(rig.stored_counters())
    wait_for(
        lambda: len(rig.stored_counters()) > stored, READING_WAIT_S, "readings from the previous release"
    )


STEPS = [
    step_2_first_signed_reading_is_verified_by_the_agent,
    step_3_owner_reroutes_to_home_instead_of_the_vendor,
    step_4_duplicates_to_both_in_addition_to_the_vendor,
    step_5_after_a_reset_counters_continue_and_no_boot_seq_is_reused,
    step_6_a_broker_outage_buffers_on_the_device_and_drains_oldest_first,
    step_7_a_forged_command_is_refused_and_changes_nothing,
    step_8_an_update_boots_on_probation_and_its_first_delivered_reading_confirms_it,
    step_9_a_release_that_cannot_start_rolls_back_by_itself,
]


def test_the_sequence_from_flash_to_a_refused_forgery(rig, capsys):
    step_1_flash_writes_the_firmware_and_reads_back_a_card_naming_the_owner(rig, capsys)
    for step in STEPS:
        step(rig)
