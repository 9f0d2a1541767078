"""The inference probe classifies every fault of the fake server the way a user would feel it."""

from __future__ import annotations

import logging
import resource
from collections.abc import AsyncIterator

import aiohttp
import pytest

from crossfade.api import HttpMethod, InferenceCheck
from crossfade.engine.observations import ProbeOutcome
from crossfade.probes.inference import (
    InferenceProbeConfig,
    ProbeMode,
    new_session,
    probe_inference,
)
from crossfade.probes.secret_headers import SecretHeaders
from crossfade.testing.inference_server import Behaviour, FakeInferenceServer

API_KEY = "sk-test-0123456789abcdef"  # a fake key that must never be logged


@pytest.fixture
async def server() -> AsyncIterator[FakeInferenceServer]:
    async with FakeInferenceServer() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as client_session:
        yield client_session


async def probe(
    session: aiohttp.ClientSession, server: FakeInferenceServer, **config: object
) -> tuple[ProbeOutcome, str, float | None]:
    settings: dict[str, object] = {"timeout_s": 2.0, **config}
    result = await probe_inference(
        session,
        placement="aws-primary",
        config=InferenceProbeConfig(url=server.base_url, **settings),  # type: ignore[arg-type]
    )
    assert result.placement == "aws-primary"
    return result.outcome, result.detail, result.latency_ms


@pytest.mark.parametrize("mode", list(ProbeMode))
async def test_healthy_endpoint_is_healthy_in_every_mode(
    session: aiohttp.ClientSession, server: FakeInferenceServer, mode: ProbeMode
) -> None:
    outcome, detail, latency_ms = await probe(session, server, mode=mode, model="m")
    assert outcome is ProbeOutcome.HEALTHY, detail
    assert detail.startswith("OK")
    assert latency_ms is not None and latency_ms >= 0


@pytest.mark.parametrize(
    ("behaviour", "knobs", "outcome", "reason"),
    [
        (Behaviour.ERROR_5XX, {"status": 500}, ProbeOutcome.FAILING, "ServerError"),
        (Behaviour.ERROR_5XX, {"status": 503}, ProbeOutcome.FAILING, "ServerError"),
        (
            Behaviour.ERROR_5XX,
            {"status": 503, "retry_after_s": 2},
            ProbeOutcome.OVERLOADED,
            "Backpressure",
        ),
        (Behaviour.TOO_MANY_REQUESTS, {}, ProbeOutcome.OVERLOADED, "RateLimited"),
        (Behaviour.SLOW, {"delay_s": 0.3}, ProbeOutcome.OVERLOADED, "SlowResponse"),
        (Behaviour.HANG, {}, ProbeOutcome.FAILING, "Timeout"),
        (Behaviour.CLOSE_CONNECTION, {}, ProbeOutcome.FAILING, "ConnectionError"),
        (Behaviour.GARBAGE_BODY, {}, ProbeOutcome.FAILING, "MalformedBody"),
        (Behaviour.INVALID_UTF8, {}, ProbeOutcome.FAILING, "InvalidUTF8"),
        (Behaviour.REDIRECT_LOOP, {}, ProbeOutcome.FAILING, "Redirect"),
        (Behaviour.HUGE_BODY, {}, ProbeOutcome.FAILING, "BodyTooLarge"),
    ],
)
async def test_fault_is_classified(
    session: aiohttp.ClientSession,
    server: FakeInferenceServer,
    behaviour: Behaviour,
    knobs: dict[str, object],
    outcome: ProbeOutcome,
    reason: str,
) -> None:
    server.set_behaviour(behaviour, **knobs)
    seen, detail, _ = await probe(
        session, server, overloaded_latency_ms=150.0, timeout_s=1.0, max_body_bytes=256 * 1024
    )
    assert (seen, detail.split(":")[0]) == (outcome, reason), detail


async def test_connection_refused_is_failing(session: aiohttp.ClientSession) -> None:
    async with FakeInferenceServer() as gone:
        url = gone.base_url
    result = await probe_inference(
        session, placement="p", config=InferenceProbeConfig(url=url, timeout_s=1.0)
    )
    assert result.outcome is ProbeOutcome.FAILING
    assert result.detail.startswith("ConnectionError")


async def test_streaming_probe_reports_time_to_first_token(
    session: aiohttp.ClientSession, server: FakeInferenceServer
) -> None:
    server.set_behaviour(Behaviour.SLOW_STREAM, delay_s=0.2, stream_chunks=3)
    outcome, detail, ttfb_ms = await probe(
        session, server, mode=ProbeMode.CHAT, stream=True, overloaded_latency_ms=100.0
    )
    assert outcome is ProbeOutcome.OVERLOADED, detail
    assert ttfb_ms is not None and ttfb_ms >= 200.0
    total_ms = float(detail.split("total_ms=")[1])
    # the stream went on after the first token: three chunks, each 0.2 s apart
    assert total_ms >= 3 * 200.0 > ttfb_ms


async def test_streaming_probe_is_healthy_on_a_fast_stream(
    session: aiohttp.ClientSession, server: FakeInferenceServer
) -> None:
    outcome, detail, ttfb_ms = await probe(session, server, mode=ProbeMode.COMPLETION, stream=True)
    assert outcome is ProbeOutcome.HEALTHY, detail
    assert "ttfb_ms=" in detail and ttfb_ms is not None


async def test_stream_slower_than_the_timeout_is_failing(
    session: aiohttp.ClientSession, server: FakeInferenceServer
) -> None:
    server.set_behaviour(Behaviour.SLOW_STREAM, delay_s=0.3, stream_chunks=10)
    outcome, detail, _ = await probe(
        session, server, mode=ProbeMode.CHAT, stream=True, timeout_s=0.5
    )
    assert (outcome, detail.split(":")[0]) == (ProbeOutcome.FAILING, "Timeout")


async def test_garbage_instead_of_a_stream_is_failing(
    session: aiohttp.ClientSession, server: FakeInferenceServer
) -> None:
    server.set_behaviour(Behaviour.GARBAGE_BODY)
    outcome, detail, _ = await probe(session, server, mode=ProbeMode.CHAT, stream=True)
    assert outcome is ProbeOutcome.FAILING
    assert detail.startswith("MalformedBody")


async def test_hundred_megabyte_body_is_cut_off_with_bounded_memory(
    session: aiohttp.ClientSession, server: FakeInferenceServer
) -> None:
    server.set_behaviour(Behaviour.HUGE_BODY, huge_body_bytes=100 * 1024 * 1024)
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome, detail, _ = await probe(session, server, max_body_bytes=1024 * 1024, timeout_s=5.0)
    peak_after_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert (outcome, detail.split(":")[0]) == (ProbeOutcome.FAILING, "BodyTooLarge")
    # the server and the probe share this process; 100 MB read in would show up here
    assert peak_after_kib - peak_before_kib < 50 * 1024
    # and the session still works afterwards
    server.set_behaviour(Behaviour.HEALTHY)
    assert (await probe(session, server))[0] is ProbeOutcome.HEALTHY


async def test_api_key_is_sent_but_never_logged_or_reported(
    session: aiohttp.ClientSession,
    server: FakeInferenceServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = SecretHeaders({"Authorization": f"Bearer {API_KEY}"})
    caplog.set_level(logging.DEBUG)
    for behaviour in (Behaviour.HEALTHY, Behaviour.ERROR_5XX, Behaviour.REDIRECT_LOOP):
        server.set_behaviour(behaviour)
        _, detail, _ = await probe(session, server, headers=headers)
        assert API_KEY not in detail
    assert server.requests.last_headers["Authorization"] == f"Bearer {API_KEY}"
    assert server.requests.by_path == {"/v1/models": 3}  # the redirect was not followed
    logged = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    assert "inference probe" in caplog.text
    assert API_KEY not in logged
    assert API_KEY not in repr(headers) and API_KEY not in str(headers)


async def test_admin_endpoint_flips_behaviour_for_other_processes(
    session: aiohttp.ClientSession, server: FakeInferenceServer
) -> None:
    async with session.put(server.admin_url, json={"behaviour": "429"}) as response:
        assert response.status == 200
    assert (await probe(session, server))[0] is ProbeOutcome.OVERLOADED
    async with session.put(server.admin_url, json={"behaviour": "no-such"}) as response:
        assert response.status == 400
    async with session.get(server.admin_url) as response:
        assert (await response.json())["behaviour"] == "429"
    async with session.put(server.admin_url, json={"behaviour": "healthy"}) as response:
        assert response.status == 200
    assert (await probe(session, server))[0] is ProbeOutcome.HEALTHY


async def test_config_from_the_pools_health_check_posts_its_body(
    session: aiohttp.ClientSession, server: FakeInferenceServer
) -> None:
    check = InferenceCheck(
        path="/v1/chat/completions",
        method=HttpMethod.POST,
        body='{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}',
        timeout_seconds=2,
        overloaded_latency_milliseconds=150,
    )
    config = InferenceProbeConfig.from_check(check, url=server.base_url + "/")
    assert not config.stream and config.overloaded_latency_ms == 150.0
    result = await probe_inference(session, placement="p", config=config)
    assert result.outcome is ProbeOutcome.HEALTHY, result.detail
    assert server.requests.by_path == {"/v1/chat/completions": 1}

    server.set_behaviour(Behaviour.SLOW, delay_s=0.3)
    slow = await probe_inference(session, placement="p", config=config)
    assert slow.outcome is ProbeOutcome.OVERLOADED


async def test_streaming_body_in_the_health_check_measures_time_to_first_token(
    session: aiohttp.ClientSession, server: FakeInferenceServer
) -> None:
    check = InferenceCheck(
        path="/v1/completions",
        method=HttpMethod.POST,
        body='{"model": "m", "prompt": "hi", "max_tokens": 2, "stream": true}',
    )
    config = InferenceProbeConfig.from_check(check, url=server.base_url)
    assert config.stream
    server.set_behaviour(Behaviour.SLOW_STREAM, delay_s=0.05, stream_chunks=2)
    result = await probe_inference(session, placement="p", config=config)
    assert result.outcome is ProbeOutcome.HEALTHY and "ttfb_ms=" in result.detail


async def test_expected_status_and_plain_health_paths(
    session: aiohttp.ClientSession, server: FakeInferenceServer
) -> None:
    # vLLM's /health answers 200 with an empty body: no JSON shape is asked of other paths
    health = InferenceProbeConfig(url=server.base_url, path="/health")
    result = await probe_inference(session, placement="p", config=health)
    assert result.outcome is ProbeOutcome.HEALTHY, result.detail
    missing = InferenceProbeConfig(url=server.base_url, path="/nope", expected_status=404)
    result = await probe_inference(session, placement="p", config=missing)
    assert result.outcome is ProbeOutcome.HEALTHY, result.detail
    wrong = InferenceProbeConfig(url=server.base_url, expected_status=204)
    result = await probe_inference(session, placement="p", config=wrong)
    assert (result.outcome, result.detail.split(":")[0]) == (
        ProbeOutcome.FAILING,
        "UnexpectedStatus",
    )
    server.set_behaviour(Behaviour.ERROR_5XX, status=502)
    result = await probe_inference(session, placement="p", config=health)
    assert (result.outcome, result.detail.split(":")[0]) == (ProbeOutcome.FAILING, "ServerError")
