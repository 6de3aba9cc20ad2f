"""TLS to a broker: the device verifies the broker's certificate against the CA its provisioning
names (real mosquitto with a TLS listener, certificates made by openssl for the test)."""

from __future__ import annotations

import subprocess
import time

import pytest

from host_agent.bus.mosquitto import Mosquitto, free_port
from tests.firmware.conftest import counter_board, wait_for
from tests.helpers import make_ca


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_broker(tmp_path):
    """A mosquitto with a plain listener (for the test's own subscriber) and a TLS one for devices,
    whose certificate a test CA signed for 127.0.0.1; and a CA that signed nothing of it."""
    folder = tmp_path / "pki"
    folder.mkdir()
    make_ca(folder, "ca")
    make_ca(folder, "other")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=folder,
    )  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.cnf", cwd=folder,
    )  # fmt: skip
    tls_port = free_port()
    broker = Mosquitto(
        tmp_path / "broker",
        extra_config=f"listener {tls_port} 127.0.0.1\ncafile {folder}/ca.pem\n"
        f"certfile {folder}/server.pem\nkeyfile {folder}/server.key\n",
    ).start()
    yield broker, tls_port, (folder / "ca.pem").read_text(), (folder / "other.pem").read_text()
    broker.stop()


def test_a_device_verifies_its_broker_with_the_provisioned_ca_and_refuses_another(
    tls_broker, collector_factory, sim_devices, tmp_path
):
    broker, tls_port, ca_pem, other_pem = tls_broker
    collector = collector_factory(broker)
    trusting = sim_devices(
        tmp_path / "trusting", (broker.host, tls_port), counter_board(0.3),
        provision={"vendor": {"host": "127.0.0.1", "port": tls_port, "tls": True, "ca": ca_pem}},
    )  # fmt: skip
    fooled = sim_devices(
        tmp_path / "fooled", (broker.host, tls_port), counter_board(0.3),
        provision={"vendor": {"host": "127.0.0.1", "port": tls_port, "tls": True, "ca": other_pem}},
    )  # fmt: skip
    good_id = trusting.start().device_id()
    bad_id = fooled.start().device_id()

    wait_for(lambda: len(collector.values("n")) >= 3, 20, "readings over TLS")
    assert {r.device_id for r in collector.readings} == {good_id}
    time.sleep(2)
    assert bad_id not in {r.device_id for r in collector.readings}, "connected to a broker it cannot verify"
    wait_for(
        lambda: any("not correctly signed by the trusted CA" in line for line in fooled.log),
        10,
        "the refusal",
    )
    assert not collector.rejections


def test_tls_without_a_ca_is_refused_at_boot_not_downgraded(sim_devices, tmp_path):
    device = sim_devices(
        tmp_path / "flash", ("127.0.0.1", 1), counter_board(),
        provision={"vendor": {"host": "127.0.0.1", "port": 8883, "tls": True}},
    )  # fmt: skip
    device.start()
    assert device.process
    device.process.wait(timeout=20)
    assert any(
        "vendor.ca: expected the broker's CA certificate (PEM) when tls is true, found none; cannot run"
        in line
        for line in device.log
    ), "\n".join(device.log)
