"""Reach into moto's in-process backends to make AWS report what moto cannot be asked to.

moto has no API to set EKS node group health issues or node group status, and its
DescribeScalingActivities always answers an empty list. The threaded moto server runs in
the test process, so these helpers change its backend state directly; boto3 then reads the
result over real HTTP, through botocore's own parsers.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from moto.autoscaling.responses import AutoScalingResponse
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.eks.models import eks_backends

ICE_ACTIVITY_MESSAGE = (
    "Could not launch On-Demand Instances. InsufficientInstanceCapacity - We currently do "
    "not have sufficient {instance_type} capacity in the Availability Zone you requested."
)
ICE_HEALTH_MESSAGE = (
    "Could not launch On-Demand Instances. InsufficientInstanceCapacity - We currently do "
    "not have sufficient {instance_type} capacity in the Availability Zone you requested."
)


def _nodegroup(*, region: str, cluster: str, nodegroup: str, account_id: str) -> Any:
    return eks_backends[account_id][region].clusters[cluster].nodegroups[nodegroup]


def set_nodegroup_health(
    *,
    region: str,
    cluster: str,
    nodegroup: str,
    issues: list[dict[str, Any]],
    account_id: str = DEFAULT_ACCOUNT_ID,
) -> None:
    """Make DescribeNodegroup report ``health.issues`` (EKS wire shape: code, message, ...)."""
    target = _nodegroup(region=region, cluster=cluster, nodegroup=nodegroup, account_id=account_id)
    # moto shares one default health dict between node groups: replace it, never mutate it.
    target.health = {"issues": [dict(issue) for issue in issues]}


def set_nodegroup_ice(
    *,
    region: str,
    cluster: str,
    nodegroup: str,
    instance_type: str = "p5.48xlarge",
    account_id: str = DEFAULT_ACCOUNT_ID,
) -> None:
    """Report the launch failure EKS shows when EC2 is out of capacity for the node group."""
    set_nodegroup_health(
        region=region,
        cluster=cluster,
        nodegroup=nodegroup,
        account_id=account_id,
        issues=[
            {
                "code": "AsgInstanceLaunchFailures",
                "message": ICE_HEALTH_MESSAGE.format(instance_type=instance_type),
                "resourceIds": [f"eks-{nodegroup}-asg"],
            }
        ],
    )


def set_nodegroup_status(
    *,
    region: str,
    cluster: str,
    nodegroup: str,
    status: str,
    account_id: str = DEFAULT_ACCOUNT_ID,
) -> None:
    """Set the node group's status (ACTIVE, UPDATING, DEGRADED, ...)."""
    _nodegroup(
        region=region, cluster=cluster, nodegroup=nodegroup, account_id=account_id
    ).status = status


def nodegroup_asg_names(
    *, region: str, cluster: str, nodegroup: str, account_id: str = DEFAULT_ACCOUNT_ID
) -> list[str]:
    """Return the Auto Scaling group names moto lists for the node group."""
    target = _nodegroup(region=region, cluster=cluster, nodegroup=nodegroup, account_id=account_id)
    return [group["name"] for group in target.resources["autoScalingGroups"]]


@dataclass(frozen=True)
class ScalingActivity:
    """One Auto Scaling activity as DescribeScalingActivities returns it."""

    group: str
    status_code: str
    status_message: str
    start_time: datetime
    description: str = "Launching a new EC2 instance"

    def wire(self) -> dict[str, Any]:
        return {
            "ActivityId": str(uuid.uuid4()),
            "AutoScalingGroupName": self.group,
            "Description": self.description,
            "Cause": "At an instance was started in response to a difference between "
            "desired and actual capacity.",
            "StartTime": self.start_time,
            "EndTime": self.start_time,
            "StatusCode": self.status_code,
            "StatusMessage": self.status_message,
            "Progress": 100,
        }


_activities: dict[tuple[str, str, str], list[ScalingActivity]] = {}
_lock = threading.Lock()
_installed = False


def _describe_scaling_activities(self: AutoScalingResponse) -> ActionResult:
    group = self._get_param("AutoScalingGroupName")
    with _lock:
        found = list(_activities.get((self.current_account, self.region, group), []))
    newest_first = sorted(found, key=lambda activity: activity.start_time, reverse=True)
    return ActionResult({"Activities": [activity.wire() for activity in newest_first]})


def install_scaling_activities() -> None:
    """Let DescribeScalingActivities answer from ``add_scaling_activity`` (idempotent)."""
    global _installed
    with _lock:
        if not _installed:
            AutoScalingResponse.describe_scaling_activities = _describe_scaling_activities  # type: ignore[method-assign]
            _installed = True


def add_scaling_activity(
    *,
    region: str,
    group: str,
    status_code: str = "Failed",
    status_message: str | None = None,
    start_time: datetime | None = None,
    instance_type: str = "p5.48xlarge",
    account_id: str = DEFAULT_ACCOUNT_ID,
) -> ScalingActivity:
    """Record an activity (by default a failed launch for lack of capacity)."""
    install_scaling_activities()
    activity = ScalingActivity(
        group=group,
        status_code=status_code,
        status_message=status_message
        if status_message is not None
        else ICE_ACTIVITY_MESSAGE.format(instance_type=instance_type),
        start_time=start_time or datetime.now(tz=UTC),
    )
    with _lock:
        _activities.setdefault((account_id, region, group), []).append(activity)
    return activity


def clear_scaling_activities() -> None:
    """Forget every recorded activity."""
    with _lock:
        _activities.clear()
