"""The body an origin view answers, and how get_cache reads it back.

Plain JSON values (what json.dumps takes: dict, list, str, int, float, bool,
None) are sent as they are, so a value read with curl is plain JSON. What
JSON cannot hold is sent as a tagged object ``{"$cachenode": KIND, ...}``:

- a QuerySet of model instances: ``{"$cachenode": "queryset", "model":
  "app.Model", "objects": [...]}``; read back as a QuerySet of the same
  model whose results are already there (iterating, ``len``, ``in``,
  indexing do not touch the database; ``.filter()`` and other new querysets
  do, as with a queryset the library unpickled);
- a model instance: ``{"$cachenode": "instance", "model": ..., "object": ...}``;
- ``datetime``, ``date``, ``time``, ``timedelta``, ``Decimal``, ``UUID``,
  ``tuple`` and ``set`` keep their types the same way;
- a dict of the value that has a ``"$cachenode"`` key is wrapped
  (``{"$cachenode": "dict", "value": ...}``) so that it cannot be taken for
  a tag.

Instances are written with Django's ``python`` serializer (``pk`` and the
concrete fields; many-to-many fields by their primary keys) and read back
with its deserializer, marked as loaded from the database, so ``foo1 in
get_cache(...)`` holds and ``save()`` updates the row.
"""

import datetime
import decimal
import json
import uuid

from django.apps import apps
from django.core import serializers
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DEFAULT_DB_ALIAS, models

TAG = "$cachenode"


def _instance(obj):
    return serializers.serialize("python", [obj])[0]


def _encode(v):
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, models.Model):
        return {TAG: "instance", "model": v._meta.label, "object": _instance(v)}
    if isinstance(v, models.QuerySet):
        if issubclass(v._iterable_class, models.query.ModelIterable):
            objs = list(v)
            return {TAG: "queryset", "model": v.model._meta.label,
                    "objects": serializers.serialize("python", objs)}
        return [_encode(x) for x in v]  # values(), values_list()
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError(f"a cached dict needs string keys, got {k!r}")
            out[k] = _encode(x)
        if TAG in v:
            return {TAG: "dict", "value": out}
        return out
    if isinstance(v, list):
        return [_encode(x) for x in v]
    if isinstance(v, tuple):
        return {TAG: "tuple", "items": [_encode(x) for x in v]}
    if isinstance(v, (set, frozenset)):
        return {TAG: "set", "items": [_encode(x) for x in v]}
    if isinstance(v, datetime.datetime):
        return {TAG: "datetime", "value": v.isoformat()}
    if isinstance(v, datetime.date):
        return {TAG: "date", "value": v.isoformat()}
    if isinstance(v, datetime.time):
        return {TAG: "time", "value": v.isoformat()}
    if isinstance(v, datetime.timedelta):
        return {TAG: "timedelta", "value": v.total_seconds()}
    if isinstance(v, decimal.Decimal):
        return {TAG: "decimal", "value": str(v)}
    if isinstance(v, uuid.UUID):
        return {TAG: "uuid", "value": str(v)}
    if hasattr(v, "__iter__") and not isinstance(v, (bytes, bytearray)):
        return [_encode(x) for x in v]  # generators, map objects
    raise TypeError(f"a structure_getter returned a {type(v).__name__}, which cannot be cached "
                    "(JSON values, model instances, querysets, dates, decimals, UUIDs)")


def dumps(value):
    """The JSON body of a value."""
    return json.dumps(_encode(value), cls=DjangoJSONEncoder, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def _objects(data, using):
    out = []
    for d in serializers.deserialize("python", data, ignorenonexistent=True):
        obj = d.object
        obj._state.adding = False
        obj._state.db = using
        out.append(obj)
    return out


def _decode(v, using):
    if isinstance(v, list):
        return [_decode(x, using) for x in v]
    if not isinstance(v, dict):
        return v
    kind = v.get(TAG)
    if kind is None:
        return {k: _decode(x, using) for k, x in v.items()}
    if kind == "queryset":
        model = apps.get_model(v["model"])
        objs = _objects(v["objects"], using)
        qs = model._default_manager.using(using).filter(pk__in=[o.pk for o in objs])
        qs._result_cache = objs
        qs._prefetch_done = True
        return qs
    if kind == "instance":
        return _objects([v["object"]], using)[0]
    if kind == "dict":
        return {k: _decode(x, using) for k, x in v["value"].items()}
    if kind == "tuple":
        return tuple(_decode(x, using) for x in v["items"])
    if kind == "set":
        return set(_decode(x, using) for x in v["items"])
    if kind == "datetime":
        return datetime.datetime.fromisoformat(v["value"])
    if kind == "date":
        return datetime.date.fromisoformat(v["value"])
    if kind == "time":
        return datetime.time.fromisoformat(v["value"])
    if kind == "timedelta":
        return datetime.timedelta(seconds=v["value"])
    if kind == "decimal":
        return decimal.Decimal(v["value"])
    if kind == "uuid":
        return uuid.UUID(v["value"])
    raise ValueError(f"unknown {TAG} tag {kind!r} in a cached value")


def loads(value, using=DEFAULT_DB_ALIAS):
    """The Python value of a decoded JSON body (model instances again)."""
    return _decode(value, using)
