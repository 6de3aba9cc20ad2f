"""The running device: its identity, destinations, sensors and command path, put together.

Each concern has its module: fp.identity (key, id, counters, owner, card), fp.destinations
(brokers and their queues), fp.sampling (the sensor loop), fp.command (the command interpreter,
loaded only while a command is handled), fp.ota (updates over the air, loaded only while one runs
or a release is on probation), fp.safemode (boot stability). This module owns the state they share
and the main loop: watchdog, button, stability, the confirmation of a release on probation.
"""

import asyncio
import sys
import time

from fp import FIRMWARE_VERSION, destinations, device_messages, safemode, storage
from fp.identity import Identity
from fp.runtime import heap_in_use, log, unload


class Device:
    """The running device: identity, counters, destinations, sensors and the command path.

    `checked` holds the flash files as the boot checks left them (fp.app.Settings); `history` is this boot's record
    (fp.safemode): in safe mode the device runs no sensors and no HTTP API, only its
    destinations and the owner command path.
    """

    def __init__(self, hal, checked, history=None):
        self.hal = hal
        self.board = checked.board
        self.provision = checked.provision
        self.config = checked.config
        self.history = history
        self.is_safe = history is not None and history.is_safe
        self.identity = Identity(self.board["name"], checked.owner_key, checked.last_counter)
        self.device_id = self.identity.device_id
        self.destinations = {}  # name -> fp.destinations.Destination, as config.json lists them
        self.refused = 0
        self.unanswered = 0  # refused commands beyond the ack budget: counted, not answered
        self.last_applied = None  # the SHA-256 of the command applied last: its copies are dropped
        self.refusal_acks = None  # fp.command's ack budget: a full bucket until the first refusal
        self.refusal_acks_ms = 0
        self.claim_window_until = 0
        self.claim_window_open = False
        self.latest = {}  # sensor name -> its newest signed reading, for the HTTP API only
        self.sensor_tasks = {}  # sensor name -> its loop (fp.sampling): a new interval restarts it
        self.http = None
        self.started_ms = time.ticks_ms()
        self.ota = None  # the update transfer in progress (fp.ota)
        self.update = storage.load_json(storage.UPDATE_FILE, None)  # the update state in the status
        if self.update or "slot_a" in sys.path or "slot_b" in sys.path:  # main.py booted a slot
            from fp import ota

            self.update = ota.at_boot(self.update)

    def now(self):
        return self.hal.time_s()

    def sign_reading(self, measurements):
        identity = self.identity
        boot, seq = identity.next_counter()
        return device_messages.encode_reading(
            identity.key.sign, identity.device_id, boot, seq, measurements, self.now()
        )

    def status(self, state):
        identity = self.identity
        boot, seq = identity.next_counter()
        by_name = self.destinations
        delivery = {}  # the delivery rule of each destination: "receipts" or "puback" (docs/device-api.md)
        refused = 0
        # one loop, not a dict comprehension and a generator: each of those is a function of its
        # own, held in a board's heap from .mpy (_is_on_probation_and_delivered loops for that too)
        for name, destination in by_name.items():
            delivery[name] = destination.delivery
            if destination.receipt_key is not None:
                refused += destination.receipts_refused
        info = {
            "buffered": destinations.total(by_name, "buffered"),
            "dropped": destinations.total(by_name, "dropped"),
            "refused": self.refused,
            "fw": FIRMWARE_VERSION,
            "delivery": delivery,
        }
        if refused:
            info["receipts_refused"] = refused
        if self.is_safe:  # the state stays online/offline (protocol section 4); the mode says why
            info["mode"] = safemode.SAFE_MODE
        if self.update:
            info["update"] = self.update
        return device_messages.encode_status(
            identity.key.sign, identity.device_id, boot, seq, state, info, self.now()
        )

    def card(self):
        """The signed device card (fp.device_card, loaded for it and dropped: a card is rare)."""
        from fp import device_card

        identity = self.identity
        try:
            return device_card.card(identity.key, identity.board_name, identity.owner_key, self.now())
        finally:
            unload("device_card")

    def put(self, kind, payload):
        """Queue one signed message for every destination."""
        for destination in self.destinations.values():
            destination.put(kind, payload)

    def apply_destinations(self):
        destinations.apply(self, self.config["destinations"])

    def start_sampling(self, sensor):
        """Start the loop of one fitted sensor (`sensor`: its entry in board.json)."""
        from fp.sampling import sample_forever

        self.sensor_tasks[sensor["name"]] = asyncio.create_task(sample_forever(self, sensor))

    async def reboot_soon(self):
        await asyncio.sleep(0.5)
        if self.history:  # a reset the owner asked for is no crash; from safe mode, it tries normal
            self.history.mark_stable()
        self.reset()

    def reset(self):
        for destination in self.destinations.values():
            destination.spill()  # what waits in RAM (for a PUBACK or a receipt) survives the reset
        self.hal.reset()

    def ended_task(self):
        """The name of a destination or sensor whose task has ended, or None: only an error ends
        one, and the board would go on silent (a destination) or blind (a sensor)."""
        for name, destination in self.destinations.items():
            for task in (destination.task, destination.sender):
                if task is not None and task.done():
                    return name
        for name, task in self.sensor_tasks.items():
            if task.done():
                return name
        return None

    # --- the claim window: the owner's physical presence ----------------------------------------

    def open_claim_window(self):
        # monotonic milliseconds: the window must work before the device knows the time of day
        self.claim_window_until = time.ticks_add(
            time.ticks_ms(), 1000 * self.provision.get("claim_window_s", 120)
        )
        self.claim_window_open = True
        log("button: claim window open")

    def is_claim_window_running(self):
        """True in the claim_window_s after the button was pressed: the owner's physical presence,
        which a claim (fp.command: once per press) and the broker password on the LAN
        (fp.http_request) need."""
        if self.hal.button_pressed():  # pressed since the main loop last looked
            self.open_claim_window()
        return self.claim_window_until and time.ticks_diff(self.claim_window_until, time.ticks_ms()) >= 0

    # --- commands -------------------------------------------------------------------------------

    def on_command(self, data):
        """Handle one command with the interpreter loaded for it (fp.command), dropped after; the
        parsers and the CBOR decoder (fp.inbound, fp.cbor_decode) only while it is judged.

        The heap is taken first, at rest (get-info's heap_at_rest_bytes): what the board holds
        between commands, without the interpreter loaded for this one."""
        self.heap_at_rest_bytes = heap_in_use()
        from fp import command

        try:
            return command.handle(self, data)
        finally:
            unload("command")
            self.drop_parsers()

    def drop_parsers(self):
        """Drop fp.inbound (with the COSE parser) and the CBOR decoder once a command is judged
        (fp.command does, before its operation runs); a receipts destination keeps them for its
        receipts."""
        if "fp.receipted" not in sys.modules:
            unload("inbound")
            unload("cbor_decode")

    def on_update(self, data):
        """Handle one update message (fp.ota, loaded while an update runs and dropped after)."""
        from fp import ota

        ota.on_message(self, data, FIRMWARE_VERSION)

    def _is_on_probation_and_delivered(self):
        """True once a reading of this boot was delivered while its release is on probation."""
        update = self.update
        if not update or update.get("state") != "installed-on-probation":
            return False
        boot = self.identity.boot
        for destination in self.destinations.values():
            if destination.reading_boot >= boot:
                return True
        return False

    # --- the main loop --------------------------------------------------------------------------

    async def run(self):
        log("device %s boot %d" % (self.device_id, self.identity.boot))
        history = self.history
        if history is not None and history.is_safe:
            log(
                "safe mode: %d boots in a row did not get stable; no sensors, no HTTP API; the owner's"
                " reboot command (or deleting %s at the REPL) tries a normal boot"
                % (history.unstable - 1, safemode.HISTORY_FILE)
            )
        self.hal.start()
        self.apply_destinations()
        if not self.is_safe:
            if self.provision.get("http_port"):
                from fp.http_api import HttpApi  # loaded only when on: its code lives in the heap

                # before the sensor loops: their first readings are kept for it (fp.sampling)
                self.http = HttpApi(self, log)
                await self.http.start(self.hal.lan_host, self.provision["http_port"])
            for sensor in self.board["sensors"]:
                self.start_sampling(sensor)
        while True:
            ended = self.ended_task()
            if ended:  # reset like the watchdog would, had the task stopped the main loop
                log("%s: its task ended on an error; resetting" % ended)
                self.reset()  # a crash for fp.safemode: repeated before the boot is stable, safe mode
            self.hal.feed()
            if self.hal.button_pressed():
                self.open_claim_window()
            if history is not None and history.check_stable(
                destinations.total(self.destinations, "sent"), self.started_ms
            ):
                log("boot %d is stable" % self.identity.boot)
            if self._is_on_probation_and_delivered():  # confirmed by its first delivered reading
                from fp import ota

                ota.check_probation(self)
            await asyncio.sleep(0.2)
