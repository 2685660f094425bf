"""What cachenode_config and cachenode_check share: each worker's fields as the
cluster's config file spells them."""

import json
import re

from django.core.management.base import CommandError

from cachenode.django.contrib.automatic import automatic_invalidation
from cachenode.django.worker import workers_collection

# worker field -> config key, in the order printed
CONFIG_FIELDS = ("expires", "max_expires", "tick", "tick_amount", "is_concurrent",
                 "relevance_invalidation", "relevance_expires", "delay_invalidation",
                 "delay_countdown", "delay_logging")
DURATIONS = {"expires", "max_expires", "tick", "relevance_expires", "delay_countdown"}

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    return s if _PLAIN.match(s) else json.dumps(s)


def worker_config(w, origin_base=None):
    """The config-file fields of a worker, as (key, value) pairs."""
    origin = w.origin
    if not origin:
        from cachenode.django import conf
        base = origin_base or conf.get("ORIGIN_BASE")
        if not base:
            raise CommandError(f"worker {w.label!r} has no origin: set CACHENODE['ORIGIN_BASE'] "
                               "(the URL of include('cachenode.django.urls') as the nodes reach it) "
                               "or pass --origin-base")
        origin = base.rstrip("/") + "/" + w.label
        tok = conf.get("ORIGIN_TOKEN")
        if tok:
            from urllib.parse import urlencode
            origin += "?" + urlencode({"_token": tok})
    out = [("origin", origin)]
    for f in CONFIG_FIELDS:
        v = getattr(w, f)
        if v is None:
            continue
        out.append((f, v))
    return out


def rules():
    """model label -> {worker label: Rule}, sorted."""
    out = {}
    for model in automatic_invalidation.models():
        out[model._meta.label] = dict(sorted(automatic_invalidation.get(model).items()))
    return out


def workers():
    return workers_collection.all()
