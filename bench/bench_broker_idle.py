"""What an idle device costs the broker: memory, connect and keepalive CPU, plain TCP against TLS.

Run: .venv/bin/python bench/bench_broker_idle.py   (about a minute; all traffic on 127.0.0.1)

One mosquitto of its own with two listeners: plain MQTT (the baseline, measured in the same run) and
MQTT over TLS as a vendor's cloud runs it (TLS 1.2+, an EC P-256 server certificate, a client
certificate required and checked against the CA). For each listener in turn, `--connections`
devices connect (clean session, `--keepalive-s`), then stay idle, then each sends one PINGREQ and
reads its PINGRESP, as every device does once per keepalive period. Reported from /proc, for the
broker process only:

- resident memory per connection (VmRSS after the connections, less before, over their count);
- broker CPU per connection set up (TCP accept, MQTT CONNECT, and for TLS the handshake);
- broker CPU per keepalive round trip, and while every connection is idle;
- the same as ratios TLS / plain, and what a million devices at a 60 s keepalive cost at that rate.

docs/scaling.md ("Broker nodes") takes its figures from here.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO), str(REPO / "firmware")]

import bench_agent as ba  # noqa: E402

from fp.mqtt import connect_packet  # noqa: E402
from host_agent.bus.mosquitto import Mosquitto, free_port  # noqa: E402

PINGREQ = bytes((0xC0, 0))  # MQTT 3.1.1, 3.12: fixed header only; the answer is PINGRESP, D0 00
CONNACK_ACCEPTED = bytes((0x20, 2, 0, 0))
CONCURRENT_CONNECTS = 64  # as many handshakes in flight at once as a reconnect storm would bring
PING_ROUNDS = 5  # keepalive round trips per connection: enough CPU ticks (10 ms each) to measure


def openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)


def make_pki(folder: Path) -> None:
    """ca.pem/key, server.pem/key (localhost, 127.0.0.1) and device.pem/key, EC P-256, by openssl."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        folder, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ca"
    )
    (folder / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "device"):
        openssl(folder, "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl(
            folder, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.cnf",
        )  # fmt: skip


def rss_kb(pid: int) -> int:
    return ba.proc_status(pid, "VmRSS")


class Devices:
    """`count` MQTT connections to one listener, each a device that only keeps its link alive."""

    def __init__(self, port: int, count: int, keepalive_s: int, context: ssl.SSLContext | None):
        self.port, self.count, self.keepalive_s, self.context = port, count, keepalive_s, context
        self.links: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def connect_all(self) -> None:
        gate = asyncio.Semaphore(CONCURRENT_CONNECTS)

        async def one(number: int) -> None:
            async with gate:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1",
                    self.port,
                    ssl=self.context,
                    server_hostname="localhost" if self.context else None,
                )
                writer.write(connect_packet(f"idle-{number}", self.keepalive_s, True))
                await writer.drain()
                if await reader.readexactly(4) != CONNACK_ACCEPTED:
                    raise RuntimeError(f"device {number}: the broker refused the connection")
                self.links.append((reader, writer))

        await asyncio.gather(*(one(n) for n in range(self.count)))

    async def ping_all(self) -> None:
        gate = asyncio.Semaphore(CONCURRENT_CONNECTS * 4)

        async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async with gate:
                writer.write(PINGREQ)
                await writer.drain()
                if await reader.readexactly(2) != bytes((0xD0, 0)):
                    raise RuntimeError("no PINGRESP")

        await asyncio.gather(*(one(r, w) for r, w in self.links))

    async def close_all(self) -> None:
        for _, writer in self.links:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for _, w in self.links), return_exceptions=True)
        self.links.clear()


async def measure(pid: int, devices: Devices, idle_s: float) -> dict[str, float]:
    await asyncio.sleep(0.5)
    rss_before, cpu_before = rss_kb(pid), ba.cpu_s(pid)
    started = time.perf_counter()
    await devices.connect_all()
    connect_wall = time.perf_counter() - started
    cpu_connected = ba.cpu_s(pid)
    await asyncio.sleep(1.0)  # let the broker settle what the connects left behind
    rss_after = rss_kb(pid)
    cpu_idle_start = ba.cpu_s(pid)
    await asyncio.sleep(idle_s)
    cpu_idle = ba.cpu_s(pid) - cpu_idle_start
    pings = 0
    cpu_ping_start = ba.cpu_s(pid)
    for _ in range(PING_ROUNDS):
        await devices.ping_all()
        pings += devices.count
    cpu_ping = ba.cpu_s(pid) - cpu_ping_start
    await devices.close_all()
    n = devices.count
    return {
        "rss_per_connection_kb": (rss_after - rss_before) / n,
        "connect_cpu_us": (cpu_connected - cpu_before) / n * 1e6,
        "connects_per_s": n / connect_wall,
        "idle_cpu_pct": cpu_idle / idle_s * 100,
        "ping_cpu_us": cpu_ping / pings * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000, help="devices on each listener")
    parser.add_argument("--keepalive-s", type=int, default=60, help="the devices' keepalive")
    parser.add_argument("--idle-s", type=float, default=10.0, help="seconds of idle CPU measured")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 200
    if hard < need:
        sys.exit(
            f"error: {args.connections} connections need {need} file descriptors; the hard limit is {hard}"
        )
    # raised before the broker starts, so that it inherits the limit too
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))

    with tempfile.TemporaryDirectory(prefix="fp-bench-idle-") as tmp:
        root = Path(tmp)
        make_pki(root)
        tls_port = free_port()
        broker = Mosquitto(
            root / "broker",
            extra_config=(
                "max_connections -1\n"
                f"listener {tls_port} 127.0.0.1\ncafile {root}/ca.pem\ncertfile {root}/server.pem\n"
                f"keyfile {root}/server.key\nrequire_certificate true\nallow_anonymous true\n"
            ),
        ).start()
        try:
            pid = broker.process.pid
            context = ssl.create_default_context(cafile=str(root / "ca.pem"))
            context.load_cert_chain(str(root / "device.pem"), str(root / "device.key"))
            results = {}
            for name, port, ctx in (("plain", broker.port, None), ("tls", tls_port, context)):
                devices = Devices(port, args.connections, args.keepalive_s, ctx)
                results[name] = asyncio.run(measure(pid, devices, args.idle_s))
            version = subprocess.run(
                [broker.binary, "-h"], capture_output=True, text=True
            ).stdout.splitlines()[0]
        finally:
            broker.stop()

    plain, tls = results["plain"], results["tls"]
    print(f"{version}; OpenSSL {ssl.OPENSSL_VERSION}; {args.connections} connections per listener")
    rows = [
        ("resident memory per connection, plain / TLS", "rss_per_connection_kb", "KB", 1),
        ("broker CPU per connection set up, plain / TLS", "connect_cpu_us", "us", 0),
        ("connections set up per second, plain / TLS", "connects_per_s", "/s", 0),
        ("broker CPU per keepalive round trip, plain / TLS", "ping_cpu_us", "us", 1),
        (f"broker CPU while {args.connections} connections idle, plain / TLS", "idle_cpu_pct", "%", 2),
    ]
    for label, key, unit, digits in rows:
        ratio = f"TLS/plain {tls[key] / plain[key]:5.2f}x" if plain[key] else "(no CPU tick at all)"
        print(f"{label:<62} {plain[key]:>10.{digits}f} / {tls[key]:>10.{digits}f} {unit:<3} {ratio}")
    million = 1_000_000
    print(
        f"a million idle TLS devices: {tls['rss_per_connection_kb'] * million / 1024 / 1024:.1f} GB of broker memory; "
        f"keepalive {million / args.keepalive_s:,.0f} round trips/s = "
        f"{million / args.keepalive_s * tls['ping_cpu_us'] / 1e6:.2f} cores; "
        f"all reconnecting at once: {million * tls['connect_cpu_us'] / 1e6:,.0f} core-seconds"
    )


if __name__ == "__main__":
    main()
