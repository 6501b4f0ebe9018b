"""NATS not answering (a node cut off, a leader being elected, here the server paused): the
gateway says so with a 503 and Retry-After, never a 500, and answers again once NATS does
(issue 18; on the three-node cluster, tests/chaos/test_partition.py)."""

import asyncio
import os
import signal
import time

import pytest

from tests.support.stack import Stack

pytestmark = pytest.mark.e2e


async def test_the_gateway_answers_503_while_nats_does_not_and_recovers():
    stack = Stack().start()
    try:
        async with stack.client(timeout=60) as client:
            created = await stack.submit(client, "Before the pause")
            nats_pid = stack.pid("nats")
            os.kill(nats_pid, signal.SIGSTOP)
            try:
                read = await client.get(f"/api/orchestrate/task/{created['id']}")
                submitted = await client.post("/api/orchestrate/task", json={"description": "During the pause"})
            finally:
                os.kill(nats_pid, signal.SIGCONT)
            for answer in (read, submitted):
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == "2"
                assert "NATS" in answer.json()["detail"]
            # Back: the gateway may be reconnecting first (its pings went unanswered meanwhile).
            deadline = time.monotonic() + 60
            while (read := await client.get(f"/api/orchestrate/task/{created['id']}")).status_code != 200:
                assert read.status_code == 503 and time.monotonic() < deadline, read.text
                await asyncio.sleep(0.5)
    finally:
        stack.stop()
