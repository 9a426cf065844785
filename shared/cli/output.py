"""The one way the CLI turns a protobuf message into JSON: snake_case keys (the .proto's own
field names) and numbers as JSON numbers (protobuf's JSON mapping writes 64-bit integers as
strings, so `"curated_rows": "3000"` would otherwise reach scripts)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_WELL_KNOWN = "google.protobuf."


def as_dict(message: Message, *, with_defaults: bool = True) -> dict[str, Any]:
    """`message` as plain JSON data: snake_case keys, 64-bit integers as ints, timestamps as
    RFC 3339 strings; fields left unset shown with their defaults when `with_defaults`."""
    data = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=with_defaults,
    )
    return _numbers(data, message.DESCRIPTOR)


def _numbers(data: dict[str, Any], descriptor: Any) -> dict[str, Any]:
    for name, value in data.items():
        field = descriptor.fields_by_name.get(name)
        if field is not None:
            data[name] = _field(value, field)
    return data


def _field(value: Any, field: FieldDescriptor) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        inner = field.message_type.fields_by_name["value"]
        return {k: _scalar(v, inner) for k, v in value.items()}
    if field.is_repeated and isinstance(value, list):
        return [_scalar(v, field) for v in value]
    return _scalar(value, field)


def _scalar(value: Any, field: FieldDescriptor) -> Any:
    if field.type in _INT64 and isinstance(value, str):
        return int(value)
    message = field.message_type
    if message is not None and isinstance(value, dict):
        if message.full_name.startswith(_WELL_KNOWN):
            return value  # Struct, Value and the like are JSON already
        return _numbers(value, message)
    return value
