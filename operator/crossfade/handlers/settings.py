"""kopf settings for crossfade: storages in annotations, watch timeouts, posting, peering.

Patch batching: kopf 1.45 dropped time-based batching; each reconcile pass writes at most
one merged status patch and one annotations patch (handlers.reconcile), never one per field.
"""

from __future__ import annotations

from typing import Any

import kopf

from crossfade.handlers.manual import PREFIX

FINALIZER = "crossfade.dev/finalizer"
KOPF_ANNOTATION_PREFIX = "kopf.crossfade.dev"
# A watch that the server silently stops feeding is cut and restarted after this.
WATCH_SERVER_TIMEOUT_S = 60
WATCH_CLIENT_TIMEOUT_S = 90
WATCH_CONNECT_TIMEOUT_S = 10
WATCH_INACTIVITY_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 30
WORKER_IDLE_TIMEOUT_S = 5.0
# kopf posts each object's Events from its own worker over a session without a connection
# limit, so Events of many pools at once opened a TLS connection each (~300 KiB of RSS while
# kept alive). Capped; Events of further pools wait their turn, watch handling does not.
EVENT_POSTING_WORKERS = 16
# How long kopf waits for a stopped daemon to end by itself before it cancels the task. A
# sleeping pool loop ends within one look of its stop watch (handlers/wakeup.py, 0.5 s);
# with kopf's default (ten event-loop turns, no time) every sleeping loop was cancelled
# instead, mid-sleep, with a warning per pool. kopf waits for all daemons at once.
DAEMON_EXIT_WAIT_S = 2.0
# Annotations crossfade writes itself: they must not count as spec changes.
IGNORED_DIFF_FIELDS = (("metadata", "annotations"), ("status",))


def configure(settings: Any, *, component: str, instance: str) -> None:
    """Apply crossfade's settings to kopf's OperatorSettings (called at startup)."""
    settings.persistence.finalizer = FINALIZER
    # kopf's own status.* writes would be pruned by our structural schema: use annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=KOPF_ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX,
        key="last-handled-configuration",
        ignored_fields=[("metadata", "annotations"), ("status",)],
    )
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.watching.connect_timeout = WATCH_CONNECT_TIMEOUT_S
    settings.watching.inactivity_timeout = WATCH_INACTIVITY_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.queueing.idle_timeout = WORKER_IDLE_TIMEOUT_S
    settings.background.instant_exit_timeout = DAEMON_EXIT_WAIT_S
    # Events are posted explicitly (kopf.event); log lines are not mirrored into Events.
    settings.posting.enabled = True
    settings.posting.loggers = False
    settings.posting.reporting_component = component
    settings.posting.reporting_instance = instance
    settings.posting.event_name_prefix = "crossfade-"
    settings.posting.worker_limit = EVENT_POSTING_WORKERS
    # HA is a Lease held by the process (handlers.leadership), not kopf peering.
    settings.peering.standalone = True


__all__ = ["FINALIZER", "IGNORED_DIFF_FIELDS", "PREFIX", "configure"]
