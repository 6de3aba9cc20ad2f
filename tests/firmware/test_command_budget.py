"""The real firmware (MicroPython unix port) answers junk on its command topic within a budget."""

from __future__ import annotations

import time

from fp import topics
from tests.firmware.conftest import owner_command, wait_for

BURST = 8  # fp.command._REFUSAL_ACK_BURST
REFILL_S = 1.0  # fp.command._REFUSAL_ACK_MS


def test_50_junk_commands_get_a_bounded_number_of_signed_acks_and_the_owner_is_still_answered(
    owned_counter_device,
):
    vendor, owner, device, device_id = owned_counter_device
    wait_for(lambda: vendor.values("n"), 15, "the device up")

    started = time.monotonic()
    for index in range(50):
        vendor.client.publish(topics.topic(device_id, "command"), b"\xd2\x84junk %d" % index, qos=1)
    info = owner_command(owner, vendor, device_id, "get-info", {}, timeout_s=20)
    assert info["outcome"] == "applied"
    assert info["result"]["refused"] == 50

    def refusals_seen():  # the burst's acks may still be on their way from the broker
        seen = [ack for ack in vendor.ack_log if ack["outcome"] == "malformed"]
        return len(seen) >= BURST and seen

    refusals = wait_for(refusals_seen, 10, "the burst of refusals")
    elapsed_s = time.monotonic() - started
    allowed = BURST + int(elapsed_s / REFILL_S) + 1
    assert BURST <= len(refusals) <= allowed, (len(refusals), elapsed_s)
    assert info["result"]["unanswered"] == 50 - len(refusals)

    # the budget refills: after a pause, a refused command is answered again
    time.sleep(2 * REFILL_S)
    count = len(vendor.ack_log)
    vendor.client.publish(topics.topic(device_id, "command"), b"\xd2\x84junk again", qos=1)
    wait_for(lambda: len(vendor.ack_log) > count, 10, "an ack for the refused command")
    assert vendor.ack_log[count]["outcome"] == "malformed"
