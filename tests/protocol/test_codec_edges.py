"""Signed messages carrying the CBOR edge cases of issue 16: device and host judge them alike.

Each message is properly signed (a signature proves nothing about the bytes being well formed):
text strings with ill-formed UTF-8, and maps with keys that Python takes for one. The host's path
(host_agent.wire, CPython) and the firmware's (fp.messages under MicroPython) must both refuse
them as `malformed`, and both accept the well-formed control of each.
"""

from __future__ import annotations

import json

import pytest

from fp import cbor, cose, device_messages, messages, senml
from fp.errors import ProtocolError
from host_agent import wire
from tests.protocol import examples

# (name, bytes of a text string) put where a 2-, 3- or 4-byte placeholder was signed
TEXTS = [
    ("well-formed u-umlaut", "62c3bc", "ok"),
    ("well-formed U+10FFFF", "64f48fbfbf", "ok"),
    ("overlong NUL", "62c080", "malformed"),
    ("surrogate D800", "63eda080", "malformed"),
    ("above U+10FFFF", "64f4908080", "malformed"),
]
# command args maps: (name, map bytes, expected)
ARGS = [
    ("keys 1 and 2", "a2 01 00 02 00", "ok"),
    ("keys 1 and true", "a2 01 00 f5 00", "malformed"),
    ("keys 0 and false", "a2 00 00 f4 00", "malformed"),
    ("keys 1 and 1.0", "a2 01 00 fa3f800000 00", "malformed"),
    ("keys 0.0 and -0.0", "a2 fa00000000 00 fa80000000 00", "malformed"),
    ("duplicate key 1", "a2 01 00 01 00", "malformed"),
]


def _placeholder(text_hex: str) -> str:
    return "\x01" * (len(bytes.fromhex(text_hex)) - 1)


def _reading_with_name(text_hex: str) -> bytes:
    """A reading signed by the example device whose metric name is these text-string bytes."""
    name = _placeholder(text_hex)
    payload = senml.encode_pack([(name, "Cel", 21.5)])
    wanted = bytes.fromhex(text_hex)
    payload = payload.replace(cbor.encode(name), wanted)
    assert wanted in payload
    header = device_messages._device_header(messages.CT_READING, examples.DEVICE_ID, 1, 1, examples.TIME_S)
    return cose.sign1(wire.nacl_signer(examples.DEVICE_SEED), header, payload)


def _command(op_hex: str | None = None, args_hex: str | None = None) -> bytes:
    """A command signed by the example owner with this op text string or this args map."""
    op = _placeholder(op_hex) if op_hex else "get-info"
    payload = cbor.encode({"op": op, "args": {"k": 0}})
    if op_hex:
        payload = payload.replace(cbor.encode(op), bytes.fromhex(op_hex))
    if args_hex:
        payload = payload.replace(cbor.encode({"k": 0}), bytes.fromhex(args_hex.replace(" ", "")))
    claims = {
        messages.ISS: examples.OWNER_ID,
        messages.AUD: examples.DEVICE_ID,
        messages.EXP: examples.TIME_S + 300,
        messages.IAT: examples.TIME_S,
        messages.CTI: messages.command_counter_id(9),
    }
    header = {
        cose.H_ALG: cose.ALG_EDDSA,
        cose.H_CONTENT_TYPE: messages.CT_COMMAND,
        cose.H_CWT_CLAIMS: claims,
    }
    return cose.sign1(wire.nacl_signer(examples.OWNER_SEED), header, payload)


def _cases() -> list[tuple[str, str, bytes, str]]:
    """(what, kind, signed bytes, expected outcome)."""
    cases = [(f"reading name {name}", "reading", _reading_with_name(h), out) for name, h, out in TEXTS]
    cases += [(f"command op {name}", "command", _command(op_hex=h), out) for name, h, out in TEXTS]
    cases += [(f"command args {name}", "command", _command(args_hex=h), out) for name, h, out in ARGS]
    return cases


def _host_outcome(kind: str, data: bytes) -> str:
    try:
        if kind == "reading":
            message = wire.parse_device_message(data, "reading")
            cose.verify_sign1(message.message, examples.DEVICE_KEY, wire.nacl_verify)
        else:
            command = wire.parse_command(data)
            cose.verify_sign1(command.message, examples.OWNER_KEY, wire.nacl_verify)
    except ProtocolError as error:
        return error.reason
    return "ok"


@pytest.mark.parametrize("what,kind,data,expected", _cases(), ids=[c[0] for c in _cases()])
def test_host_path_refuses_ill_formed_text_and_merged_keys_in_signed_messages(what, kind, data, expected):
    assert _host_outcome(kind, data) == expected, what


def test_firmware_under_micropython_judges_every_case_as_the_host_does(micropython):
    cases = _cases()
    script = """
import sys, json
from fp import messages
from fp.errors import ProtocolError
out = []
for kind, hex_data in json.loads(sys.stdin.read()):
    data = bytes.fromhex(hex_data)
    try:
        if kind == "reading":
            messages.parse_device_message(data, "reading")
        else:
            messages.parse_command(data)
        out.append("ok")
    except ProtocolError as error:
        out.append(error.reason)
print(json.dumps(out))
"""
    stdin = json.dumps([[kind, data.hex()] for _, kind, data, _ in cases])
    device = json.loads(micropython(script, stdin=stdin))
    host = [_host_outcome(kind, data) for _, kind, data, _ in cases]
    assert device == host == [expected for *_, expected in cases]
