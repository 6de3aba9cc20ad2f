"""The outbox's MQTT link (host_agent.outbox.paho_link) on a real mosquitto: a batch's PUBACKs."""

from __future__ import annotations

import asyncio
import gc
import os
import signal

import pytest

from host_agent.outbox.forward import DeliveryError
from host_agent.outbox.paho_link import PahoLink


def _run_collecting_loop_errors(main) -> list[str]:
    """Run `main()` on a new loop; the messages of what the loop reported (never-retrieved errors)."""
    reported: list[str] = []

    async def wrapper():
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: reported.append(context["message"])
        )
        try:
            await main()
        finally:
            gc.collect()  # a future dropped with its exception unread reports it here
            await asyncio.sleep(0)

    asyncio.run(wrapper())
    return reported


async def _connected_link(mosquitto) -> PahoLink:
    """A link to `mosquitto`, connected by one delivered message."""
    link = PahoLink({"host": mosquitto.host, "port": mosquitto.port}, "fp-test-link")
    await link.publish_all([("fp/test/a", b"1", False)])
    return link


async def _batch_waiting(link: PahoLink, count: int) -> asyncio.Task[None]:
    """A batch of `count` messages sent and waiting for PUBACKs the (stopped) broker will not send."""
    task = asyncio.create_task(link.publish_all([(f"fp/test/{i}", b"x", False) for i in range(count)], 30))
    while len(link.waiting) < count:
        await asyncio.sleep(0.01)
    return task


def test_a_batch_cancelled_as_its_connection_fails_leaves_no_unread_error(mosquitto):
    """The agent's shutdown cancels a delivery at the moment its link fails every PUBACK it waits
    for: the cancel is what the caller sees, and no error is left for the loop to report."""

    async def main():
        link = await _connected_link(mosquitto)
        os.kill(mosquitto.process.pid, signal.SIGSTOP)  # no PUBACK from now on
        try:
            task = await _batch_waiting(link, 20)
            task.cancel()
            # what the link does when paho reports the connection lost, in the same turn of the
            # loop as the cancel: a race a real broker's death cannot be timed to hit
            link._fail_waiting("connection lost (test)")
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            os.kill(mosquitto.process.pid, signal.SIGCONT)
        await link.stop()

    assert _run_collecting_loop_errors(main) == []


def test_a_batch_whose_broker_dies_raises_one_delivery_error(mosquitto):
    async def main():
        link = await _connected_link(mosquitto)
        os.kill(mosquitto.process.pid, signal.SIGSTOP)  # the batch waits for its PUBACKs...
        task = await _batch_waiting(link, 20)
        mosquitto.process.kill()  # ...and the connection is gone: every one of them fails at once
        with pytest.raises(DeliveryError, match="connection lost"):
            await task
        assert link.waiting == {}
        await link.stop()

    assert _run_collecting_loop_errors(main) == []


def test_a_batch_without_pubacks_in_time_raises_and_leaves_no_unread_error(mosquitto):
    async def main():
        link = await _connected_link(mosquitto)
        os.kill(mosquitto.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(DeliveryError, match="no PUBACK in time"):
                await link.publish_all([(f"fp/test/{i}", b"x", False) for i in range(5)], 0.3)
            assert link.waiting == {}
        finally:
            os.kill(mosquitto.process.pid, signal.SIGCONT)
        await link.stop()

    assert _run_collecting_loop_errors(main) == []
