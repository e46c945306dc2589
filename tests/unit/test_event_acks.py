"""/events waits for Kafka's acknowledgements without blocking the event loop (which also
answers feeds): kafka-python's produce futures, settled from another thread as its I/O thread
settles them."""

import asyncio
import threading

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from serving.app import acknowledged


def settle_later(futures, delay_s: float, error: Exception | None = None) -> None:
    def run():
        for f in futures:
            f.failure(error) if error else f.success("metadata")
    threading.Timer(delay_s, run).start()


def test_waits_for_every_record_while_the_loop_keeps_running():
    async def scenario():
        futures = [Future(), Future().success("already")]
        settle_later(futures[:1], 0.3)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
        t = asyncio.create_task(ticker())
        await acknowledged(futures, timeout_s=5)
        t.cancel()
        return futures[0].succeeded(), ticks
    done, ticks = asyncio.run(scenario())
    assert done and ticks >= 10  # the loop ran other work during the 0.3 s wait


def test_a_failed_record_raises_its_error():
    async def scenario():
        futures = [Future(), Future()]
        settle_later(futures, 0.05, KafkaTimeoutError("no broker"))
        await acknowledged(futures, timeout_s=5)
    with pytest.raises(KafkaTimeoutError, match="no broker"):
        asyncio.run(scenario())


def test_records_never_acknowledged_time_out():
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(acknowledged([Future()], timeout_s=0.1))
