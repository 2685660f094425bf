"""Settings of cachenode.django.

``CACHENODE`` (a dict) holds the client side: ``NODES`` (list of
``host:port``, or a comma-separated string), ``TOKEN`` or ``TOKEN_FILE`` (the
admin token), ``TIMEOUT`` (seconds per request, default 30),
``ORIGIN_BASE`` (the URL at which ``cachenode.django.urls`` is included, as
the nodes reach it), ``ORIGIN_TOKEN`` (optional: a secret the origin view
requires, sent by the nodes as ``_token`` in the origin URL),
``AUTODISCOVER`` (modules imported from every app, default ``["cache"]``),
``RAISE_ON_INVALIDATION_ERROR`` (default False: a failed change event is
logged), ``DEFAULTS`` (worker defaults, see below).

The worker defaults keep the library's setting names:
``DJANGO_CACHE_DEFAULT_EXPIRES`` (or ``_TIMEOUT``), ``_TICK_AMOUNT``,
``_TICK_SIZE``, ``_KEYGEN``, ``_DELAY_INVALIDATION``,
``_RELEVANCE_INVALIDATION``, ``_RELEVANCE_EXPIRES`` (or
``_RELEVANCE_TIMEOUT``), ``_DELAY_COUNTDOWN``, ``_DELAY_LOGGING`` and
``DJANGO_CACHE_IS_CONCURRENT``; ``CACHENODE["DEFAULTS"]`` may give them by
field name instead (``{"expires": 600, "tick": 0.05}``) and wins.
Workers declared in settings: ``DJANGO_CACHE_WORKERS`` (or
``CACHENODE_WORKERS``), a list of dicts with ``label``, or a dict of label
to dict.
"""

import threading

from django.conf import settings

_CLIENT_DEFAULTS = {
    "NODES": ["127.0.0.1:8080"],
    "TOKEN": None,
    "TOKEN_FILE": None,
    "TIMEOUT": 30.0,
    "ORIGIN_BASE": None,
    "ORIGIN_TOKEN": None,
    "AUTODISCOVER": ["cache"],
    "RAISE_ON_INVALIDATION_ERROR": False,
    "DEFAULTS": {},
}

# The library's defaults (ORIGINAL.md), by field, and its setting names.
FIELD_DEFAULTS = {
    "expires": None,
    "key_gen": None,
    "cached_entity": False,
    "tick_amount": 10,
    "tick": 0.1,
    "is_concurrent": True,
    "relevance_invalidation": False,
    "relevance_expires": 60,
    "delay_invalidation": False,
    "delay_countdown": 5,
    "delay_logging": False,
    "max_expires": None,
}

_SETTING_NAMES = {
    "expires": ("DJANGO_CACHE_DEFAULT_EXPIRES", "DJANGO_CACHE_DEFAULT_TIMEOUT"),
    "key_gen": ("DJANGO_CACHE_DEFAULT_KEYGEN",),
    "cached_entity": ("DJANGO_CACHE_DEFAULT_CACHED_ENTITY",),
    "tick_amount": ("DJANGO_CACHE_DEFAULT_TICK_AMOUNT",),
    "tick": ("DJANGO_CACHE_DEFAULT_TICK_SIZE", "DJANGO_CACHE_DEFAULT_TICK"),
    "is_concurrent": ("DJANGO_CACHE_IS_CONCURRENT", "DJANGO_CACHE_DEFAULT_IS_CONCURRENT"),
    "relevance_invalidation": ("DJANGO_CACHE_DEFAULT_RELEVANCE_INVALIDATION",),
    "relevance_expires": ("DJANGO_CACHE_DEFAULT_RELEVANCE_EXPIRES", "DJANGO_CACHE_DEFAULT_RELEVANCE_TIMEOUT"),
    "delay_invalidation": ("DJANGO_CACHE_DEFAULT_DELAY_INVALIDATION",),
    "delay_countdown": ("DJANGO_CACHE_DEFAULT_DELAY_COUNTDOWN",),
    "delay_logging": ("DJANGO_CACHE_DEFAULT_DELAY_LOGGING",),
    "max_expires": ("DJANGO_CACHE_DEFAULT_MAX_EXPIRES",),
}

# Names the library used for two fields.
ALIASES = {"timeout": "expires", "relevance_timeout": "relevance_expires"}

_lock = threading.Lock()
_client = None


def get(name):
    return getattr(settings, "CACHENODE", {}).get(name, _CLIENT_DEFAULTS[name])


def get_all():
    """Every CACHENODE setting in force, defaults filled in."""
    return {name: get(name) for name in _CLIENT_DEFAULTS}


def default(field):
    """The process-wide default of a worker field: CACHENODE["DEFAULTS"], then
    the library's setting names, then the library's default."""
    d = get("DEFAULTS") or {}
    for k, v in d.items():
        if ALIASES.get(k, k) == field:
            return v
    for name in _SETTING_NAMES[field]:
        if hasattr(settings, name):
            return getattr(settings, name)
    return FIELD_DEFAULTS[field]


def token():
    t = get("TOKEN")
    if t:
        return t
    f = get("TOKEN_FILE")
    if f:
        with open(f, encoding="utf-8") as fh:
            return fh.read().strip()
    return None


def client():
    """The process's Client, made from the settings on first use."""
    global _client
    with _lock:
        if _client is None:
            from cachenode import Client
            _client = Client(get("NODES"), token=token(), timeout=float(get("TIMEOUT")))
        return _client


def reset(*args, setting=None, **kwargs):
    """Forget the client (and the settings-declared workers) when settings change (tests)."""
    global _client
    if setting not in (None, "CACHENODE", "DJANGO_CACHE_WORKERS", "CACHENODE_WORKERS"):
        return
    with _lock:
        old, _client = _client, None
    if old is not None:
        old.close()
    if setting in ("DJANGO_CACHE_WORKERS", "CACHENODE_WORKERS"):
        from .worker import workers_collection
        workers_collection.load_settings()
