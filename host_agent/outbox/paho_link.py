"""paho-mqtt driven by the asyncio event loop: one connection to another broker, QoS 1 publishes.

The outbox's MQTT destinations (host_agent.outbox.sinks.mqtt and .homeassistant) publish through
it; nothing here knows what they publish.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVarTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from host_agent.bus.tcp import no_nagle
from host_agent.outbox.forward import DeliveryError

__all__ = ["CONNECT_TIMEOUT_S", "SINK_INFLIGHT", "SINK_KEEPALIVE_S", "PahoLink"]

Ts = TypeVarTuple("Ts")

CONNECT_TIMEOUT_S = 5.0
SINK_KEEPALIVE_S = 30
SINK_INFLIGHT = 1000  # forwards a sink has sent and not seen acknowledged (paho's default: 20)


class PahoLink:
    """A connection to another broker (the vendor's, any other, Home Assistant's), on the agent's loop.

    paho runs without a thread of its own: the event loop watches its socket through paho's
    external-loop callbacks (as aiomqtt uses them), so forwards are written and their PUBACKs read
    on the loop, with no hand-off to a network thread and back for each batch (docs/benchmarks.md,
    "Host agent"). Connecting (name lookup, TCP handshake) runs in a thread. A connection that
    cannot be made or drops fails the batch; the outbox retries it, and the retry reconnects.
    """

    def __init__(self, destination: dict[str, Any], client_id: str):
        self.host, self.port = destination["host"], destination.get("port", 1883)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if destination.get("username"):
            self.client.username_pw_set(destination["username"], destination.get("password"))
        self.client.max_inflight_messages_set(SINK_INFLIGHT)
        self.client.on_socket_open = self._socket_open
        self.client.on_socket_close = self._socket_close
        self.client.on_socket_register_write = self._register_write
        self.client.on_socket_unregister_write = self._unregister_write
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_publish = self._published
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        self.connack: asyncio.Future[None] | None = None
        self.waiting: dict[int, asyncio.Future[None]] = {}  # packet id -> its PUBACK
        self.keepalive: asyncio.Task[None] | None = None

    # paho calls these on the loop, or in the connecting thread: file numbers, not sockets, go to
    # the loop (a socket paho closes in that thread has lost its number when the loop gets to it)
    def _on_loop(self, function: Callable[[*Ts], object], *args: *Ts) -> None:
        assert self.loop is not None
        if threading.get_ident() == self.loop_thread:
            function(*args)
        else:
            self.loop.call_soon_threadsafe(function, *args)

    def _socket_open(self, client: mqtt.Client, userdata: Any, sock: mqtt.SocketLike) -> None:
        no_nagle(client, userdata, sock)
        self._on_loop(self._watch, sock.fileno(), False)

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: mqtt.SocketLike) -> None:
        self._on_loop(self._watch, sock.fileno(), True)

    def _socket_close(self, client: mqtt.Client, userdata: Any, sock: mqtt.SocketLike) -> None:
        self._on_loop(self._unwatch, sock.fileno(), False)

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: mqtt.SocketLike) -> None:
        self._on_loop(self._unwatch, sock.fileno(), True)

    def _watch(self, fd: int, is_write: bool) -> None:
        assert self.loop is not None
        if is_write:
            self.loop.add_writer(fd, self.client.loop_write)
        else:
            self.loop.add_reader(fd, self.client.loop_read)

    def _unwatch(self, fd: int, is_write: bool) -> None:
        assert self.loop is not None
        self.loop.remove_writer(fd)
        if not is_write:
            self.loop.remove_reader(fd)

    def _connected(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._on_loop(self._settle_connack, reason_code)

    def _settle_connack(self, reason_code: ReasonCode) -> None:
        if self.connack and not self.connack.done():
            if reason_code.is_failure:
                self.connack.set_exception(DeliveryError(f"the broker refused the connection: {reason_code}"))
            else:
                self.connack.set_result(None)

    def _disconnected(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._on_loop(self._fail_waiting, f"connection lost ({reason_code})")

    def _fail_waiting(self, why: str) -> None:
        for future in [*self.waiting.values(), self.connack]:
            if future and not future.done():
                future.set_exception(DeliveryError(why))
        self.waiting.clear()

    def _published(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        future = self.waiting.pop(mid, None)
        if future and not future.done():
            future.set_result(None)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.client.is_connected():
                self.client.loop_misc()  # a PINGREQ when due; a link gone silent is dropped

    async def _connect(self, timeout_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        if self.keepalive is None:
            self.keepalive = asyncio.create_task(self._keep_alive())
        self.connack = self.loop.create_future()
        host, port = self.host, self.port
        try:
            connect = asyncio.to_thread(self.client.connect, host, port, SINK_KEEPALIVE_S)
            await asyncio.wait_for(connect, timeout_s)
            await asyncio.wait_for(asyncio.shield(self.connack), timeout_s)
        except (OSError, TimeoutError) as error:
            raise DeliveryError(f"cannot connect to {host}:{port}: {type(error).__name__} {error}") from None

    async def publish_all(self, items: list[tuple[str, bytes, bool]], timeout_s: float = 5.0) -> None:
        """Publish with QoS 1 and wait for every PUBACK; raise DeliveryError otherwise."""
        if not self.client.is_connected():
            await self._connect(CONNECT_TIMEOUT_S)
        assert self.loop is not None
        pubacks: dict[int, asyncio.Future[None]] = {}
        try:
            for topic, payload, retain in items:
                info = self.client.publish(topic, payload, qos=1, retain=retain)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    raise DeliveryError(f"publish failed: {mqtt.error_string(info.rc)}")
                pubacks[info.mid] = self.waiting[info.mid] = self.loop.create_future()
            async with asyncio.timeout(timeout_s):
                for puback in pubacks.values():
                    await puback  # the first failure is the batch's
        except TimeoutError:
            raise DeliveryError("no PUBACK in time") from None
        finally:
            for mid, puback in pubacks.items():
                self.waiting.pop(mid, None)
                # a lost connection fails them all at once: read, so that the loop does not report
                # the ones after the first as never retrieved (nor a cancelled batch's)
                if not puback.done():
                    puback.cancel()
                elif not puback.cancelled():
                    puback.exception()

    async def stop(self) -> None:
        if self.keepalive:
            self.keepalive.cancel()
        sock = self.client.socket()
        if sock is None or self.loop is None:
            return
        if self.client.is_connected():
            self.client.disconnect()
            self.client.loop_write()  # the DISCONNECT now: the loop may not turn again for it
        sock = self.client.socket()
        if sock is not None:  # paho closes it once the DISCONNECT is out; else we do
            self._unwatch(sock.fileno(), False)
            sock.close()
