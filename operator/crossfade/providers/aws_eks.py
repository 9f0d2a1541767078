"""AWS EKS managed node group provider: describe, scale with idempotency tokens, detect ICE.

Calls per placement are kept low on purpose (AWS throttles describe calls account-wide):
``describe`` answers from a short cache at steady state and reads the node group's update
and Auto Scaling activities only while a scale-up it started is still settling.

Every EKS placement of the process draws from one client-side bucket (AWS limits are per
account and region), so the steady-state describe interval grows with the number of
placements sharing it: each gets a fair share of half the bucket
(``fair_describe_interval_s``), the other half stays free for scale calls and settling
describes. A refresh the bucket still refuses answers from the cache while the cached
state is younger than ``STALE_INTERVALS`` intervals, so a short budget never turns into a
flapping provider error (and the status, annotation and Event writes that follow one).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from crossfade.providers.aws_api import (
    INSUFFICIENT_CAPACITY_CODES,
    AutoScalingApi,
    AwsClients,
    CallObserver,
    EksApi,
    RetryPolicy,
    mentions_insufficient_capacity,
)
from crossfade.providers.base import HealthIssue, NodeGroupState, ScaleResult
from crossfade.providers.errors import InvalidRequest, NotFound, ProviderError
from crossfade.providers.ratelimit import RateLimiters

if TYPE_CHECKING:
    from mypy_boto3_autoscaling.type_defs import ActivityTypeDef
    from mypy_boto3_eks.type_defs import NodegroupTypeDef

log = logging.getLogger(__name__)

PROVIDER_TYPE = "EKSNodeGroup"
PLACEMENT_MEMBER = "eksNodeGroup"

# At steady state a describe is served from cache for this long: with a 10 s reconcile
# period that is 2 DescribeNodegroup calls per placement per minute.
DESCRIBE_CACHE_TTL_S = 30.0
# While a scale-up crossfade started is settling, the cache is shorter and the update and
# the Auto Scaling group's activities are read too, to see ICE as early as AWS reports it.
SETTLING_CACHE_TTL_S = 10.0
SETTLE_WINDOW_S = 300.0
# Share of the EKS bucket the steady-state describes of all placements may use together.
DESCRIBE_BUDGET_SHARE = 0.5
# Share the faster describes of settling placements (a scale-up of theirs still settling)
# may use together on top; the rest of the bucket stays free for scale calls.
SETTLING_BUDGET_SHARE = 0.3
# A refresh refused by crossfade's own bucket answers from a cache younger than this many
# describe intervals; older than that the refusal is reported (Throttled).
STALE_INTERVALS = 3.0
CLIENT_RATE_LIMITED = "ClientRateLimited"  # the code of a call crossfade's bucket refused
# Activities that started this long before the scale-up still count (clock skew).
ACTIVITY_CLOCK_SLACK_S = 30.0

UPDATING_STATUSES = frozenset({"CREATING", "UPDATING"})
UPDATE_IN_PROGRESS = "InProgress"
UPDATE_FAILED_STATUSES = frozenset({"Failed", "Cancelled"})
ACTIVITY_FAILED_STATUSES = frozenset({"Failed", "Cancelled"})
# Generic EKS launch failure codes whose message names the EC2 cause (ICE or not).
LAUNCH_FAILURE_CODES = frozenset({"AsgInstanceLaunchFailures", "NodeCreationFailure"})
ACTIVITY_ISSUE_CODE = "AsgScalingActivityFailed"

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class EksNodeGroupRef:
    """Which node group a placement means."""

    region: str
    cluster: str
    nodegroup: str

    @classmethod
    def from_placement(cls, placement: Mapping[str, Any]) -> EksNodeGroupRef:
        """Read ``provider.eksNodeGroup {region, cluster, nodegroup}`` (wire form).

        The older spelling ``clusterName`` / ``nodegroupName`` (the EKS API's) is accepted too.
        """
        provider = placement.get("provider") or {}
        member = provider.get(PLACEMENT_MEMBER) or {}
        region = member.get("region")
        cluster = member.get("cluster") or member.get("clusterName")
        nodegroup = member.get("nodegroup") or member.get("nodegroupName")
        missing = [
            field
            for field, value in (("region", region), ("cluster", cluster), ("nodegroup", nodegroup))
            if not value
        ]
        if missing:
            raise InvalidRequest(
                f"placement {placement.get('name')!r}: provider.{PLACEMENT_MEMBER} lacks "
                + ", ".join(missing),
                code="InvalidPlacement",
            )
        return cls(region=str(region), cluster=str(cluster), nodegroup=str(nodegroup))


def classify_health_issue(
    code: str, message: str, resource_ids: tuple[str, ...] = ()
) -> HealthIssue:
    """Return the issue, marked insufficient-capacity when its code or cause says so."""
    ice = code in INSUFFICIENT_CAPACITY_CODES or (
        code in LAUNCH_FAILURE_CODES and mentions_insufficient_capacity(message) is not None
    )
    return HealthIssue(
        code=code, message=message, insufficient_capacity=ice, resource_ids=resource_ids
    )


def issues_from_activities(
    activities: list[ActivityTypeDef], *, group: str, since: float
) -> tuple[HealthIssue, ...]:
    """Return ICE issues from failed scaling activities that started at ``since`` or later."""
    issues: list[HealthIssue] = []
    for activity in activities:
        started: datetime | None = activity.get("StartTime")
        if started is not None and started.timestamp() < since:
            continue
        message = activity.get("StatusMessage", "") or activity.get("Description", "")
        code = mentions_insufficient_capacity(message)
        if activity.get("StatusCode") in ACTIVITY_FAILED_STATUSES or code is not None:
            issues.append(
                HealthIssue(
                    code=code or ACTIVITY_ISSUE_CODE,
                    message=message,
                    insufficient_capacity=code is not None,
                    resource_ids=(group,),
                )
            )
    return tuple(issues)


def state_from_nodegroup(nodegroup: NodegroupTypeDef) -> NodeGroupState:
    """Return the provider-neutral state of a DescribeNodegroup answer."""
    scaling = nodegroup.get("scalingConfig", {})
    issues = tuple(
        classify_health_issue(
            str(issue.get("code", "")),
            issue.get("message", ""),
            tuple(issue.get("resourceIds", [])),
        )
        for issue in nodegroup.get("health", {}).get("issues", [])
    )
    status = str(nodegroup.get("status", "UNKNOWN"))
    return NodeGroupState(
        desired=int(scaling.get("desiredSize", 0)),
        min_size=int(scaling.get("minSize", 0)),
        max_size=int(scaling.get("maxSize", 0)),
        ready=None,  # EKS does not say; the nodes' own Ready condition does (probes)
        status=status,
        updating=status in UPDATING_STATUSES,
        health_issues=issues,
    )


@dataclass
class _Tracking:
    """What this provider remembers about its own last scale-up."""

    update_id: str | None = None
    scaled_at: float | None = None
    update_tracking_supported: bool = True
    last_update_status: str | None = None
    asg_names: tuple[str, ...] = field(default=())


class EksNodeGroupProvider:
    """``CapacityProvider`` for one EKS managed node group (see base.CapacityProvider)."""

    def __init__(
        self,
        *,
        ref: EksNodeGroupRef,
        eks: EksApi,
        autoscaling: AutoScalingApi | None = None,
        clock: Clock = time.time,
        cache_ttl_s: float = DESCRIBE_CACHE_TTL_S,
        fair_interval_s: Callable[[], float] | None = None,
        settling_interval_s: Callable[[], float] | None = None,
    ) -> None:
        self.ref = ref
        self._eks = eks
        self._autoscaling = autoscaling
        self._clock = clock
        self._cache_ttl_s = cache_ttl_s
        # The fair share of the shared describe budget (AwsProviderContext), if any.
        self._fair_interval_s = fair_interval_s
        # The share of settling placements (AwsProviderContext), if any.
        self._settling_share_s = settling_interval_s
        self._cached: NodeGroupState | None = None
        self._cached_at = 0.0
        self._tracking = _Tracking()

    @property
    def name(self) -> str:
        return f"eks/{self.ref.region}/{self.ref.cluster}/{self.ref.nodegroup}"

    def settling(self, now: float) -> bool:
        """Whether a scale-up this provider made is still settling (SETTLE_WINDOW_S)."""
        scaled_at = self._tracking.scaled_at
        return scaled_at is not None and now - scaled_at < SETTLE_WINDOW_S

    def steady_interval_s(self) -> float:
        """The steady-state describe interval: the cache TTL, or the fair share if longer."""
        fair = self._fair_interval_s() if self._fair_interval_s is not None else 0.0
        return max(self._cache_ttl_s, fair)

    def settling_interval_s(self) -> float:
        """The describe interval while settling: SETTLING_CACHE_TTL_S, or the settling
        placements' fair share of SETTLING_BUDGET_SHARE if longer; never above steady.

        Without the share, 100 placements scaled at once asked 10 describes/s of a 5/s
        bucket for the whole settle window, and most were refused.
        """
        share = self._settling_share_s() if self._settling_share_s is not None else 0.0
        return min(self.steady_interval_s(), max(SETTLING_CACHE_TTL_S, share))

    async def describe(self) -> NodeGroupState:
        """Return the node group's state (cached; see DESCRIBE_CACHE_TTL_S and the module doc)."""
        now = self._clock()
        steady_s = self.steady_interval_s()
        ttl_s = self.settling_interval_s() if self.settling(now) else steady_s
        if self._cached is not None and now - self._cached_at < ttl_s:
            return self._cached
        try:
            return await self._refresh(now)
        except ProviderError as error:
            cached = self._cached
            if (
                error.code != CLIENT_RATE_LIMITED
                or cached is None
                or now - self._cached_at >= STALE_INTERVALS * steady_s
            ):
                raise
            log.debug(
                "describe refused by the local bucket; answering from cache",
                extra={"provider": self.name, "cache_age_s": round(now - self._cached_at, 1)},
            )
            return cached

    async def _refresh(self, now: float) -> NodeGroupState:
        nodegroup = await self._eks.describe_nodegroup(
            cluster=self.ref.cluster, nodegroup=self.ref.nodegroup
        )
        state = state_from_nodegroup(nodegroup)
        self._tracking.asg_names = tuple(
            group["name"]
            for group in nodegroup.get("resources", {}).get("autoScalingGroups", [])
            if "name" in group
        )
        if self.settling(now):
            state = await self._with_settling_details(state)
        self._cached, self._cached_at = state, now
        return state

    async def _with_settling_details(self, state: NodeGroupState) -> NodeGroupState:
        updating = state.updating
        issues = list(state.health_issues)
        tracking = self._tracking
        if tracking.update_id and tracking.update_tracking_supported:
            try:
                update = await self._eks.describe_update(
                    cluster=self.ref.cluster,
                    nodegroup=self.ref.nodegroup,
                    update_id=tracking.update_id,
                )
            except NotFound:
                # An endpoint without DescribeUpdate (moto) or an expired id: rely on status.
                tracking.update_tracking_supported = False
            except ProviderError as error:
                self._log_detail_skipped("DescribeUpdate", error)
            else:
                tracking.last_update_status = str(update.get("status", ""))
                updating = updating or tracking.last_update_status == UPDATE_IN_PROGRESS
                if tracking.last_update_status in UPDATE_FAILED_STATUSES:
                    issues.extend(
                        classify_health_issue(
                            str(error.get("errorCode", "UpdateFailed")),
                            error.get("errorMessage", ""),
                            tuple(error.get("resourceIds", [])),
                        )
                        for error in update.get("errors", [])
                    )
        if self._autoscaling is not None and tracking.scaled_at is not None:
            since = tracking.scaled_at - ACTIVITY_CLOCK_SLACK_S
            for group in tracking.asg_names:
                try:
                    activities = await self._autoscaling.recent_scaling_activities(group=group)
                except NotFound:
                    continue
                except ProviderError as error:
                    # The node group's own answer still stands; ICE shows on a later pass.
                    self._log_detail_skipped("DescribeScalingActivities", error)
                    continue
                issues.extend(issues_from_activities(activities, group=group, since=since))
        return NodeGroupState(
            desired=state.desired,
            min_size=state.min_size,
            max_size=state.max_size,
            ready=state.ready,
            status=state.status,
            updating=updating,
            health_issues=_unique(issues),
        )

    def _log_detail_skipped(self, operation: str, error: ProviderError) -> None:
        log.warning(
            "eks settling detail skipped",
            extra={"provider": self.name, "operation": operation, "error_code": error.code},
        )

    async def scale(self, *, desired: int, token: str) -> ScaleResult:
        """Set the node group's desired size with ``token`` as the EKS clientRequestToken."""
        now = self._clock()
        # A fresh cached state is good enough: re-applying the same plan on every reconcile
        # then costs no call at all, and a stale answer can only cause one idempotent write.
        current = await self.describe()
        if not current.min_size <= desired <= current.max_size:
            raise InvalidRequest(
                f"{self.name}: desired {desired} outside {current.min_size}..{current.max_size}",
                code="DesiredOutsideMinMax",
            )
        if current.desired == desired:
            return ScaleResult(
                desired=desired, changed=False, previous=current.desired, token=token
            )
        attempts_before = self._eks.caller.attempts["UpdateNodegroupConfig"]
        try:
            update = await self._eks.update_nodegroup_scaling(
                cluster=self.ref.cluster,
                nodegroup=self.ref.nodegroup,
                scaling={"desiredSize": desired},
                token=token,
            )
        except ProviderError as error:
            self._cached = None
            log.warning(
                "eks scale failed",
                extra={"provider": self.name, "desired": desired, "error_code": error.code},
            )
            raise
        writes = self._eks.caller.attempts["UpdateNodegroupConfig"] - attempts_before
        update_id = update.get("id")
        status = str(update.get("status", ""))
        self._tracking = _Tracking(
            update_id=update_id,
            scaled_at=now if desired > current.desired else None,
            update_tracking_supported=self._tracking.update_tracking_supported,
            last_update_status=status,
            asg_names=self._tracking.asg_names,
        )
        # Remember what was asked for; the settling TTL brings the cloud's own answer soon.
        self._cached = dataclasses.replace(
            current, desired=desired, updating=status == UPDATE_IN_PROGRESS or current.updating
        )
        self._cached_at = now
        log.info(
            "eks scale requested",
            extra={
                "provider": self.name,
                "previous": current.desired,
                "desired": desired,
                "update_id": update_id,
                "update_status": status,
                "writes": writes,
            },
        )
        return ScaleResult(
            desired=desired,
            changed=True,
            in_progress=status == UPDATE_IN_PROGRESS,
            previous=current.desired,
            token=token,
            update_id=update_id,
            writes=writes,
        )


def _unique(issues: list[HealthIssue]) -> tuple[HealthIssue, ...]:
    return tuple(dict.fromkeys(issues))


@dataclass(frozen=True)
class AwsProviderContext:
    """Process-wide AWS plumbing shared by every EKS placement (buckets are per account)."""

    limiters: RateLimiters = field(default_factory=RateLimiters)
    endpoint_url: str | None = None  # tests and VPC endpoints only; credentials never here
    retry: RetryPolicy | None = None
    observer: CallObserver | None = None
    clock: Clock = time.time
    # The boto3 clients, shared by region/endpoint; None is the process's (aws_api.PROCESS_CLIENTS).
    clients: AwsClients | None = None
    # The EKS providers drawing from ``limiters`` (their number sets each one's describe share).
    members: weakref.WeakSet[EksNodeGroupProvider] = field(
        default_factory=weakref.WeakSet, compare=False, hash=False
    )

    def fair_describe_interval_s(self) -> float:
        """Seconds between steady-state describes per placement that fit the shared bucket."""
        bucket = self.limiters.bucket("eks")
        return len(self.members) / (bucket.rate_per_s * DESCRIBE_BUDGET_SHARE)

    def settling_describe_interval_s(self) -> float:
        """Seconds between settling describes per settling placement that fit their share."""
        bucket = self.limiters.bucket("eks")
        now = self.clock()
        settling = sum(1 for member in list(self.members) if member.settling(now))
        return settling / (bucket.rate_per_s * SETTLING_BUDGET_SHARE)


_PROCESS_AWS: list[AwsProviderContext] = []


def process_aws_context() -> AwsProviderContext:
    """The process's AWS context (one set of buckets) for placements given none."""
    if not _PROCESS_AWS:
        _PROCESS_AWS.append(AwsProviderContext())
    return _PROCESS_AWS[0]


def build_eks_provider(
    placement: Mapping[str, Any], context: AwsProviderContext
) -> EksNodeGroupProvider:
    """Registry factory: the provider of one ``EKSNodeGroup`` placement (wire form)."""
    ref = EksNodeGroupRef.from_placement(placement)
    options: dict[str, Any] = {
        "retry": context.retry,
        "observer": context.observer,
        "clients": context.clients,
    }
    provider = EksNodeGroupProvider(
        ref=ref,
        eks=EksApi.create(
            region=ref.region,
            limiters=context.limiters,
            endpoint_url=context.endpoint_url,
            **options,
        ),
        autoscaling=AutoScalingApi.create(
            region=ref.region,
            limiters=context.limiters,
            endpoint_url=context.endpoint_url,
            **options,
        ),
        clock=context.clock,
        fair_interval_s=context.fair_describe_interval_s,
        settling_interval_s=context.settling_describe_interval_s,
    )
    context.members.add(provider)
    return provider
