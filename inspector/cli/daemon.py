"""The daemon's commands: ``inspector run`` and ``inspector cameras`` (what it can open)."""

from __future__ import annotations

import argparse
import json
import textwrap
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ValidationError

from inspector.cli.options import Subparsers
from inspector.errors import ConfigError
from inspector.runtime.config import InspectorConfig


def add_run(sub: Subparsers) -> None:
    """``inspector run --config FILE``: its help lists the configuration's sections and keys."""
    p = sub.add_parser(
        "run",
        help="run the inspection daemon",
        description=_run_description(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="YAML file (environment overrides: INSPECTOR_*)")
    p.set_defaults(handler=_cmd_run)


def add_cameras(sub: Subparsers) -> None:
    """``inspector cameras [--json]``."""
    p = sub.add_parser(
        "cameras", help="list the GenICam cameras (GigE Vision, USB3 Vision) found through Aravis"
    )
    p.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    p.set_defaults(handler=_cmd_cameras)


def _cmd_run(args: argparse.Namespace) -> int:
    import yaml

    from inspector.runtime.config import load_config
    from inspector.runtime.daemon import Daemon

    try:
        config = load_config(args.config)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ConfigError(f"cannot read config {args.config}: {exc}") from exc
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    return daemon.run()


def _cmd_cameras(args: argparse.Namespace) -> int:
    from inspector.runtime.sources.aravis import list_devices

    devices = list_devices()
    if args.json:
        print(json.dumps([d.as_dict() for d in devices], indent=2))
        return 0
    if not devices:
        print("no GenICam camera found (GigE Vision: same subnet, firewall open for UDP 3956)")
        return 0
    columns = ("id", "vendor", "model", "serial", "address", "protocol")
    rows = [columns, *[tuple(d.as_dict()[c] for c in columns) for d in devices]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _run_description() -> str:
    """The daemon's configuration sections and keys, from the configuration models."""
    lines = [
        "Run the inspection daemon until SIGTERM/SIGINT (a second one exits at once).",
        "",
        "The YAML file has these sections (keys, defaults where short); any key can be set",
        "from the environment as INSPECTOR_SECTION__KEY, e.g. INSPECTOR_KAFKA__BOOTSTRAP_SERVERS",
        "(examples: configs/*.yaml):",
    ]
    for section, field in InspectorConfig.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            keys = []
            for name, sub in model.model_fields.items():
                default = sub.get_default(call_default_factory=True)
                shown = default.value if isinstance(default, Enum) else default
                short = shown is not None and not isinstance(shown, BaseModel)
                keys.append(f"{name}={shown}" if short and len(str(shown)) <= 24 else name)
            lines.append(f"  {section}: " + ", ".join(keys))
        else:
            lines.append(f"  {section}: a list of sources (type: kafka, camera or directory)")
    return "\n".join(_wrap(line) for line in lines)


def _wrap(line: str, width: int = 78) -> str:
    return textwrap.fill(line, width, subsequent_indent="      ") if len(line) > width else line
