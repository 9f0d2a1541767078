"""Hostile endpoints: TLS failures, a pool of bad servers beside a good one, network faults."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from crossfade.engine.health import observe_capacity, observe_health
from crossfade.engine.observations import NodeObservation, ProbeOutcome, ProbeResult
from crossfade.engine.policy import PoolPolicy
from crossfade.engine.state import Health, PlacementState
from crossfade.probes.inference import InferenceProbeConfig, new_session, probe_inference
from crossfade.probes.scheduler import Observation, ProbeScheduler
from crossfade.probes.specs import inference_spec
from crossfade.testing.inference_server import Behaviour, FakeInferenceServer, Knobs
from crossfade.testing.self_signed import write_self_signed
from tests.engine.builders import T0, two_placements

WAIT_S = 30.0


def self_signed_context(directory: Path) -> ssl.SSLContext:
    cert_path, key_path = write_self_signed(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[FakeInferenceServer]:
    async with FakeInferenceServer(ssl_context=self_signed_context(tmp_path)) as server:
        yield server


async def test_untrusted_certificate_is_a_tls_failure(tls_server: FakeInferenceServer) -> None:
    assert tls_server.base_url.startswith("https://")
    async with new_session() as session:
        result = await probe_inference(
            session, placement="p", config=InferenceProbeConfig(url=tls_server.base_url)
        )
    assert (result.outcome, result.detail.split(":")[0]) == (ProbeOutcome.FAILING, "TLSError")
    assert tls_server.requests.count == 0  # nothing was sent over the unverified channel


async def test_plain_http_to_a_tls_port_is_failing(tls_server: FakeInferenceServer) -> None:
    url = tls_server.base_url.replace("https://", "http://")
    async with new_session() as session:
        result = await probe_inference(
            session, placement="p", config=InferenceProbeConfig(url=url, timeout_s=2.0)
        )
    assert result.outcome is ProbeOutcome.FAILING


HOSTILE = [
    Behaviour.HANG,
    Behaviour.CLOSE_CONNECTION,
    Behaviour.GARBAGE_BODY,
    Behaviour.HUGE_BODY,
    Behaviour.INVALID_UTF8,
    Behaviour.REDIRECT_LOOP,
    Behaviour.ERROR_5XX,
]


async def test_scheduler_keeps_probing_a_good_endpoint_beside_hostile_ones() -> None:
    seen: dict[str, list[ProbeOutcome]] = defaultdict(list)
    enough = asyncio.Event()

    def sink(pool: str, observation: Observation) -> None:
        assert isinstance(observation, ProbeResult)
        seen[observation.placement].append(observation.outcome)
        if all(len(seen[name]) >= 3 for name in [*HOSTILE, "good"]):
            enough.set()

    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(new_session())
        servers = {
            str(b): await stack.enter_async_context(
                FakeInferenceServer(knobs=Knobs(behaviour=b, huge_body_bytes=20 * 1024 * 1024))
            )
            for b in HOSTILE
        }
        servers["good"] = await stack.enter_async_context(FakeInferenceServer())
        scheduler = await stack.enter_async_context(
            ProbeScheduler(sink=sink, max_concurrency=4, per_pool_concurrency=4)
        )
        specs = [
            inference_spec(
                session,
                placement=name,
                config=InferenceProbeConfig(url=server.base_url, timeout_s=0.3),
                period_s=0.05,
            )
            for name, server in servers.items()
        ]
        await scheduler.set_pool("hostile", specs[:-1])
        await scheduler.set_pool("good", specs[-1:])
        await asyncio.wait_for(enough.wait(), WAIT_S)
        assert all(not task.done() for task in scheduler.tasks())  # every loop still alive
    for behaviour in HOSTILE:
        assert set(seen[str(behaviour)]) == {ProbeOutcome.FAILING}, behaviour
    assert set(seen["good"]) == {ProbeOutcome.HEALTHY}


# --- network-level faults below HTTP (loopback sockets, no network namespaces) -----------
# Each handler misbehaves after reading the request head. FakeInferenceServer covers the
# HTTP-level faults above; these need a raw socket.
DRIP_INTERVAL_S = 0.05
NETWORK_PROBE_TIMEOUT_S = 0.5
PROMISED_BYTES = 4096
HEAD_LIMIT_BYTES = 64 * 1024


async def _read_head(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def _head(length: int) -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def reset_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer the request with a TCP RST (SO_LINGER 0, then abort)."""
    await _read_head(reader)
    writer.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    writer.transport.abort()


async def hang_after_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send a 200 head promising a body, then nothing until the client leaves."""
    await _read_head(reader)
    writer.write(_head(PROMISED_BYTES))
    await writer.drain()
    await reader.read()
    writer.close()


async def slow_drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send the promised body one byte at a time, far slower than any probe timeout."""
    await _read_head(reader)
    writer.write(_head(PROMISED_BYTES))
    try:
        for _ in range(PROMISED_BYTES):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(DRIP_INTERVAL_S)
    except ConnectionError:
        return
    finally:
        writer.close()


async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Another service on the port: a banner that is no HTTP status line, then close."""
    await _read_head(reader)
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe garbage\r\n\r\n")
    await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def raw_server(handler: Any) -> AsyncIterator[str]:
    connections: list[tuple[asyncio.StreamWriter, asyncio.Task[Any]]] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.append((writer, task))
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await handler(reader, writer)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0, limit=HEAD_LIMIT_BYTES)
    try:
        port = server.sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer, _ in connections:
            writer.transport.abort()  # ends handlers parked on a client that already left
        await asyncio.gather(*(task for _, task in connections))
        await server.wait_closed()


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """A loopback port that drops SYNs: a listener (backlog 0) whose accept queue is full.

    What a firewall that DROPs (rather than REJECTs) looks like to the client, without
    network namespaces: the connect neither succeeds nor fails.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        filler = stack.enter_context(socket.create_connection(address, timeout=2))
        assert filler.getpeername() == address  # the one queue slot is now taken
        yield f"http://127.0.0.1:{address[1]}"


NETWORK_FAULTS: dict[str, tuple[Any, str]] = {
    "connection-reset": (reset_after_request, "ConnectionError"),
    "hang-after-headers": (hang_after_headers, "Timeout"),
    "slow-drip": (slow_drip, "Timeout"),
    "not-http": (not_http, "ConnectionError"),
    "blackhole": (None, "Timeout"),
}


@contextlib.asynccontextmanager
async def network_fault(name: str) -> AsyncIterator[str]:
    handler, _ = NETWORK_FAULTS[name]
    if handler is None:
        with blackhole() as url:
            yield url
        return
    async with raw_server(handler) as url:
        yield url


@pytest.mark.parametrize("fault", sorted(NETWORK_FAULTS))
async def test_network_fault_makes_the_placement_unhealthy_with_its_reason(fault: str) -> None:
    _, reason = NETWORK_FAULTS[fault]
    policy = two_placements()
    results: list[ProbeResult] = []
    async with network_fault(fault) as url, new_session() as session:
        config = InferenceProbeConfig(url=url, timeout_s=NETWORK_PROBE_TIMEOUT_S)
        for _ in range(policy.failure_threshold + 1):
            results.append(
                await asyncio.wait_for(
                    probe_inference(session, placement="a", config=config), timeout=WAIT_S
                )
            )
    assert {r.outcome for r in results} == {ProbeOutcome.FAILING}, results
    assert {r.detail.split(":")[0] for r in results} == {reason}, results
    # Through the engine's hysteresis: the placement turns Unhealthy and says why.
    state = serving_placement(policy)
    changes = observe_health(
        state,
        name="a",
        policy=policy,
        probes=[replace(r, at=T0 + i) for i, r in enumerate(results)],
        carries_traffic=True,
        now=T0 + len(results),
    )
    assert [c.reason for c in changes] == ["ProbeFailures"]
    assert state.health is Health.UNHEALTHY
    assert f"last: {reason}" in state.message, state.message


def serving_placement(policy: PoolPolicy) -> PlacementState:
    """Placement "a" serving on ready nodes long enough for probes to count."""
    state = PlacementState()
    observe_capacity(
        state,
        placement=policy.placement("a"),
        nodes=NodeObservation("a", T0 - 1000, 2, 2, 2),
        provider=None,
    )
    return state
