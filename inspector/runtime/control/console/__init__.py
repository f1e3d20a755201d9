"""The operator console at ``/`` on the daemon's HTTP port.

Server-rendered pages (Jinja2 templates, autoescaped) and one hand-kept script
(``static/console.js``, no build step, no framework) that polls the daemon's JSON:

* ``/``: a tile per camera (last verdict, score vs threshold, frames/s, late share, up or down,
  model and recipe, false alarms and catches) and the flagged frames as they are retained;
* ``/review``: the unlabelled flagged frames, one at a time: ``f`` false alarm, ``d`` real
  defect (asks for its kind), ``s`` skip;
* ``/frame?id=``: one retained frame: overlay, mask, regions, score, model, thresholds, times;
  its label set, replaced or removed.

Tokens are asked for when the daemon answers 401 and kept in the tab's ``sessionStorage``,
sent as a bearer header only. :mod:`.routes` registers it; :mod:`.tiles` builds the overview.
"""

from __future__ import annotations

from inspector.runtime.control.console.routes import CONTENT_SECURITY_POLICY, add_console_routes

__all__ = ["CONTENT_SECURITY_POLICY", "add_console_routes"]
