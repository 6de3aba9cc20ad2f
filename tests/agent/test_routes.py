"""Route decisions (pure): which readings a route carries, and what a device is told to do."""

from __future__ import annotations

import pytest

from host_agent.errors import UserError
from host_agent.routes import grants
from host_agent.routes import rules as routes

DEVICE = "a" * 24
OTHER = "b" * 24


def route(**spec) -> routes.Route:
    return routes.Route.of("r", routes.validate({"destination": {"type": "file", "path": "/tmp/x"}, **spec}))


@pytest.mark.parametrize(
    "metrics,names,expected",
    [
        (["*"], ["temp", "hum"], True),
        (["temp"], ["temp"], True),
        (["temp", "hum"], ["temp", "hum"], True),
        (["temp"], ["temp", "hum"], False),  # the signed reading would hand over hum too
        (["temp"], ["hum"], False),
    ],
)
def test_a_metric_limited_route_carries_only_readings_made_of_its_metrics(metrics, names, expected):
    assert routes.matches(route(metrics=metrics), DEVICE, names, 0) is expected


def test_what_a_route_carries_its_grant_covers():
    shared = route(devices=[DEVICE], metrics=["temp", "hum"], terms={"expires_s": 1000})
    # the terms as the recipient reads them from the grant (its wire form: tests/test_verify_cli.py)
    grant = grants.Grant("o", "r", shared.devices, shared.metrics, "", None, 0, 1000, "r")
    for names in (["temp"], ["temp", "hum"], ["temp", "press"], ["press"]):
        for device in (DEVICE, OTHER):
            for now in (10, 2000):
                assert routes.matches(shared, device, names, now) == grant.covers(device, names, now)


def test_an_expired_route_carries_nothing():
    assert not routes.matches(route(terms={"expires_s": 100}), DEVICE, ["temp"], 100)
    assert routes.matches(route(terms={"expires_s": 100}), DEVICE, ["temp"], 99)


def test_instead_of_drops_the_vendor_on_the_device_and_in_addition_keeps_it():
    home = {"host": "192.168.1.2", "port": 1883}
    instead = route(devices=[DEVICE], mode="instead-of")
    assert routes.device_destinations([instead], DEVICE, home) == [dict(home, name="home")]
    assert routes.device_destinations([instead], OTHER, home) == [{"name": "vendor"}, dict(home, name="home")]


@pytest.mark.parametrize(
    "spec,words",
    [
        ({"destination": {"type": "ftp"}}, "destination.type must be one of"),
        ({"destination": {"type": "webhook"}}, "destination.url is required"),
        ({"destination": {"type": "file", "path": "/x"}, "mode": "sideways"}, "mode must be one of"),
        ({"destination": {"type": "file", "path": "/x"}, "terms": {"why": "x"}}, "terms.why is unknown"),
        ({"destination": {"type": "file", "path": "/x"}, "devices": ["nope"]}, "devices must be a list"),
    ],
)
def test_a_bad_route_names_the_key(spec, words):
    with pytest.raises(UserError, match=words):
        routes.validate(spec)


@pytest.mark.parametrize(
    ("destination", "given", "expected"),
    [
        ({"type": "webhook", "url": "https://coop.example/in"}, None, True),
        ({"type": "mqtt", "host": "broker.example"}, None, True),
        ({"type": "homeassistant", "host": "ha.local"}, None, True),
        ({"type": "file", "path": "/tmp/x.jsonl"}, None, False),
        ({"type": "webhook", "url": "https://my.nas/in"}, False, False),
        ({"type": "file", "path": "/tmp/x.jsonl"}, True, True),
    ],
)
def test_a_route_to_a_second_party_needs_an_agreement_unless_the_owner_says_it_is_their_own(
    destination, given, expected
):
    spec = {"destination": destination} | ({} if given is None else {"needs_agreement": given})
    assert routes.validate(spec)["needs_agreement"] is expected


def test_needs_agreement_must_be_a_boolean():
    with pytest.raises(UserError, match="needs_agreement must be true or false"):
        routes.validate({"destination": {"type": "file", "path": "x"}, "needs_agreement": "no"})
