"""Home Assistant through MQTT discovery on the owner's broker: one sensor per (device, metric)."""

from __future__ import annotations

import json

from host_agent.api import tokens
from tests.agent.conftest import Publisher, add_own_route, api, wait_for


def test_home_assistant_gets_a_discovery_config_per_metric_and_retained_states(
    start_agent, device, publisher, mosquitto
):
    agent = start_agent(auto_accept=True)
    admin = api(agent, tokens.issue(agent.store, "admin", "admin"))
    home_assistant = Publisher(mosquitto.host, mosquitto.port)
    home_assistant.subscribe("ha/#")
    home_assistant.subscribe("firstparty/#")
    try:
        destination = {
            "type": "homeassistant",
            "host": mosquitto.host,
            "port": mosquitto.port,
            "discovery_prefix": "ha",
        }
        add_own_route(admin, "ha", destination)
        publisher.publish(device.topic("card"), device.card(), retain=True)
        publisher.publish(
            device.topic("reading"), device.reading([("temp", "Cel", 21.5), ("hum", "%RH", 40.0)])
        )
        publisher.publish(
            device.topic("reading"), device.reading([("temp", "Cel", 22.0), ("hum", "%RH", 41.0)])
        )

        def received(prefix):
            return [(t, json.loads(p)) for t, p in list(home_assistant.received) if t.startswith(prefix)]

        states = wait_for(lambda: len(received("firstparty/")) >= 4 and received("firstparty/"), 15, "states")
        configs = dict(received("ha/"))
        temp_config = configs[f"ha/sensor/fp_{device.device_id}_temp/config"]
        assert temp_config["unique_id"] == f"fp_{device.device_id}_temp"
        assert temp_config["unit_of_measurement"] == "Cel"
        assert temp_config["state_topic"] == f"firstparty/{device.device_id}/temp/state"
        assert configs[f"ha/sensor/fp_{device.device_id}_hum/config"]["unit_of_measurement"] == "%RH"
        assert len(configs) == 2, "the discovery config is announced once per (device, metric)"
        temps = [body["v"] for topic, body in states if topic.endswith("/temp/state")]
        assert temps == [21.5, 22.0]
    finally:
        home_assistant.close()

    # retained, so Home Assistant started later still gets the sensors and their last values
    late = Publisher(mosquitto.host, mosquitto.port)
    try:
        late.subscribe(f"ha/sensor/fp_{device.device_id}_temp/config")
        late.subscribe(f"firstparty/{device.device_id}/temp/state")
        wait_for(lambda: len(late.received) == 2, 10, "the retained config and state")
        state = json.loads(dict(late.received)[f"firstparty/{device.device_id}/temp/state"])
        assert state == {"v": 22.0, "u": "Cel"}
    finally:
        late.close()
