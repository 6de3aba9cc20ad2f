"""PEM text to DER bytes: certificates and private keys as MicroPython's ssl takes them.

The unix port's and the ESP32's `ssl` (mbedtls, built without its PEM parser) take DER only, one
certificate per `load_verify_locations()` call (each call adds to the trusted set), and the client's
certificate and key as DER in `load_cert_chain()`. A vendor hands out PEM files: this module turns
them into DER once, at the edge (settings, `firstparty flash`), and refuses what is not PEM with
ValueError naming what was expected.
"""

import binascii

CERTIFICATE = "CERTIFICATE"
# PKCS#8, SEC 1 (EC) and PKCS#1 (RSA): the three forms openssl and the vendors' consoles write
KEY_LABELS = ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY")
MAX_BLOCKS = 16  # a CA bundle longer than this is not for a board


def blocks(text, labels):
    """The DER bytes of each PEM block in `text` whose label is one of `labels`, in order.

    Raise ValueError when there is none, or a block is not base64 of a DER SEQUENCE.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode()
    found = []
    position = 0
    while True:
        start = text.find("-----BEGIN ", position)
        if start < 0:
            break
        label_end = text.find("-----", start + 11)
        if label_end < 0:
            raise ValueError("a PEM block without the end of its BEGIN line")
        label = text[start + 11 : label_end]
        end_line = "-----END " + label + "-----"
        end = text.find(end_line, label_end)
        if end < 0:
            raise ValueError("a PEM block (%s) without its END line" % label)
        position = end + len(end_line)
        if label not in labels:
            continue
        body = "".join(text[label_end + 5 : end].split())
        try:
            der = binascii.a2b_base64(body)
        except ValueError:
            raise ValueError("a PEM block (%s) that is not valid base64" % label)
        if len(der) < 32 or der[0] != 0x30:
            raise ValueError("a PEM block (%s) that does not hold DER" % label)
        found.append(der)
        if len(found) > MAX_BLOCKS:
            raise ValueError("more than %d PEM blocks" % MAX_BLOCKS)
    if not found:
        raise ValueError("no PEM block of " + " or ".join(labels))
    return found


def certificates(text: "str | bytes | bytearray") -> "list[bytes]":
    """The DER bytes of every certificate in PEM `text` (a CA bundle, or a chain), in order."""
    return blocks(text, (CERTIFICATE,))


def private_key(text):
    """The DER bytes of the one private key in PEM `text` (PKCS#8, EC or RSA)."""
    keys = blocks(text, KEY_LABELS)
    if len(keys) != 1:
        raise ValueError("%d private keys where one was expected" % len(keys))
    return keys[0]


def der_or_pem(data: "str | bytes | bytearray", kind: str) -> bytes:
    """DER bytes from `data`, which is DER already or PEM (text or bytes); `kind` is "certificate"
    (the first certificate of a chain) or "key"."""
    if isinstance(data, (bytes, bytearray)) and data[:1] == b"\x30":
        return bytes(data)
    if kind == "key":
        return private_key(data)
    return certificates(data)[0]


def tls_der(ca=None, client_cert=None, client_key=None):
    """(ca, client_cert, client_key) as fp.mqtt_tls.TLS takes them: the DER of every CA certificate
    in `ca`, the client's certificate and key as DER; each given as PEM text or DER bytes, or None."""
    return (
        certificates(ca) if ca else None,
        der_or_pem(client_cert, "certificate") if client_cert else None,
        der_or_pem(client_key, "key") if client_key else None,
    )


def broker_tls(host, spec):
    """The checked TLS settings (fp.mqtt_tls.TLS) of a destination with `tls` (fp.destinations):
    its `ca`, `client_cert` and `client_key` from PEM to DER. Only a TLS destination loads this
    module and fp.mqtt_tls, so a plain-TCP board's name pool holds none of their names."""
    from fp.mqtt_tls import TLS

    ca, client_cert, client_key = tls_der(spec.get("ca"), spec.get("client_cert"), spec.get("client_key"))
    return TLS(host, True, ca, client_cert, client_key)


def key_label(der: bytes) -> str:
    """The PEM label of private key DER: PKCS#8, SEC 1 (EC) or PKCS#1 (RSA)."""
    header = 4 if der[1] == 0x82 else 3 if der[1] == 0x81 else 2
    version = der[header : header + 3]
    if version == b"\x02\x01\x00" and der[header + 3] == 0x30:
        return "PRIVATE KEY"  # PKCS#8: the version, then the algorithm's SEQUENCE
    return "EC PRIVATE KEY" if version == b"\x02\x01\x01" else "RSA PRIVATE KEY"


def encode(label: str, der: bytes) -> str:
    """PEM text of one block (for CPython's ssl, which reads files)."""
    text = binascii.b2a_base64(der).decode().replace("\n", "")
    lines = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, lines, label)
