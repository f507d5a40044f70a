"""The gateway's pipelined Redis client against a real redis-server: scripts (and their reload after the
server forgot them), concurrent callers matched to their own replies, errors, a dead server, a restart."""

from __future__ import annotations

import asyncio
import subprocess

import hiredis
import pytest
import redis
from tests.servers import Redis, _wait_port

from tuneforge.gateway.resp import PipelinedRedis

ECHO = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) * 2}"


def test_scripts_get_and_many_concurrent_callers_each_get_their_own_reply(tmp_path):
    server = Redis(tmp_path)
    try:
        redis.Redis.from_url(server.url.replace("/0", "/3")).set("greeting", b"hello")

        async def run() -> None:
            # the gateway's 1 s per-command bound is not what is tested: 500 callers on a loaded 2-core CI machine
            # took over a second once (a timeout, not a wrong reply); this test checks which reply each caller gets
            client = PipelinedRedis(server.url.replace("/0", "/3"), timeout_s=30.0)
            echo = client.register_script(ECHO)
            replies = await asyncio.gather(*(echo(keys=[f"k{i}"], args=[f"v{i}", i]) for i in range(500)))
            assert replies == [[f"k{i}".encode(), f"v{i}".encode(), 2 * i] for i in range(500)]
            assert await client.get("greeting") == b"hello"  # db 3 was selected before any command ran
            assert await client.get("missing") is None
            redis.Redis.from_url(server.url).script_flush()  # the server forgets the script: loaded again
            assert await echo(keys=["a"], args=["b", 21]) == [b"a", b"b", 42]
            with pytest.raises(hiredis.ReplyError, match="boom"):
                await client.register_script("return redis.error_reply('boom')")()
            assert await echo(keys=["x"], args=["y", 1]) == [b"x", b"y", 2]  # the error did not shift replies
            await client.aclose()

        asyncio.run(run())
    finally:
        server.stop()


def test_a_dead_server_fails_fast_and_a_restarted_one_is_used_again(tmp_path):
    server = Redis(tmp_path)
    try:
        async def run() -> None:
            client = PipelinedRedis(server.url, timeout_s=1.0)
            echo = client.register_script(ECHO)
            assert await echo(keys=["a"], args=["b", 1]) == [b"a", b"b", 2]
            server.stop()
            with pytest.raises((ConnectionError, OSError, TimeoutError)):
                await echo(keys=["a"], args=["b", 1])
            with pytest.raises((ConnectionError, OSError, TimeoutError)):  # still down: connect refused
                await client.get("k")
            again = subprocess.Popen(["redis-server", "--port", str(server.port), "--bind", "127.0.0.1",
                                      "--save", "", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
            try:
                _wait_port(server.port, again)
                assert await echo(keys=["c"], args=["d", 5]) == [b"c", b"d", 10]  # reconnected, reloaded
            finally:
                again.terminate()
                again.wait(timeout=30)
            await client.aclose()

        asyncio.run(run())
    finally:
        server.stop()


def test_only_plain_redis_urls_take_the_pipelined_client():
    with pytest.raises(ValueError, match="redis_url"):
        PipelinedRedis("rediss://example.invalid:6380/0")
