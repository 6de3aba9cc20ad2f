"""Verify signed readings as a third party, holding nothing but the device cards (and a share grant).

Three sources: files each holding one signed message, JSON-lines files as the agent's file and
webhook destinations write them ({"device_id", "message": base64}), or a live MQTT topic. With
`--grant` and `--owner`, each reading must also fall within the owner's signed terms of sharing; with
`--agreement`, within an agreement both the owner and the recipient signed (docs/agreements.md).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import queue
import time
from collections.abc import Iterator
from pathlib import Path

from fp import topics
from fp.errors import ProtocolError
from fp.ids import id_from_public_key
from host_agent.errors import UserError
from host_agent.ingest.verifier import Verifier
from host_agent.routes import grants
from host_agent.terms import policy, records, signed

COSE_SIGN1_TAG = 0xD2  # CBOR tag 18, the first byte of every signed message


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--card", type=Path, action="append", default=[], help="a device card file (repeatable)"
    )
    parser.add_argument("--kind", choices=("reading", "status", "ack"), default="reading")
    parser.add_argument("--grant", type=Path, help="a share grant file: readings must fall within its terms")
    parser.add_argument("--owner", help="the owner's public key (64 hex digits), which signed the grant")
    parser.add_argument(
        "--agreement", type=Path, help="an agreement record (`terms export`): readings must fall within it"
    )
    parser.add_argument(
        "--live", metavar="HOST:PORT", help="verify what arrives on an MQTT broker instead of files"
    )
    parser.add_argument(
        "--topic", default="fp/v1/+/#", help="with --live: the topic filter (default fp/v1/+/#)"
    )
    parser.add_argument("--count", type=int, help="with --live: stop after this many messages")
    parser.add_argument("--duration", type=float, help="with --live: stop after this many seconds")
    parser.add_argument(
        "messages", type=Path, nargs="*", help="files: one signed message each, or JSON lines of forwards"
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None


def _load_grant(args: argparse.Namespace, verifier: Verifier) -> grants.Grant | None:
    if args.grant is None:
        if args.owner:
            raise UserError("--owner checks a share grant: name it with --grant FILE")
        return None
    if not args.owner:
        raise UserError("--grant needs --owner HEX, the owner's public key (GET /owner of their agent)")
    try:
        owner = bytes.fromhex(args.owner)
    except ValueError:
        owner = b""
    if len(owner) != 32:
        raise UserError("--owner must be 64 hex digits (a 32-byte Ed25519 public key)")
    try:
        grant = grants.parse_grant(_read(args.grant), owner)
    except ProtocolError as error:
        raise UserError(f"{args.grant} is not a grant of this owner: {error}") from None
    owner_id = id_from_public_key(owner)
    for state in verifier.devices.values():
        if state.card.owner_id not in (None, owner_id):
            raise UserError(
                f"device {state.card.device_id} belongs to {state.card.owner_id}, not to the grant's owner {owner_id}"
            )
    expires = time.strftime("%Y-%m-%d", time.gmtime(grant.expires_s)) if grant.expires_s else "no expiry"
    print(
        f"grant {args.grant}: owner {owner_id} shares {','.join(grant.devices)} "
        f"metrics {','.join(grant.metrics)} with {grant.recipient!r} for {grant.purpose!r} until {expires}"
    )
    return grant


def _load_agreement(args: argparse.Namespace, verifier: Verifier) -> records.Checked | None:
    if args.agreement is None:
        return None
    try:
        checked = records.check_record(_read(args.agreement))
    except (ProtocolError, ValueError) as error:
        raise UserError(f"{args.agreement} is not an agreement in force: {error}") from None
    owner_id = checked.proffer.signer_id
    for state in verifier.devices.values():
        if state.card.owner_id not in (None, owner_id):
            raise UserError(
                f"device {state.card.device_id} belongs to {state.card.owner_id}, not to the agreement's owner {owner_id}"
            )
    window = checked.window  # the proffer's devices and metrics, and its window
    reference = signed.read_proffer(checked.proffer.raw).body.ref  # the typed reader of the same bytes
    print(
        f"agreement {args.agreement}: {reference} proffered by {owner_id}, "
        f"accepted by {checked.answer.signer_id}: {','.join(window.devices)} metrics {','.join(window.metrics)} "
        f"from {time.strftime('%Y-%m-%d %H:%M', time.gmtime(window.from_s))} "
        f"until {time.strftime('%Y-%m-%d %H:%M', time.gmtime(window.end_s))}"
        + (" (terminated)" if checked.termination else "")
    )
    return checked


def _messages(path: Path) -> Iterator[tuple[str, str | None, bytes]]:
    """(label, topic or None, signed bytes) for each message a file holds."""
    data = _read(path)
    if data[:1] != b"{":
        yield str(path), None, data
        return
    for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        label = f"{path}:{number}"
        try:
            forward = json.loads(line)
            raw = base64.b64decode(forward["message"], validate=True)
            topic = topics.topic(forward["device_id"], "reading") if "device_id" in forward else None
        except (ValueError, KeyError, TypeError, binascii.Error):
            yield label, None, b""  # refused below as malformed
            continue
        yield label, topic, raw


class Report:
    """Checks messages one by one and prints one line each."""

    def __init__(
        self,
        verifier: Verifier,
        kind: str,
        grant: grants.Grant | None,
        agreement: records.Checked | None = None,
    ):
        self.verifier = verifier
        self.kind = kind
        self.grant = grant
        self.agreement = agreement
        self.verified = 0
        self.refused = 0

    def check(self, label: str, topic: str | None, data: bytes) -> None:
        try:
            if not data or data[0] != COSE_SIGN1_TAG:
                raise ProtocolError("malformed", "not a COSE_Sign1 message")
            if topic is None:
                message = self.verifier.check_detached(data, self.kind)
            else:
                message = self.verifier.check(topic, data)
            if self.grant and message.kind == "reading":
                names = [name for name, _, _ in message.body]
                at = message.time_s if message.time_s is not None else time.time()
                if not self.grant.covers(message.device_id, names, at):
                    raise ProtocolError(
                        "not-granted", f"{','.join(names)} of {message.device_id} is outside the grant"
                    )
            if self.agreement and message.kind == "reading":
                names = [name for name, _, _ in message.body]
                at = message.time_s if message.time_s is not None else time.time()
                if not policy.covers(self.agreement.window, message.device_id, names, at, at):
                    raise ProtocolError(
                        "out-of-terms", f"{','.join(names)} of {message.device_id} is outside the agreement"
                    )
        except ProtocolError as error:
            self.refused += 1
            print(f"{label}: REFUSED {error.reason}: {error.detail}", flush=True)
            return
        self.verified += 1
        body = message.body
        if message.kind == "reading":
            body = ", ".join(f"{name} {value:g} {unit or ''}".strip() for name, unit, value in message.body)
        print(
            f"{label}: verified {message.kind} from {message.device_id} boot {message.boot} seq {message.seq}: {body}",
            flush=True,
        )


def _live(args: argparse.Namespace, report: Report) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    host, _, port = args.live.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--live must be HOST:PORT, found {args.live!r}")
    arrived: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=10000)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)

    def on_connect(
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        client.subscribe(args.topic, 1)  # again on every reconnect

    client.on_connect = on_connect
    client.on_message = lambda c, u, m: arrived.put((m.topic, bytes(m.payload)))
    try:
        client.connect(host, int(port), keepalive=30)
    except OSError as error:
        raise UserError(f"cannot reach the broker at {args.live}: {error}") from None
    client.loop_start()
    deadline = time.monotonic() + args.duration if args.duration is not None else None
    seen = 0
    try:
        while args.count is None or seen < args.count:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            try:
                topic, payload = arrived.get(timeout=0.5 if timeout is None else min(timeout, 0.5))
            except queue.Empty:
                continue
            if topic.endswith("/card"):
                try:
                    card = report.verifier.learn_card(payload, topic)
                    print(f"{topic}: card of {card.device_id}, board {card.board}", flush=True)
                except ProtocolError as error:
                    print(f"{topic}: REFUSED card {error.reason}: {error.detail}", flush=True)
                continue
            if topic.endswith("/command") or topic.endswith("/endorsement"):
                continue  # not device messages: owners sign commands, third parties endorsements
            seen += 1
            report.check(topic, topic, payload)
    except KeyboardInterrupt:
        pass
    finally:
        client.loop_stop()
        client.disconnect()


def run(args: argparse.Namespace) -> int:
    verifier = Verifier()
    for card_path in args.card:
        try:
            card = verifier.learn_card(_read(card_path))
        except ProtocolError as error:
            raise UserError(f"{card_path} is not a valid device card: {error}") from None
        print(f"card {card_path}: device {card.device_id}, board {card.board}, firmware {card.firmware}")
    if not args.card and not args.live:
        raise UserError("name the device cards with --card FILE (a live topic brings its own retained cards)")
    if args.live and args.messages:
        raise UserError("give files or --live, not both")
    if not args.live and not args.messages:
        raise UserError("name the message files to verify, or --live HOST:PORT")
    report = Report(verifier, args.kind, _load_grant(args, verifier), _load_agreement(args, verifier))
    if args.live:
        _live(args, report)
    else:
        for path in args.messages:
            for label, topic, data in _messages(path):
                report.check(label, topic, data)
    print(f"{report.verified} verified, {report.refused} refused")
    return 1 if report.refused else 0
