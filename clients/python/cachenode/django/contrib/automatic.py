"""Automatic invalidation from the ORM (``django_cache.contrib.automatic``).

``automatic.register(Model, {label: rule})`` with, per worker label, either
``{"is_empty": True}`` (any change of the model refreshes every key of the
label) or getters: ``instance_getter(instance)`` gives the worker arguments
a record belongs to (create, delete); on update ``outdated_getter(instance,
attrs)`` gives those of the old values and ``newcomers_getter(instance,
attrs)`` those of the new ones, where ``attrs`` maps each changed field to
``(old, new)``. Getters are callables or dotted paths; one that returns
nothing means the whole label. Optional: ``is_invalidate(instance, ...)``
(a change no rule wants is not sent) and ``args`` (the worker's argument
names, for the cluster's rule; by default the structure_getter's named
parameters, or every field of the model when it takes only ``**kwargs``).

How changes reach the cluster: pre_save reads the old row, post_save and
post_delete record the change, and the changes of one save, or of one bulk
operation of SubscriptionQuerySet (update, bulk_create, bulk_update,
delete), are sent as **one** ``{"model": "app.Model", "changes": [...]}``
event once the transaction commits (``transaction.on_commit``). The records
of the event hold, per argument name, the getters' values in their argument
forms (cachenode.args.match_forms); the cluster's rules for the model are
``{is_empty: true}`` and ``{args: [...]}``, printed by ``manage.py
cachenode_config``. When two labels' getters would need one argument name
to mean different things in one record, the label that would lose is sent
its own ``{"label": L, "match": ...}`` requests, so that no variant is
missed. ``delay_invalidation`` of an affected worker sends ``"delay": true``
with its ``delay_countdown``.
"""

import contextlib
import contextvars
import copy
import inspect
import json
import logging
import threading

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.utils.module_loading import import_string

from cachenode.args import match_forms

from .. import conf

log = logging.getLogger("cachenode.django")

OLD, NEW = 0, 1

_current = contextvars.ContextVar("cachenode_change", default=None)
_batch = contextvars.ContextVar("cachenode_batch", default=None)

# A request body stays below the cluster's limit of 1 MiB.
MAX_BODY = 512 << 10


class AttributeGetter:
    """What ``default_outdated_getter`` / ``default_newcomers_getter`` return.

    Called as a getter ``(instance, attrs)`` it is the library's: the changed
    attributes among ``filterable_attributes`` (names, or ``(field,
    argument)`` pairs) with their old (or new) values; None without
    attributes (the whole label). Inside a getter, as in the library's
    README, its ``.get(name)`` reads the old (or new) value of a field of
    the change being processed (an unchanged field has one value)."""

    def __init__(self, filterable_attributes=None, data_type=OLD):
        if filterable_attributes:
            self.attributes = dict((a, a) if isinstance(a, str) else (a[0], a[1])
                                   for a in filterable_attributes)
        else:
            self.attributes = None
        self.data_type = data_type

    def __call__(self, instance, attrs):
        if not self.attributes:
            return None
        return {self.attributes[k]: v[self.data_type] for k, v in attrs.items() if k in self.attributes}

    def get(self, name, default=None):
        cur = _current.get()
        if cur is None:
            raise RuntimeError("default_outdated_getter().get() reads the change being invalidated: "
                               "call it inside an outdated_getter or newcomers_getter")
        instance, attrs = cur
        if attrs and name in attrs:
            return attrs[name][self.data_type]
        return getattr(instance, name, default)

    def __getitem__(self, name):
        return self.get(name)


def default_outdated_getter(filterable_attributes=None):
    return AttributeGetter(filterable_attributes, OLD)


def default_newcomers_getter(filterable_attributes=None):
    return AttributeGetter(filterable_attributes, NEW)


class InvalidationSettingsError(Exception):
    pass


def _callable(value, what):
    if value is None:
        return None
    if isinstance(value, str):
        value = import_string(value)
    if not callable(value):
        raise InvalidationSettingsError(f"{what}: {value!r} is not callable nor a dotted path to a callable")
    return value


def _fields_of(model):
    names = set()
    for f in model._meta.concrete_fields:
        names.add(f.name)
        names.add(f.attname)
    for f in model._meta.many_to_many:
        names.add(f.name)
    return names


class Rule:
    def __init__(self, model, label, spec):
        self.model = model
        self.label = label
        spec = dict(spec)
        self.is_empty = bool(spec.pop("is_empty", False))
        self.instance_getter = _callable(spec.pop("instance_getter", None), f"{label}.instance_getter")
        self.outdated_getter = _callable(spec.pop("outdated_getter", None), f"{label}.outdated_getter")
        self.newcomers_getter = _callable(spec.pop("newcomers_getter", None), f"{label}.newcomers_getter")
        self.is_invalidate = _callable(spec.pop("is_invalidate", None), f"{label}.is_invalidate")
        self.args = spec.pop("args", None)
        if spec:
            raise InvalidationSettingsError(f"{model._meta.label}.{label}: unknown keys {sorted(spec)}")
        if self.is_empty and (self.instance_getter or self.outdated_getter or self.newcomers_getter or self.args):
            raise InvalidationSettingsError(f"{model._meta.label}.{label}: is_empty excludes getters and args")

    @property
    def worker(self):
        from ..shortcuts import get_cache_worker
        return get_cache_worker(self.label)

    def arg_names(self):
        """The worker's argument names, as the cluster's rule lists them."""
        if self.args is not None:
            return sorted(set(self.args))
        # The named parameters of the structure_getter; a getter that only
        # takes **kwargs may be called with any field of the model. A name
        # left out only makes the cluster's match wider (more variants
        # refreshed), never narrower.
        names = set()
        try:
            sig = inspect.signature(self.worker.structure_getter)
        except (TypeError, ValueError):
            return sorted(_fields_of(self.model))
        var_kw = False
        for p in sig.parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names.add(p.name)
            elif p.kind == p.VAR_KEYWORD:
                var_kw = True
        if not names and var_kw:
            names = _fields_of(self.model)
        return sorted(names)

    def instance(self, instance):
        if self.instance_getter is not None:
            return self.instance_getter(instance)
        return {n: getattr(instance, n) for n in self.arg_names() if hasattr(instance, n)}

    def outdated(self, instance, old_instance, attrs):
        if self.outdated_getter is not None:
            return self.outdated_getter(instance, attrs)
        return self.instance(old_instance)

    def newcomers(self, instance, attrs):
        if self.newcomers_getter is not None:
            return self.newcomers_getter(instance, attrs)
        return self.instance(instance)

    def yaml(self):
        if self.is_empty:
            return "{is_empty: true}"
        return "{args: [" + ", ".join(self.arg_names()) + "]}"


class AutomaticInvalidationPool:
    def __init__(self):
        self.pool = {}
        self._lock = threading.Lock()

    def register(self, model, invalidation_items):
        """Register the rules of ``model``, one per worker label, and connect its
        signals. Returns this function, so that the library README's
        ``automatic.register = automatic.register(Foo, {...})`` keeps it."""
        rules = {label: Rule(model, label, spec) for label, spec in invalidation_items.items()}
        with self._lock:
            self.pool.setdefault(model, {}).update(rules)
        uid = f"cachenode:{model._meta.label}"
        pre_save.connect(_pre_save, sender=model, dispatch_uid=uid, weak=False)
        post_save.connect(_post_save, sender=model, dispatch_uid=uid, weak=False)
        post_delete.connect(_post_delete, sender=model, dispatch_uid=uid, weak=False)
        return self.register

    def get(self, model):
        with self._lock:
            return dict(self.pool.get(model, {}))

    def models(self):
        with self._lock:
            return sorted(self.pool, key=lambda m: m._meta.label)

    def unregister(self, model):
        with self._lock:
            self.pool.pop(model, None)
        uid = f"cachenode:{model._meta.label}"
        for sig in (pre_save, post_save, post_delete):
            sig.disconnect(sender=model, dispatch_uid=uid)


automatic_invalidation = AutomaticInvalidationPool()
register = automatic_invalidation.register


def is_registered(model):
    return bool(automatic_invalidation.get(model))


# changes


def values_of(instance):
    """The concrete fields of an instance, by attname (and by name for relations)."""
    out = {}
    for f in instance._meta.concrete_fields:
        v = getattr(instance, f.attname, None)
        out[f.attname] = v
        if f.name != f.attname:
            out[f.name] = v
    return out


class Change:
    __slots__ = ("op", "instance", "old", "new")

    def __init__(self, op, instance, old=None, new=None):
        self.op, self.instance, self.old, self.new = op, instance, old, new

    def attrs(self):
        if self.op != "update":
            return {}
        return {k: (self.old.get(k), v) for k, v in self.new.items() if self.old.get(k) != v}

    def old_instance(self):
        inst = copy.copy(self.instance)
        inst._state = copy.copy(self.instance._state)
        inst._state.fields_cache = {}
        for f in inst._meta.concrete_fields:
            if f.attname in self.old:
                inst.__dict__[f.attname] = self.old[f.attname]
        return inst


class Batch:
    def __init__(self):
        self.changes = {}

    def add(self, model, change, using):
        self.changes.setdefault((model, using), []).append(change)

    def flush(self):
        for (model, using), changes in self.changes.items():
            reqs = build_requests(model, changes)
            if reqs:
                transaction.on_commit(lambda reqs=reqs: send(reqs), using=using)
        self.changes = {}


@contextlib.contextmanager
def batch():
    """Group the changes made inside into one event per model (sent when the
    transaction commits). SubscriptionQuerySet's bulk operations use it; so may you."""
    outer = _batch.get()
    if outer is not None:
        yield outer
        return
    b = Batch()
    token = _batch.set(b)
    try:
        yield b
    finally:
        _batch.reset(token)
        b.flush()


def record(model, change, using):
    b = _batch.get()
    if b is not None:
        b.add(model, change, using)
        return
    b = Batch()
    b.add(model, change, using)
    b.flush()


def _pre_save(sender, instance, raw=False, using=None, **kwargs):
    if raw:
        return
    old = None
    if instance.pk is not None:
        names = [f.attname for f in sender._meta.concrete_fields]
        old = sender._base_manager.using(using).filter(pk=instance.pk).values(*names).first()
        if old is not None:
            for f in sender._meta.concrete_fields:
                if f.name != f.attname:
                    old[f.name] = old[f.attname]
    instance.__dict__["_cachenode_old"] = old


def _post_save(sender, instance, created=False, raw=False, using=None, **kwargs):
    if raw:
        return
    old = instance.__dict__.pop("_cachenode_old", None)
    new = values_of(instance)
    if created or old is None:
        record(sender, Change("create", instance, None, new), using)
    elif old != new:
        record(sender, Change("update", instance, old, new), using)


def _post_delete(sender, instance, using=None, **kwargs):
    record(sender, Change("delete", instance, values_of(instance), None), using)


# events


def _forms(out):
    """A getter's output as record fields: name -> the argument forms of its value(s)."""
    if not out:
        return None
    from ..worker import _arg
    return {k: match_forms(_arg(v)) if isinstance(v, (list, tuple, set)) else match_forms([_arg(v)])
            for k, v in out.items()}


def _call(fn, instance, attrs, *a):
    token = _current.set((instance, attrs))
    try:
        return fn(*a)
    finally:
        _current.reset(token)


def _merge(outs):
    merged = {}
    for out in outs.values():
        for k, forms in (out or {}).items():
            have = merged.setdefault(k, [])
            for f in forms:
                if f not in have:
                    have.append(f)
    return merged


def build_requests(model, changes):
    """The POST /v1/invalidate bodies of these changes of ``model``."""
    rules = automatic_invalidation.get(model)
    if not rules:
        return []
    names = {label: set(r.arg_names()) for label, r in rules.items() if not r.is_empty}
    workers = [r.worker for r in rules.values()]
    delay = any(w.delay_invalidation for w in workers)
    events, seen = [], set()
    fallback = {}  # label -> list of matches (None: the whole label)
    for ch in changes:
        attrs = ch.attrs()
        wanted = [r for r in rules.values()
                  if r.is_invalidate is None or (r.is_invalidate(ch.instance, attrs) if ch.op == "update"
                                                 else r.is_invalidate(ch.instance))]
        if not wanted:
            continue
        outs_old, outs_new = {}, {}
        old_inst = ch.old_instance() if ch.op == "update" else None
        for r in wanted:
            if r.is_empty:
                continue
            if ch.op == "create":
                outs_new[r.label] = _forms(_call(r.instance, ch.instance, attrs, ch.instance))
            elif ch.op == "delete":
                outs_old[r.label] = _forms(_call(r.instance, ch.instance, attrs, ch.instance))
            else:
                outs_old[r.label] = _forms(_call(r.outdated, ch.instance, attrs, ch.instance, old_inst, attrs))
                outs_new[r.label] = _forms(_call(r.newcomers, ch.instance, attrs, ch.instance, attrs))
        ev = {"op": ch.op}
        for side, outs in (("old", outs_old), ("new", outs_new)):
            if (side == "old" and ch.op == "create") or (side == "new" and ch.op == "delete"):
                continue
            merged = _merge(outs)
            ev[side] = merged
            for label, out in outs.items():
                s = names[label]
                if out is None:
                    if any(n in merged for n in s):
                        fallback.setdefault(label, []).append(None)
                elif any(n in merged and n not in out for n in s):
                    fallback.setdefault(label, []).append(out)
        key = json.dumps(ev, sort_keys=True)
        if key not in seen:
            seen.add(key)
            events.append(ev)
    if not events:
        return []
    extra = {"delay": delay}
    if delay:
        extra["countdown"] = max(float(w.delay_countdown) for w in workers)
    reqs = []
    chunk, size = [], 0
    for ev in events:
        n = len(json.dumps(ev)) + 1
        if chunk and size + n > MAX_BODY:
            reqs.append({"model": model._meta.label, "changes": chunk, **extra})
            chunk, size = [], 0
        chunk.append(ev)
        size += n
    reqs.append({"model": model._meta.label, "changes": chunk, **extra})
    for label, matches in sorted(fallback.items()):
        w = rules[label].worker
        lextra = {"delay": bool(w.delay_invalidation)}
        if w.delay_invalidation:
            lextra["countdown"] = float(w.delay_countdown)
        if None in matches:
            reqs.append({"label": label, **lextra})
            continue
        done = set()
        for m in matches:
            k = json.dumps(m, sort_keys=True)
            if k not in done:
                done.add(k)
                reqs.append({"label": label, "match": m, **lextra})
    return reqs


def send(reqs):
    c = conf.client()
    for req in reqs:
        try:
            c.invalidate(req)
        except Exception:
            log.exception("cachenode: sending a change event failed: %s", str(req)[:300])
            if conf.get("RAISE_ON_INVALIDATION_ERROR"):
                raise
