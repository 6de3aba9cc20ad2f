"""The closed set of rejection reasons (fp.errors.ProtocolError's `reason`).

In a module of its own: the device raises these reasons and never reads the set, so the set is
not in its heap; the host and the tests check against it.
"""

# Rejection reasons: short stable strings shared by logs, metrics, the API and tests.
REASONS = (
    "malformed",  # not CBOR/COSE/SenML in this profile, or a field of the wrong type
    "oversized",  # more bytes than the kind allows
    "bad-alg",  # alg missing or not Ed25519
    "bad-signature",  # signature does not verify with the key
    "wrong-kind",  # content type is not the one expected on this topic
    "wrong-topic",  # topic does not belong to the device id inside the signed bytes
    "unknown-device",  # no card/key known for the device id
    "replay",  # (boot, seq) or command counter already seen, or an older boot
    "duplicate",  # the very same message again (QoS 1 redelivery): harmless, not stored twice
    "expired",  # command or grant past its expiry
    "not-for-me",  # command addressed to another device
    "not-owner",  # command not signed by the device's owner
    "unclaimed",  # device has no owner yet
    "bad-command",  # unknown operation or invalid arguments
    # firmware releases (fp.release)
    "unknown-key",  # release signed by a key the device does not trust
    "not-approved",  # vendor release for a claimed device without its owner's approval
    "wrong-arch",  # release built for another architecture
    "too-old",  # the running version is older than the release's min_from
    "rollback",  # anti-rollback counter older than the running release's (and not owner-signed)
    "out-of-order",  # transfer chunk not at the next expected file and offset
    "bad-chunk",  # chunk does not match its own SHA-256
    "tampered",  # a received file does not match the manifest's SHA-256
    "truncated",  # transfer ended before every file arrived whole
    "on-probation",  # an update offered while the running release is still on probation
    "flash-error",  # the update could not be written to flash (full, failing)
    "wrong-proffer",  # an answer or termination that names another proffer than the one it is held against
    "not-recipient",  # an answer signed by another key than the one the proffer names
    "not-in-roster",  # a proffer of an agreement (id, version, text) the roster does not hold
    "out-of-terms",  # proffer parameters the agreement does not allow, or a reading outside an agreement
)
