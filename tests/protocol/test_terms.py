"""First-party terms: the wire messages (both interpreters), the roster, and the pure decisions."""

from __future__ import annotations

import json

import pytest

from fp import cbor, cose, messages, terms
from fp.errors import ProtocolError
from fp.ids import id_from_public_key
from fp.reasons import REASONS
from host_agent import wire
from host_agent.errors import UserError
from host_agent.terms import policy, roster, signed
from host_agent.terms.signed import AnswerTerms, ProfferTerms
from tests.protocol import examples

RECIPIENT_SEED = bytes(range(64, 96))
RECIPIENT_KEY = wire.nacl_public_key(RECIPIENT_SEED)
OWNER = wire.nacl_signer(examples.OWNER_SEED)
RECIPIENT = wire.nacl_signer(RECIPIENT_SEED)
ROSTER = roster.load()
NONCE = bytes(range(16))


def _body(ref: str = "community-energy@1", **changes):
    agreement = ROSTER.get(ref)
    body = {
        "agreement": [agreement.id, agreement.version],
        "digest": agreement.digest,
        "recipient": "energy co-op",
        "recipient_key": None,
        "devices": [examples.DEVICE_ID],
        "metrics": ["temperature", "humidity"],
        "purpose": "energy-planning",
        "from": examples.TIME_S,
        "until": examples.TIME_S + 86400,
        "retention_days": 30,
        "route": "coop",
    }
    body.update(changes)
    return body


def _proffer(**changes) -> bytes:
    return terms.encode_proffer(OWNER, examples.OWNER_KEY, NONCE, examples.TIME_S, _body(**changes))


def _accept(proffer: bytes, signer=RECIPIENT, key=RECIPIENT_KEY) -> bytes:
    return terms.encode_answer(signer, key, proffer, "accept", examples.TIME_S + 1)


def test_an_accept_countersigns_the_exact_proffer_bytes_and_names_its_signer():
    proffer = terms.parse_proffer(_proffer(), wire.nacl_verify)
    assert proffer.signer_id == examples.OWNER_ID and proffer.nonce == NONCE
    answer = terms.parse_answer(_accept(proffer.raw), proffer, wire.nacl_verify)
    assert answer.body["decision"] == "accept" and answer.body["proffer"] == terms.digest(proffer.raw)
    assert answer.signer_key == RECIPIENT_KEY


def test_an_acceptance_of_another_proffer_is_refused_as_wrong_proffer():
    mine = terms.parse_proffer(_proffer(), wire.nacl_verify)
    other = terms.encode_proffer(OWNER, examples.OWNER_KEY, bytes(16), examples.TIME_S, _body())
    with pytest.raises(ProtocolError) as error:
        terms.parse_answer(_accept(other), mine, wire.nacl_verify)
    assert error.value.reason == "wrong-proffer"


def test_an_altered_acceptance_is_refused_as_bad_signature():
    proffer = terms.parse_proffer(_proffer(), wire.nacl_verify)
    accept = terms.encode_answer(
        RECIPIENT, RECIPIENT_KEY, proffer.raw, "accept", examples.TIME_S + 1, reason="ok"
    )
    altered = accept.replace(b"ok", b"no")
    with pytest.raises(ProtocolError) as error:
        terms.parse_answer(altered, proffer, wire.nacl_verify)
    assert error.value.reason == "bad-signature"


def test_an_acceptance_signed_by_another_key_than_the_named_recipient_is_refused():
    proffer = terms.parse_proffer(_proffer(recipient_key=examples.OWNER_ID), wire.nacl_verify)
    with pytest.raises(ProtocolError) as error:
        terms.parse_answer(_accept(proffer.raw), proffer, wire.nacl_verify)
    assert error.value.reason == "not-recipient"


def test_a_forged_acceptance_with_a_key_that_is_not_its_issuer_is_refused():
    proffer = terms.parse_proffer(_proffer(), wire.nacl_verify)
    forged = terms.encode_answer(OWNER, RECIPIENT_KEY, proffer.raw, "accept", examples.TIME_S)  # wrong signer
    with pytest.raises(ProtocolError) as error:
        terms.parse_answer(forged, proffer, wire.nacl_verify)
    assert error.value.reason == "bad-signature"


def test_a_proffer_cannot_pass_as_an_answer_or_a_grant():
    data = _proffer()
    for kind in ("answer", "grant", "command"):
        with pytest.raises(ProtocolError) as error:
            messages.parse(data, kind)
        assert error.value.reason == "wrong-kind"


@pytest.mark.parametrize(
    "changes",
    [
        {"until": examples.TIME_S},
        {"devices": []},
        {"devices": ["not-an-id"]},
        {"metrics": [""]},
        {"purpose": "x" * 201},
        {"retention_days": -1},
        {"agreement": ["service-only"]},
    ],
)
def test_malformed_proffer_bodies_are_refused_when_signed_and_when_parsed(changes):
    with pytest.raises(ProtocolError) as error:
        _proffer(**changes)
    assert error.value.reason == "malformed"
    body = _body(**changes)
    header = {
        1: -8,
        3: messages.CT_PROFFER,
        15: {1: examples.OWNER_ID, 6: 1, 7: NONCE, 8: {1: messages.cose_key(examples.OWNER_KEY)}},
    }
    data = cose.sign1(OWNER, header, cbor.encode(body))
    with pytest.raises(ProtocolError) as error:
        terms.parse_proffer(data, wire.nacl_verify)
    assert error.value.reason == "malformed"
    with pytest.raises(ProtocolError) as error:  # the agent's typed seam refuses the same, the same way
        signed.parse_proffer(data)
    assert error.value.reason == "malformed"


def test_the_typed_terms_of_a_proffer_are_its_signed_map_and_read_back_what_was_signed():
    assert ProfferTerms.from_wire(_body()).wire() == _body()
    data = _proffer()
    checked, stored = signed.parse_proffer(data), signed.read_proffer(data)
    assert checked.body == stored.body == ProfferTerms.from_wire(_body())
    assert (checked.signer_id, checked.time_s, checked.nonce, checked.raw) == (
        examples.OWNER_ID,
        examples.TIME_S,
        NONCE,
        data,
    )
    assert (stored.signer_id, stored.time_s) == (examples.OWNER_ID, examples.TIME_S)
    answer = signed.parse_answer(_accept(data), checked)
    assert answer.body == AnswerTerms("accept", None, "") and answer.signer_id == id_from_public_key(
        RECIPIENT_KEY
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"devices": [1]},
        {"metrics": "temperature"},
        {"from": "soon"},
        {"until": True},
        {"agreement": ["service-only", True]},
        {"digest": "not bytes"},
        {"recipient_key": 5},
        {"retention_days": 1.5},
        {"route": None},
    ],
)
def test_a_proffer_map_with_a_field_of_the_wrong_type_is_malformed_not_a_crash(changes):
    with pytest.raises(ProtocolError) as error:
        ProfferTerms.from_wire(_body(**changes))
    assert error.value.reason == "malformed"


def test_an_answer_map_with_an_unknown_decision_or_a_bad_alternative_is_malformed():
    for body in (
        {"decision": "maybe", "alternative": None, "reason": ""},
        {"decision": "alternative", "alternative": ["x"], "reason": ""},
        {"decision": "accept", "alternative": None, "reason": 3},
    ):
        with pytest.raises(ProtocolError) as error:
            AnswerTerms.from_wire(body)
        assert error.value.reason == "malformed"


def test_a_termination_must_be_signed_by_the_proffers_owner_and_acknowledged_by_its_recipient():
    proffer = terms.parse_proffer(_proffer(), wire.nacl_verify)
    answer = terms.parse_answer(_accept(proffer.raw), proffer, wire.nacl_verify)
    end = terms.encode_termination(OWNER, examples.OWNER_KEY, proffer.raw, examples.TIME_S + 5, "moved out")
    termination = terms.parse_termination(end, proffer, wire.nacl_verify)
    assert termination.time_s == examples.TIME_S + 5
    forged = terms.encode_termination(RECIPIENT, RECIPIENT_KEY, proffer.raw, examples.TIME_S + 5)
    with pytest.raises(ProtocolError) as error:
        terms.parse_termination(forged, proffer, wire.nacl_verify)
    assert error.value.reason == "not-owner"
    ack = terms.encode_termination_ack(RECIPIENT, RECIPIENT_KEY, end, examples.TIME_S + 6)
    assert (
        terms.parse_termination_ack(ack, termination, answer, wire.nacl_verify).time_s == examples.TIME_S + 6
    )
    stranger = terms.encode_termination_ack(OWNER, examples.OWNER_KEY, end, examples.TIME_S + 6)
    with pytest.raises(ProtocolError) as error:
        terms.parse_termination_ack(stranger, termination, answer, wire.nacl_verify)
    assert error.value.reason == "not-recipient"


def test_new_refusal_reasons_belong_to_the_closed_set():
    for reason in ("wrong-proffer", "not-recipient", "not-in-roster", "out-of-terms"):
        assert reason in REASONS


def test_micropython_builds_the_same_proffer_and_answer_and_refuses_the_same(micropython):
    proffer = _proffer()
    other = terms.encode_proffer(OWNER, examples.OWNER_KEY, bytes(16), examples.TIME_S, _body())
    script = """
import sys, json
from fp import terms, ed25519
from fp.errors import ProtocolError
c = json.loads(sys.stdin.read())
verify = ed25519.verify
proffer = terms.parse_proffer(bytes.fromhex(c["proffer"]), verify)
accept = terms.parse_answer(bytes.fromhex(c["accept"]), proffer, verify)
try:
    terms.parse_answer(bytes.fromhex(c["other"]), proffer, verify)
    refused = "accepted"
except ProtocolError as error:
    refused = error.reason
made = terms.encode_answer(lambda b: bytes(64), bytes.fromhex(c["key"]), proffer.raw, "decline", 5, None, "no")
print(json.dumps({"owner": proffer.signer_id, "decision": accept.body["decision"], "refused": refused, "made": made.hex()}))
"""
    stdin = json.dumps(
        {
            "proffer": proffer.hex(),
            "accept": _accept(proffer).hex(),
            "other": _accept(other).hex(),
            "key": RECIPIENT_KEY.hex(),
        }
    )
    result = json.loads(micropython(script, stdin=stdin))
    assert result["owner"] == examples.OWNER_ID and result["decision"] == "accept"
    assert result["refused"] == "wrong-proffer"
    assert (
        result["made"]
        == terms.encode_answer(lambda b: bytes(64), RECIPIENT_KEY, proffer, "decline", 5, None, "no").hex()
    )


# --- roster ----------------------------------------------------------------------------------------


def test_the_roster_holds_a_baseline_service_only_agreement_with_strict_terms():
    baseline = ROSTER.get(roster.BASELINE)
    assert baseline.purposes == ("service",) and baseline.onward_sharing == "none"
    assert not baseline.model_training and baseline.delete_at_expiry and baseline.owner_may_retrieve
    assert len({a.digest for a in ROSTER.agreements}) == len(ROSTER.agreements)


def test_a_bad_roster_entry_is_refused_naming_the_entry_and_key():
    data = json.loads(roster.ROSTER_PATH.read_text())
    data["agreements"][1]["onward_sharing"] = "anyone"
    data["agreements"][2]["model_training"] = "yes"
    with pytest.raises(UserError) as error:
        roster.parse(data, "r.json")
    assert "r.json: agreements[1].onward_sharing" in str(error.value)
    assert "agreements[2].model_training" in str(error.value)


def test_an_unknown_ref_names_the_known_ones():
    with pytest.raises(UserError, match="service-only@1"):
        ROSTER.get("sell-everything@1")
    with pytest.raises(UserError, match="id@version"):
        roster.parse_ref("service-only")


# --- policy ----------------------------------------------------------------------------------------

VENDOR = policy.Policy(("service-only@1",))
BROKER = policy.Policy(("resale-same-terms@1",), "resale-same-terms@1")


def test_a_policy_accepts_what_it_lists():
    body = _body("service-only@1", purpose="service")
    assert policy.evaluate(VENDOR, ROSTER, ProfferTerms.from_wire(body)).decision == "accept"


def test_a_policy_offers_its_one_alternative_for_anything_else():
    decision = policy.evaluate(BROKER, ROSTER, ProfferTerms.from_wire(_body()))
    assert decision.decision == "alternative" and decision.alternative == ("resale-same-terms", 1)


def test_a_policy_without_an_alternative_declines_what_it_does_not_list():
    assert policy.evaluate(VENDOR, ROSTER, ProfferTerms.from_wire(_body())).decision == "decline"


def test_a_proffer_outside_its_agreements_terms_is_declined_with_the_reason():
    too_long = _body("service-only@1", purpose="service", retention_days=31)
    decision = policy.evaluate(VENDOR, ROSTER, ProfferTerms.from_wire(too_long))
    assert decision.decision == "decline" and decision.reason.startswith("out-of-terms")
    wrong_purpose = _body("service-only@1", purpose="research")
    assert policy.evaluate(VENDOR, ROSTER, ProfferTerms.from_wire(wrong_purpose)).reason.startswith(
        "out-of-terms"
    )
    other_text = _body("service-only@1", purpose="service", digest=bytes(32))
    assert policy.evaluate(VENDOR, ROSTER, ProfferTerms.from_wire(other_text)).reason.startswith(
        "not-in-roster"
    )


def test_a_policy_naming_an_agreement_outside_the_roster_is_refused_at_load():
    with pytest.raises(UserError):
        policy.policy_from(["service-only@9"], None, ROSTER)


def test_coverage_needs_the_device_the_metrics_and_the_window():
    window = policy.in_force(ProfferTerms.from_wire(_body()), None)
    at = examples.TIME_S + 10
    assert policy.covers(window, examples.DEVICE_ID, ["temperature"], at, at)
    assert policy.covers(window, examples.DEVICE_ID, ["temperature", "humidity"], at, at)
    assert not policy.covers(window, examples.DEVICE_ID, ["temperature", "power"], at, at)
    assert not policy.covers(window, "x" * 26, ["temperature"], at, at)
    assert not policy.covers(window, examples.DEVICE_ID, ["temperature"], examples.TIME_S - 1, at)
    assert not policy.covers(window, examples.DEVICE_ID, ["temperature"], at, examples.TIME_S + 86400)


def test_a_termination_ends_coverage_at_its_time():
    window = policy.in_force(ProfferTerms.from_wire(_body()), examples.TIME_S + 100)
    assert policy.covers(window, examples.DEVICE_ID, ["humidity"], examples.TIME_S + 99, examples.TIME_S + 99)
    assert not policy.covers(
        window, examples.DEVICE_ID, ["humidity"], examples.TIME_S + 99, examples.TIME_S + 100
    )
    assert policy.is_ended(window, examples.TIME_S + 100)
