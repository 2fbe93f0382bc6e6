"""Response serialization without marshmallow's per-field overhead, derived from the schemas.

The response schemas stay the single source of truth: they document every answer in OpenAPI and
decide what goes on the wire.  Dumping through marshmallow, though, costs a few microseconds per
field (a field lookup, an accessor call, a default check, a type dispatch), which made
serialization the largest single cost of list endpoints (a page of 20 cues is ~600 fields).

:func:`compile_dump` turns a schema instance into a plain function once, generated as
straight-line code: the schema's ``dump_fields`` in order, each with its key, attribute and
converter.  Values that are already in
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


#: How a field's value is turned into wire form (see :func:`_plan`).
_AS_IS, _PLAIN_STRING, _PLAIN_INTEGER, _PLAIN_BOOLEAN, _CONVERT = range(5)


def _converter(field: fields.Field, attr: str) -> tuple[int, Callable[[Any, Any], Any]] | None:
    """``(kind, convert(value, obj))`` for one field, or None when only marshmallow can dump it.

    For the plain kinds the generated code checks the type inline and calls ``convert`` only
    for values not already in wire form.
    """
    if isinstance(field, fields.Nested) and not isinstance(field, fields.Pluck):
        inner = compile_dump(field.schema)
        if inner is None:
            return None
        many = field.schema.many or field.many

        if many:
            return _CONVERT, (lambda value, _obj: None if value is None
                              else [inner(item) for item in value])
        return _CONVERT, lambda value, _obj: None if value is None else inner(value)
    if isinstance(field, fields.List) and type(field)._serialize is fields.List._serialize:
        item = _converter(field.inner, attr)
        if item is None:
            return None
        convert_item = _as_function(*item)
        return _CONVERT, (lambda value, obj: None if value is None
                          else [convert_item(each, obj) for each in value])
    serialize = field._serialize

    def convert(value, obj):
        return serialize(value, attr, obj)

    if _plain_string(field):
        return _PLAIN_STRING, convert
    if _plain_integer(field):
        return _PLAIN_INTEGER, convert
    if _plain_boolean(field):
        return _PLAIN_BOOLEAN, convert
    if type(field)._serialize is fields.Field._serialize:  # Raw and friends: as is
        return _AS_IS, convert
    return _CONVERT, convert


#: The inline test under which a plain kind's value is already in wire form.
_IN_WIRE_FORM = {
    _PLAIN_STRING: "value is None or type(value) is str",
    _PLAIN_INTEGER: "value is None or type(value) is int",
    _PLAIN_BOOLEAN: "value is None or value is True or value is False",
}


def _as_function(kind: int, convert: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """The whole conversion of one kind as a function (for the items of a ``List``)."""
    if kind == _AS_IS:
        return lambda value, _obj: value
    if kind == _PLAIN_STRING:
        return lambda value, obj: (value if value is None or type(value) is str
                                   else convert(value, obj))
    if kind == _PLAIN_INTEGER:
        return lambda value, obj: (value if value is None or type(value) is int
                                   else convert(value, obj))
    if kind == _PLAIN_BOOLEAN:
        return lambda value, obj: (value if value is None or value is True or value is False
                                   else convert(value, obj))
    return convert


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
    """Generate the schema's dump as straight-line Python, one block per field.

    Generated rather than looped over a plan: a loop paid a tuple unpacking, an accessor call
    and a converter call per field (a page of 20 cues is ~600 fields), where the generated
    code reads a dict's key and checks a plain value's type inline.  Reads follow marshmallow's
    default accessor: a dict's key, else the attribute; other objects through ``get_value``.
    """
    if (schema._hooks[ma.decorators.PRE_DUMP] or schema._hooks[ma.decorators.POST_DUMP]
            or type(schema).get_attribute is not ma.Schema.get_attribute
            or type(schema)._serialize is not ma.Schema._serialize):
        return None
    namespace: dict[str, Any] = {"dict_class": schema.dict_class, "missing": missing,
                                 "get_value": get_value}
    lines = ["def dump_one(obj):", "    out = dict_class()", "    is_dict = type(obj) is dict"]
    for i, (attr_name, field) in enumerate(schema.dump_fields.items()):
        key = field.data_key if field.data_key is not None else attr_name
        if not field._CHECK_ATTRIBUTE:  # Method, Function, Constant: computed from the object
            namespace[f"serialize_{i}"] = field._serialize
            lines += [f"    value = serialize_{i}(None, {attr_name!r}, obj)",
                      f"    if value is not missing: out[{key!r}] = value"]
            continue
        converter = _converter(field, attr_name)
        if converter is None:
            return None
        kind, namespace[f"convert_{i}"] = converter
        source = field.attribute if field.attribute is not None else attr_name
        if "." in source:
            lines.append(f"    value = get_value(obj, {source!r}, missing)")
        else:
            lines.append(f"    value = ((obj[{source!r}] if {source!r} in obj else "
                         f"getattr(obj, {source!r}, missing)) if is_dict else "
                         f"get_value(obj, {source!r}, missing))")
        indent = "    "
        if field.dump_default is missing:
            lines.append("    if value is not missing:")
            indent = "        "
        else:
            namespace[f"default_{i}"] = field.dump_default
            lines += ["    if value is missing:",
                      f"        value = default_{i}() if callable(default_{i}) else default_{i}"]
        if kind == _CONVERT:
            lines.append(f"{indent}value = convert_{i}(value, obj)")
        elif kind != _AS_IS:
            lines += [f"{indent}if not ({_IN_WIRE_FORM[kind]}):",
                      f"{indent}    value = convert_{i}(value, obj)"]
        lines.append(f"{indent}if value is not missing: out[{key!r}] = value")
    lines.append("    return out")
    exec(compile("\n".join(lines), f"<dump {type(schema).__name__}>", "exec"), namespace)
    return namespace["dump_one"]


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
