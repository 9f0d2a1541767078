"""HTTPRoute router: steer Gateway API backendRefs weights with guarded JSON patches.

Why not a server-side apply of only the weights: in the Gateway API schema ``spec.rules``
and ``rules[].backendRefs`` are ``x-kubernetes-list-type: atomic``, so field ownership
stops at ``.spec.rules``; any write that changes one weight (apply or patch) makes its
manager the owner of the whole rules list. An apply would also have to re-state every
rule from a read, and would silently put back a filter someone removed in between.
Instead we send one JSON patch (field manager ``crossfade``) that ``test``s the identity
and current weight of every backendRef it touches and ``replace``s only the weights; the
server applies it to the latest object, so concurrent edits of other fields survive, and
a concurrent edit of a weight or a backend makes the patch fail (422) and we re-plan.
The weights crossfade wrote are recorded in the ``crossfade.dev/weights`` annotation in
the same patch; live weights that differ from it are drift by another manager, named from
``metadata.managedFields`` (whoever now owns ``f:spec.f:rules``). See docs/traffic.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from crossfade.routers.base import (
    ApplyResult,
    BackendMismatchError,
    BackendNotFoundError,
    DriftPolicy,
    ReferenceNotPermittedError,
    RouteLimitExceededError,
    RouteNotFoundError,
    RouterConflictError,
    RouteReading,
    RouterError,
    RouterPermissionDeniedError,
    RouterUnavailableError,
    WeightsDriftedError,
    to_crossfade_scale,
    to_layer_scale,
    validate_weights,
)

log = logging.getLogger(__name__)

GATEWAY_GROUP = "gateway.networking.k8s.io"
HTTPROUTE_VERSION = "v1"
HTTPROUTE_PLURAL = "httproutes"
HTTPROUTE_KIND = "HTTPRoute"
REFERENCE_GRANT_VERSION = "v1beta1"  # served by every Gateway API release since v0.6
REFERENCE_GRANT_PLURAL = "referencegrants"
INFERENCE_POOL_PLURAL = "inferencepools"
INFERENCE_POOL_VERSIONS = {
    "inference.networking.k8s.io": "v1",
    "inference.networking.x-k8s.io": "v1alpha2",
}
MAX_BACKEND_REFS = 16  # HTTPRoute rules[].backendRefs maxItems
MAX_LAYER_WEIGHT = 1_000_000  # HTTPRoute backendRefs[].weight maximum
DEFAULT_REF_WEIGHT = 1  # the CRD's default when weight is omitted
FIELD_MANAGER = "crossfade"
WEIGHTS_ANNOTATION = "crossfade.dev/weights"
MAX_WRITE_ATTEMPTS = 5
CONFLICT_BACKOFF_MS = 25  # jittered, times the attempt number, so racing writers spread out


@dataclass(frozen=True)
class BackendRef:
    """What one placement's traffic goes to: a Service or an Inference Extension pool."""

    placement: str
    name: str
    kind: str = "Service"
    group: str = ""
    namespace: str | None = None
    port: int | None = None

    def matches(self, ref: Mapping[str, Any], *, route_namespace: str) -> bool:
        """Return whether a route's backendRef points at this backend."""
        same_object = (
            (ref.get("group") or "") == self.group
            and (ref.get("kind") or "Service") == self.kind
            and (ref.get("namespace") or route_namespace) == (self.namespace or route_namespace)
            and ref.get("name") == self.name
        )
        return same_object and (self.port is None or ref.get("port") == self.port)

    def describe(self, *, route_namespace: str) -> str:
        group = f".{self.group}" if self.group else ""
        return f"{self.kind}{group} {self.namespace or route_namespace}/{self.name}"


@dataclass(frozen=True)
class HTTPRouteTarget:
    """The route a pool steers, the rules to steer (empty: every rule naming our backends)."""

    namespace: str
    name: str
    backends: tuple[BackendRef, ...]
    rule_names: tuple[str, ...] = ()
    drift_policy: DriftPolicy = DriftPolicy.REASSERT
    verify_backends: bool = True

    @property
    def placements(self) -> frozenset[str]:
        return frozenset(backend.placement for backend in self.backends)


@dataclass(frozen=True)
class SelectedRule:
    """One steered rule: its index, optional name and backendRef index -> placement."""

    index: int
    name: str | None
    refs: tuple[tuple[int, str], ...]


def describe_ref(ref: Mapping[str, Any], *, route_namespace: str) -> str:
    """Return a backendRef as ``Kind[.group] namespace/name``."""
    group = f".{ref['group']}" if ref.get("group") else ""
    namespace = ref.get("namespace") or route_namespace
    return f"{ref.get('kind') or 'Service'}{group} {namespace}/{ref.get('name')}"


def select_rules(route: Mapping[str, Any], target: HTTPRouteTarget) -> list[SelectedRule]:
    """Return the rules to steer, or raise BackendMismatchError when they do not fit the pool.

    A steered rule must reference each placement's backend exactly once and nothing else:
    a weight on an unknown backend would be traffic crossfade cannot account for.
    """
    rules: Sequence[Mapping[str, Any]] = route.get("spec", {}).get("rules") or []
    selected: list[SelectedRule] = []
    for index, rule in enumerate(rules):
        rule_name = rule.get("name")
        if target.rule_names and rule_name not in target.rule_names:
            continue
        refs: Sequence[Mapping[str, Any]] = rule.get("backendRefs") or []
        mapping: list[tuple[int, str]] = []
        foreign: list[str] = []
        for ref_index, ref in enumerate(refs):
            owners = [
                b.placement
                for b in target.backends
                if b.matches(ref, route_namespace=target.namespace)
            ]
            if len(owners) == 1:
                mapping.append((ref_index, owners[0]))
            else:
                foreign.append(describe_ref(ref, route_namespace=target.namespace))
        if not target.rule_names and not mapping:
            continue  # a rule about something else on the same route
        seen = [placement for _, placement in mapping]
        missing = sorted(target.placements - set(seen))
        repeated = sorted({placement for placement in seen if seen.count(placement) > 1})
        if foreign or missing or repeated:
            label = rule_name or f"#{index}"
            details = [
                f"unknown backends {foreign}" if foreign else "",
                f"no backend for placements {missing}" if missing else "",
                f"placements referenced twice {repeated}" if repeated else "",
            ]
            raise BackendMismatchError(
                f"rule {label} of {HTTPROUTE_KIND} {target.namespace}/{target.name} does not "
                f"match the pool: {'; '.join(d for d in details if d)}"
            )
        selected.append(SelectedRule(index=index, name=rule_name, refs=tuple(mapping)))
    named = {rule.name for rule in selected}
    absent = [name for name in target.rule_names if name not in named]
    if absent:
        raise BackendMismatchError(
            f"{HTTPROUTE_KIND} {target.namespace}/{target.name} has no rule named {absent}"
        )
    if not selected:
        raise BackendMismatchError(
            f"no rule of {HTTPROUTE_KIND} {target.namespace}/{target.name} references the "
            "pool's backends"
        )
    return selected


def rule_weights(route: Mapping[str, Any], rule: SelectedRule) -> dict[str, int]:
    """Return placement -> live weight of one steered rule."""
    refs = route["spec"]["rules"][rule.index].get("backendRefs") or []
    return {
        placement: int(refs[ref_index].get("weight", DEFAULT_REF_WEIGHT))
        for ref_index, placement in rule.refs
    }


def recorded_weights(route: Mapping[str, Any]) -> dict[str, int] | None:
    """Return the weights crossfade last wrote (from its annotation), None if absent or bad."""
    raw = (route.get("metadata", {}).get("annotations") or {}).get(WEIGHTS_ANNOTATION)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in value.items()
    ):
        return None
    return value


def rules_owner(route: Mapping[str, Any]) -> str | None:
    """Return the most recent manager other than crossfade that owns ``.spec.rules``."""
    owners: list[tuple[str, str]] = []
    for entry in route.get("metadata", {}).get("managedFields") or []:
        fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:rules" in fields and entry.get("manager") != FIELD_MANAGER:
            owners.append((entry.get("time") or "", str(entry.get("manager"))))
    return max(owners)[1] if owners else None


def parent_acceptance(route: Mapping[str, Any]) -> tuple[bool | None, str, str]:
    """Summarise ``status.parents[].conditions`` as (accepted, reason, message).

    accepted is None while no parent has reported on the current generation yet.
    """
    generation = int(route.get("metadata", {}).get("generation") or 0)
    namespace = route.get("metadata", {}).get("namespace", "")
    parents = (route.get("status") or {}).get("parents") or []
    if not parents:
        return None, "Pending", "no Gateway has reported on the route yet"
    problems: list[tuple[str, str]] = []
    pending: list[str] = []
    for parent in parents:
        ref = parent.get("parentRef") or {}
        section = f"/{ref['sectionName']}" if ref.get("sectionName") else ""
        parent_namespace = ref.get("namespace") or namespace
        who = f"{ref.get('kind', 'Gateway')} {parent_namespace}/{ref.get('name')}{section}"
        conditions = {c.get("type"): c for c in parent.get("conditions") or []}
        for kind in ("Accepted", "ResolvedRefs"):
            condition = conditions.get(kind)
            if (
                condition is None
                or int(condition.get("observedGeneration", generation)) < generation
            ):
                pending.append(f"{who} {kind}")
            elif condition.get("status") != "True":
                reason = "NotAccepted" if kind == "Accepted" else "RefsNotResolved"
                problems.append(
                    (
                        reason,
                        f"{who}: {kind}={condition.get('status')} "
                        f"({condition.get('reason')}): {condition.get('message', '')}",
                    )
                )
    if problems:
        return False, problems[0][0], "; ".join(message for _, message in problems)
    if pending:
        return None, "Pending", f"waiting for {', '.join(pending)} on generation {generation}"
    return True, "Accepted", f"accepted by {len(parents)} parent(s) at generation {generation}"


def weights_patch(
    route: Mapping[str, Any],
    *,
    rules: Sequence[SelectedRule],
    layer_weights: Mapping[str, int],
) -> list[dict[str, Any]]:
    """Return the guarded JSON patch making ``rules`` hold ``layer_weights`` (empty: no-op).

    Every touched backendRef is ``test``ed for identity and current weight first, so the
    patch fails rather than land on a route that changed since it was read.
    """
    ops: list[dict[str, Any]] = []
    changes = 0
    for rule in rules:
        base = f"/spec/rules/{rule.index}"
        if rule.name is not None:
            ops.append({"op": "test", "path": f"{base}/name", "value": rule.name})
        refs = route["spec"]["rules"][rule.index].get("backendRefs") or []
        for ref_index, placement in rule.refs:
            path = f"{base}/backendRefs/{ref_index}"
            ref = refs[ref_index]
            for key in ("group", "kind", "namespace", "name", "port"):
                if key in ref:
                    ops.append({"op": "test", "path": f"{path}/{key}", "value": ref[key]})
            desired = layer_weights[placement]
            if "weight" not in ref:
                ops.append({"op": "add", "path": f"{path}/weight", "value": desired})
                changes += 1
                continue
            ops.append({"op": "test", "path": f"{path}/weight", "value": ref["weight"]})
            if ref["weight"] != desired:
                ops.append({"op": "replace", "path": f"{path}/weight", "value": desired})
                changes += 1
    record = json.dumps(dict(sorted(layer_weights.items())), separators=(",", ":"))
    annotations = route.get("metadata", {}).get("annotations")
    if annotations is None:
        ops.append(
            {"op": "add", "path": "/metadata/annotations", "value": {WEIGHTS_ANNOTATION: record}}
        )
        changes += 1
    elif annotations.get(WEIGHTS_ANNOTATION) != record:
        key = WEIGHTS_ANNOTATION.replace("~", "~0").replace("/", "~1")
        ops.append({"op": "add", "path": f"/metadata/annotations/{key}", "value": record})
        changes += 1
    return ops if changes else []


def router_error(exc: ApiException, *, what: str) -> RouterError:
    """Convert an apiserver error into the router's typed error."""
    status = int(exc.status or 0)
    if status == 404:
        return RouteNotFoundError(f"{what} not found")
    if status in (401, 403):
        return RouterPermissionDeniedError(f"not allowed to access {what} (HTTP {status})")
    if status == 422:
        return RouteLimitExceededError(f"{what} rejected by the apiserver: {_status_message(exc)}")
    return RouterUnavailableError(
        f"apiserver error on {what} (HTTP {status}): {_status_message(exc)}"
    )


def _status_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message", ""))[:500]
    except ValueError:
        return ""


def _is_failed_precondition(exc: ApiException) -> bool:
    """A failed JSON patch ``test`` is a 422 without field causes; 409 is a write race."""
    if exc.status == 409:
        return True
    if exc.status != 422:
        return False
    try:
        details = json.loads(exc.body or "{}").get("details") or {}
    except ValueError:
        return False
    return not details.get("causes")


class HTTPRouteRouter:
    """Steers one HTTPRoute's weights for one pool (implements ``TrafficRouter``)."""

    def __init__(self, *, api_client: client.ApiClient, target: HTTPRouteTarget) -> None:
        if len(target.backends) > MAX_BACKEND_REFS:
            raise RouteLimitExceededError(
                f"{len(target.backends)} backends exceed the HTTPRoute limit of "
                f"{MAX_BACKEND_REFS} backendRefs per rule"
            )
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._target = target
        self._lock = asyncio.Lock()  # one write at a time per router: the last plan wins

    @property
    def name(self) -> str:
        return f"httproute/{self._target.namespace}/{self._target.name}"

    @property
    def target(self) -> HTTPRouteTarget:
        return self._target

    async def read(self) -> RouteReading:
        route = await self._get_route()
        rules = select_rules(route, self._target)
        per_rule = [rule_weights(route, rule) for rule in rules]
        layer = per_rule[0]
        recorded = recorded_weights(route)
        consistent = all(weights == layer for weights in per_rule)
        drift = recorded is not None and any(weights != recorded for weights in per_rule)
        accepted, reason, message = parent_acceptance(route)
        problems = await self._backend_problems(layer) if self._target.verify_backends else []
        if problems:
            accepted, reason = False, problems[0].reason
            message = "; ".join(problem.message for problem in problems)
        manager = rules_owner(route) if drift else None
        if drift:
            reason = WeightsDriftedError.reason
            message = f"weights changed by {manager or 'another manager'}; {message}"
        if not consistent:
            message = f"steered rules disagree on weights {per_rule}; {message}"
        if sum(layer.values()) == 0:
            message = f"all weights are zero on the route; {message}"
        return RouteReading(
            weights=to_crossfade_scale(layer),
            accepted=accepted,
            drift=drift or not consistent,
            message=message,
            reason=reason,
            layer_weights=layer,
            drift_manager=manager,
        )

    async def apply(self, weights: Mapping[str, int]) -> ApplyResult:
        wanted = validate_weights(weights, placements=self._target.placements)
        layer_wanted = to_layer_scale(wanted, max_weight=MAX_LAYER_WEIGHT)
        async with self._lock:
            writes = 0
            for attempt in range(MAX_WRITE_ATTEMPTS):
                route = await self._get_route()
                rules = select_rules(route, self._target)
                if self._target.verify_backends:
                    problems = await self._backend_problems(layer_wanted)
                    if problems:
                        raise problems[0]
                manager = self._check_drift(route, rules=rules, layer_wanted=layer_wanted)
                patch = weights_patch(route, rules=rules, layer_weights=layer_wanted)
                if not patch:
                    return self._result(wanted, layer_wanted, writes=writes, manager=manager)
                writes += 1
                try:
                    await self._custom.patch_namespaced_custom_object(
                        GATEWAY_GROUP,
                        HTTPROUTE_VERSION,
                        self._target.namespace,
                        HTTPROUTE_PLURAL,
                        self._target.name,
                        patch,
                        field_manager=FIELD_MANAGER,  # a list body is sent as a JSON patch
                    )
                except ApiException as exc:
                    if _is_failed_precondition(exc):
                        log.info(
                            "route changed while writing weights, re-reading",
                            extra={"route": self.name, "attempt": attempt + 1},
                        )
                        backoff_ms = secrets.randbelow(CONFLICT_BACKOFF_MS * (attempt + 1) + 1)
                        await asyncio.sleep(backoff_ms / 1000)
                        continue
                    raise router_error(exc, what=self.name) from exc
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise RouterUnavailableError(
                        f"cannot reach the apiserver for {self.name}: {exc}"
                    ) from exc
                log.info(
                    "route weights written",
                    extra={"route": self.name, "weights": layer_wanted, "writes": writes},
                )
                return self._result(
                    wanted, layer_wanted, writes=writes, manager=manager, changed=True
                )
            raise RouterConflictError(
                f"{self.name} kept changing under {MAX_WRITE_ATTEMPTS} write attempts"
            )

    def _result(
        self,
        wanted: Mapping[str, int],
        layer_wanted: Mapping[str, int],
        *,
        writes: int,
        manager: str | None,
        changed: bool = False,
    ) -> ApplyResult:
        if manager is not None:
            reason, message = "DriftReasserted", f"re-asserted weights changed by {manager}"
        elif changed:
            reason, message = "WeightsApplied", f"{self.name} weights set to {dict(layer_wanted)}"
        else:
            reason, message = "WeightsUnchanged", f"{self.name} already holds the weights"
        return ApplyResult(
            weights=dict(wanted),
            layer_weights=dict(layer_wanted),
            changed=changed,
            writes=writes,
            reason=reason,
            message=message,
            drift_manager=manager,
        )

    def _check_drift(
        self,
        route: Mapping[str, Any],
        *,
        rules: Sequence[SelectedRule],
        layer_wanted: Mapping[str, int],
    ) -> str | None:
        """Return the drifting manager's name (REASSERT), raise (BACK_OFF), None if no drift."""
        recorded = recorded_weights(route)
        live = [rule_weights(route, rule) for rule in rules]
        if recorded is None or all(weights == recorded for weights in live):
            return None
        if all(weights == layer_wanted for weights in live):
            return None  # someone already set what we want; adopting it is no fight
        manager = rules_owner(route) or "another manager"
        if self._target.drift_policy is DriftPolicy.BACK_OFF:
            raise WeightsDriftedError(
                f"{self.name} weights were changed by {manager} ({live[0]} instead of "
                f"{recorded}); drift policy BackOff leaves them alone",
                manager=manager,
            )
        return manager

    async def _get_route(self) -> dict[str, Any]:
        try:
            route: dict[str, Any] = await self._custom.get_namespaced_custom_object(
                GATEWAY_GROUP,
                HTTPROUTE_VERSION,
                self._target.namespace,
                HTTPROUTE_PLURAL,
                self._target.name,
            )
        except ApiException as exc:
            raise router_error(
                exc, what=f"{HTTPROUTE_KIND} {self._target.namespace}/{self._target.name}"
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RouterUnavailableError(
                f"cannot reach the apiserver for {self.name}: {exc}"
            ) from exc
        return route

    async def _backend_problems(self, layer_weights: Mapping[str, int]) -> list[RouterError]:
        """Return what blocks traffic to backends that would get a non-zero weight."""
        problems: list[RouterError] = []
        for backend in self._target.backends:
            if layer_weights.get(backend.placement, 0) == 0:
                continue
            problem = await self._backend_problem(backend)
            if problem is not None:
                problems.append(problem)
        return problems

    async def _backend_problem(self, backend: BackendRef) -> RouterError | None:
        route_namespace = self._target.namespace
        namespace = backend.namespace or route_namespace
        label = backend.describe(route_namespace=route_namespace)
        try:
            if backend.group == "" and backend.kind == "Service":
                await self._core.read_namespaced_service(backend.name, namespace)
            elif backend.kind == "InferencePool" and backend.group in INFERENCE_POOL_VERSIONS:
                await self._custom.get_namespaced_custom_object(
                    backend.group,
                    INFERENCE_POOL_VERSIONS[backend.group],
                    namespace,
                    INFERENCE_POOL_PLURAL,
                    backend.name,
                )
        except ApiException as exc:
            if exc.status == 404:
                return BackendNotFoundError(
                    f"backend {label} of placement {backend.placement} does not exist"
                )
            return router_error(exc, what=label)
        if namespace != route_namespace and not await self._reference_granted(backend, namespace):
            return ReferenceNotPermittedError(
                f"no ReferenceGrant in namespace {namespace} lets {HTTPROUTE_KIND}s in "
                f"{route_namespace} refer to {label}"
            )
        return None

    async def _reference_granted(self, backend: BackendRef, namespace: str) -> bool:
        try:
            grants = await self._custom.list_namespaced_custom_object(
                GATEWAY_GROUP, REFERENCE_GRANT_VERSION, namespace, REFERENCE_GRANT_PLURAL
            )
        except ApiException as exc:
            raise router_error(exc, what=f"ReferenceGrants in {namespace}") from exc
        return any(
            grant_allows(grant, backend=backend, route_namespace=self._target.namespace)
            for grant in grants.get("items", [])
        )


def grant_allows(grant: Mapping[str, Any], *, backend: BackendRef, route_namespace: str) -> bool:
    """Return whether one ReferenceGrant lets HTTPRoutes in route_namespace refer to backend."""
    spec = grant.get("spec") or {}
    from_ok = any(
        entry.get("group") == GATEWAY_GROUP
        and entry.get("kind") == HTTPROUTE_KIND
        and entry.get("namespace") == route_namespace
        for entry in spec.get("from") or []
    )
    to_ok = any(
        (entry.get("group") or "") == backend.group
        and entry.get("kind") == backend.kind
        and entry.get("name") in (None, "", backend.name)
        for entry in spec.get("to") or []
    )
    return from_ok and to_ok
