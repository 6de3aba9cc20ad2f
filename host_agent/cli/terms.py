"""First-party terms: proffer the owner's agreements, answer them without an agent, keep the records."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx
from pydantic import TypeAdapter, ValidationError

from fp import cose, messages
from fp.errors import ProtocolError
from host_agent.cli.common import ActionAdder, call_agent, load_config
from host_agent.config import Config
from host_agent.errors import UserError
from host_agent.owner import Owner
from host_agent.store.records import AgreementRecord
from host_agent.terms import policy, records, roster, signed
from host_agent.terms.signed import ProfferTerms
from host_agent.terms.view import AgreementView, describe

COSE_SIGN1_TAG = 0xD2
_VIEW = TypeAdapter(AgreementView)
_VIEWS = TypeAdapter(list[AgreementView])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = ActionAdder(parser)
    sub.add("roster", help="the standard agreements: id@version, title, terms")
    published = sub.add(
        "policy", help="the agreements an agent accepts (this one's, or another's with --url)"
    )
    published.add_argument("--url", help="another agent's API: read its /.well-known/firstparty-terms")
    proffer = sub.add("proffer", help="sign and proffer the owner's terms (the agent must be running)")
    proffer.add_argument("agreement", help="the roster agreement, id@version")
    proffer.add_argument(
        "--to",
        metavar="URL",
        help="the recipient agent's API, or mqtt://HOST:PORT of a relay broker (else: --out, for a file)",
    )
    proffer.add_argument("--route", help="the route it covers: devices, metrics and terms come from it")
    proffer.add_argument("--recipient", help="who receives")
    proffer.add_argument("--device", action="append", help="device id (repeatable)")
    proffer.add_argument("--metric", action="append", help="metric name (repeatable)")
    proffer.add_argument("--purpose", help="why: one of the agreement's purposes")
    proffer.add_argument("--for-days", type=float, help="how long, from now")
    proffer.add_argument("--retention-days", type=int, help="how long the recipient may keep the data")
    proffer.add_argument(
        "--out", type=Path, help="also write the proffer to this file (an offline recipient)"
    )
    sub.add("list", help="every agreement this agent proffered or answered")
    show = sub.add(
        "show", help="print an agreement: its id at the running agent, or a proffer or record file"
    )
    show.add_argument("agreement", metavar="ID|FILE")
    export = sub.add("export", help="write an agreement's record (both parties hold the same bytes)")
    export.add_argument("agreement", metavar="ID")
    export.add_argument("--out", type=Path, required=True)
    take = sub.add("import", help="take an offline recipient's answer or acknowledgement file")
    take.add_argument("agreement", metavar="ID")
    take.add_argument("file", type=Path)
    terminate = sub.add("terminate", help="end an accepted agreement now; the recipient acknowledges it")
    terminate.add_argument("agreement", metavar="ID")
    terminate.add_argument("--reason", default="", help="why, for the record")
    terminate.add_argument("--out", type=Path, help="also write the termination to this file")
    keygen = sub.add("keygen", help="a recipient without an agent: make its own key (a 0600 file)")
    keygen.add_argument("--key", type=Path, required=True)
    for name, text in (
        ("accept", "countersign a proffer file"),
        ("offer", "answer a proffer file with one alternative from the roster"),
        ("decline", "decline a proffer file"),
        ("acknowledge", "acknowledge a termination file"),
    ):
        action = sub.add(name, help=f"a recipient without an agent: {text}")
        action.add_argument(
            "file", type=Path, help="the proffer (or record) file; for acknowledge, the termination"
        )
        if name == "offer":
            action.add_argument("alternative", help="the roster agreement offered instead, id@version")
        if name == "acknowledge":
            action.add_argument(
                "--proffer", type=Path, required=True, help="the proffer (or record) file it ends"
            )
        else:
            action.add_argument("--reason", default="", help="why, for the record")
        action.add_argument("--key", type=Path, required=True, help="the recipient's key (terms keygen)")
        action.add_argument("--out", type=Path, required=True, help="the signed answer file to send back")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}") from None


def load_parts(path: Path) -> dict[str, bytes]:
    """A file holding one signed terms message (a proffer, say) or a record: its parts by name."""
    data = _read(path)
    if data[:1] == bytes([COSE_SIGN1_TAG]):
        try:
            kind = messages.kind_of(cose.parse_sign1(data, messages.MAX_BYTES["proffer"]))
        except ProtocolError as error:
            raise UserError(f"{path} is not a terms message: {error}") from None
        if kind.replace("-", "_") not in records.PARTS:
            raise UserError(f"{path} holds a {kind}, not a terms message")
        return {kind.replace("-", "_"): data}
    try:
        return records.parse_record(data)
    except ValueError as error:
        raise UserError(f"{path}: {error}") from None


def _proffer_of(path: Path) -> signed.Signed[ProfferTerms]:
    parts = load_parts(path)
    if "proffer" not in parts:
        raise UserError(f"{path} holds no proffer")
    try:
        return signed.parse_proffer(parts["proffer"])
    except ProtocolError as error:
        raise UserError(f"{path}: the proffer does not hold: {error}") from None


def _key(path: Path) -> Owner:
    if not path.exists():
        raise UserError(f"no key at {path}: make one with `firstparty terms keygen --key {path}`")
    return Owner(path)


def _agent_view(answer: object) -> AgreementView:
    """An agreement as the running agent's API answered it (JSON): checked as an AgreementView."""
    try:
        return _VIEW.validate_python(answer)
    except ValidationError as error:
        raise UserError(f"the agent answered something other than an agreement: {error}") from None


def _print(agreement: AgreementView) -> None:
    def when(seconds: int | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + " UTC" if seconds else "-"

    known = roster.load().get(agreement["agreement"])
    print(f'agreement {agreement["id"]}: {agreement["agreement"]} "{known.title}" - {agreement["state"]}')
    print(f"  {known.summary}")
    print(
        f"  owner {agreement['owner_id']} -> {agreement['recipient'] or '-'} ({agreement['recipient_id'] or 'not answered'})"
    )
    print(f"  devices {','.join(agreement['devices'])} metrics {','.join(agreement['metrics'])}")
    print(f"  purpose {agreement['purpose']!r}, retention {agreement['retention_days']} days")
    print(f"  from {when(agreement['from_s'])} until {when(agreement['until_s'])}")
    print(f"  proffered {when(agreement['proffered_s'])}, answered {when(agreement['answered_s'])}", end="")
    if agreement["decision"]:
        print(
            f": {agreement['decision']}"
            + (f" {agreement['alternative']}" if agreement["alternative"] else ""),
            end="",
        )
        print(f" ({agreement['reason']})" if agreement["reason"] else "", end="")
    print()
    if agreement["terminated_s"]:
        print(
            f"  terminated {when(agreement['terminated_s'])}, acknowledged {when(agreement['acknowledged_s'])}"
        )


def _describe_parts(parts: dict[str, bytes]) -> AgreementView:
    """A proffer or record file as `terms show` prints it, its signatures checked (side "-": a file)."""
    proffer = signed.parse_proffer(parts["proffer"])
    answer, termination = parts.get("answer"), parts.get("termination")
    state = "proffered"
    if answer is not None:
        state = records.STATE_OF[signed.parse_answer(answer, proffer).body.decision]
    if termination is not None:
        signed.parse_termination(termination, proffer)
        state = "terminated"
    record = AgreementRecord(
        id=proffer.nonce.hex(),
        side="-",
        peer="",
        route=proffer.body.route,
        state=state,
        proffer=proffer.raw,
        answer=answer,
        termination=termination,
        termination_ack=parts.get("termination_ack"),
        owner_id=proffer.signer_id,
        created=0.0,  # a file: no store holds it
        updated=0.0,
    )
    return describe(record)


def _answer(args: argparse.Namespace) -> None:
    key = _key(args.key)
    now = int(time.time())
    if args.action == "acknowledge":
        proffer = _proffer_of(args.proffer)
        termination_data = load_parts(args.file).get("termination")
        if termination_data is None:
            raise UserError(f"{args.file} holds no termination")
        try:
            signed.parse_termination(termination_data, proffer)
        except ProtocolError as error:
            raise UserError(f"{args.file}: the termination does not hold: {error}") from None
        _write(args.out, signed.encode_termination_ack(key, termination_data, now))
        print(f"acknowledgement written to {args.out}: give it to the owner (`firstparty terms import`)")
        return
    proffer = _proffer_of(args.file)
    if proffer.body.recipient_key not in (None, key.owner_id):
        raise UserError(
            f"the proffer names the recipient key {proffer.body.recipient_key}, not {key.owner_id}"
        )
    alternative = None
    if args.action == "offer":
        alternative = roster.parse_ref(roster.load().get(args.alternative).ref)
    else:
        try:
            policy.check_proffer(roster.load(), proffer.body)
        except ProtocolError as error:
            if args.action == "accept":
                raise UserError(f"not accepted: {error}") from None
    decision = {"accept": "accept", "offer": "alternative", "decline": "decline"}[args.action]
    answer = signed.encode_answer(key, proffer.raw, decision, now, alternative, args.reason)
    _write(args.out, answer)
    print(f"{decision} of {proffer.nonce.hex()} signed by {key.owner_id}, written to {args.out}")


def run(args: argparse.Namespace) -> int:
    action = args.action
    if action == "roster":
        for agreement in roster.load().agreements:
            sharing = (
                "no onward sharing"
                if agreement.onward_sharing == "none"
                else "onward only under the same terms"
            )
            print(f"{agreement.ref}: {agreement.title}")
            print(
                f"  purposes {','.join(agreement.purposes)}; retention up to {agreement.max_retention_days or 'any'} days; "
                f"{sharing}; model training {'allowed' if agreement.model_training else 'not allowed'}; "
                f"{'deleted' if agreement.delete_at_expiry else 'kept'} at the end; "
                f"owner {'may' if agreement.owner_may_retrieve else 'may not'} get it back"
            )
        return 0
    if action in ("keygen", "accept", "offer", "decline", "acknowledge"):
        if action == "keygen":
            if args.key.exists():
                raise UserError(f"{args.key} exists: a key is made once (remove it to start over)")
            key = Owner(args.key)
            print(f"key {key.owner_id} (public key {key.public.hex()}) written to {args.key}")
        else:
            _answer(args)
        return 0
    if action == "show" and Path(args.agreement).exists():
        _print(_describe_parts(load_parts(Path(args.agreement))))
        return 0
    config = load_config(args)
    if action == "policy":
        if args.url:
            try:
                response = httpx.get(args.url.rstrip("/") + "/.well-known/firstparty-terms", timeout=10)
                response.raise_for_status()
                published = response.json()
            except (httpx.HTTPError, ValueError) as error:
                raise UserError(f"cannot read the terms policy of {args.url}: {error}") from None
        else:
            terms_config = config.terms
            accepts = terms_config.accepts
            if accepts is None:
                accepts = [roster.BASELINE] if config.role == "vendor" else []
            known = roster.load()
            published = policy.policy_from(list(accepts), terms_config.alternative, known).published(known)
        print(json.dumps(published, indent=2))
        return 0
    if action == "proffer":
        body: dict[str, object] = {  # POST /agreements (api.terms.ProfferIn checks it)
            "agreement": args.agreement,
            "to": args.to,
            "route": args.route,
            "recipient": args.recipient,
            "devices": args.device,
            "metrics": args.metric,
            "purpose": args.purpose,
            "retention_days": args.retention_days,
        }
        if args.for_days is not None:
            body["until_s"] = int(time.time() + args.for_days * 86400)
        agreement = _agent_view(call_agent(config, "POST", "/agreements", body))
        _print(agreement)
        if args.out:
            _write(args.out, _record(config, agreement["id"]))
            print(
                f"written to {args.out}: the recipient answers it with `firstparty terms accept|offer|decline`"
            )
        return 0
    if action == "list":
        try:
            found = _VIEWS.validate_python(call_agent(config, "GET", "/agreements"))
        except ValidationError as error:
            raise UserError(f"the agent answered something other than agreements: {error}") from None
        if not found:
            print("no agreements")
        for agreement in found:
            print(
                f"{agreement['id']}  {agreement['side']:6} {agreement['state']:10} {agreement['agreement']:22} "
                f"{agreement['recipient'] or agreement['owner_id']}  route {agreement['route'] or '-'}"
            )
        return 0
    if action == "show":
        _print(_agent_view(call_agent(config, "GET", f"/agreements/{args.agreement}")))
        return 0
    if action == "export":
        _write(args.out, _record(config, args.agreement))
        print(f"record of {args.agreement} written to {args.out}")
        return 0
    if action == "import":
        parts = load_parts(args.file)
        if "answer" in parts and len(parts) == 1:
            path = "answer"
        elif "termination_ack" in parts and len(parts) == 1:
            path = "termination-ack"
        else:
            raise UserError(f"{args.file} holds neither one answer nor one acknowledgement")
        message = next(iter(parts.values()))
        answer = call_agent(
            config, "POST", f"/agreements/{args.agreement}/{path}", {"message_hex": message.hex()}
        )
        _print(_agent_view(answer))
        return 0
    agreement = _agent_view(
        call_agent(config, "POST", f"/agreements/{args.agreement}/terminate", {"reason": args.reason})
    )
    _print(agreement)
    if args.out:
        _write(args.out, _record(config, args.agreement))
        print(f"written to {args.out}: the recipient acknowledges it with `firstparty terms acknowledge`")
    return 0


def _record(config: Config, agreement_id: str) -> bytes:
    """The record bytes from the running agent (GET /agreements/{id}/record)."""
    from host_agent.api.client import request_agent

    response = request_agent(config, "GET", f"/agreements/{agreement_id}/record", timeout_s=30)
    return response.content
