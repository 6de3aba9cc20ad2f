"""The owner's command interpreter: judge one command, apply it, answer with a signed ack.

Loaded for one command and dropped after it (fp.device.Device.on_command), as fp.settings is after
the boot check: its code would otherwise stay in the heap between commands, which are rare. Each
operation is one function in OPERATIONS (the two that change config.json are fp.config_commands',
loaded for them); `claim` is judged before the owner check (the claimant is not the owner yet).
"""

import asyncio
import hashlib
import time

from fp import FIRMWARE_VERSION, const, device_messages, ed25519, ids, safemode
from fp.destinations import announce_card, total
from fp.errors import ProtocolError
from fp.runtime import heap_in_use, log, unload

# Each name a module makes stays in a board's name pool after the module is dropped (fp.inbound's
# docstring): the words only a command uses are const() strs, which are not names, and the
# refusal-ack bucket's figures const() ints.
_GET_INFO = const("get-info")
_HAND_OVER = const("hand-over")
_REBOOT = const("reboot")
_CLAIM = const("claim")
_APPLIED = const("applied")
_REBOOTING = const("rebooting")
_NORMAL = const("normal")
_HEAP_BYTES = const("heap_bytes")
_NOT_OWNER = const("not-owner")
_UNCLAIMED = const("unclaimed")

# Signed answers to refused commands, a token bucket: a burst of this many, then one per
# _REFUSAL_ACK_MS. Anyone who may publish on the command topic can send junk, and each ack costs
# a signature (and a slot in every destination's queue); an applied command is always answered.
_REFUSAL_ACK_BURST = const(8)
_REFUSAL_ACK_MS = const(1000)


def _configure(device, args, name):
    """fp.config_commands' operation `name` (set-destinations and set-interval, which check their
    values with fp.settings' rules for config.json), loaded for it and dropped after, with
    fp.settings and fp.checked, which fp.settings loads."""
    from fp import config_commands

    try:
        return getattr(config_commands, name)(device, args)
    finally:
        unload("config_commands")
        unload("settings")
        unload("checked")


def get_info(device, args):
    destinations = device.destinations
    history = device.history
    return {
        "fw": FIRMWARE_VERSION,
        "board": device.board.get("name"),
        "boot": device.identity.boot,
        "seq": device.identity.seq,
        "destinations": [d["name"] for d in device.config["destinations"]],
        "intervals": device.config["intervals"],
        "refused": device.refused,
        "unanswered": device.unanswered,
        "dropped": total(destinations, "dropped"),
        "buffered": total(destinations, "buffered"),
        "flash_writes": sum(d.ring.writes for d in destinations.values()),
        "delivery": {name: d.delivery for name, d in destinations.items()},
        "receipts": {
            name: [d.receipts, d.receipts_refused, d.resent]
            for name, d in destinations.items()
            if d.receipt_key is not None
        },
        _HEAP_BYTES: heap_in_use(),  # with this command's interpreter and result loaded
        "heap_at_rest_bytes": device.heap_at_rest_bytes,  # as the command arrived (fp.device)
        "mode": safemode.SAFE_MODE if device.is_safe else _NORMAL,
        "unstable_boots": history.unstable if history else 0,
        "http": [device.http.served, device.http.refused] if device.http else None,
    }


def set_owner(device, key):
    """A claim or a hand-over: save the new owner, then announce the new card."""
    device.identity.set_owner(key)
    announce_card(device, device.card())


def hand_over(device, args):
    key = args.get("owner")
    if not isinstance(key, bytes) or len(key) != 32:
        raise ProtocolError("bad-command", "hand-over needs the new owner's 32-byte key")
    set_owner(device, key)
    return {"owner": ids.id_from_public_key(key)}


# op -> function(device, args) returning the ack's result; a new operation is one entry here (and
# one in fp.messages.OPS, the host's list). Lambdas: a function's name is a name in the pool for
# good, a lambda's is the interpreter's own.
OPERATIONS = {
    "set-destinations": lambda device, args: _configure(device, args, "set_destinations"),
    "set-interval": lambda device, args: _configure(device, args, "set_interval"),
    _GET_INFO: get_info,
    _REBOOT: lambda device, args: _REBOOTING,
    _HAND_OVER: hand_over,
}


def judge(device, command, inbound):
    """Check a parsed command with fp.inbound (signature, counter, time, device; for `claim`, the
    claim window and the claimant's own signature); return the operation's function, or None for
    `claim`, which is judged before the owner check (the claimant is not the owner yet)."""
    identity = device.identity
    owner_key, last_counter = identity.owner_key, identity.last_counter
    if command.op == _CLAIM:
        if owner_key is not None:
            raise ProtocolError(_NOT_OWNER, "device already has an owner")
        # the button was pressed, and no claim was made since (a claim ends the window for claims)
        if not device.is_claim_window_running() or not device.claim_window_open:
            raise ProtocolError(_UNCLAIMED, "press the button to open the claim window")
        owner_key, last_counter = command.args.get("owner"), -1
        if (
            not isinstance(owner_key, bytes)
            or len(owner_key) != 32
            or ids.id_from_public_key(owner_key) != command.owner_id
        ):
            raise ProtocolError("bad-command", "claim needs the claimant's 32-byte key as owner")
    inbound.check_command(command, owner_key, identity.device_id, last_counter, device.now(), ed25519.verify)
    if command.op == _CLAIM:
        return None
    operation = OPERATIONS.get(command.op)
    if operation is None:
        raise ProtocolError("bad-command", "unknown operation " + command.op)
    return operation


def apply(device, command, function):
    """Run a judged command: its operation's `function` (None: the claim, the first owner's key)."""
    # a verified owner command is an authenticated lower bound of the time (no NTP)
    device.hal.set_time(command.issued_s)
    if function is None:
        device.claim_window_open = False
        set_owner(device, command.args["owner"])
        return {"owner": command.owner_id}
    result = function(device, command.args)
    device.identity.accept_counter(command.counter)
    return result


def may_answer_refusal(device):
    """Take one token from the refusal-ack bucket (refilled one per _REFUSAL_ACK_MS); False: none left."""
    now = time.ticks_ms()
    if device.refusal_acks is None:  # the first refusal since boot: a full bucket
        device.refusal_acks, device.refusal_acks_ms = _REFUSAL_ACK_BURST, now
    elapsed = time.ticks_diff(now, device.refusal_acks_ms)
    if elapsed >= _REFUSAL_ACK_MS or elapsed < 0:  # < 0: idle past half the ticks period
        gained = elapsed // _REFUSAL_ACK_MS if elapsed > 0 else _REFUSAL_ACK_BURST
        device.refusal_acks = min(_REFUSAL_ACK_BURST, device.refusal_acks + gained)
        full = device.refusal_acks == _REFUSAL_ACK_BURST
        device.refusal_acks_ms = (
            now if full else time.ticks_add(device.refusal_acks_ms, gained * _REFUSAL_ACK_MS)
        )
    if device.refusal_acks <= 0:
        return False
    device.refusal_acks -= 1
    return True


def handle(device, data):
    """Judge and apply one command; return the signed ack (also published everywhere), or None
    for a refused command beyond the ack budget (counted in `refused` and `unanswered`) and for
    a copy of the command applied last.

    A command reaches the device once per destination that carries commands (the vendor's relay
    and the owner's broker, say), and a broker may deliver a QoS 1 message again. Its first copy
    was applied and its ack published to every destination; a later copy is the same command, not
    a replay, so it is dropped without a second ack (a 'replay' ack could reach the agent first).
    """
    digest = hashlib.sha256(data).digest()
    if digest == device.last_applied:
        return None
    counter = None
    try:
        from fp import inbound

        command = inbound.parse_command(data)
        counter = command.counter
        operation = judge(device, command, inbound)
        inbound = None
        device.drop_parsers()  # judged: the operation runs without the parsers and the decoder
        result = apply(device, command, operation)
        device.last_applied = digest
        outcome, detail = _APPLIED, ""
    except ProtocolError as error:
        device.refused += 1
        if not may_answer_refusal(device):
            device.unanswered += 1
            return None  # not logged either: junk must not flood the log
        outcome, detail, result = error.reason, error.detail, None
        log("command refused: %s" % error)
    identity = device.identity
    boot, seq = identity.next_counter()
    ack = device_messages.encode_ack(
        identity.key.sign,
        identity.device_id,
        boot,
        seq,
        digest,
        counter,
        outcome,
        detail,
        result,
        device.now(),
    )
    device.put("ack", ack)
    if outcome == _APPLIED and result == _REBOOTING:
        asyncio.create_task(device.reboot_soon())
    return ack
