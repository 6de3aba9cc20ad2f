"""fp.mqtt against a broker played byte for byte (tests/firmware/fakebroker.py), under MicroPython and
CPython: every byte the client sends is compared, including across a cut link and a reconnect.
docs/mqtt-conformance.md maps the normative statements of MQTT 3.1.1 to these tests."""

from __future__ import annotations

import pytest

from tests.firmware.fakebroker import (
    FakeBroker,
    close,
    eof,
    expect,
    packet,
    pid,
    quiet,
    run_client,
    send,
    string,
)
from tests.firmware.fakebroker import sleep as pause

INTERPRETERS = ["micropython", "cpython"]
CONNACK = packet(0x20, b"\x00\x00")
CONNACK_SESSION = packet(0x20, b"\x01\x00")
DISCONNECT = b"\xe0\x00"
PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"


def connect(client_id: str, flags: int, keepalive_s: int, *payload: bytes) -> bytes:
    return packet(
        0x10, string("MQTT"), bytes((4, flags)), keepalive_s.to_bytes(2, "big"), string(client_id), *payload
    )


def publish(
    topic: str, payload: bytes, qos: int, number: int = 0, dup: bool = False, retain: bool = False
) -> bytes:
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    return packet(first, string(topic), pid(number) if qos else b"", payload)


def puback(number: int) -> bytes:
    return packet(0x40, pid(number))


def pubrec(number: int) -> bytes:
    return packet(0x50, pid(number))


def pubrel(number: int) -> bytes:
    return packet(0x62, pid(number))  # fixed header flags 0010 (MQTT-3.6.1-1)


def pubcomp(number: int) -> bytes:
    return packet(0x70, pid(number))


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_connect_flags_subscribe_refusal_unsubscribe_and_disconnect_are_byte_exact(interpreter):
    # will QoS 1 retained, user name and password, a kept session: flags 1110 1100 (MQTT-3.1.2-*)
    hello = connect("dev-1", 0xEC, 60, string("st/dev-1"), string("offline"), string("u"), string("p"))
    broker = FakeBroker([[
        expect(hello),
        send(CONNACK),
        expect(packet(0x82, pid(1), string("cmd/dev-1"), b"\x01", string("forbidden/#"), b"\x01")),
        send(packet(0x90, pid(1), b"\x01\x80")),  # the second filter refused
        expect(packet(0xA2, pid(2), string("cmd/dev-1"))),
        send(packet(0xB0, pid(2))),
        expect(packet(0x82, pid(3), string("x/y"), b"\x00")),
        send(packet(0x90, pid(3), b"\x80")),
        expect(publish("t", b"hi", 0)),
        expect(DISCONNECT),
        eof(),
    ]])  # fmt: skip
    result = run_client(interpreter, broker.port, """
from fp.mqtt_subscribe import SubscribingClient  # subscribe() and unsubscribe(): the host's
async def scenario():
    client = SubscribingClient(Broker("127.0.0.1", PORT, "u", "p"), "dev-1", keepalive_s=60,
                               clean=False, will=("st/dev-1", b"offline", 1, True),
                               subscriptions=[("cmd/dev-1", 1), ("forbidden/#", 1)])
    task = asyncio.create_task(client.run())
    await until(lambda: client.is_up, "the connection")
    await until(lambda: len(client.granted) == 2, "the SUBACK")
    out["granted"] = dict(client.granted)
    out["up_after_refusal"] = client.is_up
    await client.unsubscribe("cmd/dev-1")
    out["subscriptions"] = client.subscriptions
    out["refused"] = await outcome(client.subscribe("x/y", 0))
    await client.publish("t", b"hi", qos=0)
    client.stop()
    await asyncio.sleep(0.5)  # the serving loop's next tick
    out["run_ended"] = task.done()
""")  # fmt: skip
    broker.finish()
    assert result["granted"] == {"cmd/dev-1": 1, "forbidden/#": 0x80}
    assert result["up_after_refusal"] is True
    assert result["subscriptions"] == [["forbidden/#", 1]]
    assert result["refused"] == "subscription-refused"
    assert result["run_ended"] is True


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_in_flight_window_releases_exactly_one_queued_publish_per_puback(interpreter):
    broker = FakeBroker([[
        expect(connect("w", 0x02, 0)),
        send(CONNACK),
        expect(publish("t", b"0", 1, 1)),
        expect(publish("t", b"1", 1, 2)),
        quiet(0.4),  # window of 2 full: the other two wait
        send(puback(1)),
        expect(publish("t", b"2", 1, 3)),
        quiet(0.3),
        send(puback(2)),
        expect(publish("t", b"3", 1, 4)),
        quiet(0.3),
        send(puback(4) + puback(3)),  # out of order: each releases its own publish
        expect(DISCONNECT),
        eof(),
    ]])  # fmt: skip
    result = run_client(interpreter, broker.port, """
async def scenario():
    client = MQTTClient(Broker("127.0.0.1", PORT), "w", keepalive_s=0, max_inflight=2, max_queued=2)
    asyncio.create_task(client.run())
    await until(lambda: client.is_up, "the connection")
    done = []
    async def send(n):
        done.append([n, await outcome(client.publish("t", b"%d" % n))])
    tasks = [asyncio.create_task(send(n)) for n in range(5)]
    await until(lambda: len(done) == 5, "five outcomes")
    out["done"] = done
    client.stop()
    await asyncio.sleep(0.1)
""")  # fmt: skip
    broker.finish()
    # the fifth found the window (2) and the queue (2) full; the others returned on their PUBACK
    assert result["done"] == [[4, "queue-full"], [0, "ok"], [1, "ok"], [3, "ok"], [2, "ok"]]


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_a_cut_link_resends_unacknowledged_publishes_with_their_ids_and_dup_in_order(interpreter):
    hello = connect("r", 0x00, 0)
    broker = FakeBroker([
        [
            expect(hello),
            send(CONNACK),
            expect(publish("t", b"0", 1, 1) + publish("t", b"1", 1, 2) + publish("t", b"2", 1, 3)),
            send(puback(1)),
            pause(0.2),
            close(),  # mid-flow: 2 and 3 unacknowledged
        ],
        [
            expect(hello),
            send(CONNACK_SESSION),
            # MQTT-4.4.0-1, MQTT-4.6.0-1, MQTT-3.3.1-1: same ids, DUP set, original order
            expect(publish("t", b"1", 1, 2, dup=True) + publish("t", b"2", 1, 3, dup=True)),
            quiet(0.3),
            send(puback(2) + puback(3)),
            expect(publish("t", b"3", 1, 4)),  # a new id for a new message
            send(puback(4)),
            expect(publish("t", b"4", 1, 5)),
            # no PUBACK: stop() sends DISCONNECT, and the waiting publish fails with "stopped"
            expect(DISCONNECT),
            eof(),
        ],
    ])  # fmt: skip
    result = run_client(interpreter, broker.port, """
async def scenario():
    client = MQTTClient(Broker("127.0.0.1", PORT), "r", keepalive_s=0, clean=False, max_inflight=3,
                        max_backoff_s=0.05)
    asyncio.create_task(client.run())
    await until(lambda: client.is_up, "the connection")
    done = []
    async def send(n):
        done.append([n, await outcome(client.publish("t", b"%d" % n))])
    for n in range(3):
        asyncio.create_task(send(n))
    await until(lambda: len(done) == 3, "three PUBACKs")
    out["connects"] = client.connects
    out["session_present"] = client.session_present
    await send(3)
    last = asyncio.create_task(send(4))
    await asyncio.sleep(0.3)
    client.stop()
    await until(lambda: len(done) == 5, "the stopped publish")
    out["done"] = done
    out["losses"] = client.errors  # the cut, counted as a lost connection
""")  # fmt: skip
    broker.finish()
    assert result["done"] == [[0, "ok"], [1, "ok"], [2, "ok"], [3, "ok"], [4, "stopped"]]
    assert result["connects"] == 2 and result["session_present"] is True
    assert result["losses"] == 1


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_qos2_publish_is_released_only_by_pubcomp_and_pubrels_follow_the_pubrec_order(interpreter):
    broker = FakeBroker([[
        expect(connect("x", 0x02, 0)),
        send(CONNACK),
        # MQTT-4.3.3-1: a new id, QoS 2, DUP 0
        expect(publish("t", b"0", 2, 1) + publish("t", b"1", 2, 2)),
        quiet(0.4),  # window of 2 full: the third waits
        send(pubrec(1)),
        expect(pubrel(1)),  # MQTT-4.3.3-1, MQTT-2.3.1-6, MQTT-3.6.1-1: 62 02, the PUBLISH's id
        quiet(0.4),  # a PUBREC releases nothing: the third still waits, the first has not returned
        send(pubcomp(1)),
        expect(publish("t", b"2", 2, 3)),  # the PUBCOMP released one slot
        send(pubrec(3) + pubrec(2)),  # out of order
        expect(pubrel(3) + pubrel(2)),  # MQTT-4.6.0-4: PUBRELs in the order the PUBRECs came
        quiet(0.3),
        send(pubrec(2)),  # a PUBREC again (mosquitto sent two for one resent PUBLISH): the PUBREL again
        expect(pubrel(2)),
        quiet(0.3),
        send(pubcomp(2) + pubcomp(3)),
        expect(DISCONNECT),
        eof(),
    ]])  # fmt: skip
    result = run_client(interpreter, broker.port, """
async def scenario():
    client = MQTTClient(Broker("127.0.0.1", PORT), "x", keepalive_s=0, max_inflight=2, max_queued=1)
    asyncio.create_task(client.run())
    await until(lambda: client.is_up, "the connection")
    done = []
    async def send(n):
        done.append([n, await outcome(client.publish("t", b"%d" % n, qos=2))])
    for n in range(4):
        asyncio.create_task(send(n))
    await until(lambda: len(done) == 1, "the refusal of the fourth")
    await until(lambda: len(done) == 4, "three PUBCOMPs")
    out["done"] = done
    client.stop()
    await asyncio.sleep(0.1)
""")  # fmt: skip
    broker.finish()
    # the fourth found the window (2) and the queue (1) full; each other returned on its PUBCOMP
    assert result["done"] == [[3, "queue-full"], [0, "ok"], [1, "ok"], [2, "ok"]]


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_a_cut_resends_a_pubrel_after_pubrec_and_the_publish_with_dup_before_it_in_order(interpreter):
    hello = connect("s2", 0x00, 0)
    broker = FakeBroker([
        [
            expect(hello),
            send(CONNACK),
            expect(publish("t", b"0", 2, 1) + publish("t", b"1", 1, 2) + publish("t", b"2", 2, 3)
                   + publish("t", b"3", 2, 4)),
            send(pubrec(3) + pubrec(1)),
            expect(pubrel(3) + pubrel(1)),
            pause(0.2),
            close(),  # 1 and 3 wait for their PUBCOMP; 2 (QoS 1) and 4 for their PUBACK and PUBREC
        ],
        [
            expect(hello),
            send(CONNACK_SESSION),
            # MQTT-4.4.0-1: PUBRELs and PUBLISHes again with their ids; MQTT-4.3.3-1: no PUBLISH
            # again once its PUBREC came; MQTT-4.6.0-4: the PUBRELs in PUBREC order; MQTT-4.6.0-1,
            # MQTT-3.3.1-1: the PUBLISHes in the order first sent, DUP set; a PUBREL has no DUP
            expect(pubrel(3) + pubrel(1) + publish("t", b"1", 1, 2, dup=True)
                   + publish("t", b"3", 2, 4, dup=True)),
            quiet(0.3),
            send(pubcomp(3) + puback(2) + pubrec(4)),
            expect(pubrel(4)),
            send(pubcomp(1) + pubcomp(4)),
            expect(publish("t", b"4", 2, 5)),  # a new message: a new id, DUP 0
            send(pubrec(5)),
            expect(pubrel(5)),
            eof(within_s=4),  # no PUBCOMP within ack_timeout_s: the client drops the link
        ],
        [
            expect(hello),
            send(CONNACK_SESSION),
            expect(pubrel(5)),  # only the PUBREL, again
            send(pubcomp(5)),
            expect(DISCONNECT),
            eof(),
        ],
    ])  # fmt: skip
    result = run_client(interpreter, broker.port, """
async def scenario():
    client = MQTTClient(Broker("127.0.0.1", PORT), "s2", keepalive_s=0, clean=False, max_inflight=4,
                        max_backoff_s=0.05, ack_timeout_s=1.5)
    asyncio.create_task(client.run())
    await until(lambda: client.is_up, "the connection")
    done = []
    async def send(n, qos):
        done.append([n, await outcome(client.publish("t", b"%d" % n, qos=qos))])
    for n, qos in ((0, 2), (1, 1), (2, 2), (3, 2)):
        asyncio.create_task(send(n, qos))
    await until(lambda: len(done) == 4, "the four acknowledged")
    await send(4, 2)
    out["connects"] = client.connects
    out["done"] = done
    client.stop()
    await asyncio.sleep(0.1)
""")  # fmt: skip
    broker.finish()
    assert result["done"] == [[2, "ok"], [1, "ok"], [0, "ok"], [3, "ok"], [4, "ok"]]
    assert result["connects"] == 3


# A broker that answers a QoS 2 (or QoS 1) publish of the client out of turn breaks the protocol:
# the client closes the connection (MQTT-4.8.0-1); the publish is not reported complete
ANSWERS = {
    "pubcomp-before-pubrec": (2, [send(pubcomp(1))]),
    "puback-for-a-qos2-publish": (2, [send(puback(1))]),
    "pubrec-for-a-qos1-publish": (1, [send(pubrec(1))]),
    "pubrec-for-another-id": (2, [send(pubrec(9))]),
    "pubcomp-for-another-id": (2, [send(pubrec(1)), expect(pubrel(1)), send(pubcomp(9))]),
    "pubrec-with-flags": (2, [send(packet(0x52, pid(1)))]),  # MQTT-2.2.2-2
    "pubcomp-of-3-bytes": (2, [send(pubrec(1)), expect(pubrel(1)), send(packet(0x70, pid(1), b"\x00"))]),
}


@pytest.mark.parametrize("interpreter", INTERPRETERS)
@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_a_broker_answering_a_publish_out_of_turn_is_disconnected(interpreter, name):
    qos, answer = ANSWERS[name]
    broker = FakeBroker(
        [[expect(connect("a", 0x02, 0)), send(CONNACK), expect(publish("t", b"x", qos, 1)), *answer,
          eof(within_s=3)]]
    )  # fmt: skip
    result = run_client(interpreter, broker.port, f"QOS = {qos}" + """
async def scenario():
    client = MQTTClient(Broker("127.0.0.1", PORT), "a", keepalive_s=0, reconnect=False)
    results = []
    async def publish():
        await until(lambda: client.is_up, "the connection")
        results.append(await outcome(client.publish("t", b"x", qos=QOS)))
    task = asyncio.create_task(publish())
    try:
        await client.run()
    except MQTTError as error:
        out["ended"] = error.reason
    await until(lambda: results, "the publish's outcome")
    out["publish"] = results[0]
""")  # fmt: skip
    broker.finish()
    assert result == {"ended": "protocol", "publish": "down", "got": []}


@pytest.mark.parametrize("interpreter", INTERPRETERS)
@pytest.mark.parametrize("qos", [1, 2])
def test_a_clean_session_lost_fails_its_publishes_and_resends_nothing(interpreter, qos):
    hello = connect("c", 0x02, 0)
    # QoS 1: the first acknowledged, the second not; QoS 2: the first has its PUBREC (and the
    # PUBREL went), the second not: neither is complete, both fail, nothing is sent again
    answer = [send(puback(1))] if qos == 1 else [send(pubrec(1)), expect(pubrel(1))]
    broker = FakeBroker([
        [expect(hello), send(CONNACK), expect(publish("t", b"0", qos, 1) + publish("t", b"1", qos, 2)),
         *answer, pause(0.2), close()],
        [expect(hello), send(CONNACK), quiet(0.5), expect(DISCONNECT), eof()],
    ])  # fmt: skip
    result = run_client(interpreter, broker.port, f"QOS = {qos}" + """
async def scenario():
    client = MQTTClient(Broker("127.0.0.1", PORT), "c", keepalive_s=0, max_backoff_s=0.05)
    asyncio.create_task(client.run())
    await until(lambda: client.is_up, "the connection")
    done = []
    async def send(n):
        done.append([n, await outcome(client.publish("t", b"%d" % n, qos=QOS))])
    for n in range(2):
        asyncio.create_task(send(n))
    await until(lambda: len(done) == 2 and client.connects == 2, "the reconnect")
    await asyncio.sleep(0.7)
    out["done"] = done
    client.stop()
    await asyncio.sleep(0.1)
""")  # fmt: skip
    broker.finish()
    assert result["done"] == ([[0, "ok"], [1, "down"]] if qos == 1 else [[0, "down"], [1, "down"]])


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_keepalive_counts_from_the_last_packet_sent_and_a_silent_broker_is_dropped(interpreter):
    # Keepalive 1 s, and the broker keeps sending: the client must still send PINGREQ (MQTT-3.1.2-23)
    hello = connect("k", 0x02, 1)
    traffic = []
    for n in range(8):
        traffic += [send(publish("in", b"%d" % n, 0)), pause(0.1)]
    broker = FakeBroker([
        [expect(hello), send(CONNACK), *traffic, expect(PINGREQ, within_s=0.5), send(PINGRESP),
         expect(PINGREQ, within_s=1.0), eof(within_s=1.5)],  # unanswered: the client drops the link
        [expect(hello), send(CONNACK), expect(PINGREQ, within_s=1.0), send(PINGRESP), expect(DISCONNECT), eof()],
    ])  # fmt: skip
    result = run_client(interpreter, broker.port, """
async def scenario():
    client = MQTTClient(Broker("127.0.0.1", PORT), "k", keepalive_s=1, on_message=on_message,
                        max_backoff_s=0.05)
    asyncio.create_task(client.run())
    await until(lambda: client.is_up, "the connection")
    await until(lambda: client.connects == 2, "the reconnect")
    await asyncio.sleep(0.8)
    out["errors"] = client.errors
    client.stop()
    await asyncio.sleep(0.1)
""")  # fmt: skip
    broker.finish()
    assert [message[1] for message in result["got"]] == [str(n) for n in range(8)]
    assert result["errors"] == 1


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_incoming_qos1_is_acknowledged_and_qos2_is_delivered_once_per_pubrel(interpreter):
    broker = FakeBroker([[
        expect(connect("q", 0x02, 0)),
        send(CONNACK),
        expect(packet(0x82, pid(1), string("in/#"), b"\x01")),
        send(packet(0x90, pid(1), b"\x01")),
        send(publish("in/a", b"one", 1, 5, retain=True)),
        expect(puback(5)),  # MQTT-2.3.1-6: the id of the PUBLISH
        send(publish("in/b", b"two", 2, 7)),
        expect(packet(0x50, pid(7))),  # PUBREC
        send(publish("in/b", b"two", 2, 7, dup=True)),  # sent again before PUBREL: not delivered again
        expect(packet(0x50, pid(7))),
        send(packet(0x62, pid(7))),  # PUBREL
        expect(packet(0x70, pid(7))),  # PUBCOMP
        send(packet(0x62, pid(7))),  # PUBREL again (its PUBCOMP lost): PUBCOMP again
        expect(packet(0x70, pid(7))),
        send(publish("in/b", b"three", 2, 7)),  # the id free again: a new message
        expect(packet(0x50, pid(7))),
        send(packet(0x60, pid(7))),  # PUBREL flags are 0010 (MQTT-3.6.1-1): invalid flags close (MQTT-2.2.2-2)
        eof(within_s=2),
    ]])  # fmt: skip
    result = run_client(interpreter, broker.port, """
async def scenario():
    client = MQTTClient(Broker("127.0.0.1", PORT), "q", keepalive_s=0, on_message=on_message,
                        subscriptions=[("in/#", 1)], reconnect=False)
    try:
        await client.run()
    except MQTTError as error:
        out["ended"] = error.reason
""")  # fmt: skip
    broker.finish()
    assert result["got"] == [
        ["in/a", "one", 1, True, False],
        ["in/b", "two", 2, False, False],
        ["in/b", "three", 2, False, False],
    ]
    assert result["ended"] == "protocol"


@pytest.mark.parametrize("interpreter", INTERPRETERS)
@pytest.mark.parametrize(
    ("answer", "reason"),
    [(packet(0x20, b"\x00\x05"), "refused"), (CONNACK, "closed")],
    ids=["refused", "closed"],
)
def test_a_one_shot_client_stops_after_a_refusal_or_a_closed_socket(interpreter, answer, reason):
    steps = [expect(connect("o", 0x02, 0)), send(answer)]
    steps += [eof(within_s=2)] if reason == "refused" else [pause(0.2), close()]
    broker = FakeBroker([steps], extra_wait_s=1.0)  # and no second connection
    result = run_client(interpreter, broker.port, """
async def scenario():
    client = MQTTClient(Broker("127.0.0.1", PORT), "o", keepalive_s=0, reconnect=False, max_backoff_s=0.05)
    try:
        await client.run()
        out["ended"] = "returned"
    except MQTTError as error:
        out["ended"] = error.reason
        out["code"] = error.code
    await asyncio.sleep(1.2)
""")  # fmt: skip
    broker.finish()
    assert result["ended"] == reason
    assert result["code"] == (5 if reason == "refused" else None)


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_what_a_client_may_not_send_is_refused_before_anything_is_sent(interpreter):
    broker = FakeBroker([[expect(connect("v", 0x02, 0)), send(CONNACK), expect(DISCONNECT), eof()]])
    result = run_client(interpreter, broker.port, """
def refused(make):
    try:
        make()
        return "accepted"
    except ValueError:
        return "refused"
async def scenario():
    b = Broker("127.0.0.1", PORT)
    out["empty_id_kept_session"] = refused(lambda: MQTTClient(b, "", clean=False))  # MQTT-3.1.3-7
    out["password_without_user"] = refused(lambda: Broker("h", 1883, None, "p"))  # MQTT-3.1.2-22
    out["wildcard_will"] = refused(lambda: MQTTClient(b, "v", will=("st/#", b"x", 0, False)))
    out["nul_in_id"] = refused(lambda: MQTTClient(b, "a\\x00b"))  # MQTT-1.5.3-2
    out["bad_filter"] = refused(lambda: MQTTClient(b, "v", subscriptions=[("a/#/b", 1)]))  # MQTT-4.7.1-2
    out["bad_plus"] = refused(lambda: MQTTClient(b, "v", subscriptions=[("a+/b", 1)]))  # MQTT-4.7.1-3
    client = MQTTClient(b, "v", keepalive_s=0)
    asyncio.create_task(client.run())
    await until(lambda: client.is_up, "the connection")
    for name, topic, qos in (("wildcard_topic", "a/+", 1), ("empty_topic", "", 1), ("qos3", "a", 3),
                             ("nul_topic", "a\\x00", 0)):
        try:
            await client.publish(topic, b"x", qos=qos)
            out[name] = "accepted"
        except ValueError:
            out[name] = "refused"
    client.stop()
    await asyncio.sleep(0.1)
""")  # fmt: skip
    broker.finish()
    del result["got"]
    assert set(result.values()) == {"refused"}, result


# What a broker may not send: the client closes the connection (MQTT-4.8.0-1) and sends nothing more
MALFORMED = {
    "qos-3-publish": bytes((0x36, 5)) + string("t") + pid(1) + b"",  # MQTT-3.3.1-4
    "topic-not-utf8": packet(0x30, b"\x00\x02\xc3\x28", b"x"),  # MQTT-1.5.3-1
    "topic-with-nul": packet(0x30, b"\x00\x02a\x00", b"x"),  # MQTT-1.5.3-2
    "topic-with-wildcard": publish("a/#", b"x", 0),  # MQTT-3.3.2-2
    "puback-with-flags": packet(0x41, pid(1)),  # MQTT-2.2.2-2
    "pingresp-with-flags": bytes((0xD1, 0)),  # MQTT-2.2.2-2
    "second-connack": CONNACK,  # only the first packet is a CONNACK
    "suback-for-no-request": packet(0x90, pid(9), b"\x01"),
    "pubrec-for-no-qos2-publish": packet(0x50, pid(1)),  # no QoS 2 publish of the client in flight
    "pubcomp-for-no-qos2-publish": packet(0x70, pid(1)),
    "connect-from-the-broker": connect("x", 0x02, 0),
}


@pytest.mark.parametrize("interpreter", INTERPRETERS)
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_broker_that_breaks_the_protocol_is_disconnected(interpreter, name):
    broker = FakeBroker(
        [[expect(connect("m", 0x02, 0)), send(CONNACK), send(MALFORMED[name]), eof(within_s=3)]]
    )
    result = run_client(interpreter, broker.port, """
async def scenario():
    client = MQTTClient(Broker("127.0.0.1", PORT), "m", keepalive_s=0, on_message=on_message, reconnect=False)
    try:
        await client.run()
    except MQTTError as error:
        out["ended"] = error.reason
""")  # fmt: skip
    broker.finish()
    assert result == {"ended": "protocol", "got": []}


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_a_suback_with_a_reserved_return_code_closes_the_connection(interpreter):
    # MQTT-3.9.3-2: a broker answers 0x00, 0x01, 0x02 or 0x80; any other code breaks the protocol
    broker = FakeBroker([[
        expect(connect("s", 0x02, 0)),
        send(CONNACK),
        expect(packet(0x82, pid(1), string("a"), b"\x01")),
        send(packet(0x90, pid(1), b"\x03")),
        eof(within_s=3),
    ]])  # fmt: skip
    result = run_client(interpreter, broker.port, """
async def scenario():
    client = MQTTClient(Broker("127.0.0.1", PORT), "s", keepalive_s=0, subscriptions=[("a", 1)],
                        reconnect=False)
    try:
        await client.run()
    except MQTTError as error:
        out["ended"] = error.reason
    out["granted"] = client.granted
""")  # fmt: skip
    broker.finish()
    assert result["ended"] == "protocol"
    assert result["granted"] == {}
