"""Builds ProbeSpecs for the scheduler from the three probe kinds (inference, nodes, cloud)."""

from __future__ import annotations

import aiohttp

from crossfade.engine.observations import ProbeOutcome, ProbeResult
from crossfade.probes.cloud import CloudProbe
from crossfade.probes.inference import InferenceProbeConfig, probe_inference
from crossfade.probes.nodes import NodeCache
from crossfade.probes.scheduler import Observation, ProbeSpec

DEFAULT_INFERENCE_PERIOD_S = 5.0
DEFAULT_NODE_PERIOD_S = 10.0
DEFAULT_CLOUD_PERIOD_S = 30.0
# The scheduler's hard timeout sits a little above the probe's own deadline, so the probe
# normally reports its own (more precise) timeout and the hard one only catches bugs.
HARD_TIMEOUT_MARGIN_S = 1.0
NODE_READ_TIMEOUT_S = 1.0


def inference_spec(
    session: aiohttp.ClientSession,
    *,
    placement: str,
    config: InferenceProbeConfig,
    period_s: float = DEFAULT_INFERENCE_PERIOD_S,
) -> ProbeSpec:
    async def run() -> Observation:
        return await probe_inference(session, placement=placement, config=config)

    def on_failure(at: float, reason: str) -> Observation:
        return ProbeResult(placement=placement, at=at, outcome=ProbeOutcome.FAILING, detail=reason)

    return ProbeSpec(
        name=f"inference/{placement}",
        period_s=period_s,
        timeout_s=config.timeout_s + HARD_TIMEOUT_MARGIN_S,
        run=run,
        fingerprint=config,
        on_failure=on_failure,
    )


def node_spec(
    cache: NodeCache, *, placement: str, period_s: float = DEFAULT_NODE_PERIOD_S
) -> ProbeSpec:
    """Reads the watch-backed cache: no API call per period. Unsynced caches report an error."""

    async def run() -> Observation:
        return cache.observe(placement=placement)

    return ProbeSpec(
        name=f"nodes/{placement}",
        period_s=period_s,
        timeout_s=NODE_READ_TIMEOUT_S,
        run=run,
        fingerprint=(id(cache), cache.selector),
    )


def cloud_spec(probe: CloudProbe, *, period_s: float = DEFAULT_CLOUD_PERIOD_S) -> ProbeSpec:
    async def run() -> Observation:
        return await probe.observe_or_last()

    return ProbeSpec(
        name=f"cloud/{probe.placement}",
        period_s=period_s,
        timeout_s=probe.timeout_s + HARD_TIMEOUT_MARGIN_S,
        run=run,
        fingerprint=(id(probe), probe.timeout_s),
    )
