"""CacheWorker and the collection of workers, with the library's names and defaults."""

import datetime
import inspect
import threading
import warnings

from django.conf import settings
from django.utils.module_loading import import_string

from cachenode.args import cluster_key
from cachenode.client import CachedEntity, encoded_args

from . import conf, serialize

FIELDS = ("expires", "key_gen", "cached_entity", "tick_amount", "tick", "is_concurrent",
          "relevance_invalidation", "relevance_expires", "delay_invalidation",
          "delay_countdown", "delay_logging", "max_expires")

# Per-call overrides: keyword arguments of get() starting with "_".
OVERRIDES = ("expires", "tick", "tick_amount", "is_concurrent", "relevance_invalidation",
             "relevance_expires", "delay_invalidation", "delay_countdown", "cached_entity")

_UNSET = object()


def _seconds(v):
    if isinstance(v, datetime.timedelta):
        return v.total_seconds()
    return v


class CacheWorker:
    """A named loader whose values live on the cachenode cluster.

    The fields and defaults are the library's (``timeout`` and
    ``relevance_timeout`` are accepted for ``expires`` and
    ``relevance_expires``); a field not given takes the process-wide default
    from settings when it is read. ``structure_getter`` may be a dotted path,
    imported on first use. ``origin`` (an addition) is the URL the nodes call
    on a miss; by default ``CACHENODE["ORIGIN_BASE"]`` + label.
    ``max_expires`` (an addition) is the largest ``_expires`` a call may ask.
    """

    def __init__(self, structure_getter=None, label=None, expires=_UNSET, key_gen=_UNSET,
                 cached_entity=_UNSET, tick_amount=_UNSET, tick=_UNSET,
                 relevance_invalidation=_UNSET, relevance_expires=_UNSET,
                 delay_invalidation=_UNSET, delay_countdown=_UNSET, delay_logging=_UNSET,
                 is_concurrent=_UNSET, max_expires=_UNSET, timeout=_UNSET,
                 relevance_timeout=_UNSET, origin=None, is_register=True):
        if not label:
            raise ValueError("CacheWorker: label is required")
        if structure_getter is None:
            raise ValueError(f"CacheWorker {label!r}: structure_getter is required")
        if timeout is not _UNSET:
            if expires is not _UNSET:
                raise ValueError(f"CacheWorker {label!r}: give expires or timeout, not both")
            expires = timeout
        if relevance_timeout is not _UNSET:
            if relevance_expires is not _UNSET:
                raise ValueError(f"CacheWorker {label!r}: give relevance_expires or relevance_timeout, not both")
            relevance_expires = relevance_timeout
        self.label = label
        self._getter = structure_getter
        self._fields = {}
        given = dict(expires=expires, key_gen=key_gen, cached_entity=cached_entity,
                     tick_amount=tick_amount, tick=tick, relevance_invalidation=relevance_invalidation,
                     relevance_expires=relevance_expires, delay_invalidation=delay_invalidation,
                     delay_countdown=delay_countdown, delay_logging=delay_logging,
                     is_concurrent=is_concurrent, max_expires=max_expires)
        for k, v in given.items():
            if v is not _UNSET:
                self._fields[k] = _seconds(v)
        if self._fields.get("key_gen") is not None:
            warnings.warn(f"CacheWorker {label!r}: key_gen is ignored: the cluster keys every worker "
                          "canonically (one key on every node); get_key() returns that key",
                          stacklevel=2)
        self.origin = origin
        if is_register:
            workers_collection.register_worker(label, self)

    # fields, resolved against the settings at the time they are read

    def __getattr__(self, name):
        if name in FIELDS:
            v = self.__dict__["_fields"].get(name, _UNSET)
            return conf.default(name) if v is _UNSET else v
        if name in conf.ALIASES:
            return getattr(self, conf.ALIASES[name])
        raise AttributeError(name)

    @property
    def structure_getter(self):
        g = self._getter
        if isinstance(g, str):
            g = import_string(g)
            self._getter = g
        return g

    def settings(self):
        """Every field's value in force."""
        return {f: getattr(self, f) for f in FIELDS}

    def origin_url(self):
        if self.origin:
            return self.origin
        base = conf.get("ORIGIN_BASE")
        if not base:
            return None
        url = base.rstrip("/") + "/" + self.label
        tok = conf.get("ORIGIN_TOKEN")
        if tok:
            from urllib.parse import urlencode
            url += "?" + urlencode({"_token": tok})
        return url

    # calls

    def _split(self, args, kwargs):
        overrides = {}
        call = {}
        for k, v in kwargs.items():
            if k.startswith("_"):
                name = conf.ALIASES.get(k[1:], k[1:])
                if name not in OVERRIDES:
                    raise TypeError(f"{self.label}: unknown per-call override {k!r} "
                                    f"(known: {', '.join('_' + o for o in OVERRIDES)})")
                overrides[name] = _seconds(v)
            else:
                call[k] = v
        if args:
            try:
                bound = inspect.signature(self.structure_getter).bind_partial(*args)
            except TypeError as e:
                raise TypeError(f"{self.label}: {e}") from None
            for k, v in bound.arguments.items():
                if k in call:
                    raise TypeError(f"{self.label}: argument {k!r} given twice")
                call[k] = v
        return {k: _arg(v) for k, v in call.items()}, overrides

    def get_key(self, *args, **kwargs):
        """The cluster's key of these arguments (the same on every node)."""
        call, _ = self._split(args, kwargs)
        return cluster_key(self.label, call)

    def get(self, *args, **kwargs):
        """The value for these arguments: from the cluster, which calls the
        origin once for the whole cluster on a miss. Keyword arguments
        starting with ``_`` override settings for this call (``_expires``,
        ``_tick``, ``_tick_amount``, ``_relevance_expires``, ...;
        ``_cached_entity=True`` returns the entity)."""
        call, overrides = self._split(args, kwargs)
        entity = overrides.pop("cached_entity", self.cached_entity)
        wire = {}
        for k, v in overrides.items():
            wire[k] = v
        r = conf.client().read(self.label, call, wire, entity=bool(entity))
        if entity:
            import json
            e = CachedEntity.from_json(json.loads(r.body.decode("utf-8")))
            if not isinstance(e.value, bytes):
                e.value = serialize.loads(e.value)
            return e
        if r.is_json():
            return serialize.loads(r.value())
        return r.body

    def save(self, *args, **kwargs):
        """Rebuild the value now (on the cluster: refresh this key) and return it."""
        call, _ = self._split(args, kwargs)
        conf.client().invalidate({"label": self.label, "args": encoded_args(call), "delay": False})
        return self.get(*args, **kwargs)

    def base_save(self, *args, **kwargs):
        return self.save(*args, **kwargs)

    def invalidate(self, old_data=None, new_data=None, is_delay=None):
        invalidate(self, old_data, new_data, is_delay=is_delay)

    def invalidate_all(self, is_delay=None):
        invalidate_all(self, is_delay=is_delay)

    def clear_all(self):
        self.invalidate_all(is_delay=False)

    def __repr__(self):
        return f"CacheWorker(label={self.label!r})"


Cacher = CacheWorker


def _arg(v):
    """Model instances as arguments stand for their primary key."""
    from django.db import models
    if isinstance(v, models.Model):
        return v.pk
    if isinstance(v, (list, tuple, set, frozenset)):
        return type(v)(_arg(x) for x in v) if not isinstance(v, (set, frozenset)) else [_arg(x) for x in v]
    if isinstance(v, models.QuerySet):
        return [_arg(x) for x in v]
    return v


_CREATION_FIELDS = FIELDS + ("structure_getter", "timeout", "relevance_timeout", "origin")


class WorkersCollection:
    """Every worker of the process, by label (the library's ``workers_collection``)."""

    def __init__(self):
        self._workers = {}
        self._from_settings = set()
        self._lock = threading.Lock()

    def register(self, structure_getter, label, **fields):
        """Create and register a worker (``workers_collection.register(...)`` of the library)."""
        unknown = set(fields) - set(_CREATION_FIELDS)
        if unknown:
            raise TypeError(f"worker {label!r}: unknown fields {sorted(unknown)}")
        return CacheWorker(structure_getter=structure_getter, label=label, **fields)

    def register_worker(self, label, worker):
        with self._lock:
            self._workers[label] = worker
            self._from_settings.discard(label)

    def get(self, label):
        with self._lock:
            return self._workers.get(label)

    def all(self):
        with self._lock:
            return dict(sorted(self._workers.items()))

    def unregister(self, label):
        with self._lock:
            self._workers.pop(label, None)

    def load_settings(self):
        """(Re)declare the workers of DJANGO_CACHE_WORKERS / CACHENODE_WORKERS."""
        decl = getattr(settings, "CACHENODE_WORKERS", None)
        if decl is None:
            decl = getattr(settings, "DJANGO_CACHE_WORKERS", None)
        items = []
        if isinstance(decl, dict):
            for key, d in decl.items():
                d = dict(d)
                if not d.get("label"):
                    d["label"] = key
                elif d["label"] != key:
                    raise ValueError(f"DJANGO_CACHE_WORKERS[{key!r}]: label {d['label']!r} differs from its key")
                items.append(d)
        elif decl:
            items = [dict(d) for d in decl]
        with self._lock:
            for label in self._from_settings:
                self._workers.pop(label, None)
            self._from_settings = set()
        for d in items:
            fields = {k: v for k, v in d.items() if v is not None}
            label = fields.pop("label", None)
            getter = fields.pop("structure_getter", None)
            if not label or getter is None:
                raise ValueError(f"a worker in settings needs label and structure_getter: {d!r}")
            self.register(getter, label, **fields)
            with self._lock:
                self._from_settings.add(label)


workers_collection = WorkersCollection()


def _delay_fields(workers, is_delay):
    delay = bool(is_delay) if is_delay is not None else any(w.delay_invalidation for w in workers)
    req = {"delay": delay}
    if delay:
        req["countdown"] = max(float(w.delay_countdown) for w in workers)
    return req


def invalidate(worker, old_data=None, new_data=None, is_delay=None):
    """Refresh the variants of ``worker`` that ``old_data`` (and ``new_data``)
    name: ``{attr: value}``; a variant that does not constrain an attribute
    is affected too. Nothing (None or {}) means every key of the label."""
    from cachenode.args import match_forms
    c = conf.client()
    extra = _delay_fields([worker], is_delay)
    if not old_data and not new_data:
        c.invalidate({"label": worker.label, **extra})
        return
    seen = []
    for data in (old_data, new_data):
        if not data:
            continue
        m = {a: match_forms(_arg(v) if isinstance(v, (list, tuple, set)) else [_arg(v)])
             for a, v in data.items()}
        if m in seen:
            continue
        seen.append(m)
        c.invalidate({"label": worker.label, "match": m, **extra})


def invalidate_all(worker, is_delay=None):
    """Refresh every key of ``worker``."""
    conf.client().invalidate({"label": worker.label, **_delay_fields([worker], is_delay)})
