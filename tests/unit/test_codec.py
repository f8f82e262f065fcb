"""Encoding of events and user values: round trips, and clear errors for what cannot be read."""

from __future__ import annotations

import dataclasses
import math
import typing

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from continuum_py import EncodingError, JournalCorrupt, SchemaTooNew
from continuum_py._client import SnapshotEncoder, SnapshotState, decode_snapshot
from continuum_py._codec import (
    decode_args,
    decode_event,
    decode_value,
    encode_args,
    encode_event,
    encode_value,
    error_info,
    value_decoder,
)
from continuum_py.events import (
    SCHEMA_VERSION,
    AnyEvent,
    CancelRequested,
    ChildCompleted,
    ChildStarted,
    CompensationStarted,
    ContinuedAsNew,
    ErrorInfo,
    EventPublished,
    MarkerRecorded,
    RunCancelledEvent,
    RunCompleted,
    RunFailedEvent,
    RunStarted,
    RunSuspended,
    SideEffectRecorded,
    SignalReceived,
    SignalWaitStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
    TimerFired,
    TimerStarted,
    schema_of,
)
from continuum_py.journal import Snapshot

RAW = msgspec.Raw(b'{"a":[1,2.5,"x",null]}')
ERR = ErrorInfo(type="app.Declined", message="no", traceback="Traceback ...")

EXAMPLES: list[typing.Any] = [
    RunStarted(seq=1, at=1.5, run_id="r", workflow="wf", args=msgspec.Raw(b'["a",1]')),
    StepScheduled(seq=2, at=2.0, position=1, step="s", attempt=1, args=RAW),
    StepCompleted(seq=3, position=1, step="s", attempt=1, result=RAW),
    StepFailed(seq=4, position=2, step="s", attempt=2, error=ERR, final=False, retry_delay=0.4),
    RunCompleted(seq=5, result=msgspec.Raw(b"null")),
    RunFailedEvent(seq=6, error=ERR),
    TimerStarted(seq=7, position=3, fire_at=1e9),
    TimerFired(seq=8, position=3),
    SignalWaitStarted(seq=9, position=4, name="approve", timeout_at=2e9),
    SignalReceived(seq=10, inbox_id=1, name="approve", payload=RAW),
    SideEffectRecorded(seq=11, position=5, what="now", value=msgspec.Raw(b"1.5")),
    MarkerRecorded(seq=12, position=6, name="change-1"),
    EventPublished(seq=13, position=7, key="progress", value=RAW),
    ChildStarted(seq=14, position=8, child_run_id="r.8", workflow="c", args=RAW),
    ChildCompleted(seq=15, inbox_id=2, position=8, child_run_id="r.8", ok=False, error=ERR),
    CancelRequested(seq=16, inbox_id=3),
    CompensationStarted(seq=17, position=9, reason="failed", error=ERR),
    RunSuspended(seq=17, wake_at=None),
    RunCancelledEvent(seq=18),
    ContinuedAsNew(seq=19, new_run_id="r~2", args=RAW),
]


def test_examples_cover_every_event_kind():
    assert {type(e) for e in EXAMPLES} == set(typing.get_args(AnyEvent))


def test_each_event_is_stored_with_the_schema_of_its_kind():
    # Only kinds newer than schema 2 need a newer reader; the rest stay readable by one.
    newer = {type(e).__name__ for e in EXAMPLES if schema_of(e) > 2}
    assert newer == {"CompensationStarted"}
    assert max(schema_of(e) for e in EXAMPLES) == SCHEMA_VERSION


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_kind_round_trips(event):
    data = encode_event(event)
    assert msgspec.json.decode(data)["kind"] == type(event).__name__
    back = decode_event("r", event.seq, SCHEMA_VERSION, data)
    assert type(back) is type(event)
    assert back == event


def test_run_end_events_keep_their_stored_kind_and_old_names():
    # The classes were renamed (they read as the errors of the same name); what
    # journals store, and the names a history prints, did not change.
    import continuum_py.events as events

    stored = b'{"kind":"RunFailed","seq":6,"at":0.0,"error":{"type":"E","message":"m"}}'
    assert type(decode_event("r", 6, SCHEMA_VERSION, stored)) is RunFailedEvent
    assert encode_event(RunCancelledEvent(seq=2)).startswith(b'{"kind":"RunCancelled",')
    assert repr(RunCancelledEvent(seq=2)).startswith("RunCancelled(")
    with pytest.warns(DeprecationWarning, match="use RunFailedEvent"):
        assert events.RunFailed is RunFailedEvent
    with pytest.warns(DeprecationWarning, match="use RunCancelledEvent"):
        assert events.RunCancelled is RunCancelledEvent
    with pytest.raises(AttributeError):
        _ = events.RunFinished  # type: ignore[attr-defined]


def test_user_values_are_embedded_as_plain_json():
    data = encode_event(EXAMPLES[1])
    assert b'"args":{"a":[1,2.5,"x",null]}' in data


def test_an_event_from_a_newer_schema_is_refused():
    data = encode_event(EXAMPLES[1])
    with pytest.raises(SchemaTooNew) as ei:
        decode_event("r", 2, SCHEMA_VERSION + 1, data)
    err = ei.value
    assert isinstance(err, JournalCorrupt)
    assert (err.run_id, err.seq, err.found, err.supported) == (
        "r",
        2,
        SCHEMA_VERSION + 1,
        SCHEMA_VERSION,
    )
    assert "upgrade continuum-py" in str(err)


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"\xff\xfe not json", "malformed"),
        (b'{"kind":"TimerTeleported","seq":2}', "TimerTeleported"),
        (b'{"kind":"StepScheduled","seq":2}', "position"),  # required fields missing
    ],
)
def test_a_corrupt_event_names_the_run_and_seq(data, detail):
    with pytest.raises(JournalCorrupt) as ei:
        decode_event("order-1", 2, SCHEMA_VERSION, data)
    assert (ei.value.run_id, ei.value.seq) == ("order-1", 2)
    assert "run 'order-1' event seq 2 is unreadable" in str(ei.value)
    assert detail in str(ei.value)


def test_an_event_stored_under_another_seq_is_corrupt():
    with pytest.raises(JournalCorrupt, match="claims seq 2"):
        decode_event("r", 3, SCHEMA_VERSION, encode_event(EXAMPLES[1]))


class Opaque:
    pass


def test_an_unencodable_value_names_the_step_and_the_type():
    with pytest.raises(EncodingError) as ei:
        encode_value({"ok": 1, "bad": [Opaque()]}, what="charge")
    assert (ei.value.step, ei.value.type_name) == ("charge", "Opaque")
    assert "step 'charge'" in str(ei.value) and "'Opaque'" in str(ei.value)


@dataclasses.dataclass
class Receipt:
    id: str
    cents: int


class Line(msgspec.Struct):
    sku: str
    qty: int = 1


def test_typed_values_decode_to_their_annotated_types():
    assert decode_value(encode_value(Receipt("r1", 5), what=None), Receipt) == Receipt("r1", 5)
    assert decode_value(encode_value([Line("a", 2)], what=None), list[Line]) == [Line("a", 2)]
    assert decode_value(b"[1, 2]", tuple[int, int]) == (1, 2)
    with pytest.raises(msgspec.ValidationError):
        decode_value(b'"five"', int)


# An annotation msgspec reads but that cannot be a dict key: Annotated with a list in it.
UNHASHABLE = typing.Annotated[int, ["note"]]


@pytest.mark.parametrize(
    ("type_", "raw"),
    [
        (typing.Any, b'{"a": [1, 2.5, null]}'),
        (int, b"7"),
        (int, b'"seven"'),
        (list[Line], b'[{"sku": "a", "qty": 2}]'),
        (Receipt, b'{"id": "r1"}'),
        (UNHASHABLE, b"3"),
        (UNHASHABLE, b"3.5"),
        (str, b"[1,"),
    ],
)
def test_a_kept_value_decoder_decodes_and_refuses_as_decode_value(type_, raw):
    def outcome(decode):
        try:
            return ("value", decode(raw))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return (type(exc).__name__, str(exc))

    assert outcome(value_decoder(type_)) == outcome(lambda r: decode_value(r, type_))


def test_arguments_decode_by_position_and_extra_ones_stay_untyped():
    raw = encode_args(("r1", {"id": "x", "cents": 3}, [1]), what="wf")
    assert decode_args(raw, [str, Receipt]) == ["r1", Receipt("x", 3), [1]]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_json_values_round_trip_unchanged(value):
    back = decode_value(encode_value(value, what=None))
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf], ids=repr)
def test_nan_and_infinity_are_refused_not_recorded_as_null(number):
    # JSON has no NaN: msgspec writes null, which would come back as None.
    with pytest.raises(EncodingError, match="JSON has no NaN") as ei:
        encode_value(number, what="measure")
    assert ei.value.step == "measure" and ei.value.type_name == "float"


@given(json_values, st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(0, 3))
def test_a_non_finite_float_is_refused_at_any_depth(value, number, depth):
    nested: typing.Any = number
    for i in range(depth):
        nested = [value, nested] if i % 2 else {"k": nested, "other": value}
    with pytest.raises(EncodingError, match="NaN"):
        encode_value(nested, what=None)
    with pytest.raises(EncodingError, match="NaN"):
        encode_args((value, nested), what=None)


def test_error_info_names_the_exception_and_keeps_its_traceback():
    try:
        {}["missing"]
    except KeyError as exc:
        builtin = error_info(exc)
    assert (builtin.type, builtin.message) == ("KeyError", "'missing'")
    assert "KeyError: 'missing'" in builtin.traceback

    class Declined(Exception):
        pass

    try:
        raise Declined("card")
    except Declined as exc:
        custom = error_info(exc)
    assert custom.type == f"{__name__}.{Declined.__qualname__}"
    assert custom.message == "card"
    assert 'raise Declined("card")' in custom.traceback


@given(
    cuts=st.lists(st.integers(0, len(EXAMPLES)), min_size=1, max_size=6),
    in_flight=st.lists(st.sampled_from(EXAMPLES), max_size=3),
    failures=st.dictionaries(st.integers(0, 50), st.integers(1, 9), max_size=3),
)
def test_a_snapshot_encoded_piece_by_piece_is_the_snapshot_encoded_whole(cuts, in_flight, failures):
    # The runner's encoder reuses the events it encoded for earlier snapshots of
    # the same (growing) list: the bytes and the schema must be what encoding
    # the whole state at once gives, and read back the same.
    enc = SnapshotEncoder()
    fed: list[typing.Any] = []
    for cut in sorted(cuts):
        fed.extend(EXAMPLES[len(fed) : max(cut, len(fed))])
        schema, data = enc.encode(fed, list(in_flight), failures)
        whole = SnapshotState(events=[*fed, *in_flight], failures=failures)
        assert data == msgspec.json.encode(whole)
        assert schema == max((schema_of(e) for e in whole.events), default=0)
        snap = Snapshot(run_id="r", seq=1, schema=max(schema, 2), data=data)
        assert decode_snapshot(snap) == whole
