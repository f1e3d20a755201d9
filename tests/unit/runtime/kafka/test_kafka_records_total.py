"""The record-to-frame path is total: whatever a producer sends, a frame or a dead letter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.runtime.ids import (
    MAX_ID_CHARS,
    for_log,
    replacement_id,
    valid_frame_id,
    valid_id,
)
from inspector.runtime.kafka.consumed import (
    Decoded,
    InvalidHeaderError,
    captured_at,
    decode_timed,
    to_item,
)
from inspector.runtime.records import DeadLetter, Frame

PNG = bytes(cv2.imencode(".png", np.full((4, 6, 3), 9, np.uint8))[1].tobytes())
IMAGE = np.zeros((4, 6, 3), np.uint8)


@dataclass
class Rec:
    offset: int = 7
    value: Any = PNG
    key: Any = None
    headers: Any = field(default_factory=list)
    timestamp: Any = 1_764_331_200_000


#: Digits of every Unicode category (superscripts, fractions, other scripts), signs, huge.
_digits = st.text(
    alphabet=st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=40
).map(str.encode)
_header_value = st.one_of(
    st.none(),
    st.binary(max_size=300),
    _digits,
    st.text(max_size=80).map(str.encode),
    st.just(b"9" * 5000),
    st.just("²".encode()),
    st.just(b"\xff\xfe\x00"),
)
_header_name = st.sampled_from(
    ["captured_at", "camera_id", "frame_id", "part_id", "content_type", "x"]
)
_headers = st.lists(st.tuples(_header_name, _header_value), max_size=6)
_key = st.one_of(st.none(), st.binary(max_size=200), st.just(b"k" * 65536))


def _item(record: Rec, decoded: Decoded | None) -> Frame | DeadLetter:
    return to_item(
        "frames", 2, record, decoded, max_message_bytes=1 << 20, received=0.0, ack=lambda: None
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(headers=_headers, key=_key, timestamp=st.one_of(st.none(), st.integers()))
def test_any_headers_and_key_give_a_frame_with_safe_ids_or_a_dead_letter(
    headers: list[tuple[str, bytes | None]], key: bytes | None, timestamp: int | None
) -> None:
    item = _item(Rec(key=key, headers=headers, timestamp=timestamp), Decoded(IMAGE, None, 0.0))
    if isinstance(item, DeadLetter):  # only a captured_at that is not a time
        assert item.error_type == "invalid_header" and "captured_at" in item.reason
        return
    meta = item.meta
    assert meta.captured_at is None or isinstance(meta.captured_at, str)
    assert valid_id(meta.camera_id) or meta.camera_id == "unknown"
    assert valid_frame_id(meta.frame_id)
    assert len(meta.camera_id) <= MAX_ID_CHARS and len(meta.frame_id) <= MAX_ID_CHARS
    assert meta.part_id is None or valid_frame_id(meta.part_id)
    assert (meta.source_partition, meta.source_offset) == (2, 7)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    value=st.one_of(st.none(), st.binary(max_size=400), st.just(PNG), st.integers(), st.text()),
    key=st.one_of(_key, st.integers(), st.text()),
    headers=st.one_of(
        _headers,
        st.none(),
        st.integers(),
        st.lists(st.one_of(st.tuples(st.integers(), st.binary()), st.just(("a",)), st.none())),
    ),
    offset=st.one_of(st.integers(min_value=0), st.none()),
)
def test_any_record_ends_as_a_frame_or_a_dead_letter(
    value: Any, key: Any, headers: Any, offset: Any
) -> None:
    # Fields of the wrong type too (a buggy fake or client): the record still has an ending.
    decoded = decode_timed(value) if isinstance(value, bytes) and value else None
    item = _item(Rec(offset=offset, value=value, key=key, headers=headers), decoded)
    assert isinstance(item, Frame | DeadLetter)
    if isinstance(item, DeadLetter):
        assert item.error_type in {
            "empty",
            "oversized",
            "undecodable",
            "malformed_record",
            "invalid_header",
        }
        assert item.raw is not None and item.raw.topic == "frames"
        assert isinstance(item.raw.value, bytes)


@given(header=_header_value, timestamp=st.one_of(st.none(), st.integers()))
def test_captured_at_gives_a_time_or_says_what_is_wrong(
    header: bytes | None, timestamp: int | None
) -> None:
    try:
        out = captured_at(header, timestamp)
    except InvalidHeaderError as exc:
        assert "captured_at" in str(exc) and len(str(exc)) < 400
    else:
        assert out is None or isinstance(out, str)


def test_the_poison_header_that_killed_the_source_thread() -> None:
    # "²".isdigit() is True and int("²") raises: this header once crash-looped the daemon.
    item = _item(Rec(headers=[("captured_at", "²".encode())]), Decoded(IMAGE, None, 0.0))
    assert isinstance(item, DeadLetter)
    assert (item.error_type, item.stage) == ("invalid_header", "parse")
    assert "'²'" in item.reason and item.raw is not None and item.raw.offset == 7


def test_invalid_ids_are_replaced_stably_and_counted() -> None:
    noted: list[str] = []
    huge = b"k" * 65536
    first, second = (
        to_item(
            "frames",
            0,
            Rec(key=huge, headers=[("frame_id", b"bad\nid")]),
            Decoded(IMAGE, None, 0.0),
            max_message_bytes=1 << 20,
            received=0.0,
            ack=lambda: None,
            note_invalid=noted.append,
        )
        for _ in range(2)
    )
    assert isinstance(first, Frame) and isinstance(second, Frame)
    assert first.meta.camera_id == second.meta.camera_id == replacement_id(huge)
    assert first.meta.frame_id == "frames:0:7"  # the default, not the forged line
    assert noted == ["camera_id", "frame_id"] * 2


def test_valid_ids() -> None:
    assert valid_id("cam-01") and valid_id("Kamera-Süd") and valid_id("x" * MAX_ID_CHARS)
    for bad in ("", " ", "a b", "x" * (MAX_ID_CHARS + 1), "a\nb", "a\x00", "bad\ufffd"):
        assert not valid_id(bad), bad
        assert not valid_frame_id(bad), bad
    # A frame id is never a URL path segment: a producer's path-like frame id is kept.
    assert valid_frame_id("line1/cam2/000042") and not valid_id("line1/cam2")


def test_a_camera_id_that_no_url_could_address_is_replaced() -> None:
    headers = [("camera_id", b"line/1"), ("frame_id", b"line1/cam2/000042")]
    item = _item(Rec(headers=headers), Decoded(IMAGE, None, 0.0))
    assert isinstance(item, Frame)
    assert item.meta.camera_id == replacement_id(b"line/1")
    assert item.meta.frame_id == "line1/cam2/000042"
    assert for_log("a\nb") == "'a\\nb'"
    assert for_log("y" * 100).endswith("(100 in all)") and len(for_log("y" * 100)) < 60


@pytest.mark.parametrize(
    "hostile",
    [b"p" * 65536, b"SN-1\nforged log line", b"\x00\x1b[31m", b"\xff\xfe\x00", b"SN 1", b"   "],
)
def test_a_hostile_part_id_is_dropped_and_counted_like_other_ids(hostile: bytes) -> None:
    # As a frame id: huge, control characters, whitespace or bytes that are not UTF-8 never
    # reach the result; the frame keeps going without a part id (a stand-in would name a part
    # that does not exist), and the metric's hook is told (not for a blank header: absent).
    noted: list[str] = []
    headers = [("part_id", hostile), ("frame_id", b"f-1")]
    item = to_item(
        "frames",
        0,
        Rec(headers=headers),
        Decoded(IMAGE, None, 0.0),
        max_message_bytes=1 << 20,
        received=0.0,
        ack=lambda: None,
        note_invalid=noted.append,
    )
    assert isinstance(item, Frame)
    assert item.meta.part_id is None and item.meta.frame_id == "f-1"
    assert noted == ([] if hostile.strip() == b"" else ["part_id"])


def test_a_part_id_is_carried_as_given() -> None:
    # Path-like serials survive, as frame ids do; no header: no part id.
    item = _item(Rec(headers=[("part_id", b"SN/2026/000042")]), Decoded(IMAGE, None, 0.0))
    assert isinstance(item, Frame) and item.meta.part_id == "SN/2026/000042"
    plain = _item(Rec(), Decoded(IMAGE, None, 0.0))
    assert isinstance(plain, Frame) and plain.meta.part_id is None
