"""Encoding of events and user values (msgspec JSON), in one place."""

from __future__ import annotations

import functools
import math
import traceback
from collections.abc import Callable
from typing import Any

import msgspec

from continuum_py.errors import EncodingError, JournalCorrupt, OwnerKind, SchemaTooNew, StepError
from continuum_py.events import SCHEMA_VERSION, AnyEvent, ErrorInfo, Event

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(AnyEvent)
_any_decoder = msgspec.json.Decoder()
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])


def type_name(value: object) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def encode_value(
    value: Any, *, what: str | None, kind: OwnerKind = "step", root: str = "value"
) -> msgspec.Raw:
    """Encode a user value, or raise EncodingError naming ``what`` and the bad type.

    NaN and infinity are refused: JSON has no such numbers, and msgspec would
    write ``null``, so the value would come back as ``None`` (or fail to decode
    as ``float``) on replay. ``root`` names the value in that error's path.
    """
    try:
        data = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        raise EncodingError(what, _offending_type(value, exc), str(exc), kind=kind) from exc
    # A non-finite float is written as null, so only an output holding "null"
    # needs the walk; values without None or NaN pay one bytes search (find:
    # `b"null" in data` first tries the needle as an int, raising a TypeError).
    if data.find(b"null") != -1:
        where = _non_finite(value, root)
        if where is not None:
            path, number = where
            raise EncodingError(
                what,
                type_name(number),
                f"{path} is {number!r}, and JSON has no NaN or infinity (it would be stored "
                "as null and come back as None); record None, a string or a finite number "
                "instead",
                kind=kind,
            )
    return msgspec.Raw(data)


def _non_finite(value: Any, root: str) -> tuple[str, float] | None:
    """The path and value of the first NaN or infinity in ``value``, if any."""
    # to_builtins turns Structs, dataclasses and the like into dicts and lists
    # exactly as the encoder sees them, so one walk covers every supported type.
    try:
        builtins = msgspec.to_builtins(value)
    except (TypeError, ValueError, msgspec.EncodeError):  # pragma: no cover - encode() took it
        return None
    stack: list[tuple[str, Any]] = [(root, builtins)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return path, item
        elif isinstance(item, dict):
            stack.extend((f"{path}[{k!r}]", v) for k, v in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(item))))
    return None


def _offending_type(value: Any, exc: BaseException) -> str:
    # msgspec says "Encoding objects of type X is unsupported"; name X rather than the container.
    text = str(exc)
    marker = "objects of type "
    if marker in text:
        return text.split(marker, 1)[1].split(" ", 1)[0]
    return type_name(value)


def encode_args(
    args: tuple[Any, ...], *, what: str | None, kind: OwnerKind = "step"
) -> msgspec.Raw:
    return encode_value(args, what=what, kind=kind, root="args")  # a tuple is a JSON list too


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def decode_value(raw: msgspec.Raw | bytes, type_: Any = Any) -> Any:
    if type_ is Any:
        return _any_decoder.decode(raw)
    # A Decoder per type is 3-5x faster than msgspec.json.decode(raw, type=...),
    # which rebuilds its type info on every call; results decode once per step.
    try:
        dec = _decoders.get(type_)
    except TypeError:  # an unhashable annotation
        return msgspec.json.decode(raw, type=type_)
    if dec is None:
        dec = _decoders[type_] = msgspec.json.Decoder(type_)
    return dec.decode(raw)


def value_decoder(type_: Any) -> Callable[[msgspec.Raw | bytes], Any]:
    """A function that decodes as :func:`decode_value` with ``type_`` does, to keep for many values."""
    if type_ is Any:
        return _any_decoder.decode
    try:
        dec = _decoders.get(type_)
    except TypeError:  # an unhashable annotation
        return functools.partial(decode_value, type_=type_)
    if dec is None:
        dec = _decoders[type_] = msgspec.json.Decoder(type_)
    return dec.decode


def decode_args(raw: msgspec.Raw | bytes, types: list[Any]) -> list[Any]:
    items = _raw_list_decoder.decode(raw)
    out: list[Any] = []
    for i, item in enumerate(items):
        t = types[i] if i < len(types) else Any
        out.append(decode_value(item, t))
    return out


encode_event: Callable[[Event], bytes] = _encoder.encode
"""Encode one event (the encoder's own method: no Python frame, events are encoded per step)."""


def decode_event(run_id: str, seq: int | None, schema: int, data: bytes) -> AnyEvent:
    """Decode one stored event; refuse newer schemas and report corrupt rows clearly.

    ``seq=None`` skips the check that the event is the one stored at that seq.
    """
    if schema > SCHEMA_VERSION:
        raise SchemaTooNew(run_id, seq, schema, SCHEMA_VERSION)
    try:
        event: AnyEvent = _event_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise JournalCorrupt(run_id, seq, str(exc)) from exc
    if seq is not None and event.seq != seq:
        raise JournalCorrupt(run_id, seq, f"event claims seq {event.seq}")
    return event


def error_info(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, StepError):
        # A recorded step failure: keep the step's own error type and traceback.
        return ErrorInfo(type=exc.error_type, message=str(exc), traceback=exc.traceback_text)
    tb = "".join(traceback.format_exception(exc))
    return ErrorInfo(type=type_name(exc), message=str(exc), traceback=tb)
