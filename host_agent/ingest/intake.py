"""Ingest: topic + bytes -> verified, replay-checked message committed with its forwards, or a reason.

`Ingest.process(batch)` runs off the event loop (asyncio.to_thread): it verifies each message
with PyNaCl (host_agent.wire), applies the replay rule (fp.replay.ReplayWindow, persisted in the
same transaction), stores accepted messages with their original bytes, queues the forwards of
matching routes in the outbox, and records rejections. Nothing is acknowledged to the broker
until this transaction has committed; if it fails (disk full), the in-memory replay state is
put back and the caller retries the same batch later.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from fp import messages, replay
from fp.errors import ProtocolError
from fp.reasons import REASONS
from host_agent.ingest import verifier
from host_agent.routes import rules as routing
from host_agent.store.base import Row, Store, Tx

log = logging.getLogger("firstparty.ingest")
DEVICE_KINDS = ("reading", "status", "ack")


@dataclass(slots=True, frozen=True)
class Known:
    public_key: bytes
    state: str  # pending, accepted, rejected
    owner_id: str | None


@dataclass(slots=True)
class Outcome:
    """What became of one message: accepted (and stored), duplicate, or refused with a reason."""

    topic: str
    reason: str | None  # None: accepted
    detail: str = ""
    device_id: str | None = None
    kind: str | None = None
    message_id: int | None = None
    body: Any = None
    boot: int | None = None
    seq: int | None = None
    raw: bytes = b""


class Rows:
    """What one batch writes, gathered while its messages are checked, written just before the commit.

    One write per table instead of four statements per message, and one replay and last_seen
    row per device however many of its messages the batch holds. Until then the rows are not in
    the tables, so the checks of later messages in the batch look here too (counters and their bytes).
    """

    def __init__(self, message_ids: list[int]):
        self.message_ids = iter(message_ids)  # reserved by the store; the forwards refer to them
        self.messages: list[Row] = []
        self.outbox: list[Row] = []
        self.rejections: list[Row] = []
        self.windows: dict[tuple[str, str], replay.ReplayWindow] = {}
        # in a $share/ group: the stored windows of the batch's devices, read once under their locks
        self.stored_windows: dict[tuple[str, str], tuple[int, int, bytes]] = {}
        self.windows_read: set[tuple[str, str]] = set()
        self.counters: dict[tuple[str, str, int, int], bytes] = {}  # -> the message's bytes
        self.seen: set[str] = set()
        self.statuses: dict[str, str] = {}

    def write(self, db: Tx, now: float) -> None:
        db.insert_messages(self.messages)
        db.queue_forwards(self.outbox)
        db.save_replay_windows(
            [(device_id, kind, *_window_row(w)) for (device_id, kind), w in self.windows.items()]
        )
        db.mark_seen([(now, device_id) for device_id in self.seen if device_id not in self.statuses])
        db.mark_statuses([(now, status, device_id) for device_id, status in self.statuses.items()])
        db.add_rejections(self.rejections)


def _window_row(window: replay.ReplayWindow) -> tuple[int, int, bytes]:
    boot, top, seen = window.state()
    return boot, top, seen.to_bytes((seen.bit_length() + 7) // 8 or 1, "big")


@dataclass(slots=True)
class Check:
    """How far a message got before the transaction: refused, parsed, or parsed and verified."""

    error: ProtocolError | None = None
    device_id: str | None = None  # and kind: what the topic names
    kind: str | None = None
    message: messages.DeviceMessage | None = None  # None with no error: a card, checked inside
    known: Known | None = None  # set: the signature verified with this device's key


@dataclass(slots=True, frozen=True)
class Checked:
    """A batch as Ingest.check left it for Ingest.commit: its messages and how far each got."""

    items: list[tuple[str, bytes | int]]
    checks: list[Check]


@dataclass
class RateLimitedLog:
    per_minute: int
    window_start: float = 0.0
    count: int = 0
    suppressed: int = 0

    def allow(self, now_s: float) -> bool:
        if now_s - self.window_start >= 60:
            if self.suppressed:
                log.warning("%d rejections not logged in the last minute", self.suppressed)
            self.window_start, self.count, self.suppressed = now_s, 0, 0
        self.count += 1
        if self.count <= self.per_minute:
            return True
        self.suppressed += 1
        return False


class Ingest:
    """Verifier and writer of device messages for one store."""

    def __init__(
        self, store: Store, auto_accept: bool = False, log_per_minute: int = 30, shared: bool = False
    ):
        self.store = store
        # several processes on one store ($share/ subscriptions): the replay state and the cards
        # are read inside each transaction, where BEGIN IMMEDIATE serialises the writers
        self.shared = shared
        self.auto_accept = auto_accept
        self.known: dict[str, Known] = {}
        self.windows: dict[tuple[str, str], replay.ReplayWindow] = {}
        self.routes: list[routing.Route] = []
        self.counts: Counter[str] = Counter()
        self.rejected_counts: Counter[str] = Counter({reason: 0 for reason in REASONS})
        self.rate_log = RateLimitedLog(log_per_minute)
        self.load()

    def load(self) -> None:
        """(Re)load device keys, replay windows and active routes from the store."""
        for device_id, key, state, owner in self.store.device_keys():
            self.known[device_id] = Known(key, state, owner)
        for device_id, kind, boot, top, seen in self.store.replay_windows():
            self.windows[(device_id, kind)] = replay.ReplayWindow(boot, top, int.from_bytes(seen, "big"))
        self.reload_routes()

    def reload_routes(self) -> None:
        self.routes = self.store.routes()

    # --- the batch ------------------------------------------------------------------------------

    def process(self, batch: list[tuple[str, bytes | int]]) -> list[Outcome]:
        """Verify and commit a batch; raise the store's error (state unchanged) if it cannot commit.

        A payload given as an int is the size of a message too large to receive: 'oversized'.
        """
        return self.commit(self.check(batch))

    def check(self, batch: list[tuple[str, bytes | int]]) -> Checked:
        """The first half of process(): parse and verify with the keys in memory, without the store.

        So the outbox, the API and the other agents of a $share/ group wait only for the writes,
        and the agent checks its next batch while this one commits (host_agent.service).
        """
        # an int is the size of a message the connection read past without holding it (host_agent.bus.connection)
        items = [(topic, data if isinstance(data, int) else bytes(data)) for topic, data in batch]
        return Checked(items, [self._check(topic, data) for topic, data in items])

    def commit(self, checked: Checked) -> list[Outcome]:
        """The second half of process(): what is left to check under the store, and the writes."""
        items, checks = checked.items, checked.checks
        saved_windows: dict[tuple[str, str], tuple[int, int, int] | None] = {}
        saved_known: dict[str, Known | None] = {}
        outcomes: list[Outcome] = []
        now = time.time()
        try:
            with self.store.transaction() as db:
                device_ids: set[str] = set()
                if self.shared:
                    device_ids = {c.device_id for c in checks if c.device_id is not None}
                db.lock_devices(list(device_ids))  # the other agents of the group wait for these, no others
                rows = Rows(db.new_message_ids(len(items)))
                if device_ids:
                    rows.stored_windows = db.replay_windows_of(device_ids)
                for (topic, data), check in zip(items, checks, strict=True):
                    outcomes.append(self._one(db, rows, topic, data, check, now, saved_windows, saved_known))
                rows.write(db, now)
        except self.store.errors:
            for key, state in saved_windows.items():
                if state is None:
                    self.windows.pop(key, None)
                else:
                    self.windows[key] = replay.ReplayWindow(*state)
            for device_id, known in saved_known.items():
                if known is None:
                    self.known.pop(device_id, None)
                else:
                    self.known[device_id] = known
            raise
        for outcome in outcomes:
            if outcome.reason is None:
                self.counts[outcome.kind or "?"] += 1
            else:
                self.rejected_counts[outcome.reason] += 1
                if outcome.reason != "duplicate" and self.rate_log.allow(now):
                    log.warning("rejected %s on %s: %s", outcome.reason, outcome.topic, outcome.detail)
        return outcomes

    def _check(self, topic: str, data: bytes | int) -> Check:
        """Parse a device message and verify it with the key in memory, or say what is left to do."""
        device_id = kind = None
        try:
            if isinstance(data, int):
                raise ProtocolError("oversized", f"{data} bytes, beyond the MQTT packet limit, never held")
            device_id, kind = verifier.read_topic(topic)
            if kind == "card":
                return Check(device_id=device_id, kind=kind)
            message = verifier.open_message(device_id, kind, data)
            known = self.known.get(device_id)
            if known is None or (self.shared and known.state != "accepted"):
                # its card may be earlier in the batch or in the store
                return Check(None, device_id, kind, message)
            verifier.check_signer(message, known.public_key, is_rejected=known.state == "rejected")
            return Check(None, device_id, kind, message, known)
        except ProtocolError as error:
            return Check(error, device_id, kind)

    def _one(
        self,
        db: Tx,
        rows: Rows,
        topic: str,
        data: bytes | int,
        check: Check,
        now: float,
        saved_windows: dict[tuple[str, str], tuple[int, int, int] | None],
        saved_known: dict[str, Known | None],
    ) -> Outcome:
        try:
            if check.error:
                raise check.error
            assert isinstance(data, bytes)  # a size (int) never passes _check
            device_id, kind = check.device_id, check.kind
            assert device_id is not None and kind is not None
            if kind == "card":
                return self._card(db, topic, data, device_id, now, saved_known)
            message, known = check.message, check.known
            assert message is not None
            if known is not self.known.get(device_id):
                # checked before a change to the device (a card earlier in the batch, an accept or a
                # reject, another agent's card): checked again with what the agent knows now
                known = None
            if known is None:
                known = self.known.get(device_id)
                if known is None or (self.shared and known.state != "accepted"):
                    known = self._known_from_store(db, device_id, saved_known)
                verifier.check_signer(
                    message,
                    known.public_key if known else None,
                    is_rejected=known is not None and known.state == "rejected",
                )
                assert known is not None
            key = (device_id, kind)
            window = self.windows.get(key)
            if key not in saved_windows:
                saved_windows[key] = window.state() if window else None
            if self.shared and key not in rows.windows_read:
                # another process may have moved this window since; the devices' locks keep it
                # still from the batch's read to the commit, so one read per transaction is enough
                rows.windows_read.add(key)
                row = rows.stored_windows.get(key)
                window = self.windows[key] = (
                    replay.ReplayWindow(row[0], row[1], int.from_bytes(row[2], "big"))
                    if row
                    else replay.ReplayWindow()
                )
            elif window is None:
                window = self.windows[key] = replay.ReplayWindow()
            counter = (device_id, kind, message.boot, message.seq)

            def held() -> bytes | None:
                # the bytes accepted under these counters: in this batch, or in the store
                held = rows.counters.get(counter)
                if held is None:
                    held = db.message_bytes(*counter)
                return None if held is None else verifier.digest(held)

            verifier.admit_counters(window, message, data, held, is_store_authority=self.shared)
            rows.windows[key] = window
            return self._store(rows, topic, data, counter, message, known, now)
        except ProtocolError as error:
            device = check.device_id
            if error.reason == "duplicate" and check.message is not None:
                # already stored: its counters, so that a receipt covers what was sent again
                message = check.message
                return Outcome(
                    topic,
                    "duplicate",
                    error.detail,
                    device,
                    message.kind,
                    None,
                    None,
                    message.boot,
                    message.seq,
                )
            rows.rejections.append((now, error.reason, topic[:200], device, error.detail[:300]))
            return Outcome(topic, error.reason, error.detail, device)

    def _known_from_store(self, db: Tx, device_id: str, saved_known: dict[str, Known | None]) -> Known | None:
        """A card another process of a $share group ingested, or an accept made elsewhere."""
        row = db.device_key(device_id)
        if row is None:
            return None
        saved_known.setdefault(device_id, self.known.get(device_id))
        known = self.known[device_id] = Known(*row)
        return known

    def _card(
        self,
        db: Tx,
        topic: str,
        data: bytes,
        device_id: str,
        now: float,
        saved_known: dict[str, Known | None],
    ) -> Outcome:
        card = verifier.check_card(topic, data)
        known = self.known.get(device_id) or self._known_from_store(db, device_id, saved_known)
        saved_known.setdefault(device_id, known)
        if known is None:
            state = "accepted" if self.auto_accept else "pending"
            db.add_device(
                device_id,
                card.public_key,
                data,
                card.owner_id,
                card.board,
                card.firmware,
                state,
                now,
                card.time_s,
            )
            self.known[device_id] = Known(card.public_key, state, card.owner_id)
        else:
            if card.owner_id != known.owner_id:
                self._check_newer(db, card)
            db.update_card(device_id, data, card.owner_id, card.board, card.firmware, now, card.time_s)
            self.known[device_id] = Known(known.public_key, known.state, card.owner_id)
        return Outcome(topic, None, device_id=device_id, kind="card", body=card, raw=data)

    @staticmethod
    def _check_newer(db: Tx, card: messages.Card) -> None:
        """A card that changes the owner must be newer than every card seen of this device.

        Otherwise anyone who may publish on a card topic could put back an older genuine card (from
        before a claim or a hand-over) and with it a former owner. A device signs its time into
        its card; after a claim or a hand-over it knows the time (from the verified command), so
        the card that announces a new owner always carries one. Card times are whole seconds: a
        card of the same second as the newest counts as newer (a hand-over right after a boot).
        """
        newest_s, held_owner = db.newest_card(card.device_id)
        if card.time_s is None or (newest_s is not None and card.time_s < newest_s):
            raise ProtocolError(
                "replay", f"card naming owner {card.owner_id} is not newer than the one held ({held_owner})"
            )

    def _store(
        self,
        rows: Rows,
        topic: str,
        data: bytes,
        counter: tuple[str, str, int, int],
        message: messages.DeviceMessage,
        known: Known,
        now: float,
    ) -> Outcome:
        device_id, kind = message.device_id, message.kind
        body = message.body
        metrics = encoded_body = None
        if kind == "reading":
            # a reading's values are read back from its signed bytes (store.reading_values): no copy
            metrics = "," + ",".join([item[0] for item in body]) + ","
        else:
            encoded_body = _to_json(body)
        is_held = known.state != "accepted"
        message_id = next(rows.message_ids)
        rows.messages.append(
            (
                message_id,
                device_id,
                kind,
                message.boot,
                message.seq,
                message.time_s,
                now,
                data,
                encoded_body,
                metrics,
                int(is_held),
            )
        )
        rows.counters[counter] = data
        rows.seen.add(device_id)
        if encoded_body is not None and kind == "status":
            rows.statuses[device_id] = encoded_body
        elif kind == "reading" and not is_held:
            rows.outbox += self.forwards(message_id, now, device_id, message.boot, message.seq, body, now)
        return Outcome(topic, None, "", device_id, kind, message_id, body, message.boot, message.seq, data)

    def forwards(
        self,
        message_id: int,
        received_s: float,
        device_id: str,
        boot: int,
        seq: int,
        body: list[tuple[Any, ...]],
        now: float,
    ) -> list[Row]:
        """Outbox rows of one reading (its id and received_s: where the store finds it), one per
        matching route; the idempotency key is (device, boot, seq)."""
        if not self.routes:
            return []
        key = f"{device_id}:{boot}:{seq}"
        metric_names = [item[0] for item in body]
        return [
            (route.id, message_id, key, now, received_s)
            for route in self.routes
            if routing.matches(route, device_id, metric_names, now)
        ]

    def enqueue(
        self,
        db: Tx,
        message_id: int,
        received_s: float,
        device_id: str,
        boot: int,
        seq: int,
        metric_names: list[str],
        now: float,
    ) -> None:
        """Queue one forward per matching route now (readings released after an accept)."""
        body: list[tuple[Any, ...]] = [(name,) for name in metric_names]
        db.queue_forwards(self.forwards(message_id, received_s, device_id, boot, seq, body, now))

    def device_state_changed(self, device_id: str, state: str) -> None:
        """The owner accepted or rejected a device: a new Known, so that a batch checked before the
        change is checked again when it commits (Ingest.commit compares the two)."""
        known = self.known.get(device_id)
        if known:
            self.known[device_id] = dataclasses.replace(known, state=state)

    def release_held(self, device_id: str) -> int:
        """After an accept: queue forwards of the readings that were held for this device."""
        rows = self.store.unforwarded_readings(device_id)
        now = time.time()
        with self.store.transaction() as db:
            for message_id, received_s, boot, seq, metric_names in rows:
                self.enqueue(db, message_id, received_s, device_id, boot, seq, metric_names, now)
        return len(rows)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


_to_json = json.JSONEncoder(default=_jsonable).encode  # json.dumps(default=...) builds an encoder per call


def verify_only(verifier_keys: dict[str, bytes], topic: str, data: bytes) -> messages.DeviceMessage:
    """The bare decode + verify path (the benchmark's bound)."""
    device_id, kind = verifier.read_topic(topic)
    message = verifier.open_message(device_id, kind, data)
    verifier.check_signer(message, verifier_keys[device_id])
    return message
