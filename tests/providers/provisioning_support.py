"""Shared helpers of the provisioning and reaper tests: a moto EKS cluster, templates, owners."""

from __future__ import annotations

import uuid

import boto3

from crossfade.providers.aws_api import EksApi
from crossfade.providers.aws_eks_provisioner import EksNodeGroupProvisioner
from crossfade.providers.provisioning import NodeGroupTemplate, Owner, Taint
from crossfade.providers.ratelimit import RateLimiters
from crossfade.testing.aws_faults import FaultProxy, RecordedRequest
from tests.providers.conftest import ACCOUNT, REGION, RecordingSleep

TEMPLATE = NodeGroupTemplate(
    instance_types=("p5.48xlarge", "p4d.24xlarge"),
    subnets=("subnet-a", "subnet-b"),
    node_role=f"arn:aws:iam::{ACCOUNT}:role/node",
    min_size=1,
    max_size=4,
    labels={"crossfade.dev/workload": "inference"},
    taints=(Taint(key="nvidia.com/gpu", value="present"),),
    disk_size_gib=200,
)


def new_cluster(moto_server: str) -> str:
    """Create an empty EKS cluster in moto and return its name."""
    name = f"prod-{uuid.uuid4().hex[:8]}"
    boto3.client("eks", region_name=REGION, endpoint_url=moto_server).create_cluster(
        name=name,
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/cluster",
        resourcesVpcConfig={"subnetIds": ["subnet-a", "subnet-b"]},
    )
    return name


def new_owner(placement: str = "aws-standby") -> Owner:
    return Owner(namespace="serving", pool="llama", placement=placement, pool_uid=str(uuid.uuid4()))


def make_provisioner(*, cluster: str, endpoint_url: str) -> EksNodeGroupProvisioner:
    """A fresh provisioner (a fresh operator process, as far as memory goes)."""
    eks = EksApi.create(
        region=REGION,
        limiters=RateLimiters(),
        endpoint_url=endpoint_url,
        sleep=RecordingSleep(),
    )
    return EksNodeGroupProvisioner(cluster=cluster, eks=eks)


def node_group_deletes(proxy: FaultProxy) -> list[RecordedRequest]:
    """DeleteNodegroup requests the proxy saw (it names them by method and path)."""
    return [r for r in proxy.requests() if r.method == "DELETE" and "/node-groups/" in r.path]
