"""Why the control API refuses a change: one exception kind per reason.

:class:`~inspector.runtime.control.line.LineControl` raises these (besides the intake's and the
model set's own :class:`~inspector.runtime.intake.UnknownSourceError`,
:class:`~inspector.runtime.intake.DuplicateSourceError`,
:class:`~inspector.runtime.models.UnknownModelError`,
:class:`~inspector.runtime.models.ModelInUseError` and the sources'
:class:`~inspector.errors.NotTriggerableError`), and :mod:`inspector.runtime.control.api_errors`
maps each kind to an HTTP status in one table. A kind per reason, not a generic error with a
message: a route never has to guess whether a failure is the caller's (4xx), the daemon's state
(503) or a bug (500).
"""

from __future__ import annotations

from inspector.errors import InspectorError


class SourceSetupError(InspectorError):
    """A source given through the API could not start (its camera, folder or broker)."""


class ModelSetupError(InspectorError):
    """A model given through the API could not be loaded (file, calibration, device)."""


class RecipeError(InspectorError):
    """A recipe cannot be used: its model is not served, or its tiles do not fit that model."""


class UnknownCameraError(InspectorError):
    """No recipe is set for this camera id."""


class NoShadowError(InspectorError):
    """The camera's recipe names no shadow model, or it has no promotion to roll back."""


class ShuttingDownError(InspectorError):
    """The daemon is shutting down (SIGTERM): it takes no more changes."""
