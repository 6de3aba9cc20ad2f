"""Fixtures of the console tests: the agent fixtures, a signed-in HTTP client, and headless
Chromium (Debian's, driven by Selenium) with a fresh profile per test."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.agent.conftest import (  # noqa: F401
    device,
    postgres_server,
    publisher,
    pytest_generate_tests,  # BOTH_STORES, here too
    start_agent,
    store_url,
    vendor_switch,
    wait_for,
    webhook,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


class ConsoleClient:
    """An HTTP client signed in to the console with a token (cookie and CSRF secret kept)."""

    def __init__(self, base_url: str, token: str | None = None):
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.csrf = ""
        if token is not None:
            signed = self.http.post("/console/login", data={"token": token})
            assert signed.status_code == 303, signed.text
            self.csrf = self.csrf_of(self.http.get("/").text)

    @staticmethod
    def csrf_of(html: str) -> str:
        found = re.search(r'"X-CSRF-Token": "([^"]+)"', html)
        assert found, "no CSRF secret on the page"
        return found.group(1)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, data: dict | None = None, csrf: bool = True, **kwargs) -> httpx.Response:
        body = dict(data or {})
        if csrf:
            body["csrf"] = self.csrf
        return self.http.post(path, data=body, **kwargs)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def console_client():
    clients: list[ConsoleClient] = []

    def make(agent, token: str | None = None) -> ConsoleClient:
        client = ConsoleClient(f"http://127.0.0.1:{agent.api_port}", token)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium from Debian (scripts/install), a fresh profile; quit at the end."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed: run `bash scripts/install`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def reading_at(device, values, time_s: float) -> bytes:  # noqa: F811
    """A reading of `device` signed with this time (FakeDevice.reading's time is fixed)."""
    from fp import messages

    seq = device.seq
    device.seq += 1
    return messages.encode_reading(device.sign, device.device_id, device.boot, seq, list(values), int(time_s))


def publish_card(publisher, device, owner_id: str | None = None) -> None:  # noqa: F811
    publisher.publish(device.topic("card"), device.card(owner_id), retain=True)


def accept_device(agent, publisher, device, readings=(), timeout_s: float = 15) -> None:  # noqa: F811
    """Make `device` known and accepted by `agent`, then publish `readings` and wait until stored."""
    publish_card(publisher, device)
    wait_for(lambda: agent.store.device(device.device_id), 10, "the device's card")
    agent.store.set_state(device.device_id, "accepted")
    agent.ingest.device_state_changed(device.device_id, "accepted")
    for data in readings:
        publisher.publish(device.topic("reading"), data)
    if readings:
        wait_for(lambda: agent.store.count_readings() >= len(readings), timeout_s, "the readings stored")
