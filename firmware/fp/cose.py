"""COSE_Sign1 (RFC 9052 section 4.2, CBOR tag 18) with Ed25519, over deterministic CBOR.

The signing half (sign1, sig_structure, the header labels) is fp.cose_sign, the parse and verify
half (Sign1, parse_sign1, verify_sign1) fp.inbound, both re-exported here: a running device holds
only fp.cose_sign, and loads fp.inbound for a command, dropped after. A command's path never loads
this module: each module a board loads leaves its dotted name and path in the name pool for good
(docs/benchmarks.md, "Heap cuts, tenth pass"). The host and fp.release use this one.
"""

from fp import const
from fp.cose_sign import ALG_EDDSA as ALG_EDDSA  # re-exported with sign1: the host signs with them
from fp.cose_sign import H_ALG as H_ALG
from fp.cose_sign import H_CONTENT_TYPE as H_CONTENT_TYPE
from fp.cose_sign import H_CWT_CLAIMS as H_CWT_CLAIMS
from fp.cose_sign import sig_structure as sig_structure
from fp.cose_sign import sign1 as sign1
from fp.inbound import Sign1 as Sign1
from fp.inbound import parse_sign1 as parse_sign1
from fp.inbound import verify_sign1 as verify_sign1

ALG_ED25519 = const(-19)  # accepted too (RFC 9864, fully-specified Ed25519)
