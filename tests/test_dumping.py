"""Compiled response dumps (app.dumping) give exactly marshmallow's output, or defer to it."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import marshmallow as ma
import pytest
from marshmallow import fields

from app import dumping


class Colour(enum.StrEnum):
    RED = "red"


class Inner(ma.Schema):
    at = fields.DateTime()
    n = fields.Integer()


class Outer(ma.Schema):
    id = fields.UUID()
    name = fields.String()
    count = fields.Integer()
    flag = fields.Boolean()
    raw = fields.Raw()
    mapping = fields.Dict()
    renamed = fields.String(attribute="source_name")
    keyed = fields.String(data_key="wireKey")
    defaulted = fields.String(dump_default="fallback")
    aware = fields.AwareDateTime()
    inner = fields.Nested(Inner)
    inners = fields.List(fields.Nested(Inner))
    many_inners = fields.Nested(Inner, many=True)
    tags = fields.List(fields.String())
    computed = fields.Method("_computed")
    secret = fields.String(load_only=True)

    def _computed(self, obj):
        return f"computed-{_get(obj, 'count')}"


def _get(obj, name):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


NOW = datetime(2026, 11, 22, 12, 30, 1, 123456, tzinfo=UTC)
SAMPLES = [
    {"id": uuid.UUID(int=7), "name": "a", "count": 3, "flag": True, "raw": {"x": [1, None]},
     "mapping": {"k": "v"}, "source_name": "src", "keyed": "kv", "aware": NOW,
     "inner": {"at": NOW, "n": 1}, "inners": [{"at": None, "n": 2}],
     "many_inners": [{"at": NOW, "n": "3"}], "tags": ["t", Colour.RED], "secret": "no"},
    # Wrong-but-coercible types, None everywhere, and missing keys (skipped or defaulted).
    {"id": "00000000-0000-0000-0000-000000000001", "name": Colour.RED, "count": 4.0,
     "flag": 1, "raw": None, "mapping": None, "inner": None, "inners": None, "tags": None,
     "keyed": None, "many_inners": None},
    {},
]


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("as_object", [False, True])
def test_compiled_dump_equals_marshmallow(sample, as_object):
    obj = SimpleNamespace(**sample) if as_object else sample
    schema = Outer()
    one = dumping.compile_dump(schema)
    assert one is not None
    assert one(obj) == schema.dump(obj)
    assert list(one(obj)) == list(schema.dump(obj))  # same key order on the wire


def test_installed_dump_handles_many_and_verifies():
    schema = dumping.install(Outer(many=True))
    data = [SAMPLES[0], SAMPLES[1]]
    assert schema.dump(data) == ma.Schema.dump(Outer(many=True), data)
    assert schema.dump(SAMPLES[0], many=False) == Outer().dump(SAMPLES[0])


def test_verify_mode_reports_a_difference(monkeypatch):
    schema = dumping.install(Outer())
    monkeypatch.setattr(dumping, "VERIFY", True)
    schema.dump(SAMPLES[0])  # equal: no error
    # A compiled function that gets it wrong: the check must notice.
    monkeypatch.setattr(dumping, "compile_dump", lambda s: lambda obj: {"wrong": 1})
    broken = dumping.install(Outer())
    with pytest.raises(dumping.DumpMismatch):
        broken.dump(SAMPLES[0])


def test_schemas_with_dump_hooks_keep_marshmallow():
    class Hooked(ma.Schema):
        name = fields.String()

        @ma.post_dump
        def shout(self, data, **kwargs):
            return {"name": data["name"].upper()}

    schema = Hooked()
    assert dumping.compile_dump(schema) is None
    assert dumping.install(schema).dump({"name": "x"}) == {"name": "X"}


def test_every_response_schema_of_the_app_compiles(app):
    """A schema falling back silently would lose the speed-up without anyone noticing."""
    import gc

    installed = [obj for obj in gc.get_objects()
                 if isinstance(obj, ma.Schema) and "dump" in vars(obj)]
    assert installed, "no response schema got a compiled dump"
    compiled = {type(schema).__name__ for schema in installed}
    assert {"CueListSchema", "MeSchema", "SentMessageSchema", "ExecutionListSchema"} <= compiled
