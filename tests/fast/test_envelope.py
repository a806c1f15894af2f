"""The envelope's data: JSON only, as a JSON parser reads it back."""

from __future__ import annotations

import math

import orjson
import pytest

from streams.envelope import InvalidEvent, envelope_tail, join_envelope

pytestmark = pytest.mark.fast


def _tail(data: object) -> bytes:
    return envelope_tail("user:a", "greeting", data, None, "2026-12-04T00:00:00Z", 65536)


@pytest.mark.parametrize(
    "data",
    [
        {"v": math.nan},
        {"a": [1, {"b": math.inf}]},
        {"t": (None, -math.inf)},
        {"c": None, "d": float("1e999")},
    ],
    ids=["nan", "nested-infinity", "tuple", "next-to-a-null"],
)
def test_a_float_json_has_no_number_for_is_refused(data: object) -> None:
    """orjson would write each as ``null``: a producer would publish something else than it
    meant, silently."""
    with pytest.raises(InvalidEvent, match="must not hold NaN, Infinity"):
        _tail(data)


def test_nulls_and_large_integers_are_data() -> None:
    data = {"a": None, "b": [None, 1.5, -(2**63)], "c": 2**64 - 1}
    envelope = orjson.loads(join_envelope("1-0", _tail(data)))
    assert envelope["data"] == data
    with pytest.raises(InvalidEvent, match="Integer exceeds 64-bit range"):
        _tail({"c": 2**64})


@pytest.mark.parametrize(
    ("data", "kind"),
    [([1, 2], "a list"), ("x", "a string"), (3, "a number"), (None, "null"), (True, "a boolean")],
)
def test_data_that_is_not_an_object_is_refused(data: object, kind: str) -> None:
    """Every reader of an envelope (the page, clients, the contract's ``"data": {...}``) takes
    its data for an object."""
    with pytest.raises(InvalidEvent, match=f"data must be a JSON object .*not {kind}"):
        _tail(data)
