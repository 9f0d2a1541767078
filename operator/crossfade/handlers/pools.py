"""kopf handlers of InferencePool: validation on create/update, one loop per pool, finalizer."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from crossfade.api.fields import ConditionType
from crossfade.engine.plan import ConditionStatus, EmitEvent, SetCondition
from crossfade.engine.policy import policy_from_spec
from crossfade.engine.weights import all_to
from crossfade.handlers.health import ProcessHealth
from crossfade.handlers.kept_bodies import compact_kept_object, compact_watch_event
from crossfade.handlers.metrics import OperatorMetrics
from crossfade.handlers.reconcile import PassOutcome, PoolRuntime, reconcile_once
from crossfade.handlers.status import iso_time, merge_conditions, status_patch
from crossfade.handlers.wakeup import PoolWakeups, run_pool_loop
from crossfade.handlers.wiring import SharedClients, WiringError, build_runtime
from crossfade.logging import log_context
from crossfade.providers.base import idempotency_token
from crossfade.providers.errors import ProviderError
from crossfade.providers.provisioned import provisioned_of
from crossfade.routers.base import RouterError

log = logging.getLogger(__name__)

GROUP = "crossfade.dev"
VERSION = "v1alpha1"
PLURAL = "inferencepools"
MERGE_PATCH = "application/merge-patch+json"
# A failed pass is retried after this even when the pool's period is longer.
ERROR_RETRY_S = 5.0
MIN_PERIOD_S = 0.5
DELETION_RETAIN = "Retain"
DELETION_SCALE_TO_MIN = "ScaleToMin"
DELETION_DELETE = "Delete"


@dataclass(slots=True)
class OperatorContext:
    """Process-wide objects the handlers share (closed over, not global)."""

    metrics: OperatorMetrics
    health: ProcessHealth
    clients: SharedClients = field(default_factory=SharedClients)
    period_override_s: float | None = None
    runtimes: dict[str, tuple[int, PoolRuntime]] = field(default_factory=dict)
    # Wakes a sleeping pool loop on a spec or manual-control change (handlers/wakeup.py).
    wakeups: PoolWakeups = field(default_factory=PoolWakeups)


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """Return a plain-dict snapshot of a kopf body (live views change under our feet)."""
    return {key: body[key] for key in body}


def invalid_spec_reason(spec: Mapping[str, Any]) -> str | None:
    """Return why a spec cannot be served, or None when it is usable."""
    try:
        policy = policy_from_spec(spec)
    except (ValueError, KeyError, TypeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    names = policy.names
    if len(set(names)) != len(names):
        return "placement names must be unique"
    return None


class PoolWriter:
    """Writes status, annotations and Events of one pool; remembers what it last wrote.

    kopf's watched body can lag behind our own writes. ``freshest`` returns the newest
    object known, comparing resourceVersions only for equality (they are opaque strings;
    the API conventions forbid ordering them): the object our last write returned (or a
    fresh read) stays authoritative while the watch delivers a version seen before that
    write (``_behind``: watched versions and our own earlier answers). When the watch
    delivers our version, it has caught up; any other version is a foreign write of
    unknown order, so the object is read once from the API instead of guessing.
    """

    def __init__(self, *, api_client: Any, namespace: str, name: str) -> None:
        # Typed as Any: the stubs omit ``_content_type``, which custom objects need, since
        # the client would otherwise send a JSON patch content type for a dict body.
        self._api: Any = k8s.CustomObjectsApi(api_client)
        self._namespace = namespace
        self._name = name
        self.last_object: dict[str, Any] | None = None
        self._behind: set[str] = set()
        self._watched: str | None = None

    async def freshest(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return the newest known object: our last write's answer until the watch catches up."""
        snapshot = plain(body)
        version = _version(snapshot)
        self._watched = version
        if self.last_object is None:
            return snapshot
        if version == _version(self.last_object):
            self.last_object, self._behind = None, set()
            return snapshot
        if version is not None and version in self._behind:
            return self.last_object
        fresh: dict[str, Any] = await self._api.get_namespaced_custom_object(
            GROUP, VERSION, self._namespace, PLURAL, self._name
        )
        self._remember(fresh)
        if _version(fresh) == version:
            self.last_object, self._behind = None, set()
            return snapshot
        return fresh

    def _remember(self, answer: dict[str, Any]) -> None:
        """Make ``answer`` authoritative; what the watch showed before it is now behind."""
        for older in (self._watched, _version(self.last_object or {})):
            if older is not None:
                self._behind.add(older)
        compact_kept_object(answer)
        self.last_object = answer

    async def patch_status(self, patch: Mapping[str, Any]) -> None:
        answer = await self._api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self._namespace,
            PLURAL,
            self._name,
            {"status": dict(patch)},
            _content_type=MERGE_PATCH,
        )
        self._remember(answer)

    async def patch_annotations(self, patch: Mapping[str, str | None]) -> None:
        answer = await self._api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self._namespace,
            PLURAL,
            self._name,
            {"metadata": {"annotations": dict(patch)}},
            _content_type=MERGE_PATCH,
        )
        self._remember(answer)


def _version(obj: Mapping[str, Any]) -> str | None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return str(version) if version is not None else None


def post_events(body: Any, events: list[EmitEvent]) -> None:
    """Post Events on the pool (deduplicated within one pass)."""
    seen: set[tuple[str, str, str]] = set()
    for event in events:
        key = (str(event.type), event.reason, event.message)
        if key in seen:
            continue
        seen.add(key)
        kopf.event(body, type=str(event.type), reason=event.reason, message=event.message[:1024])


def record_metrics(
    context: OperatorContext, *, namespace: str, name: str, outcome: PassOutcome, now: float
) -> None:
    """Update gauges, counters and the detection-to-shift histogram from one pass."""
    decision = outcome.decision
    if decision is None:
        return
    m = context.metrics
    state = decision.state
    m.observe_pool(
        namespace=namespace,
        pool=name,
        health={n: str(p.health) for n, p in state.placements.items()},
        weights=state.weights,
        desired={n: p.desired for n, p in state.placements.items()},
        fail_static=state.fail_static,
    )
    report = outcome.report
    if report is None:
        return
    for transition in report.transitions:
        m.failovers.labels(namespace, name, transition.reason).inc()
        source = state.placements.get(transition.from_placement or "")
        since = source.unhealthy_since if source is not None else None
        if since is not None and report.applied and now >= since:
            m.detection_to_shift.labels(namespace, name).observe(now - since)


def register(registry: Any, context: OperatorContext) -> None:
    """Register every InferencePool handler on ``registry`` (kopf.OperatorRegistry)."""
    resource = {"group": GROUP, "version": VERSION, "plural": PLURAL, "registry": registry}

    @kopf.on.create(**resource, field="spec")
    @kopf.on.update(**resource, field="spec")
    @kopf.on.resume(**resource)
    async def validate(**kwargs: Any) -> None:
        body: kopf.Body = kwargs["body"]
        spec, namespace, name = kwargs["spec"], str(kwargs["namespace"]), str(kwargs["name"])
        with log_context(pool=_key(namespace, name)):
            problem = invalid_spec_reason(dict(spec))
            if problem is not None:
                kopf.event(body, type="Warning", reason="InvalidSpec", message=problem[:1024])
                await _write_invalid(context, body=body, message=problem)
                return

    @kopf.daemon(**resource, cancellation_timeout=10.0)
    async def pool_loop(**kwargs: Any) -> None:
        stopped: kopf.DaemonStopped = kwargs["stopped"]
        body: kopf.Body = kwargs["body"]
        namespace, name = str(kwargs["namespace"]), str(kwargs["name"])
        writer = PoolWriter(
            api_client=context.clients.kube_api_client, namespace=namespace, name=name
        )
        with log_context(pool=_key(namespace, name)):
            log.info("pool loop started")
            await run_pool_loop(
                _key(namespace, name),
                body=body,
                stopped=stopped,
                wakeups=context.wakeups,
                one_pass=lambda: _one_pass(context, body=body, writer=writer),
                after_pass=context.health.tick,
            )
            log.info("pool loop stopped")

    @kopf.on.event(**resource)
    async def wake_on_change(**kwargs: Any) -> None:
        # Every watch event of a pool; only a new generation or a changed manual-control
        # annotation wakes its loop, so the operator's own writes wake nothing.
        compact_watch_event(kwargs["event"])
        context.wakeups.offer(_key(str(kwargs["namespace"]), str(kwargs["name"])), kwargs["body"])

    @kopf.on.delete(**resource)
    async def finalize(**kwargs: Any) -> None:
        body: kopf.Body = kwargs["body"]
        spec, namespace, name = kwargs["spec"], str(kwargs["namespace"]), str(kwargs["name"])
        with log_context(pool=_key(namespace, name)):
            await _finalize(
                context,
                body=body,
                spec=dict(spec),
                namespace=namespace,
                name=name,
                uid=str((body.get("metadata") or {}).get("uid") or ""),
            )


async def _write_invalid(context: OperatorContext, *, body: kopf.Body, message: str) -> None:
    snapshot = plain(body)
    meta = snapshot.get("metadata") or {}
    stored = snapshot.get("status") or {}
    generation = meta.get("generation")
    conditions = [c for c in stored.get("conditions") or () if c.get("type") != "Ready"]
    conditions.append(
        {
            "type": "Ready",
            "status": str(ConditionStatus.FALSE),
            "reason": "InvalidSpec",
            "message": message[:512],
            "lastTransitionTime": iso_time(time.time()),
            "observedGeneration": generation,
        }
    )
    patch = status_patch(stored, {**stored, "conditions": conditions, "phase": "Invalid"})
    if patch:
        writer = PoolWriter(
            api_client=context.clients.kube_api_client,
            namespace=str(meta.get("namespace")),
            name=str(meta.get("name")),
        )
        await writer.patch_status(patch)


def wiring_failure_status(
    stored: Mapping[str, Any], error: WiringError, *, now: float, generation: int | None
) -> dict[str, Any]:
    """Return the status merge patch recording ``error`` as Ready=False; {} when already there.

    Nothing clears it explicitly: once wiring succeeds, the engine sets Ready on every pass
    (engine/decide.py), which replaces this reason and message. ``observedGeneration``
    advances too: the pass read this generation's spec, and Ready tells what came of it
    (a spec change that cannot be wired is answered, not left looking unseen).
    """
    failed = SetCondition(ConditionType.READY, ConditionStatus.FALSE, error.reason, error.message)
    conditions = merge_conditions(
        stored.get("conditions"), [failed], now=now, observed_generation=generation
    )
    built: dict[str, Any] = {**stored, "conditions": conditions}
    if generation is not None:
        built["observedGeneration"] = generation
    # status.phase is not in the CRD schema (the apiserver prunes it), so it is not written.
    return status_patch(stored, built)


async def _write_wiring_failure(
    writer: PoolWriter, *, snapshot: Mapping[str, Any], error: WiringError, now: float
) -> None:
    generation = (snapshot.get("metadata") or {}).get("generation")
    patch = wiring_failure_status(
        snapshot.get("status") or {},
        error,
        now=now,
        generation=int(generation) if generation is not None else None,
    )
    if not patch:
        return
    try:
        await writer.patch_status(patch)
    except (ApiException, OSError, TimeoutError) as exc:
        log.warning("cannot record the wiring failure in status: %s", exc)


async def _runtime(context: OperatorContext, *, snapshot: Mapping[str, Any]) -> PoolRuntime:
    meta = snapshot.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    generation = int(meta.get("generation") or 0)
    key = _key(namespace, name)
    cached = context.runtimes.get(key)
    if cached is not None and cached[0] == generation:
        return cached[1]
    runtime, problems = await build_runtime(
        spec=snapshot.get("spec") or {},
        namespace=namespace,
        name=name,
        clients=context.clients,
        uid=str(meta.get("uid") or ""),
    )
    for problem in problems:
        log.warning("pool wiring: %s: %s", problem.reason, problem.message)
    if cached is not None:
        runtime.state = cached[1].state  # a spec change keeps the engine's memory
        runtime.manual_seen = cached[1].manual_seen
        runtime.last_events = cached[1].last_events
        await cached[1].close()
    context.runtimes[key] = (generation, runtime)
    return runtime


async def _one_pass(context: OperatorContext, *, body: kopf.Body, writer: PoolWriter) -> float:
    """Run one pass; return seconds to wait before the next."""
    try:
        snapshot = await writer.freshest(body)
    except (ApiException, OSError, TimeoutError) as exc:
        log.warning("pass skipped: cannot read the pool: %s", exc)
        return ERROR_RETRY_S
    meta = snapshot.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    spec = snapshot.get("spec") or {}
    if invalid_spec_reason(spec) is not None:
        return ERROR_RETRY_S
    policy = policy_from_spec(spec)
    period = context.period_override_s or float(policy.period_s)
    started = time.monotonic()
    now = time.time()
    try:
        runtime = await _runtime(context, snapshot=snapshot)

        async def persist(patch: Mapping[str, str | None]) -> None:
            await writer.patch_annotations(patch)

        outcome = await reconcile_once(
            body=snapshot, runtime=runtime, now=now, metrics=context.metrics, persist=persist
        )
        if outcome.annotations_patch:
            await writer.patch_annotations(outcome.annotations_patch)
        if outcome.status_patch:
            await writer.patch_status(outcome.status_patch)
            context.metrics.status_writes.labels(namespace, name).inc()
        post_events(body, outcome.events)
        record_metrics(context, namespace=namespace, name=name, outcome=outcome, now=now)
    except WiringError as exc:
        kopf.event(body, type="Warning", reason=exc.reason, message=exc.message[:1024])
        await _write_wiring_failure(writer, snapshot=snapshot, error=exc, now=now)
        context.metrics.reconcile_errors.labels(namespace, name).inc()
        return max(period, ERROR_RETRY_S)
    except (ApiException, OSError, TimeoutError) as exc:
        log.warning("pass failed talking to the API: %s", exc)
        context.metrics.reconcile_errors.labels(namespace, name).inc()
        return min(period, ERROR_RETRY_S)
    finally:
        context.metrics.reconcile_duration.observe(time.monotonic() - started)
    return max(MIN_PERIOD_S, period)


async def _finalize(
    context: OperatorContext,
    *,
    body: kopf.Body,
    spec: Mapping[str, Any],
    namespace: str,
    name: str,
    uid: str = "",
) -> None:
    """Honour deletionPolicy and leave traffic on a placement that keeps capacity.

    ScaleToMin scales every placement to nodes.min. Delete does that for placements without
    a template and deletes the node groups crossfade created for templated ones (only those
    with this pool's ownership tags); traffic first moves to a placement that stays.
    """
    policy_name = str(spec.get("deletionPolicy") or DELETION_RETAIN)
    key = _key(namespace, name)
    cached = context.runtimes.pop(key, None)
    runtime: PoolRuntime | None = cached[1] if cached else None
    if runtime is None:
        try:
            runtime, _ = await build_runtime(
                spec=spec, namespace=namespace, name=name, clients=context.clients, uid=uid
            )
        except WiringError as exc:
            log.warning("finalizer cannot build routers (%s); leaving traffic as is", exc)
            runtime = None
    names: list[str] = []
    if invalid_spec_reason(spec) is None:
        policy = policy_from_spec(spec)
        names = list(policy.names)
        shrink = policy_name in (DELETION_SCALE_TO_MIN, DELETION_DELETE)
        if shrink and runtime is not None:
            doomed = {
                placement_name
                for placement_name, provider in runtime.providers.items()
                if policy_name == DELETION_DELETE and provisioned_of(provider) is not None
            }
            keep = next(
                (p.name for p in policy.placements if p.min_nodes > 0 and p.name not in doomed),
                None,
            )
            if keep is not None:
                for router in runtime.routers:
                    try:
                        await router.apply(all_to(keep, policy.names))
                    except RouterError as exc:
                        log.warning("finalizer: weights on %s: %s", router.name, exc.message)
            for placement in policy.placements:
                provider = runtime.providers.get(placement.name)
                if provider is None:
                    continue
                if placement.name in doomed:
                    await _delete_created(body, provider)
                    continue
                token = idempotency_token(key, "delete", placement.name, placement.min_nodes)
                templated = provisioned_of(provider)
                try:
                    if templated is not None:
                        await templated.scale_if_present(desired=placement.min_nodes, token=token)
                    else:
                        await provider.scale(desired=placement.min_nodes, token=token)
                except ProviderError as exc:
                    # Deletion must not hang on a cloud error; the Event tells the owner.
                    kopf.event(
                        body,
                        type="Warning",
                        reason="ScaleToMinFailed",
                        message=f"{placement.name}: {exc.kind}: {exc.message}"[:1024],
                    )
    if runtime is not None:
        # Closed last: the providers' clients are needed for ScaleToMin and Delete above.
        await runtime.close()
    context.metrics.forget_pool(namespace=namespace, pool=name, placements=names)
    log.info("pool finalized with deletionPolicy %s", policy_name)


async def _delete_created(body: kopf.Body, provider: Any) -> None:
    """Delete the node groups crossfade created for one placement (deletionPolicy Delete)."""
    provisioned = provisioned_of(provider)
    if provisioned is None:
        return
    placement = provisioned.target.owner.placement
    try:
        deleted = await provisioned.delete_owned()
    except ProviderError as exc:
        # Deletion must not hang on a cloud error; the orphan reaper deletes it later
        # (the node group's tags record the Delete policy).
        kopf.event(
            body,
            type="Warning",
            reason="NodeGroupDeleteFailed",
            message=f"{placement}: {exc.kind}: {exc.code}: {exc.message}"[:1024],
        )
        return
    for node_group in deleted:
        kopf.event(
            body,
            type="Normal",
            reason="NodeGroupDeleted",
            message=f"{placement}: deleted node group {node_group} (deletionPolicy Delete)",
        )
