"""Typed provider errors: every cloud SDK error is mapped onto one of these at the edge."""

from __future__ import annotations

from typing import ClassVar

from crossfade.engine.observations import ProviderErrorKind


class ProviderError(Exception):
    """Base of every error a capacity provider raises; SDK errors never leave a provider.

    ``kind`` is the engine's error class, ``retryable`` says whether the same call may
    succeed later without a change to the pool, and ``code`` keeps the vendor's own error
    code (for example ``ThrottlingException``) for logs, status and metrics labels.
    """

    kind: ClassVar[ProviderErrorKind] = ProviderErrorKind.UNAVAILABLE
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InsufficientCapacity(ProviderError):  # noqa: N818 (ADR 0001 names)
    """The cloud has no capacity for the instance types asked for (ICE).

    Not retryable on the spot: the engine backs off from the placement (ICE cache) and
    scales elsewhere instead of asking again right away.
    """

    kind = ProviderErrorKind.INSUFFICIENT_CAPACITY
    retryable = False


class Throttled(ProviderError):  # noqa: N818 (ADR 0001 names)
    """The cloud API (or crossfade's own token bucket) refused the call for its rate.

    ``retry_after_s`` is a hint of when a new call may pass, when known.
    """

    kind = ProviderErrorKind.THROTTLED
    retryable = True

    def __init__(self, message: str, *, code: str = "", retry_after_s: float | None = None):
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class NotFound(ProviderError):  # noqa: N818 (ADR 0001 names)
    """The cluster or node group named by the placement does not exist."""

    kind = ProviderErrorKind.NOT_FOUND
    retryable = False


class PermissionDenied(ProviderError):  # noqa: N818 (ADR 0001 names)
    """The operator's cloud identity may not make the call (IAM, missing credentials)."""

    kind = ProviderErrorKind.PERMISSION_DENIED
    retryable = False


class ProviderUnavailable(ProviderError):  # noqa: N818 (ADR 0001 names)
    """The cloud API could not be reached, timed out, or answered with a server error."""

    kind = ProviderErrorKind.UNAVAILABLE
    retryable = True


class InvalidRequest(ProviderError):  # noqa: N818 (ADR 0001 names)
    """The request cannot succeed as made (size outside min..max, bad parameter)."""

    kind = ProviderErrorKind.INVALID_REQUEST
    retryable = False


class UpdateInProgress(ProviderUnavailable):
    """Another update of the node group is still running; a new one may pass once it ends."""

    retryable = True
