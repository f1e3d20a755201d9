"""Why the results routes refuse a request: one exception kind per reason.

Besides the retention store's own :class:`~inspector.runtime.retention.records.UnknownFrameError`
and :class:`~inspector.runtime.retention.records.RetentionRequestError`;
:mod:`.api_errors` maps each kind to an HTTP status in its one table. A leaf.
"""

from __future__ import annotations

from inspector.errors import InspectorError


class RetentionOffError(InspectorError):
    """Retention is off (``retention.enabled: false``): there are no retained results."""


class MissingViewError(InspectorError):
    """The frame is retained but has no such picture (a good frame has no mask)."""


class NoRetainedFramesError(InspectorError):
    """A what-if about a camera with no retained frame (unknown, or nothing kept yet)."""


class WritesOffError(InspectorError):
    """Labels need ``http.admin_token``, which is not set."""


__all__ = ["MissingViewError", "NoRetainedFramesError", "RetentionOffError", "WritesOffError"]
