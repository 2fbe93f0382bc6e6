"""Response serialization without marshmallow's per-field overhead, derived from the schemas.

The response schemas stay the single source of truth: they document every answer in OpenAPI and
decide what goes on the wire.  Dumping through marshmallow, though, costs a few microseconds per
field (a field lookup, an accessor call, a default check, a type dispatch), which made
serialization the largest single cost of list endpoints (a page of 20 cues is ~600 fields).

:func:`compile_dump` turns a schema instance into a plain function once: the schema's
``dump_fields`` in order, each with its key, attribute and converter.  Values that are already in
wire form (``str`` for strings, ``int`` for integers, ``bool`` for booleans, ``None``) pass
through; anything else goes to that field's own ``_serialize``, so the semantics are marshmallow's.
``Nested`` and ``List`` recurse into compiled functions.  Schemas this cannot mirror exactly
(dump hooks, a custom ``get_attribute`` or ``_serialize``) keep marshmallow's ``dump``.
Fields computed from the whole object (``Method``, ``Function``) call their own
``_serialize`` with the object, as marshmallow does.

``VERIFY`` (``CUELINE_VERIFY_DUMPS=1`` in the environment; the test suite sets it) makes every
compiled dump also run marshmallow's and raise if the two differ, so the whole suite checks the
equivalence on real responses.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import marshmallow as ma
from marshmallow import fields
from marshmallow.utils import get_value, missing

#: When true, every compiled dump is compared with marshmallow's (tests turn this on).
VERIFY = os.environ.get("CUELINE_VERIFY_DUMPS", "") == "1"


class DumpMismatch(AssertionError):
    """A compiled dump differed from marshmallow's for the same object."""


def _plain_string(field: fields.Field) -> bool:
    return (isinstance(field, fields.String)
            and type(field)._serialize is fields.String._serialize)


def _plain_integer(field: fields.Field) -> bool:
    return (isinstance(field, fields.Integer) and not field.as_string
            and type(field)._serialize is fields.Number._serialize)


def _plain_boolean(field: fields.Field) -> bool:
    return type(field)._serialize is fields.Boolean._serialize


def _converter(field: fields.Field, attr: str) -> Callable[[Any, Any], Any] | None:
    """``convert(value, obj)`` for one field, or None when only marshmallow can dump it."""
    if isinstance(field, fields.Nested) and not isinstance(field, fields.Pluck):
        inner = compile_dump(field.schema)
        if inner is None:
            return None
        many = field.schema.many or field.many

        if many:
            return lambda value, _obj: None if value is None else [inner(item) for item in value]
        return lambda value, _obj: None if value is None else inner(value)
    if isinstance(field, fields.List) and type(field)._serialize is fields.List._serialize:
        inner_field = field.inner
        item = _converter(inner_field, attr)
        if item is None:
            return None
        return lambda value, obj: None if value is None else [item(each, obj) for each in value]
    serialize = field._serialize
    if _plain_string(field):
        return lambda value, obj: (value if value is None or type(value) is str
                                   else serialize(value, attr, obj))
    if _plain_integer(field):
        return lambda value, obj: (value if value is None or type(value) is int
                                   else serialize(value, attr, obj))
    if _plain_boolean(field):
        return lambda value, obj: (value if value is None or value is True or value is False
                                   else serialize(value, attr, obj))
    if type(field)._serialize is fields.Field._serialize:  # Raw and friends: as is
        return lambda value, _obj: value
    return lambda value, obj: serialize(value, attr, obj)


def _no_read(_obj: Any) -> None:
    return None


def _computed(field: fields.Field, attr: str) -> Callable[[Any, Any], Any]:
    serialize = field._serialize
    return lambda _value, obj: serialize(None, attr, obj)


def _reader(name: str) -> Callable[[Any], Any]:
    """Read ``name`` off a dict or an object exactly as marshmallow's default accessor does."""
    if "." in name:
        return lambda obj: get_value(obj, name, missing)

    def read(obj):
        if type(obj) is dict:
            if name in obj:
                return obj[name]
            return getattr(obj, name, missing)
        return get_value(obj, name, missing)

    return read


_compiled: dict[int, tuple[ma.Schema, Callable[[Any], dict] | None]] = {}


def compile_dump(schema: ma.Schema) -> Callable[[Any], dict] | None:
    """A function dumping one object like ``schema.dump(obj, many=False)``, or None."""
    cached = _compiled.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    _compiled[id(schema)] = (schema, None)  # recursion guard for self-referencing schemas
    function = _build(schema)
    _compiled[id(schema)] = (schema, function)
    return function


def _build(schema: ma.Schema) -> Callable[[Any], dict] | None:
    if (schema._hooks[ma.decorators.PRE_DUMP] or schema._hooks[ma.decorators.POST_DUMP]
            or type(schema).get_attribute is not ma.Schema.get_attribute
            or type(schema)._serialize is not ma.Schema._serialize):
        return None
    plan = []
    for attr_name, field in schema.dump_fields.items():
        source = field.attribute if field.attribute is not None else attr_name
        if not field._CHECK_ATTRIBUTE:  # Method, Function, Constant: computed from the object
            key = field.data_key if field.data_key is not None else attr_name
            plan.append((key, _no_read, missing, _computed(field, attr_name)))
            continue
        convert = _converter(field, attr_name)
        if convert is None:
            return None
        key = field.data_key if field.data_key is not None else attr_name
        plan.append((key, _reader(source), field.dump_default, convert))
    dict_class = schema.dict_class
    plan = tuple(plan)

    def dump_one(obj: Any) -> dict:
        out = dict_class()
        for key, read, default, convert in plan:
            value = read(obj)
            if value is missing:
                if default is missing:
                    continue
                value = default() if callable(default) else default
            value = convert(value, obj)
            if value is not missing:
                out[key] = value
        return out

    return dump_one


def install(schema: ma.Schema) -> ma.Schema:
    """Give ``schema`` (an instance) the compiled ``dump`` when it can have one; return it."""
    one = compile_dump(schema)
    if one is None:
        return schema
    marshmallow_dump = schema.dump

    def dump(obj: Any, *, many: bool | None = None) -> Any:
        many = schema.many if many is None else bool(many)
        if obj is None:
            return marshmallow_dump(obj, many=many)
        result = [one(item) for item in obj] if many else one(obj)
        if VERIFY:
            expected = marshmallow_dump(obj, many=many)
            if result != expected:
                raise DumpMismatch(f"{type(schema).__name__}: compiled dump {result!r} "
                                   f"!= marshmallow {expected!r}")
        return result

    schema.dump = dump  # instance attribute: docs and loading keep using the schema itself
    return schema
