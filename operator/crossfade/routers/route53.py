"""Route53 router: weighted records of one DNS name, one set identifier per placement.

Wire form read from the pool spec (``api.policy.Route53Traffic``):

- ``traffic.route53``: ``hostedZoneId``, ``recordName``, ``type?`` (default ``CNAME``),
  ``ttlSeconds?`` (default 60), ``maxWeight?`` (default 255), ``driftPolicy?`` (Reassert |
  BackOff; not in the API yet, Reassert), ``records[]``: one per placement with
  ``placement``, ``setIdentifier?`` (default: the placement name), ``values`` and, not in
  the API yet, ``healthCheckId?`` and ``aliasTarget? {hostedZoneId, dnsName,
  evaluateTargetHealth?}``. Missing records are created from their values; an existing
  record gets the spec's weight, values and health check, and keeps everything else.

Weights are mapped onto Route53's 0..maxWeight (the largest share gets maxWeight). One
decision is one ``ChangeResourceRecordSets`` batch (UPSERTs only); the change is then
followed with ``GetChange`` until INSYNC. Calls take a token from the process-wide Route53
bucket (AWS allows about 5 requests per second per account) and retryable errors are
retried with full-jitter backoff. Credentials come only from boto3's default chain.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import boto3
import botocore.config
import botocore.exceptions
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from crossfade.routers.base import (
    ApplyResult,
    DriftPolicy,
    InvalidWeightsError,
    RouteNotFoundError,
    RouterConfigError,
    RouteReading,
    RouterError,
    RouterPermissionDeniedError,
    RouterUnavailableError,
    WeightsDriftedError,
    to_crossfade_scale,
    validate_weights,
)

if TYPE_CHECKING:
    from mypy_boto3_route53.client import Route53Client
    from mypy_boto3_route53.type_defs import (
        ChangeTypeDef,
        ResourceRecordSetOutputTypeDef,
        ResourceRecordSetTypeDef,
    )

log = logging.getLogger(__name__)

ROUTE53_MAX_WEIGHT = 255
DEFAULT_RECORD_TYPE = "CNAME"
DEFAULT_TTL_S = 60
INSYNC = "INSYNC"
# apply() follows its change this long at most; read() keeps following it afterwards.
INSYNC_WAIT_S = 2.0
INSYNC_POLL_S = 0.5
# read() answers from memory this long (Route53 allows ~5 requests/s per account, shared
# by every pool): with a 10 s reconcile period that is 2 ListResourceRecordSets a minute.
# A pending change, or an apply, ends the cache early.
READ_CACHE_TTL_S = 30.0
RETRY_ATTEMPTS = 4
RETRY_BASE_S = 0.2
RETRY_MAX_WAIT_S = 4.0
RETRY_BUDGET_S = 15.0
LIMITER_MAX_WAIT_S = 2.0
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
LIST_PAGE_ITEMS = 100

THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "PriorRequestNotComplete", "RequestLimitExceeded"}
)
NOT_FOUND_CODES = frozenset({"NoSuchHostedZone", "NoSuchChange", "NoSuchHealthCheck"})
PERMISSION_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
CONFIG_CODES = frozenset({"InvalidInput", "InvalidChangeBatch", "InvalidDomainName"})

T = TypeVar("T")


class RateLimiter(Protocol):
    """A client-side token bucket (``crossfade.providers.ratelimit.TokenBucket`` fits)."""

    async def acquire(
        self, *, max_wait_s: float = ..., sleep: Callable[[float], Awaitable[None]] = ...
    ) -> bool: ...


class Route53ThrottledError(RouterUnavailableError):
    """Route53 (or crossfade's own bucket) refused the call for its rate; try again later."""

    reason = "Throttled"

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class _ClientRateLimitedError(Route53ThrottledError):
    """The local bucket is empty: not sent, not retried now (the loop must not hang)."""


def map_route53_error(error: BaseException, *, operation: str) -> RouterError:
    """Return the typed router error for a botocore exception."""
    if isinstance(error, RouterError):
        return error
    where = f"route53:{operation}"
    if isinstance(error, botocore.exceptions.ClientError):
        details = error.response.get("Error", {})
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        code = str(details.get("Code") or status or "Unknown")
        message = f"{where}: {code}: {str(details.get('Message') or '')[:300]}"
        if code in THROTTLING_CODES or status == 429:
            return Route53ThrottledError(message, code=code)
        if code in NOT_FOUND_CODES:
            return RouteNotFoundError(message)
        if code in PERMISSION_CODES or status == 403:
            return RouterPermissionDeniedError(message)
        if code in CONFIG_CODES:
            return RouterConfigError(message)
        if status >= 500:
            return RouterUnavailableError(message)
        return RouterConfigError(message)
    if isinstance(
        error, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return RouterPermissionDeniedError(f"{where}: no AWS credentials in the default chain")
    return RouterUnavailableError(f"{where}: {type(error).__name__}")


def _should_retry(error: BaseException) -> bool:
    return (
        isinstance(error, RouterError)
        and error.retryable
        and not isinstance(error, _ClientRateLimitedError | RouteNotFoundError)
    )


@dataclass(frozen=True, slots=True)
class PlacementRecord:
    """How one placement appears in the weighted record set."""

    placement: str
    set_identifier: str
    values: tuple[str, ...] = ()
    alias_target: Mapping[str, Any] | None = None
    health_check_id: str | None = None


@dataclass(frozen=True, slots=True)
class Route53Target:
    """The weighted record set a pool steers."""

    hosted_zone_id: str
    record_name: str
    record_type: str = DEFAULT_RECORD_TYPE
    ttl_s: int = DEFAULT_TTL_S
    placements: tuple[PlacementRecord, ...] = ()
    drift_policy: DriftPolicy = DriftPolicy.REASSERT
    max_weight: int = ROUTE53_MAX_WEIGHT

    @property
    def fqdn(self) -> str:
        return self.record_name if self.record_name.endswith(".") else f"{self.record_name}."

    @property
    def placement_names(self) -> frozenset[str]:
        return frozenset(p.placement for p in self.placements)


@dataclass
class _Memory:
    """What this router wrote last (Route53 records cannot carry an annotation)."""

    layer_weights: dict[str, int] | None = None
    pending_change_id: str | None = None
    calls: dict[str, int] = field(default_factory=dict)
    reading: RouteReading | None = None
    read_at: float = 0.0


class Route53Router:
    """``TrafficRouter`` over Route53 weighted records (see routers.base.TrafficRouter)."""

    def __init__(
        self,
        *,
        client: Route53Client,
        target: Route53Target,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        insync_wait_s: float = INSYNC_WAIT_S,
        read_cache_ttl_s: float = READ_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._target = target
        self._limiter = limiter
        self._sleep = sleep
        self._insync_wait_s = insync_wait_s
        self._read_cache_ttl_s = read_cache_ttl_s
        self._clock = clock
        self._memory = _Memory()

    @property
    def name(self) -> str:
        t = self._target
        return f"route53/{t.hosted_zone_id}/{t.fqdn}{t.record_type}"

    @property
    def calls(self) -> Mapping[str, int]:
        """Return how many attempts of each Route53 operation this router made."""
        return dict(self._memory.calls)

    async def _call(self, operation: str, fn: Callable[[], T]) -> T:
        retrying = AsyncRetrying(
            retry=retry_if_exception(_should_retry),
            stop=stop_after_attempt(RETRY_ATTEMPTS) | stop_after_delay(RETRY_BUDGET_S),
            wait=wait_random_exponential(multiplier=RETRY_BASE_S, max=RETRY_MAX_WAIT_S),
            sleep=self._sleep,
            reraise=True,
        )
        return await retrying(self._attempt, operation, fn)

    async def _attempt(self, operation: str, fn: Callable[[], T]) -> T:
        if self._limiter is not None and not await self._limiter.acquire(
            max_wait_s=LIMITER_MAX_WAIT_S, sleep=self._sleep
        ):
            raise _ClientRateLimitedError(
                f"route53:{operation}: client-side rate limit reached, call not sent",
                code="ClientRateLimited",
            )
        self._memory.calls[operation] = self._memory.calls.get(operation, 0) + 1
        try:
            return await asyncio.to_thread(fn)
        except Exception as error:  # every SDK error is mapped, none leaves
            raise map_route53_error(error, operation=operation) from error

    async def _records(self) -> dict[str, ResourceRecordSetOutputTypeDef]:
        """Return the weighted records of the target name and type, by set identifier."""
        target = self._target
        found: dict[str, ResourceRecordSetOutputTypeDef] = {}
        start_identifier: str | None = None
        while True:
            params: dict[str, Any] = {
                "HostedZoneId": target.hosted_zone_id,
                "StartRecordName": target.fqdn,
                "StartRecordType": target.record_type,
                "MaxItems": str(LIST_PAGE_ITEMS),
            }
            if start_identifier:
                params["StartRecordIdentifier"] = start_identifier
            page = await self._call(
                "ListResourceRecordSets",
                functools.partial(self._client.list_resource_record_sets, **params),
            )
            for record in page["ResourceRecordSets"]:
                same = (
                    record["Name"].lower() == target.fqdn.lower()
                    and record["Type"] == target.record_type
                )
                if not same:
                    return found
                if "SetIdentifier" in record and "Weight" in record:
                    found[record["SetIdentifier"]] = record
            if not page.get("IsTruncated") or not page.get("NextRecordIdentifier"):
                return found
            if page.get("NextRecordName", "").lower() != target.fqdn.lower():
                return found
            start_identifier = page["NextRecordIdentifier"]

    def _layer_weights(
        self, records: Mapping[str, ResourceRecordSetOutputTypeDef]
    ) -> dict[str, int]:
        missing = [p.placement for p in self._target.placements if p.set_identifier not in records]
        if missing:
            raise RouteNotFoundError(
                f"{self.name}: no weighted record for placements {', '.join(sorted(missing))}"
            )
        return {
            p.placement: int(records[p.set_identifier].get("Weight", 0))
            for p in self._target.placements
        }

    async def _change_status(self, change_id: str) -> str:
        change = await self._call("GetChange", lambda: self._client.get_change(Id=change_id))
        return str(change["ChangeInfo"]["Status"])

    async def read(self) -> RouteReading:
        memory = self._memory
        now = self._clock()
        if memory.reading is not None and now - memory.read_at < self._read_cache_ttl_s:
            return memory.reading
        reading = await self._read_layer()
        memory.reading = reading if reading.accepted else None
        memory.read_at = now
        return reading

    async def _read_layer(self) -> RouteReading:
        records = await self._records()
        missing = [p for p in self._target.placements if p.set_identifier not in records]
        if missing and all(p.values or p.alias_target for p in missing):
            return RouteReading(
                weights=None,
                accepted=None,
                drift=False,
                message=f"{self.name}: records of {', '.join(p.placement for p in missing)} "
                "not created yet; apply creates them",
                reason="RecordsNotCreated",
            )
        layer = self._layer_weights(records)
        accepted: bool | None = True
        memory = self._memory
        if memory.pending_change_id is not None:
            if await self._change_status(memory.pending_change_id) == INSYNC:
                memory.pending_change_id = None
            else:
                accepted = None
        drift = memory.layer_weights is not None and layer != memory.layer_weights
        reason = "Drifted" if drift else ("Synced" if accepted else "Pending")
        return RouteReading(
            weights=to_crossfade_scale(layer) if sum(layer.values()) > 0 else None,
            accepted=accepted,
            drift=drift,
            message=f"{self.name}: weights {layer} (0..{ROUTE53_MAX_WEIGHT})",
            reason=reason,
            layer_weights=layer,
            drift_manager="unknown" if drift else None,
        )

    async def apply(self, weights: Mapping[str, int]) -> ApplyResult:
        target = self._target
        wanted = validate_weights(weights, placements=target.placement_names)
        layer_wanted = to_route53_weights(wanted, max_weight=target.max_weight)
        cached = self._memory.reading
        if (
            cached is not None
            and self._clock() - self._memory.read_at < self._read_cache_ttl_s
            and not cached.drift
            and cached.layer_weights == layer_wanted
            and self._memory.layer_weights == layer_wanted
        ):
            # Re-applying the plan the layer was just seen holding costs no call.
            return ApplyResult(
                weights=wanted,
                layer_weights=layer_wanted,
                changed=False,
                writes=0,
                reason="Synced",
                message=f"{self.name}: already holds {layer_wanted}",
            )
        self._memory.reading = None
        records = await self._records()
        current = {
            p.placement: int(records[p.set_identifier].get("Weight", 0))
            for p in target.placements
            if p.set_identifier in records
        }
        manager = None
        memory = self._memory
        if memory.layer_weights is not None and current and current != memory.layer_weights:
            manager = "unknown"
            if target.drift_policy is DriftPolicy.BACK_OFF:
                raise WeightsDriftedError(
                    f"{self.name}: weights changed outside crossfade ({current}, wrote "
                    f"{memory.layer_weights}); drift policy BackOff leaves them alone",
                    manager=None,
                )
        changes = [
            change
            for p in target.placements
            if (
                change := self._change_for(
                    p, records.get(p.set_identifier), layer_wanted[p.placement]
                )
            )
        ]
        if not changes:
            memory.layer_weights = dict(layer_wanted)
            self._remember_synced(layer_wanted)
            return ApplyResult(
                weights=wanted,
                layer_weights=layer_wanted,
                changed=False,
                writes=0,
                reason="Synced",
                message=f"{self.name}: already holds {layer_wanted}",
            )
        submitted = await self._call(
            "ChangeResourceRecordSets",
            lambda: self._client.change_resource_record_sets(
                HostedZoneId=target.hosted_zone_id,
                ChangeBatch={"Comment": "crossfade: shift weights", "Changes": changes},
            ),
        )
        writes = 1
        memory.layer_weights = dict(layer_wanted)
        memory.pending_change_id = submitted["ChangeInfo"]["Id"]
        insync = await self._follow_change(str(submitted["ChangeInfo"]["Status"]))
        if insync:
            self._remember_synced(layer_wanted)
        log.info(
            "route53 weights submitted",
            extra={"router": self.name, "weights": layer_wanted, "insync": insync},
        )
        return ApplyResult(
            weights=wanted,
            layer_weights=layer_wanted,
            changed=True,
            writes=writes,
            reason="Synced" if insync else "Pending",
            message=f"{self.name}: wrote {layer_wanted}"
            + ("" if insync else "; change not INSYNC yet"),
            drift_manager=manager,
        )

    def _remember_synced(self, layer: Mapping[str, int]) -> None:
        """Cache the reading the layer now gives, so reads right after an apply are free."""
        self._memory.reading = RouteReading(
            weights=to_crossfade_scale(layer),
            accepted=True,
            drift=False,
            message=f"{self.name}: weights {dict(layer)} (0..{ROUTE53_MAX_WEIGHT})",
            layer_weights=dict(layer),
        )
        self._memory.read_at = self._clock()

    async def _follow_change(self, status: str) -> bool:
        """Poll GetChange until INSYNC or ``insync_wait_s`` passed; return True when INSYNC."""
        memory = self._memory
        waited_s = 0.0
        while memory.pending_change_id is not None:
            if status == INSYNC:
                memory.pending_change_id = None
                return True
            if waited_s >= self._insync_wait_s:
                return False
            await self._sleep(INSYNC_POLL_S)
            waited_s += INSYNC_POLL_S
            status = await self._change_status(memory.pending_change_id)
        return True

    def _change_for(
        self,
        placement: PlacementRecord,
        record: ResourceRecordSetOutputTypeDef | None,
        weight: int,
    ) -> ChangeTypeDef | None:
        target = self._target
        if record is None:
            if not (placement.values or placement.alias_target):
                raise RouteNotFoundError(
                    f"{self.name}: no weighted record {placement.set_identifier!r} and no "
                    "value or aliasTarget to create it from"
                )
            new: ResourceRecordSetTypeDef = {
                "Name": target.fqdn,
                "Type": target.record_type,  # type: ignore[typeddict-item]
                "SetIdentifier": placement.set_identifier,
                "Weight": weight,
            }
            if placement.alias_target:
                alias = placement.alias_target
                new["AliasTarget"] = {
                    "HostedZoneId": str(alias["hostedZoneId"]),
                    "DNSName": str(alias["dnsName"]),
                    "EvaluateTargetHealth": bool(alias.get("evaluateTargetHealth", True)),
                }
            else:
                new["TTL"] = target.ttl_s
                new["ResourceRecords"] = [{"Value": value} for value in placement.values]
            if placement.health_check_id:
                new["HealthCheckId"] = placement.health_check_id
            return {"Action": "UPSERT", "ResourceRecordSet": new}
        health_check_differs = (
            placement.health_check_id is not None
            and record.get("HealthCheckId") != placement.health_check_id
        )
        live_values = sorted(r["Value"] for r in record.get("ResourceRecords", []))
        values_differ = (
            bool(placement.values)
            and "AliasTarget" not in record
            and (live_values != sorted(placement.values))
        )
        if int(record.get("Weight", -1)) == weight and not (health_check_differs or values_differ):
            return None
        updated: ResourceRecordSetTypeDef = dict(record)  # type: ignore[assignment]
        updated["Weight"] = weight
        if placement.health_check_id is not None:
            updated["HealthCheckId"] = placement.health_check_id
        if values_differ:
            updated["ResourceRecords"] = [{"Value": value} for value in placement.values]
        return {"Action": "UPSERT", "ResourceRecordSet": updated}


def route53_target(spec: Mapping[str, Any]) -> Route53Target:
    """Return the Route53 target described by ``traffic.route53`` (wire form, see module doc)."""
    section = (spec.get("traffic") or {}).get("route53") or {}
    zone, name = section.get("hostedZoneId"), section.get("recordName")
    if not zone or not name:
        raise RouterConfigError("traffic.route53 needs hostedZoneId and recordName")
    records = {str(r.get("placement")): r for r in section.get("records") or []}
    placements: list[PlacementRecord] = []
    for placement in spec.get("placements") or []:
        pname = placement.get("name")
        if not pname:
            raise RouterConfigError("every placement needs a name")
        record = records.pop(str(pname), None)
        if record is None:
            raise RouterConfigError(f"traffic.route53.records has no record for placement {pname}")
        placements.append(
            PlacementRecord(
                placement=str(pname),
                set_identifier=str(record.get("setIdentifier") or pname),
                values=tuple(str(v) for v in record.get("values") or ()),
                alias_target=record.get("aliasTarget"),
                health_check_id=record.get("healthCheckId"),
            )
        )
    if not placements:
        raise RouterConfigError("the pool names no placements")
    if records:
        raise RouterConfigError(
            f"traffic.route53.records name unknown placements: {', '.join(sorted(records))}"
        )
    try:
        policy = DriftPolicy(section.get("driftPolicy") or DriftPolicy.REASSERT.value)
    except ValueError as exc:
        raise RouterConfigError(f"unknown driftPolicy {section.get('driftPolicy')!r}") from exc
    max_weight = int(section.get("maxWeight") or ROUTE53_MAX_WEIGHT)
    if not 1 <= max_weight <= ROUTE53_MAX_WEIGHT:
        raise RouterConfigError(f"traffic.route53.maxWeight must be 1..{ROUTE53_MAX_WEIGHT}")
    ttl = section.get("ttlSeconds")
    return Route53Target(
        hosted_zone_id=str(zone).removeprefix("/hostedzone/"),
        record_name=str(name),
        record_type=str(section.get("type") or DEFAULT_RECORD_TYPE),
        ttl_s=DEFAULT_TTL_S if ttl is None else int(ttl),
        placements=tuple(placements),
        drift_policy=policy,
        max_weight=max_weight,
    )


def to_route53_weights(weights: Mapping[str, int], *, max_weight: int) -> dict[str, int]:
    """Map crossfade weights onto 0..max_weight: the largest share gets ``max_weight``.

    Ratios are kept to within rounding, and a non-zero share never rounds down to zero.
    """
    top = max(weights.values(), default=0)
    if top <= 0:
        raise InvalidWeightsError("refusing to scale weights that sum to zero")
    return {
        name: 0 if value == 0 else max(1, round(value * max_weight / top))
        for name, value in weights.items()
    }


def make_route53_client(*, endpoint_url: str | None = None) -> Route53Client:
    """Return a Route53 client on the default credential chain (no SDK retries)."""
    config = botocore.config.Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        user_agent_extra="crossfade",
    )
    # Route53 is global; its API lives in us-east-1.
    return boto3.session.Session().client(
        "route53", region_name="us-east-1", endpoint_url=endpoint_url, config=config
    )


class _RouterContext(Protocol):
    """The part of ``routers.factory.RouterContext`` this builder reads."""

    @property
    def clients(self) -> Mapping[str, Any]: ...


def build_route53_router(spec: Mapping[str, Any], context: _RouterContext) -> Route53Router:
    """Factory builder: ``context.clients`` may hold ``route53`` (a boto3 client),
    ``route53_limiter`` (the process-wide token bucket) and ``aws_endpoint_url``."""
    clients = context.clients
    client = clients.get("route53") or make_route53_client(
        endpoint_url=clients.get("aws_endpoint_url")
    )
    limiter = clients.get("route53_limiter")
    if limiter is None:
        log.warning("route53 router without a client-side rate limiter", extra={"spec": "route53"})
    return Route53Router(client=client, target=route53_target(spec), limiter=limiter)
