"""The generated performance file: one section per bench script, replaced, others kept."""

from __future__ import annotations

import argparse
from pathlib import Path

from inspector.tools.benchmark.record import (
    HEADER,
    add_record_arguments,
    markdown_table,
    write_section,
)


def test_markdown_table_has_a_header_rule_and_one_line_per_row() -> None:
    table = markdown_table([("a", "b"), ("1", "2"), ("3", "4")])
    assert table == "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n"
    # A "|" inside a cell (e.g. a header "max|diff|") must not split it.
    assert markdown_table([("max|d|",), ("1",)]).startswith("| max\\|d\\| |\n")


def test_a_section_is_replaced_and_the_others_are_kept_in_order(tmp_path: Path) -> None:
    path = tmp_path / "PERFORMANCE.md"
    write_section(path, "side_by_side", "First", "old body\n", command=["python", "x.py"])
    write_section(path, "batch_sweep-cpu-bf16", "Sweep", "sweep body\n", command=["python", "y"])
    write_section(path, "side_by_side", "First again", "new body\n", command=["python", "x.py"])
    text = path.read_text()
    assert text.startswith(HEADER)
    assert "old body" not in text and "new body" in text and "sweep body" in text
    assert text.count("<!-- bench:side_by_side -->") == 1
    # Sorted by key, so reruns do not reorder the file and diffs stay small.
    assert text.index("bench:batch_sweep-cpu-bf16") < text.index("bench:side_by_side")
    # Each section names its command and the machine it ran on.
    assert "`python x.py`, " in text and "torch " in text and " cores, " in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_hand_written_text_outside_sections_does_not_survive(tmp_path: Path) -> None:
    path = tmp_path / "PERFORMANCE.md"
    path.write_text("stale prose with 12.3 images/s\n")
    write_section(path, "gpu", "GPU", "| a |\n|---|\n", command=["bash", "bench/gpu.sh"])
    assert "stale prose" not in path.read_text()


def test_the_default_file_lies_beside_the_script(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_record_arguments(parser, str(tmp_path / "bench" / "side_by_side.py"))
    args = parser.parse_args([])
    assert args.record == (tmp_path / "bench" / "PERFORMANCE.md").resolve()
    assert not args.no_record
    assert parser.parse_args(["--no-record"]).no_record
