"""Post core/v1 Events about any object, outside a kopf handler (provisioning, the reaper).

kopf's ``kopf.event`` needs the handler's body; provisioning happens inside a provider call
and the orphan reaper runs beside kopf, so both post through the management cluster's client
here. An Event may name an object that no longer exists (a deleted pool): ``kubectl get
events -n <namespace> --field-selector involvedObject.name=<pool>`` still finds it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

COMPONENT = "crossfade"
EVENT_MESSAGE_MAX_CHARS = 1024
POOL_API_VERSION = "crossfade.dev/v1alpha1"
POOL_KIND = "InferencePool"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """The object an Event is about (its ``involvedObject``)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""

    @classmethod
    def pool(cls, *, namespace: str, name: str, uid: str = "") -> ObjectRef:
        """Return the reference of an InferencePool (existing or deleted)."""
        return cls(POOL_API_VERSION, POOL_KIND, namespace, name, uid)


def _rfc3339(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def event_body(
    *, involved: ObjectRef, event_type: str, reason: str, message: str, now: float
) -> dict[str, Any]:
    """Return the core/v1 Event manifest (a generated name, count 1)."""
    involved_object = {
        "apiVersion": involved.api_version,
        "kind": involved.kind,
        "namespace": involved.namespace,
        "name": involved.name,
    }
    if involved.uid:
        involved_object["uid"] = involved.uid
    stamp = _rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved.name}.", "namespace": involved.namespace},
        "involvedObject": involved_object,
        "type": event_type,
        "reason": reason,
        "message": message[:EVENT_MESSAGE_MAX_CHARS],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post_event(
    api_client: Any,
    *,
    involved: ObjectRef,
    event_type: str,
    reason: str,
    message: str,
    now: float | None = None,
) -> bool:
    """Create one Event; return False (and log) when the apiserver refused it.

    Never raises for an API error: a lost Event must not fail the action it reports.
    """
    body = event_body(
        involved=involved,
        event_type=event_type,
        reason=reason,
        message=message,
        now=time.time() if now is None else now,
    )
    # Typed as Any: the stubs want a CoreV1Event model; the client sends a plain manifest too.
    core: Any = k8s.CoreV1Api(api_client)
    try:
        await core.create_namespaced_event(involved.namespace, body)
    except ApiException as exc:
        log.warning(
            "event not posted",
            extra={"reason": reason, "event_namespace": involved.namespace, "status": exc.status},
        )
        return False
    return True
