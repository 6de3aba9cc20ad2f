"""TLS for fp.mqtt: a broker's TLS settings checked once, its SSLContext, and its errors told apart.

Made by whoever builds a TLS broker (`fp.mqtt.Broker(..., tls=TLS(...))`; on a board fp.pem's
broker_tls, for a destination with `tls`): a plain-TCP board never loads this code (tests/firmware/test_memory.py::test_a_plain_tcp_board_never_imports_the_tls_code).
"""

import sys

from fp import const

TYPE_CHECKING = const(False)  # pyright takes it as true; MicroPython's compiler drops the block
if TYPE_CHECKING:
    import ssl
    from typing import Iterable

IS_CPYTHON = sys.implementation.name == "cpython"


class TLS:
    """A TLS broker's settings, checked: `ca` is the DER of each CA certificate the broker's chain
    may end at (a list: every one is trusted); `client_cert` and `client_key` the device's own, DER
    bytes, for brokers that authenticate devices by certificate (PEM text becomes DER at the edge:
    fp.pem.tls_der); `server_hostname` the name sent as SNI and checked against the broker's
    certificate (default: the broker's host); `alpn` the protocol names offered (AWS IoT on port
    443 wants ["x-amzn-mqtt-ca"]) - CPython only: the MicroPython ssl module has no ALPN, and a
    Broker asking for it is refused there.

    `is_tls` False checks the settings all the same (a CA alone is allowed, and unused)."""

    def __init__(
        self,
        host: str,
        is_tls: bool,
        ca: "Iterable[bytes] | None",
        client_cert: "bytes | None" = None,
        client_key: "bytes | None" = None,
        server_hostname: "str | None" = None,
        alpn: "Iterable[str] | None" = None,
    ):
        if is_tls and not ca:
            # MicroPython's ssl verifies nothing unless told to, and a board has no CA store
            raise ValueError("tls needs the broker's CA certificate (ca)")
        if (client_cert is None) != (client_key is None):
            raise ValueError("client_cert and client_key go together")
        if (client_cert or server_hostname or alpn) and not is_tls:
            raise ValueError("client_cert, server_hostname and alpn need tls")
        if alpn is not None:
            if not alpn or not all(isinstance(name, str) and 0 < len(name) < 256 for name in alpn):
                raise ValueError("alpn must be a list of protocol names")
            import ssl

            if not hasattr(ssl.SSLContext, "set_alpn_protocols"):
                raise ValueError("alpn: this interpreter's ssl module has no ALPN")
        for der in list(ca or ()) + [client_cert or b"\x30", client_key or b"\x30"]:
            if not isinstance(der, (bytes, bytearray)) or der[:1] != b"\x30":
                raise ValueError("ca, client_cert and client_key are DER (fp.pem.tls_der reads PEM)")
        self.ca = list(ca) if ca else []  # DER, each trusted
        self.client_cert = client_cert
        self.client_key = client_key
        self.server_hostname = server_hostname or host
        self.alpn = list(alpn) if alpn else None

    def context(self) -> "ssl.SSLContext":
        """The SSLContext for this broker: chain and name required, client certificate if any."""
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # MicroPython's default is CERT_NONE even for a client: require the chain and the name
        context.verify_mode = ssl.CERT_REQUIRED  # (CPython's TLS_CLIENT also checks the name)
        for der in self.ca:
            context.load_verify_locations(cadata=der)  # one call per certificate: MicroPython's
            # takes one DER certificate per call
        if self.client_cert:
            if IS_CPYTHON:  # its load_cert_chain takes files only
                _load_chain_from_memory(context, self.client_cert, self.client_key or b"")  # both or neither
            else:
                context.load_cert_chain(self.client_cert, self.client_key)
        if self.alpn:
            context.set_alpn_protocols(self.alpn)
        return context

    @staticmethod
    def is_tls_error(error: Exception) -> bool:
        """An error of the TLS layer: CPython's ssl.SSLError; under MicroPython, mbedtls refusing a
        certificate (ValueError) or failing the handshake (OSError with a negative mbedtls code)."""
        import ssl

        if isinstance(error, getattr(ssl, "SSLError", ())):
            return True
        if isinstance(error, ValueError):
            return not hasattr(ssl, "SSLError")
        code = error.args[0] if error.args else 0
        return isinstance(code, int) and code < 0


def _load_chain_from_memory(context: "ssl.SSLContext", cert_der: bytes, key_der: bytes) -> None:
    """CPython's load_cert_chain reads files: hand it PEM in a private temporary folder.

    CPython only (the board's ssl takes DER from memory), hence the type checker's silence below:
    it checks this module as an ESP32 sees it."""
    import os
    import tempfile

    from fp import pem

    path = os.path  # pyright: ignore[reportAttributeAccessIssue]
    folder = tempfile.mkdtemp()  # mode 0700: the key is readable by this user only
    cert_path = path.join(folder, "cert.pem")
    key_path = path.join(folder, "key.pem")
    try:
        with open(cert_path, "w") as file:
            file.write(pem.encode("CERTIFICATE", cert_der))
        flags = os.O_WRONLY | os.O_CREAT  # pyright: ignore[reportAttributeAccessIssue]
        with open(os.open(key_path, flags, 0o600), "w") as file:
            file.write(pem.encode(pem.key_label(key_der), key_der))
        context.load_cert_chain(cert_path, key_path)
    finally:
        for name in (cert_path, key_path):
            if path.exists(name):
                os.remove(name)
        os.rmdir(folder)
