"""First-party terms on the wire: proffer, answer, termination and its acknowledgement.

After IEEE 7012 ("MyTerms"): the owner (first party) proffers an agreement from a public roster;
the second party answers with an accept, one alternative from the roster, or a decline. Each
message is a COSE_Sign1 with its own content type (fp.messages), so none can pass as another.

- proffer (65212), signed by the owner: claims {1 iss: owner id, 6 iat, 7 cti: 16-byte nonce,
  8 cnf: {1: COSE_Key}}, payload {"agreement": [id, version], "digest": SHA-256 of the roster
  entry's canonical bytes, "recipient": text, "recipient_key": id | null, "devices": [...],
  "metrics": [...], "purpose": text, "from": int, "until": int, "retention_days": int | null,
  "route": text}.
- answer (65213), signed by the second party's own key: claims {1 iss: its id, 6 iat,
  8 cnf: {1: COSE_Key}}, payload {"proffer": SHA-256 of the proffer's exact bytes,
  "decision": "accept" | "alternative" | "decline", "alternative": [id, version] | null,
  "reason": text}. An accept is the countersignature: it binds those exact bytes.
- termination (65214), signed by the owner: claims {1 iss, 6 iat}, payload {"proffer": digest,
  "reason": text}.
- termination-ack (65215), signed by the second party: claims {1 iss, 6 iat, 8 cnf},
  payload {"termination": SHA-256 of the termination's exact bytes}.

The parsers check signatures with the key the message carries and its binding to the id; who
that key must belong to (the owner of a device, the recipient a proffer names) is the caller's.
"""

import hashlib

from fp import cbor, cose, messages
from fp.errors import ProtocolError
from fp.ids import check_key_matches_id, id_from_public_key, is_valid_id

DECISIONS = ("accept", "alternative", "decline")
NONCE_BYTES = 16
MAX_LIST = 64  # devices or metrics named in one proffer
MAX_TEXT = 200  # characters of a name, purpose or reason


def digest(data):
    """Return the SHA-256 of bytes: how an answer or acknowledgement names what it answers."""
    return hashlib.sha256(bytes(data)).digest()


def _header(content_type, claims):
    return {cose.H_ALG: cose.ALG_EDDSA, cose.H_CONTENT_TYPE: content_type, cose.H_CWT_CLAIMS: claims}


def _signer_claims(public_key, time_s):
    return {
        messages.ISS: id_from_public_key(public_key),
        messages.IAT: int(time_s),
        messages.CNF: {1: messages.cose_key(public_key)},
    }


def encode_proffer(sign, owner_public_key, nonce, time_s, body):
    """Sign a proffer; `body` is the payload map (see the module docstring), checked here."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("nonce must be 16 bytes")
    _check_proffer_body(body)
    claims = _signer_claims(owner_public_key, time_s)
    claims[messages.CTI] = bytes(nonce)
    return cose.sign1(sign, _header(messages.CT_PROFFER, claims), cbor.encode(body))


def encode_answer(sign, public_key, proffer_bytes, decision, time_s, alternative=None, reason=""):
    """Sign the answer to a proffer's exact bytes: accept, one alternative [id, version], or decline."""
    body = {
        "proffer": digest(proffer_bytes),
        "decision": decision,
        "alternative": None if alternative is None else [alternative[0], alternative[1]],
        "reason": reason,
    }
    _check_answer_body(body)
    return cose.sign1(
        sign, _header(messages.CT_ANSWER, _signer_claims(public_key, time_s)), cbor.encode(body)
    )


def encode_termination(sign, owner_public_key, proffer_bytes, time_s, reason=""):
    """Sign the early end of the agreement made from this proffer."""
    claims = {messages.ISS: id_from_public_key(owner_public_key), messages.IAT: int(time_s)}
    body = {"proffer": digest(proffer_bytes), "reason": reason}
    return cose.sign1(sign, _header(messages.CT_TERMINATION, claims), cbor.encode(body))


def encode_termination_ack(sign, public_key, termination_bytes, time_s):
    """Sign the receipt of a termination's exact bytes."""
    claims = _signer_claims(public_key, time_s)
    body = {"termination": digest(termination_bytes)}
    return cose.sign1(sign, _header(messages.CT_TERMINATION_ACK, claims), cbor.encode(body))


class Signed:
    """A checked terms message: who signed it (id and key), when, its nonce if any, and its body."""

    def __init__(self, kind, message, signer_id, signer_key, time_s, nonce, body):
        self.kind = kind
        self.message = message
        self.signer_id = signer_id
        self.signer_key = signer_key
        self.time_s = time_s
        self.nonce = nonce
        self.body = body  # type: dict

    @property
    def raw(self) -> bytes:
        return self.message.raw


def _text(value, name):
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ProtocolError("malformed", "%s must be text of at most %d characters" % (name, MAX_TEXT))


def _int(value, name):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError("malformed", name + " must be a non-negative integer")


def _ref(value, name):
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not value[0]
        or len(value[0]) > MAX_TEXT
    ):
        raise ProtocolError("malformed", name + " must be [id, version]")
    _int(value[1], name + " version")


def _names(value, name, is_id):
    if not isinstance(value, list) or not value or len(value) > MAX_LIST:
        raise ProtocolError("malformed", "%s must be a list of 1 to %d names" % (name, MAX_LIST))
    for item in value:
        if item == "*":
            continue
        if is_id and not is_valid_id(item):
            raise ProtocolError("malformed", name + " must hold device ids or '*'")
        if not is_id and (not isinstance(item, str) or not item or len(item) > MAX_TEXT):
            raise ProtocolError("malformed", name + " must hold metric names or '*'")


def _keys(body, expected, what):
    for key in body:
        if key not in expected:
            raise ProtocolError("malformed", "%s key %r is not part of protocol v1" % (what, key))
    for key in expected:
        if key not in body:
            raise ProtocolError("malformed", "%s needs %r" % (what, key))


PROFFER_KEYS = (
    "agreement",
    "digest",
    "recipient",
    "recipient_key",
    "devices",
    "metrics",
    "purpose",
    "from",
    "until",
    "retention_days",
    "route",
)


def _check_proffer_body(body):
    if not isinstance(body, dict):
        raise ProtocolError("malformed", "proffer payload must be a map")
    _keys(body, PROFFER_KEYS, "proffer")
    _ref(body["agreement"], "agreement")
    if not isinstance(body["digest"], bytes) or len(body["digest"]) != 32:
        raise ProtocolError("malformed", "digest must be the 32-byte SHA-256 of the roster entry")
    _text(body["recipient"], "recipient")
    if body["recipient_key"] is not None and not is_valid_id(body["recipient_key"]):
        raise ProtocolError("malformed", "recipient_key must be an id or null")
    _names(body["devices"], "devices", True)
    _names(body["metrics"], "metrics", False)
    _text(body["purpose"], "purpose")
    _text(body["route"], "route")
    _int(body["from"], "from")
    _int(body["until"], "until")
    if body["until"] <= body["from"]:
        raise ProtocolError("malformed", "until must be after from")
    if body["retention_days"] is not None:
        _int(body["retention_days"], "retention_days")


def _check_answer_body(body):
    if not isinstance(body, dict):
        raise ProtocolError("malformed", "answer payload must be a map")
    _keys(body, ("proffer", "decision", "alternative", "reason"), "answer")
    if not isinstance(body["proffer"], bytes) or len(body["proffer"]) != 32:
        raise ProtocolError("malformed", "answer proffer must be a 32-byte SHA-256")
    if body["decision"] not in DECISIONS:
        raise ProtocolError("malformed", "decision must be accept, alternative or decline")
    if body["decision"] == "alternative":
        _ref(body["alternative"], "alternative")
    elif body["alternative"] is not None:
        raise ProtocolError("malformed", "only an alternative names an agreement")
    _text(body["reason"], "reason")


def _signer(message, needs_key):
    """The signer's id and key (from cnf when carried), signature checked when the key is known."""
    claims = message.claims
    signer_id = claims.get(messages.ISS)
    if not is_valid_id(signer_id):
        raise ProtocolError("malformed", "iss must be an id")
    _int(claims.get(messages.IAT), "iat")
    key = None
    confirmation = claims.get(messages.CNF)
    if confirmation is not None:
        key = messages.confirmed_key(confirmation, "the signer's")
        check_key_matches_id(key, signer_id)
    elif needs_key:
        raise ProtocolError("malformed", "the signer's key (cnf) is missing")
    return signer_id, key


def _parse(data, kind, needs_key, signer_key=None):
    message = messages.parse(data, kind)
    signer_id, key = _signer(message, needs_key)
    if signer_key is not None:
        # signed by a key the caller already holds: a key the message carries changes nothing
        if signer_id != id_from_public_key(signer_key):
            raise ProtocolError("not-owner", "%s not issued by the expected signer" % kind)
        key = signer_key
    body = cbor.decode(message.payload)
    if not isinstance(body, dict):
        raise ProtocolError("malformed", kind + " payload must be a map")
    return message, signer_id, key, body


def parse_proffer(data, verify):
    """Parse and check a proffer (the owner's key travels in it); return a Signed."""
    message, signer_id, key, body = _parse(data, "proffer", True)
    nonce = message.claims.get(messages.CTI)
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise ProtocolError("malformed", "proffer cti must be a 16-byte nonce")
    _check_proffer_body(body)
    cose.verify_sign1(message, key, verify)
    return Signed("proffer", message, signer_id, key, message.claims[messages.IAT], nonce, body)


def parse_answer(data, proffer, verify):
    """Check an answer against the proffer (a Signed) it must answer; return a Signed.

    The signature is checked before anything the sender chose is trusted; then the answer must
    name these exact proffer bytes ('wrong-proffer') and, when the proffer names the recipient's
    key, be signed by it ('not-recipient').
    """
    message, signer_id, key, body = _parse(data, "answer", True)
    _check_answer_body(body)
    cose.verify_sign1(message, key, verify)
    if body["proffer"] != digest(proffer.raw):
        raise ProtocolError("wrong-proffer", "the answer names another proffer")
    expected = proffer.body["recipient_key"]
    if expected is not None and signer_id != expected:
        raise ProtocolError("not-recipient", "signed by %s, the proffer names %s" % (signer_id, expected))
    return Signed("answer", message, signer_id, key, message.claims[messages.IAT], None, body)


def parse_termination(data, proffer, verify):
    """Check a termination of the agreement made from `proffer` (signed by the proffer's owner)."""
    message, signer_id, key, body = _parse(data, "termination", False, proffer.signer_key)
    if not isinstance(body, dict):
        raise ProtocolError("malformed", "termination payload must be a map")
    _keys(body, ("proffer", "reason"), "termination")
    _text(body["reason"], "reason")
    cose.verify_sign1(message, key, verify)
    if body["proffer"] != digest(proffer.raw):
        raise ProtocolError("wrong-proffer", "the termination names another proffer")
    return Signed("termination", message, signer_id, key, message.claims[messages.IAT], None, body)


def parse_termination_ack(data, termination, answer, verify):
    """Check the acknowledgement of `termination`, signed by whoever signed `answer`."""
    message, signer_id, key, body = _parse(data, "termination-ack", True)
    if not isinstance(body, dict):
        raise ProtocolError("malformed", "termination-ack payload must be a map")
    _keys(body, ("termination",), "termination-ack")
    cose.verify_sign1(message, key, verify)
    if signer_id != answer.signer_id:
        raise ProtocolError("not-recipient", "acknowledged by %s, not %s" % (signer_id, answer.signer_id))
    if body["termination"] != digest(termination.raw):
        raise ProtocolError("wrong-proffer", "the acknowledgement names another termination")
    return Signed("termination-ack", message, signer_id, key, message.claims[messages.IAT], None, body)
