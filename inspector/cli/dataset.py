"""``inspector dataset export``: retained, labelled frames as a dataset train and calibrate read.

The daemon retains flagged frames and a sample of good ones (``retention:``); operators label
them (``POST /v1/results/{frame_id}/label``). This command writes them in the MVTec layout
(:mod:`inspector.ml.dataset_export`): ``train/good`` (sampled goods and false alarms),
``test/good`` (a seeded held-out share), ``test/<kind>`` (confirmed and missed defects) and
``manifest.json``. It only reads the retention folder (and marks the frames exported), so it
may run beside the daemon that owns it.

Its flags are checked before anything is read, each refusal one line naming the flag (exit 2):
the export library itself would create an index in a folder that has none.
"""

from __future__ import annotations

import argparse
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from inspector.cli.options import SubParser, Subparsers
from inspector.errors import ConfigError
from inspector.ml.dataset_export import DEFAULT_HELD_OUT_SHARE
from inspector.runtime.retention.reader import INDEX_NAME

#: ``--since`` as an age: a number and a unit (``90m``, ``12h``, ``7d``).
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_dataset(sub: Subparsers) -> None:
    """``inspector dataset export``: a group, so that later dataset commands sit beside it."""
    p = sub.add_parser("dataset", help="export retained, labelled frames as a training dataset")
    actions = p.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=SubParser
    )
    e = actions.add_parser(
        "export",
        help="write train/good, test/good and test/<kind> from retained, labelled frames",
        description="Write retained frames as an MVTec-layout dataset that inspector train, "
        "eval and calibrate read: train/good (sampled good frames and false alarms), test/good "
        "(a seeded held-out share of those), test/<kind> (confirmed and missed defects, masks "
        "in ground_truth/) and manifest.json (where each file came from). Flagged frames "
        "nobody labelled are left out.",
    )
    e.add_argument(
        "--retention",
        type=Path,
        required=True,
        metavar="DIR",
        help="the daemon's retention.path (it may keep running)",
    )
    e.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="a new or empty folder to write"
    )
    e.add_argument("--camera", metavar="ID", help="only this camera's frames")
    e.add_argument(
        "--since",
        metavar="T",
        help="only frames retained since T: an ISO 8601 time (2025-01-31, "
        "2025-01-31T08:00:00+01:00; no zone: UTC) or an age (90m, 12h, 7d)",
    )
    e.add_argument(
        "--held-out-share",
        type=float,
        default=DEFAULT_HELD_OUT_SHARE,
        metavar="FRACTION",
        help="share of the good frames put in test/good, 0 to below 1",
    )
    e.add_argument("--seed", type=int, default=0, help="seed of the held-out choice")
    e.set_defaults(handler=_cmd_export)


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: an ISO 8601 date or time (naive: UTC), or an age before ``now``.

    Raises:
        ConfigError: Neither, naming the flag and both forms.
    """
    age = _AGE.fullmatch(text.strip())
    if age is not None:
        return now - timedelta(seconds=float(age[1]) * _UNIT_SECONDS[age[2]])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: not a time; give an ISO 8601 date or time (2025-01-31, "
            "2025-01-31T08:00:00Z) or an age (90m, 12h, 7d)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def check_flags(retention: Path, out: Path, held_out_share: float) -> None:
    """Refuse bad folders or share before anything is read, each naming its flag.

    A ``--retention`` that is no retention folder, an ``--out`` that holds files, a
    ``--held-out-share`` out of range.

    Raises:
        ConfigError: Naming the flag, the value and what to give instead.
    """
    if not (math.isfinite(held_out_share) and 0.0 <= held_out_share < 1.0):
        raise ConfigError(
            f"--held-out-share {held_out_share}: must be at least 0 and below 1 (0.2: a fifth "
            "of the good frames in test/good)"
        )
    if not retention.is_dir():
        raise ConfigError(
            f"--retention {retention}: no such folder; give the daemon's retention.path"
        )
    if not (retention / INDEX_NAME).is_file():
        raise ConfigError(
            f"--retention {retention}: not a retention folder (no {INDEX_NAME}); give the "
            "daemon's retention.path"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: not an empty folder; export into a new one")


def _cmd_export(args: argparse.Namespace) -> int:
    from inspector.ml.dataset_export import export_dataset

    since = None if args.since is None else parse_since(args.since, datetime.now(UTC))
    check_flags(args.retention, args.out, args.held_out_share)
    summary = export_dataset(
        args.retention,
        args.out,
        camera=args.camera,
        since=since,
        held_out_share=args.held_out_share,
        seed=args.seed,
    )
    defects = ", ".join(f"{kind} {n}" for kind, n in summary.test_defects.items()) or "none"
    print(
        f"wrote {summary.out_dir}: {summary.train_good} train/good, {summary.test_good} "
        f"test/good, defects: {defects} ({summary.masks} with a mask, "
        f"{summary.defects_without_mask} without); {summary.skipped} skipped (evicted or "
        f"unreadable); sources in {summary.manifest}"
    )
    return 0
