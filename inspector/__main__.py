"""``python -m inspector`` is the same as the ``inspector`` console script."""

from inspector.cli import entry

entry()
