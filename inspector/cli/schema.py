"""``inspector schema``: the result message's JSON Schema on standard output."""

from __future__ import annotations

import argparse
import sys

from inspector.cli.options import Subparsers
from inspector.errors import InspectorError


def add_schema(sub: Subparsers) -> None:
    """``inspector schema``."""
    p = sub.add_parser("schema", help="print the result message JSON Schema")
    p.set_defaults(handler=_cmd_schema)


def _cmd_schema(args: argparse.Namespace) -> int:
    from inspector.messages import result_json_schema_text

    text = result_json_schema_text()
    try:
        if sys.stdout is None:  # started with stdout closed (`>&-`)
            raise OSError("standard output is closed")
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        raise InspectorError(
            f"cannot write the schema to standard output ({exc}); redirect it to a file"
        ) from exc
    return 0
