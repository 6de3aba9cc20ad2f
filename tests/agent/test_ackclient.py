"""The agent's manual-acknowledgement client (host_agent.bus.ackclient) against real mosquitto: only what
was acknowledged stays acknowledged, across reconnects, and an oversized PUBLISH is read past."""

from __future__ import annotations

import asyncio

from fp.mqtt import Broker
from fp.mqtt_subscribe import SubscribingClient
from host_agent.bus.ackclient import AckableMessage, ManualAckClient
from tests.helpers import wait_for_async


def test_only_acknowledged_messages_stay_acknowledged_across_reconnects(mosquitto):
    async def scenario() -> dict:
        got: list[AckableMessage] = []

        async def on_message(message: AckableMessage) -> None:
            got.append(message)

        broker = Broker("127.0.0.1", mosquitto.port)
        receiver = ManualAckClient(
            broker, "receiver", on_message=on_message, clean=False, subscriptions=[("t/#", 1)],
            max_packet_bytes=8192, max_backoff_s=0.05,
        )  # fmt: skip
        sender = SubscribingClient(broker, "sender", max_packet_bytes=8192)
        tasks = [asyncio.create_task(receiver.run()), asyncio.create_task(sender.run())]
        await receiver.wait_up(5)
        await sender.wait_up(5)
        await wait_for_async(lambda: "t/#" in receiver.granted, 10, "the SUBACK")
        for n in range(4):
            await sender.publish("t/a", b"m%d" % n)
        await sender.publish("t/big", b"x" * 20000)  # larger than the receiver holds
        await sender.publish("t/a", b"after")
        await wait_for_async(lambda: len(got) == 5, 10, "five messages")
        out: dict = {"first": [bytes(m.payload).decode() for m in got], "oversized": receiver.oversized}
        tokens = {bytes(m.payload): m.token for m in got}
        out["acked"] = await receiver.ack([tokens[b"m0"], tokens[b"m1"], tokens[b"after"]])
        await asyncio.sleep(0.2)
        del got[:]
        first_connection = receiver.connects
        receiver.reconnect("test")
        await wait_for_async(
            lambda: receiver.connects > first_connection and len(got) == 2, 10, "the redelivery"
        )
        out["again"] = sorted(bytes(m.payload).decode() for m in got)
        out["stale"] = await receiver.ack([tokens[b"m2"]])  # a token of the first connection
        out["acked_again"] = await receiver.ack([m.token for m in got if m.token])
        await asyncio.sleep(0.2)
        del got[:]
        second_connection = receiver.connects
        receiver.reconnect("test")
        await wait_for_async(lambda: receiver.connects > second_connection, 10, "the third connection")
        await asyncio.sleep(0.5)
        out["third"] = [bytes(m.payload) for m in got]
        receiver.stop()
        sender.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        return out

    result = asyncio.run(scenario())
    assert result["first"] == ["m0", "m1", "m2", "m3", "after"]
    assert result["oversized"] == 1
    assert result["acked"] == 3
    assert result["again"] == ["m2", "m3"], "what was not acknowledged comes again, nothing else"
    assert result["stale"] == 0, "a token of an earlier connection is not acknowledged on a later one"
    assert result["acked_again"] == 2
    assert result["third"] == [], "acknowledged (and the oversized one) never come back"
