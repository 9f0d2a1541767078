"""Hostile endpoints: TLS failures, and a pool full of bad servers beside a good one."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from crossfade.engine.observations import ProbeOutcome, ProbeResult
from crossfade.probes.inference import InferenceProbeConfig, new_session, probe_inference
from crossfade.probes.scheduler import Observation, ProbeScheduler
from crossfade.probes.specs import inference_spec
from crossfade.testing.inference_server import Behaviour, FakeInferenceServer, Knobs

WAIT_S = 30.0


def self_signed_context(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
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
