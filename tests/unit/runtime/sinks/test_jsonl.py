from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from fakes import make_inspection
from prometheus_client import CollectorRegistry

from inspector.errors import ConfigError
from inspector.messages import ResultMessage
from inspector.runtime.config import JsonlSinkConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import DeadLetter, Inspection, RawMessage
from inspector.runtime.sinks.jsonl import JsonlSink


def _inspection(frame_id: str, camera_id: str = "cam", offset: int = 0) -> Inspection:
    return make_inspection(frame_id, camera_id, offset=offset)


class Done:
    """Records every call of a done callback."""

    def __init__(self) -> None:
        self.calls: list[BaseException | None] = []
        self._lock = threading.Lock()

    def __call__(self, exc: BaseException | None) -> None:
        with self._lock:
            self.calls.append(exc)


def _sink(path: Path) -> JsonlSink:
    return JsonlSink(JsonlSinkConfig(path=path), Metrics(CollectorRegistry()))


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_results_are_valid_result_messages_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "results.jsonl"
    sink = _sink(path)
    sink.setup()
    assert sink.ready()
    done = Done()
    for i in range(3):
        sink.publish(_inspection(f"f-{i}", offset=i), done)
        # Written and visible before done: a crash after done loses nothing.
        assert len(_lines(path)) == i + 1
    sink.close()
    assert done.calls == [None, None, None]
    messages = [ResultMessage.model_validate_json(line) for line in _lines(path)]
    assert [m.frame_id for m in messages] == ["f-0", "f-1", "f-2"]
    assert json.loads(_lines(path)[0])["schema"] == "inspector.result/v1"
    assert not sink.dlq_path.exists()  # created only when a dead letter arrives


def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    for run in range(2):
        sink = _sink(path)
        sink.setup()
        sink.publish(_inspection(f"run-{run}"), Done())
        sink.close()
    assert [json.loads(line)["frame_id"] for line in _lines(path)] == ["run-0", "run-1"]


def test_concurrent_publishers_write_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    sink = _sink(path)
    sink.setup()
    done = Done()
    # Long ids make each line bigger than any small write buffer.
    items = [[_inspection(f"t{t}-{i}-" + "x" * 3000) for i in range(25)] for t in range(8)]

    def publish_all(batch: list[Inspection]) -> None:
        for item in batch:
            sink.publish(item, done)

    threads = [threading.Thread(target=publish_all, args=(batch,)) for batch in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()
    ids = [ResultMessage.model_validate_json(line).frame_id for line in _lines(path)]
    assert sorted(ids) == sorted(i.message.frame_id for batch in items for i in batch)
    assert done.calls == [None] * 200


def test_dead_letters_go_to_the_sibling_file_without_payload(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    sink = _sink(path)
    sink.setup()
    raw = RawMessage(b"\x00garbage" * 10, b"cam-7", (("frame_id", b"x"),), "frames", 2, 41)
    letters = [
        DeadLetter("not an image", "undecodable", "decode", "cam-7", raw, "2025-01-01T00:00:00Z"),
        DeadLetter("camera glitch", "empty", "decode", "cam-8", None, "2025-01-01T00:00:01Z"),
    ]
    done = Done()
    for letter in letters:
        sink.publish_dead_letter(letter, done)
    sink.close()
    assert done.calls == [None, None]
    assert sink.dlq_path == tmp_path / "results.dlq.jsonl"
    assert not _lines(path)
    first, second = (json.loads(line) for line in _lines(sink.dlq_path))
    assert first == {
        "reason": "not an image",
        "error_type": "undecodable",
        "stage": "decode",
        "camera_id": "cam-7",
        "failed_at": "2025-01-01T00:00:00Z",
        "source": {"topic": "frames", "partition": 2, "offset": 41},
        "value_bytes": 80,
    }
    assert "source" not in second and "value_bytes" not in second
    assert second["camera_id"] == "cam-8"


def test_unwritable_path_reports_through_done_and_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.mkdir()  # a folder where the file should be
    sink = _sink(path)
    with pytest.raises(ConfigError, match=r"sinks\.jsonl\.path"):
        sink.setup()
    done = Done()
    sink.publish(_inspection("f"), done)
    assert len(done.calls) == 1 and isinstance(done.calls[0], IsADirectoryError)
    (tmp_path / "results.dlq.jsonl").mkdir()
    letter = DeadLetter("r", "empty", "decode", "cam", None, "2025-01-01T00:00:00Z")
    sink.publish_dead_letter(letter, done)
    assert len(done.calls) == 2 and isinstance(done.calls[1], IsADirectoryError)
    sink.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_full_reports_through_done() -> None:
    sink = _sink(Path("/dev/full"))
    sink.setup()
    done = Done()
    sink.publish(_inspection("f"), done)
    sink.close()
    assert len(done.calls) == 1 and isinstance(done.calls[0], OSError)


def test_publish_after_close_fails_through_done(tmp_path: Path) -> None:
    sink = _sink(tmp_path / "results.jsonl")
    sink.setup()
    sink.close()
    assert not sink.ready()
    done = Done()
    sink.publish(_inspection("late"), done)
    assert len(done.calls) == 1 and isinstance(done.calls[0], OSError)
    assert "closed" in str(done.calls[0])


def test_an_error_raised_by_done_is_not_reported_twice(tmp_path: Path) -> None:
    sink = _sink(tmp_path / "results.jsonl")
    sink.setup()
    calls: list[BaseException | None] = []

    def exploding(exc: BaseException | None) -> None:
        calls.append(exc)
        raise RuntimeError("caller bug")

    with pytest.raises(RuntimeError, match="caller bug"):
        sink.publish(_inspection("f"), exploding)
    sink.close()
    assert calls == [None]


def test_missing_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"sinks\.jsonl\.path"):
        JsonlSink(JsonlSinkConfig(), Metrics(CollectorRegistry()))
