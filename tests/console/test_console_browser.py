"""The console in a real browser (headless Chromium, Selenium) on a real agent, broker and, for
the vendor switch, the real firmware: each test saves its screenshot in its tmp folder.

With FP_DOCS_SCREENSHOTS=1 the device page and the routes page are also written to docs/ (the
README's pictures): `FP_DOCS_SCREENSHOTS=1 .venv/bin/python -m pytest tests/console -k "plot or instead"`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from host_agent.api import tokens
from host_agent.owner import Owner
from host_agent.rig.simdevice import SimDevice
from tests.agent.conftest import BOTH_STORES, HAS_MICROPYTHON, FakeDevice, api, wait_for
from tests.console.conftest import accept_device, publish_card, reading_at

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _screenshot(browser, tmp_path: Path, name: str, docs_name: str | None = None) -> None:
    browser.save_screenshot(str(tmp_path / f"{name}.png"))
    if docs_name and os.environ.get("FP_DOCS_SCREENSHOTS") == "1":
        browser.save_screenshot(str(DOCS / docs_name))


def _sign_in(browser, agent, token: str) -> str:
    base = f"http://127.0.0.1:{agent.api_port}"
    browser.get(base + "/console/login")
    browser.find_element(By.NAME, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "who-name"))
    return base


def _until(browser, predicate, timeout_s: float = 15, what: str = "the page"):
    return WebDriverWait(browser, timeout_s, poll_frequency=0.1).until(
        lambda b: predicate(b), message=f"waiting for {what}"
    )


# the plots and the devices page read the store: on both (the others' store use is the HTTP tests')
@BOTH_STORES
def test_sign_in_with_a_token_and_accept_a_pending_device(start_agent, publisher, device, browser, tmp_path):
    agent = start_agent()
    publish_card(publisher, device)
    wait_for(lambda: agent.store.device(device.device_id), 10, "the pending device")
    _sign_in(browser, agent, tokens.issue(agent.store, "owner", "admin"))
    assert browser.find_element(By.ID, "who-name").text == "owner"
    row = browser.find_element(By.ID, f"pending-{device.device_id}")
    assert "sim" in row.text and "0.1.0" in row.text
    _screenshot(browser, tmp_path, "pending")
    row.find_element(By.CSS_SELECTOR, "button.accept").click()
    _until(browser, lambda b: "Device accepted." in b.page_source, 10, "the accepted note")
    assert agent.store.device(device.device_id).state == "accepted"
    assert not browser.find_elements(By.ID, f"pending-{device.device_id}")
    assert device.device_id in browser.find_element(By.ID, "device-list").text
    _screenshot(browser, tmp_path, "accepted")


# the plots and the devices page read the store: on both (the others' store use is the HTTP tests')
@BOTH_STORES
def test_a_new_reading_appears_on_the_plot_without_reloading(
    start_agent, publisher, device, browser, tmp_path
):
    agent = start_agent()
    now = time.time()
    history = [
        reading_at(
            device,
            [("temp", "Cel", 20 + 3 * ((i % 24) / 24)), ("hum", "%RH", 40 + i % 7)],
            now - 86000 + i * 300,
        )
        for i in range(280)
    ]
    accept_device(agent, publisher, device, history)
    agent.store.rename(device.device_id, "kitchen")
    base = _sign_in(browser, agent, tokens.issue(agent.store, "owner", "admin"))
    series = f"/devices/{device.device_id}/series"
    reader = api(agent, tokens.issue(agent.store, "reader", "read"))
    wait_for(lambda: sum(reader.get(series, params={"metric": "temp"}).json()["count"]) == 280, 10, "indexed")
    browser.get(f"{base}/console/devices/{device.device_id}")
    _until(browser, lambda b: b.execute_script("return document.body.dataset.plotsDrawn"), 10, "the plots")
    _until(
        browser, lambda b: b.execute_script("return document.body.dataset.live") == "yes", 10, "the stream"
    )
    temp = browser.find_element(By.CSS_SELECTOR, 'figure[data-metric="temp"]')
    before = int(temp.get_attribute("data-points"))
    assert 250 <= before <= 280 and browser.find_elements(By.CSS_SELECTOR, 'figure[data-metric="hum"]')
    publisher.publish(
        device.topic("reading"), reading_at(device, [("temp", "Cel", 23.5), ("hum", "%RH", 41)], time.time())
    )
    _until(browser, lambda b: int(temp.get_attribute("data-points")) == before + 1, 10, "the new point")
    assert "23.5" in browser.find_element(By.ID, "latest").text
    assert (
        browser.execute_script("return performance.getEntriesByType('navigation').length") == 1
    )  # no reload
    _screenshot(browser, tmp_path, "device", "console-device.png")


def test_a_device_name_with_markup_is_text_in_the_browser(start_agent, publisher, device, browser, tmp_path):
    agent = start_agent()
    accept_device(agent, publisher, device)
    name = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    agent.store.rename(device.device_id, name)
    base = _sign_in(browser, agent, tokens.issue(agent.store, "owner", "admin"))
    for path in ("/", f"/console/devices/{device.device_id}", "/console/routes"):
        browser.get(base + path)
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 (the alert would be there)
        assert not browser.find_elements(By.CSS_SELECTOR, "main img")
    browser.get(base + "/")
    assert browser.find_element(By.CSS_SELECTOR, "a.device-name").text == name
    _screenshot(browser, tmp_path, "escaped")


def test_a_revoked_tokens_open_page_loses_access(start_agent, publisher, device, browser, tmp_path):
    agent = start_agent()
    accept_device(agent, publisher, device, [reading_at(device, [("temp", "Cel", 20.0)], time.time())])
    base = _sign_in(browser, agent, tokens.issue(agent.store, "visitor", "read"))
    browser.get(f"{base}/console/devices/{device.device_id}")
    _until(
        browser, lambda b: b.execute_script("return document.body.dataset.live") == "yes", 10, "the stream"
    )
    banner = browser.find_element(By.ID, "signed-out")
    assert not banner.is_displayed()
    tokens.revoke(agent.store, "visitor")
    _until(browser, lambda b: banner.is_displayed(), 10, "the signed-out banner")
    assert "token was revoked" in banner.text
    _screenshot(browser, tmp_path, "revoked")
    browser.refresh()
    assert "Sign in" in browser.find_element(By.TAG_NAME, "h1").text


def test_a_read_only_token_has_no_buttons_and_its_posts_are_refused(
    start_agent, publisher, device, browser, tmp_path
):
    agent = start_agent()
    accept_device(agent, publisher, device, [reading_at(device, [("temp", "Cel", 20.0)], time.time())])
    base = _sign_in(browser, agent, tokens.issue(agent.store, "viewer", "read"))
    assert "read-only" in browser.find_element(By.TAG_NAME, "header").text
    assert not browser.find_elements(By.CSS_SELECTOR, "main button, main form")
    browser.get(f"{base}/console/devices/{device.device_id}")
    assert not browser.find_elements(By.CSS_SELECTOR, "main form")
    assert {
        b.get_attribute("class").split()[0] for b in browser.find_elements(By.CSS_SELECTOR, "main button")
    } == {"range"}
    _screenshot(browser, tmp_path, "read-only")
    # the page's own session and CSRF secret, used by hand: still refused
    statuses = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const csrf = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRF-Token"];
        const post = (path, fields) => fetch(path, {method: "POST", headers: {"X-CSRF-Token": csrf},
            body: new URLSearchParams(fields)}).then((r) => r.status);
        Promise.all([
          post("/console/devices/" + arguments[0] + "/command", {op: "reboot"}),
          post("/console/devices/" + arguments[0] + "/rename", {name: "mine"}),
          post("/console/tokens", {name: "more", scope: "admin"}),
          post("/console/routes", {device: arguments[0], metric: "*", mode: "vendor"}),
        ]).then(done);
        """,
        device.device_id,
    )
    assert statuses == [403, 403, 403, 403]
    assert agent.store.device(device.device_id).name is None
    assert [t.name for t in agent.store.tokens()] == ["viewer"]


def _fill_share(row, mode: str, fields: dict[str, str]) -> None:
    row.find_element(By.CSS_SELECTOR, f'input[name="mode"][value="{mode}"]').click()
    row.find_element(By.CSS_SELECTOR, "details summary").click()
    for name, value in fields.items():
        if name == "type":
            row.find_element(
                By.CSS_SELECTOR, f'select[name="type"] option[value="{value}"], select[name="type"]'
            )
            for option in row.find_elements(By.CSS_SELECTOR, 'select[name="type"] option'):
                if option.text == value:
                    option.click()
            continue
        if name == "own":  # the checkbox: the owner's own destination, no agreement to wait for
            row.find_element(By.NAME, "own").click()
            continue
        box = row.find_element(By.NAME, name)
        box.clear()
        box.send_keys(value)
    row.find_element(By.CSS_SELECTOR, "button.apply").click()


def test_an_in_addition_to_share_with_terms_delivers_the_original_signed_bytes(
    start_agent, publisher, device, webhook, browser, tmp_path
):
    agent = start_agent()
    first = reading_at(device, [("temp", "Cel", 20.0)], time.time())
    accept_device(agent, publisher, device, [first])
    base = _sign_in(browser, agent, tokens.issue(agent.store, "owner", "admin"))
    browser.get(base + "/console/routes")
    row = browser.find_element(
        By.CSS_SELECTOR, f'tr.stream[data-device="{device.device_id}"][data-metric="*"]'
    )
    assert "vendor" in row.find_element(By.CSS_SELECTOR, ".mode").text
    fields = {
        "type": "webhook",
        "url": webhook.url,
        "recipient": "my server",
        "purpose": "my records",
        "own": "on",
    }
    _fill_share(row, "in-addition-to", fields)
    _until(browser, lambda b: "Share added" in b.page_source, 10, "the share added")
    [route] = agent.store.routes()
    assert route.mode == "in-addition-to" and route.terms["recipient"] == "my server"
    assert route.needs_agreement is False
    later = reading_at(device, [("temp", "Cel", 21.0), ("hum", "%RH", 40)], time.time())
    publisher.publish(device.topic("reading"), later)
    wait_for(lambda: webhook.bodies, 15, "the forward at the destination")
    stored = {bytes(r[0]) for r in agent.store.query("SELECT raw FROM messages WHERE kind='reading'")}
    assert [body for _, body in webhook.bodies] == [later] and later in stored  # the signed bytes, unchanged
    browser.refresh()
    row = browser.find_element(
        By.CSS_SELECTOR, f'tr.stream[data-device="{device.device_id}"][data-metric="*"]'
    )
    assert "who: my server" in row.text and "why: my records" in row.text
    _until(
        browser,
        lambda b: b.refresh() or "delivered: 0 queued, 1 delivered" in b.page_source,
        10,
        "the delivery state",
    )
    _screenshot(browser, tmp_path, "share")


@pytest.mark.skipif(not HAS_MICROPYTHON, reason="the micropython unix port is not installed")
def test_switching_a_stream_to_instead_of_stops_it_at_the_vendors_broker(vendor_switch, browser, tmp_path):
    rig = vendor_switch
    agent, device_id, other, other_view = rig.agent, rig.device_id, rig.other, rig.other_view
    rig.accept()
    rig.device.enrol(agent)  # its password for the owner's broker, as `firstparty flash --config` enrols it
    agent.store.rename(device_id, "kitchen")
    base = _sign_in(browser, agent, tokens.issue(agent.store, "owner", "admin"))
    browser.get(f"{base}/console/devices/{device_id}")
    browser.find_element(By.NAME, "sensor").send_keys("env")
    browser.find_element(By.NAME, "interval_s").send_keys("1")
    browser.find_element(By.ID, "cmd-interval").click()
    _until(browser, lambda b: "applied" in b.find_element(By.ID, "ack").text, 15, "the signed ack")
    assert "signed acknowledgement from the device" in browser.find_element(By.ID, "ack").text
    wait_for(lambda: len(rig.vendor_view.received) >= 2, 15, "the vendor receiving")

    browser.get(base + "/console/routes")
    row = browser.find_element(By.CSS_SELECTOR, f'tr.stream[data-device="{device_id}"][data-metric="*"]')
    fields = {
        "type": "mqtt",
        "host": other.host,
        "port": str(other.port),
        "recipient": "me",
        "purpose": "mine",
        "own": "on",
    }
    _fill_share(row, "instead-of", fields)
    _until(browser, lambda b: "Share added" in b.page_source, 20, "the switch")
    row = browser.find_element(By.CSS_SELECTOR, f'tr.stream[data-device="{device_id}"][data-metric="*"]')
    assert row.find_element(By.CSS_SELECTOR, ".mode").text == "instead of the vendor"
    wait_for(lambda: other_view.received, 20, "forwards at the owner's destination")
    rig.assert_only_the_owner_receives()
    browser.refresh()
    _screenshot(browser, tmp_path, "routes", "console-routes.png")
    commands = [e["data"] for e in agent.store.audit_entries() if e["kind"] == "ack"]
    assert commands[-1]["op"] == "set-destinations" and commands[-1]["outcome"] == "applied"


def test_a_pending_device_of_another_owner_is_listed_with_its_claim(
    start_agent, publisher, browser, tmp_path
):
    agent = start_agent()
    theirs = FakeDevice(os.urandom(32))
    publish_card(publisher, theirs, "c" * 24)
    wait_for(lambda: agent.store.device(theirs.device_id), 10, "the pending device")
    _sign_in(browser, agent, tokens.issue(agent.store, "owner", "admin"))
    row = browser.find_element(By.ID, f"pending-{theirs.device_id}")
    assert "by cccccccccccc..." in row.text
    _screenshot(browser, tmp_path, "claimed-elsewhere")


# the plots and the devices page read the store: on both (the others' store use is the HTTP tests')
@BOTH_STORES
def test_the_range_picker_reloads_each_plot_over_the_range_clicked(
    start_agent, publisher, device, browser, tmp_path
):
    agent = start_agent()
    now = time.time()
    # a reading every 20 minutes for 3 days: 72 in the last day, 3 in the last hour, 216 in a week
    times = [now - 3 * 86400 + 300 + i * 1200 for i in range(216)]
    accept_device(agent, publisher, device, [reading_at(device, [("temp", "Cel", 20.0)], t) for t in times])
    reader = api(agent, tokens.issue(agent.store, "reader", "read"))
    series = f"/devices/{device.device_id}/series"
    week = {"metric": "temp", "since_s": now - 7 * 86400}
    wait_for(lambda: sum(reader.get(series, params=week).json()["count"]) == 216, 10, "indexed")
    base = _sign_in(browser, agent, tokens.issue(agent.store, "owner", "admin"))
    browser.get(f"{base}/console/devices/{device.device_id}")

    def drawn(range_name: str) -> tuple[int, float, list[str]]:
        _until(browser, lambda b: b.execute_script("return document.body.dataset.plotsDrawn"), 10, range_name)
        # the script makes a plot's figure once its first series has come: look for it after that
        temp = browser.find_element(By.CSS_SELECTOR, 'figure[data-metric="temp"]')
        asked = browser.execute_script(
            "return performance.getEntriesByType('resource').map((e) => e.name)"
            ".filter((n) => n.includes('/console/series?'))"
        )
        selected = browser.find_elements(By.CSS_SELECTOR, "button.range.selected")
        assert [b.get_attribute("data-range") for b in selected] == [range_name]
        return int(temp.get_attribute("data-points")), float(temp.get_attribute("data-step")), asked

    points, step_s, asked = drawn("1d")
    assert (points, step_s) == (72, 144.0) and len(asked) == 1 and "range=1d" in asked[0]
    browser.find_element(By.CSS_SELECTOR, 'button.range[data-range="7d"]').click()
    points, step_s, asked = drawn("7d")
    assert (points, step_s) == (216, 1008.0) and len(asked) == 2 and "range=7d" in asked[1]
    _screenshot(browser, tmp_path, "range-7d")
    browser.find_element(By.CSS_SELECTOR, 'button.range[data-range="1h"]').click()
    points, step_s, asked = drawn("1h")
    assert (points, step_s) == (3, 6.0) and len(asked) == 3 and "range=1h" in asked[2]
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1


def _ack_after(browser, button_id: str, op: str) -> str:
    """Click a command's button and return the acknowledgement the page shows for it."""
    browser.execute_script("document.getElementById('ack').replaceChildren()")
    browser.find_element(By.ID, button_id).click()
    return _until(
        browser,
        lambda b: (text := b.find_element(By.ID, "ack").text).startswith(op + ":") and text,
        20,
        f"the {op} acknowledgement",
    )


def _card_claimed(browser) -> str:
    return browser.find_element(
        By.XPATH, "//section[@class='card-info']//dt[.='Claimed']/following-sibling::dd[1]"
    ).text


@pytest.mark.skipif(not HAS_MICROPYTHON, reason="the micropython unix port is not installed")
def test_claim_and_hand_over_from_the_console_are_applied_by_the_real_device(
    start_agent, mosquitto, browser, tmp_path
):
    agent = start_agent(auto_accept=True)
    new_owner = Owner(tmp_path / "new-owner" / "owner.key")
    device = SimDevice(tmp_path / "flash", (mosquitto.host, mosquitto.port)).start()  # no owner yet
    try:
        device_id = device.device_id(20)
        wait_for(lambda: agent.store.device(device_id), 20, "the device's card")
        assert agent.store.device(device_id).owner_id is None
        base = _sign_in(browser, agent, tokens.issue(agent.store, "owner", "admin"))
        browser.get(f"{base}/console/devices/{device_id}")
        assert _card_claimed(browser) == "no"
        unclaimed = _ack_after(browser, "cmd-claim", "claim")
        assert "signed acknowledgement from the device: unclaimed" in unclaimed  # the button not pressed
        device.press_button()
        claimed = _ack_after(browser, "cmd-claim", "claim")
        assert "signed acknowledgement from the device: applied" in claimed, claimed
        wait_for(
            lambda: agent.store.device(device_id).owner_id == agent.owner.owner_id,
            15,
            "its card naming us",
        )
        browser.refresh()
        assert _card_claimed(browser) == "by you"

        browser.find_element(By.NAME, "owner_hex").send_keys(new_owner.public.hex())
        browser.find_element(By.ID, "cmd-hand-over").click()
        _until(browser, lambda b: b.switch_to.alert, 5, "the confirmation").accept()
        handed = _until(
            browser,
            lambda b: (text := b.find_element(By.ID, "ack").text).startswith("hand-over:") and text,
            20,
            "the hand-over acknowledgement",
        )
        assert "signed acknowledgement from the device: applied" in handed, handed
        wait_for(
            lambda: agent.store.device(device_id).owner_id == new_owner.owner_id,
            15,
            "its new owner's card",
        )
        browser.refresh()
        assert _card_claimed(browser) == f"by {new_owner.owner_id}"
        _screenshot(browser, tmp_path, "handed-over")
        refused = _ack_after(browser, "cmd-reboot", "reboot")  # our key no longer commands it
        assert "signed acknowledgement from the device: not-owner" in refused, refused
        acks = [
            (e["data"]["op"], e["data"]["outcome"]) for e in agent.store.audit_entries() if e["kind"] == "ack"
        ]
        assert acks == [
            ("claim", "unclaimed"),
            ("claim", "applied"),
            ("hand-over", "applied"),
            ("reboot", "not-owner"),
        ]
    finally:
        device.stop()
