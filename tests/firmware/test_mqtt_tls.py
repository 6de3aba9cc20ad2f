"""fp.mqtt over TLS as vendors' clouds want it, under MicroPython and CPython: a real mosquitto TLS
listener that requires a client certificate and takes its CN as the user name; a CA bundle, the
device's certificate and key (PEM or DER), the broker's name checked; a wrong CA, a foreign and an
expired client certificate refused. SNI (both interpreters) and ALPN (CPython: MicroPython's ssl
module has no ALPN, and TLS settings asking for it there are refused) against a TLS server of the test's own."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from host_agent.bus.mosquitto import Mosquitto, free_port
from tests.firmware.fakebroker import run_client
from tests.helpers import make_ca

INTERPRETERS = ["micropython", "cpython"]


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)


def _leaf(folder: Path, name: str, cn: str, ca: str, expired: bool = False) -> None:
    """folder/name.pem (and .key, .der, .key.der) for `cn`, signed by folder/ca.pem."""
    _openssl(
        folder, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
    )  # fmt: skip
    if expired:  # `openssl ca` is what takes explicit dates: valid for one day in 2020
        (folder / "index.txt").write_text("")
        (folder / "serial").write_text("1000\n")
        (folder / "ca.cnf").write_text(
            "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n"
            "default_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n"
        )
        _openssl(
            folder, "ca", "-batch", "-config", "ca.cnf", "-cert", f"{ca}.pem", "-keyfile", f"{ca}.key",
            "-in", f"{name}.csr", "-out", f"{name}.pem", "-notext",
            "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
        )  # fmt: skip
    else:
        (folder / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl(
            folder, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.cnf",
        )  # fmt: skip
    _openssl(folder, "x509", "-in", f"{name}.pem", "-outform", "DER", "-out", f"{name}.der")
    _openssl(folder, "pkey", "-in", f"{name}.key", "-outform", "DER", "-out", f"{name}.key.der")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    make_ca(folder, "ca")
    make_ca(folder, "other")
    _leaf(folder, "server", "localhost", "ca")
    _leaf(folder, "device", "dev-1", "ca")
    _leaf(folder, "foreign", "dev-1", "other")  # the right name, from a CA the broker does not trust
    _leaf(folder, "expired", "dev-1", "ca", expired=True)
    (folder / "bundle.pem").write_text((folder / "other.pem").read_text() + (folder / "ca.pem").read_text())
    return folder


@pytest.fixture(scope="module")
def tls_mosquitto(pki, tmp_path_factory):
    port = free_port()
    acl = pki / "acl"
    acl.write_text("user dev-1\ntopic readwrite dev-1/#\n")
    broker = Mosquitto(
        tmp_path_factory.mktemp("broker"),
        extra_config=f"listener {port} 127.0.0.1\ncafile {pki}/ca.pem\ncertfile {pki}/server.pem\n"
        f"keyfile {pki}/server.key\nrequire_certificate true\nuse_identity_as_username true\n"
        f"acl_file {acl}\n",
    ).start()
    yield port
    broker.stop()


CLIENT = """
def text(name):
    with open(FOLDER + "/" + name) as f:
        return f.read()
def raw(name):
    with open(FOLDER + "/" + name, "rb") as f:
        return f.read()
FOLDER = %r
async def scenario():
    try:
        from fp import pem  # PEM (or DER) to DER at the edge, as fp.destinations does
        from fp.mqtt_tls import TLS
        ca, cert, key = pem.tls_der(%s, %s, %s)
        broker = Broker("127.0.0.1", PORT, tls=TLS("127.0.0.1", True, ca, client_cert=cert, client_key=key,
                                                   server_hostname=%r))
    except ValueError as error:
        out["outcome"] = "invalid: %%s" %% error
        return
    client = MQTTClient(broker, "dev-1", keepalive_s=0, on_message=on_message, reconnect=False,
                        connect_timeout_s=5, subscriptions=[("dev-1/#", 1), ("other/#", 1)])
    ended = []
    async def runner():
        try:
            await client.run()
            ended.append("returned")
        except MQTTError as error:
            ended.append(error.reason)
    asyncio.create_task(runner())
    await until(lambda: client.is_up or ended, "the connection or its refusal")
    if ended:
        out["outcome"] = "refused"
        out["reason"] = ended[0]
        return
    await until(lambda: len(client.granted) == 2, "the SUBACK")
    out["granted"] = dict(client.granted)
    await client.publish("other/x", b"not allowed")  # acknowledged, and dropped by the ACL
    await client.publish("dev-1/x", b"over mutual TLS")
    await until(lambda: len(got) == 1, "our own message back")
    await asyncio.sleep(0.3)
    out["outcome"] = "connected"
    client.stop()
    await asyncio.sleep(0.1)
"""


def _tls_client(interpreter, port, folder, ca, cert, key, hostname="localhost"):
    return run_client(interpreter, port, CLIENT % (str(folder), ca, cert, key, hostname), timeout_s=60)


@pytest.mark.parametrize("interpreter", INTERPRETERS)
@pytest.mark.parametrize(
    ("cert", "key"),
    [('text("device.pem")', 'text("device.key")'), ('raw("device.der")', 'raw("device.key.der")')],
    ids=["pem", "der"],
)
def test_mutual_tls_with_a_ca_bundle_and_the_device_certificate_connects_as_its_cn(
    pki, tls_mosquitto, interpreter, cert, key
):
    # bundle.pem: another CA first, the broker's second - every certificate of a bundle is trusted
    result = _tls_client(interpreter, tls_mosquitto, pki, 'text("bundle.pem")', cert, key)
    assert result["outcome"] == "connected", result
    # the broker took the certificate's CN as the user name: its ACL lets dev-1 have dev-1/# only
    assert result["granted"] == {"dev-1/#": 1, "other/#": 1}
    assert result["got"] == [["dev-1/x", "over mutual TLS", 1, False, False]]


@pytest.mark.parametrize("interpreter", INTERPRETERS)
@pytest.mark.parametrize(
    ("ca", "cert", "hostname"),
    [
        ("other.pem", "device", "localhost"),  # the broker's chain does not end at the CA we trust
        ("ca.pem", "foreign", "localhost"),  # the broker does not trust our certificate
        ("ca.pem", "expired", "localhost"),  # nor an expired one
        ("ca.pem", "device", "wrong.example"),  # the broker's certificate is for another name
    ],
    ids=["wrong-ca", "foreign-client-cert", "expired-client-cert", "wrong-hostname"],
)
def test_tls_is_refused_with_a_wrong_ca_client_certificate_or_name(
    pki, tls_mosquitto, interpreter, ca, cert, hostname
):
    result = _tls_client(
        interpreter,
        tls_mosquitto,
        pki,
        f"text({ca!r})",
        f'text("{cert}.pem")',
        f'text("{cert}.key")',
        hostname,
    )
    assert result["outcome"] == "refused", result
    if ca == "other.pem" or hostname != "localhost":  # refused by the client itself
        assert result["reason"] == "tls", result


def _sni_alpn_server(server: socket.socket, context: ssl.SSLContext, seen: dict) -> None:
    def sni(ssl_socket, name, ctx):
        seen["sni"] = name

    context.sni_callback = sni
    with server:
        connection, _ = server.accept()
        with context.wrap_socket(connection, server_side=True) as tls:
            seen["alpn"] = tls.selected_alpn_protocol()
            tls.recv(1024)  # CONNECT
            tls.sendall(b"\x20\x02\x00\x00")
            tls.recv(1024)  # DISCONNECT, or the end


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_sni_names_the_broker_and_alpn_is_offered_where_the_ssl_module_has_it(pki, interpreter):
    """The TLS server sees the broker's name as SNI under both interpreters, and the ALPN protocol
    AWS IoT on port 443 wants under CPython (MicroPython's ssl has no ALPN: its client offers none)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    context.set_alpn_protocols(["x-amzn-mqtt-ca"])
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    seen: dict = {}
    thread = threading.Thread(target=_sni_alpn_server, args=(server, context, seen), daemon=True)
    thread.start()
    alpn = interpreter == "cpython"
    script = """
async def scenario():
    from fp import pem
    from fp.mqtt_tls import TLS
    broker = Broker("127.0.0.1", PORT, tls=TLS("127.0.0.1", True, pem.certificates(open(CA).read()), server_hostname="localhost"ALPN))
    client = MQTTClient(broker, "a", keepalive_s=0)
    asyncio.create_task(client.run())
    await until(lambda: client.is_up, "the TLS connection", 8)
    out["up"] = client.is_up
    client.stop()
    await asyncio.sleep(0.1)
""".replace("CA", repr(str(pki / "ca.pem"))).replace("ALPN", ', alpn=["x-amzn-mqtt-ca"]' if alpn else "")
    result = run_client(interpreter, server.getsockname()[1], script)
    thread.join(10)
    assert result["up"] is True
    # the client connected to 127.0.0.1: the name can only have come from server_hostname
    assert seen == {"sni": "localhost", "alpn": "x-amzn-mqtt-ca" if alpn else None}


def test_micropython_refuses_alpn_it_cannot_offer(pki, micropython):
    out = micropython(
        "from fp.mqtt_tls import TLS\n"
        "from fp import pem\n"
        "try:\n"
        "    TLS('h', True, pem.certificates(open(%r).read()), alpn=['x-amzn-mqtt-ca'])\n"
        "    print('accepted')\n"
        "except ValueError as e:\n"
        "    print(e)\n".replace("%r", repr(str(pki / "ca.pem")))
    )
    assert out.strip() == "alpn: this interpreter's ssl module has no ALPN"
