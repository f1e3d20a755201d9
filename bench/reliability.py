"""The fault matrix's table: run the fault scenarios on Apache Kafka and write the README's table.

Runs ``tests/integration/test_faults.py`` (every scenario accounts for each frame it produced
and appends a row to a JSON-lines file), then replaces the table between the README's
``<!-- reliability:begin -->`` and ``<!-- reliability:end -->`` markers with those rows. One
command, no hand-written figures: ``make reliability``.

    .venv/bin/python bench/reliability.py               # all scenarios, README updated
    .venv/bin/python bench/reliability.py --no-readme   # print the table only
    INSPECTOR_SOAK_MINUTES=2 .venv/bin/python bench/reliability.py   # a 2-minute soak
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from inspector.tools.benchmark.record import machine, markdown_table

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the scenarios' accounting."""
    cells = [("scenario", "frames", "results", "dead letters", "lost", "duplicates", "recovery")]
    for r in rows:
        recovery = r.get("recovery_s")
        cells.append(
            (
                r["scenario"],
                str(r["frames"]),
                str(r["results"]),
                str(r["dead_letters"]),
                str(r["lost"]),
                str(r["duplicates"]),
                "" if recovery is None else f"{recovery:.1f} s",
            )
        )
    return markdown_table(cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    parser.add_argument("-k", help="only the scenarios pytest -k selects")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inspector-reliability-") as tmp:
        rows_file = Path(tmp) / "rows.jsonl"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        # The soak too (deselected in `make test`): INSPECTOR_SOAK_MINUTES, 20 by default.
        cmd += [str(ROOT / "tests" / "integration" / "test_faults.py"), "-m", "integration or soak"]
        cmd += ["-k", args.k] if args.k else []
        env = {**os.environ, "INSPECTOR_RELIABILITY_OUT": str(rows_file)}
        done = subprocess.run(cmd, cwd=ROOT, env=env, check=False)
        rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if (
            rows_file.exists()
        ) else []  # fmt: skip
    text = table(rows)
    print(text)
    if rows and not args.no_readme:
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        block = (
            f"{BEGIN}\n{text}\n`make reliability`, {when}, {machine()}; pytest exit "
            f"{done.returncode}.\n{END}"
        )
        readme = args.readme.read_text()
        start, end = readme.index(BEGIN), readme.index(END) + len(END)
        args.readme.write_text(readme[:start] + block + readme[end:])
        print(f"README table updated ({len(rows)} scenarios)", file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
