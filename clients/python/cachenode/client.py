"""A client of a cachenode cluster over its HTTP API, standard library only."""

import datetime as _dt
import http.client
import json
import re
import socket
import threading
import urllib.parse
from collections import deque

from . import args as _args

__all__ = [
    "Client", "Response", "CachedEntity",
    "CachenodeError", "BadRequest", "Unauthorized", "UnknownWorker", "UnknownModel",
    "OriginError", "FillTimeout", "Busy", "Unavailable", "InvalidationIncomplete",
]


class CachenodeError(Exception):
    """An error answer of the cluster: ``status`` (HTTP), ``code`` (the body's ``code``)."""

    def __init__(self, message, status=None, code=None, body=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = body or {}


class BadRequest(CachenodeError):
    """400: a malformed read or invalidation, or an override beyond the worker's bounds."""


class Unauthorized(CachenodeError):
    """401: the admin token is missing or wrong."""


class UnknownWorker(CachenodeError):
    """404 ``unknown_worker``: no worker of that label on the cluster."""


class UnknownModel(CachenodeError):
    """404 ``unknown_model``: no invalidation rules for that model on the cluster."""


class OriginError(CachenodeError):
    """502 ``origin_error``: the origin (the structure_getter's view) failed; nothing was cached."""


class FillTimeout(CachenodeError):
    """504 ``fill_timeout``: no value within the wait budget."""


class InvalidationIncomplete(CachenodeError):
    """504 ``invalidation_incomplete``: a live member did not acknowledge in time
    (delivery goes on in the background). ``body`` has ``keys``, ``nodes`` and ``missing``."""


class Unavailable(CachenodeError):
    """No node could be reached, or the nodes answered 503 (not ready, shutting down)."""


class Busy(Unavailable):
    """503 ``origin_busy`` / ``overloaded``: try again after ``retry_after`` seconds."""

    def __init__(self, message, status=None, code=None, body=None, retry_after=None):
        super().__init__(message, status, code, body)
        self.retry_after = retry_after


_BY_CODE = {
    "unknown_worker": UnknownWorker,
    "unknown_model": UnknownModel,
    "origin_error": OriginError,
    "fill_timeout": FillTimeout,
    "invalidation_incomplete": InvalidationIncomplete,
    "origin_busy": Busy,
    "overloaded": Busy,
}


def _error(status, headers, raw):
    try:
        body = json.loads(raw.decode("utf-8"))
        if not isinstance(body, dict):
            body = {}
    except ValueError:
        body = {}
    code = body.get("code")
    msg = body.get("error") or raw[:200].decode("utf-8", "replace") or f"HTTP {status}"
    cls = _BY_CODE.get(code)
    if cls is None:
        if status == 400 or status == 413 or status == 415:
            cls = BadRequest
        elif status == 401:
            cls = Unauthorized
        elif status == 503:
            cls = Unavailable
        else:
            cls = CachenodeError
    text = f"cachenode answered {status} {code or ''}: {msg}".replace("  ", " ")
    if cls is Busy:
        ra = headers.get("Retry-After")
        try:
            ra = float(ra) if ra is not None else None
        except ValueError:
            ra = None
        return Busy(text, status, code, body, retry_after=ra)
    return cls(text, status, code, body)


_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def parse_time(s):
    """An RFC 3339 time of the cluster (nanoseconds, ``Z``) as an aware datetime; None stays None."""
    if s is None:
        return None
    m = _ISO.match(s)
    if not m:
        raise ValueError(f"not an RFC 3339 time: {s!r}")
    frac = (m.group(2) or ".0")[1:7].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return _dt.datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}")


class Response:
    """One answer of a read: ``status`` (``X-Cache``: hit, miss, stale, fallback),
    ``key``, ``owner``, ``node``, ``age``, ``content_type``, ``body`` (bytes)."""

    __slots__ = ("body", "content_type", "status", "key", "owner", "node", "age", "headers")

    def __init__(self, body, headers):
        self.body = body
        self.headers = headers
        self.content_type = headers.get("Content-Type", "")
        self.status = headers.get("X-Cache")
        self.key = headers.get("X-Cache-Key")
        self.owner = headers.get("X-Cache-Owner")
        self.node = headers.get("X-Cache-Node")
        try:
            self.age = int(headers.get("Age", "0"))
        except ValueError:
            self.age = None

    def is_json(self):
        ct = self.content_type.split(";")[0].strip().lower()
        return ct == "application/json" or ct.endswith("+json")

    def value(self):
        """The body decoded: JSON as Python values, anything else as bytes."""
        if self.is_json():
            return json.loads(self.body.decode("utf-8"))
        return self.body


class CachedEntity:
    """A cached entry with its metadata, as the original's ``CachedEntity``:
    ``value, key, label, created_at, relevance_to, available_to`` (aware
    datetimes; ``relevance_to`` is None without relevance invalidation), and
    ``owner``, ``status``, ``args`` of the cluster."""

    __slots__ = ("value", "key", "label", "created_at", "relevance_to", "available_to",
                 "owner", "status", "args", "content_type")

    def __init__(self, value, key, label, created_at, relevance_to, available_to,
                 owner=None, status=None, args=None, content_type=None):
        self.value = value
        self.key = key
        self.label = label
        self.created_at = created_at
        self.relevance_to = relevance_to
        self.available_to = available_to
        self.owner = owner
        self.status = status
        self.args = args
        self.content_type = content_type

    @property
    def is_relevance_invalidation(self):
        return self.relevance_to is not None

    @property
    def expires(self):
        """Seconds from creation to the hard deadline."""
        return (self.available_to - self.created_at).total_seconds()

    @classmethod
    def from_json(cls, d):
        import base64
        if "value_base64" in d:
            value = base64.b64decode(d["value_base64"])
        else:
            value = d.get("value")
        return cls(value=value, key=d.get("key"), label=d.get("label"),
                   created_at=parse_time(d.get("created_at")),
                   relevance_to=parse_time(d.get("relevance_to")),
                   available_to=parse_time(d.get("available_to")),
                   owner=d.get("owner"), status=d.get("status"), args=d.get("args"),
                   content_type=d.get("content_type"))

    def __repr__(self):
        return f"CachedEntity(label={self.label!r}, key={self.key!r}, created_at={self.created_at!r})"


_OVERRIDES = ("expires", "tick", "tick_amount", "is_concurrent", "relevance_invalidation",
              "relevance_expires", "delay_invalidation", "delay_countdown")


def override_params(overrides):
    """The ``_name=value`` query parameters of per-call overrides (durations in seconds)."""
    out = []
    for name in sorted(overrides or {}):
        v = overrides[name]
        if v is None:
            continue
        if name not in _OVERRIDES:
            raise TypeError(f"unknown override {name!r} (known: {', '.join(_OVERRIDES)})")
        if isinstance(v, bool):
            text = "true" if v else "false"
        elif isinstance(v, _dt.timedelta):
            text = repr(v.total_seconds())
        elif isinstance(v, (int, float)):
            text = str(v) if name == "tick_amount" else repr(float(v))
        else:
            text = str(v)
        out.append(("_" + name, text))
    return out


class _Node:
    def __init__(self, spec, timeout, pool_size):
        s = spec if "://" in spec else "http://" + spec
        u = urllib.parse.urlsplit(s)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"node {spec!r}: want host:port or http(s)://host:port")
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.name = f"{self.host}:{self.port}"
        self.timeout = timeout
        self.pool_size = pool_size
        self.idle = deque()
        self.lock = threading.Lock()

    def conn(self):
        with self.lock:
            if self.idle:
                return self.idle.pop(), True
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout), False

    def put(self, c):
        with self.lock:
            if len(self.idle) < self.pool_size:
                self.idle.append(c)
                return
        c.close()

    def close(self):
        with self.lock:
            while self.idle:
                self.idle.pop().close()


_TRANSPORT = (OSError, http.client.HTTPException, socket.timeout)


class Client:
    """A client of a cachenode cluster.

    ``nodes``: ``host:port`` (or ``http(s)://host:port``) of the nodes' HTTP
    API; reads and invalidations are spread over them, a node that cannot be
    reached is skipped for the next one. ``token``: the admin token (needed
    for invalidations when the nodes have one, and for the overrides reserved
    to the admin). ``timeout``: seconds per request (above the workers' wait
    budget). Thread-safe; connections are kept alive, ``pool_size`` idle per
    node."""

    def __init__(self, nodes, token=None, timeout=30.0, pool_size=8):
        if isinstance(nodes, str):
            nodes = [n for n in nodes.split(",") if n.strip()]
        if not nodes:
            raise ValueError("at least one node is required")
        self._nodes = [_Node(n.strip(), timeout, pool_size) for n in nodes]
        self._token = token
        self._next = 0
        self._lock = threading.Lock()

    @property
    def nodes(self):
        return [n.name for n in self._nodes]

    def close(self):
        for n in self._nodes:
            n.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # transport

    def _order(self, node=None):
        if node is not None:
            for n in self._nodes:
                if n.name == node or f"http://{n.name}" == node:
                    return [n]
            return [_Node(node, self._nodes[0].timeout, 1)]
        with self._lock:
            i = self._next
            self._next = (i + 1) % len(self._nodes)
        return self._nodes[i:] + self._nodes[:i]

    def _once(self, node, method, path, body, headers):
        """One request on one node; a kept-alive connection that the server closed
        meanwhile is retried once on a new one."""
        for attempt in (0, 1):
            c, reused = node.conn()
            try:
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
            except _TRANSPORT:
                c.close()
                if reused and attempt == 0:
                    continue
                raise
            hdrs = {}
            for k, v in r.getheaders():
                # http.client reads header bytes as Latin-1; the cluster
                # writes UTF-8 (a key of non-ASCII arguments).
                try:
                    v = v.encode("latin-1").decode("utf-8")
                except UnicodeError:
                    pass
                hdrs[k.title()] = v
                hdrs.setdefault(k, v)
            if r.will_close:
                c.close()
            else:
                node.put(c)
            return r.status, hdrs, data
        raise AssertionError("unreachable")

    def request(self, method, path, body=None, headers=None, node=None):
        """Send one request to the first node that answers; returns (status, headers, body).
        Raises Unavailable when none could be reached or every one answered 503
        not_ready / shutting_down / unavailable."""
        h = {"Accept": "application/json, */*"}
        if self._token:
            h["Authorization"] = "Bearer " + self._token
        if headers:
            h.update(headers)
        errors = []
        last = None
        for n in self._order(node):
            try:
                status, hdrs, data = self._once(n, method, path, body, h)
            except _TRANSPORT as e:
                errors.append(f"{n.name}: {e.__class__.__name__}: {e}")
                continue
            if status == 503:
                err = _error(status, hdrs, data)
                if not isinstance(err, Busy):
                    errors.append(f"{n.name}: {err}")
                    last = err
                    continue
            return status, hdrs, data
        if last is not None and len(errors) == 1:
            raise last
        raise Unavailable("no cachenode node could be reached: " + "; ".join(errors))

    # reads

    def read(self, label, args=None, overrides=None, entity=False, node=None):
        """Read the value of ``label`` for ``args`` (a dict, encoded as in
        :mod:`cachenode.args`); ``overrides``: per-call settings (``expires``,
        ``tick``, ``tick_amount``, ``is_concurrent``, ``relevance_invalidation``,
        ``relevance_expires``, ``delay_invalidation``, ``delay_countdown``;
        durations in seconds). Returns a :class:`Response`."""
        q = _args.encode_args(args or {}) + override_params(overrides)
        q.append(("_entity", "1" if entity else "0"))
        path = "/v1/cache/" + urllib.parse.quote(label, safe="") + "?" + urllib.parse.urlencode(q)
        status, hdrs, data = self.request("GET", path, node=node)
        if status != 200:
            raise _error(status, hdrs, data)
        return Response(data, hdrs)

    def get(self, label, **kwargs):
        """The value of ``label`` for the keyword arguments: JSON decoded, or bytes."""
        return self.read(label, kwargs).value()

    def entity(self, label, **kwargs):
        """The :class:`CachedEntity` of ``label`` for the keyword arguments."""
        r = self.read(label, kwargs, entity=True)
        return CachedEntity.from_json(json.loads(r.body.decode("utf-8")))

    def key(self, label, **kwargs):
        """The cluster's key of ``label`` for the keyword arguments (reads the value)."""
        return self.read(label, kwargs).key

    # invalidations

    def invalidate(self, request):
        """``POST /v1/invalidate`` with ``request`` (a dict of one of its shapes).
        Returns the answer: ``{"keys": N, "nodes": M}``, or ``{"queued": ID}`` when delayed."""
        body = json.dumps(request, separators=(",", ":")).encode("utf-8")
        status, hdrs, data = self.request("POST", "/v1/invalidate", body=body,
                                          headers={"Content-Type": "application/json"})
        if status not in (200, 202):
            raise _error(status, hdrs, data)
        return json.loads(data.decode("utf-8"))

    def invalidate_key(self, label, delay=None, **kwargs):
        """Refresh the one key of ``label`` that the keyword arguments name."""
        return self.invalidate(_with_delay({"label": label, "args": encoded_args(kwargs)}, delay))

    def invalidate_label(self, label, delay=None):
        """Refresh every key of ``label``."""
        return self.invalidate(_with_delay({"label": label}, delay))

    def invalidate_match(self, label, match, delay=None):
        """Refresh every variant of ``label`` whose arguments match ``match``
        (``{attr: value or [values]}``; an attribute a variant does not have does not exclude it)."""
        m = {a: _args.match_forms(v if isinstance(v, (list, tuple, set)) else [v]) for a, v in match.items()}
        return self.invalidate(_with_delay({"label": label, "match": m}, delay))

    def invalidate_model(self, model, changes, delay=None, countdown=None):
        """Send one change event of ``model`` (``changes``: dicts with ``op``, ``old``, ``new``)."""
        return self.invalidate(_with_delay({"model": model, "changes": changes}, delay, countdown))

    # admin

    def admin(self, path, node=None):
        """GET an admin endpoint (``/admin/workers``, ``/admin/ring``, ...) as JSON."""
        status, hdrs, data = self.request("GET", path, node=node)
        if status != 200:
            raise _error(status, hdrs, data)
        return json.loads(data.decode("utf-8"))

    def workers(self, node=None):
        """``GET /admin/workers``: ``{label: {"config": ..., "stats": ...}}``."""
        return {w["label"]: w for w in self.admin("/admin/workers", node=node).get("workers", [])}

    def ring(self, node=None):
        return self.admin("/admin/ring", node=node)


def encoded_args(args):
    """The ``args`` of an invalidation body naming the key that ``args`` fill
    (the values as their query-string texts, a list as the repeated parameter)."""
    out = {}
    for name, text in _args.encode_args(args):
        if name in out:
            if not isinstance(out[name], list):
                out[name] = [out[name]]
            out[name].append(text)
        else:
            out[name] = text
    return out


def _with_delay(req, delay, countdown=None):
    if delay is not None:
        req["delay"] = bool(delay)
    if countdown is not None:
        req["countdown"] = countdown.total_seconds() if isinstance(countdown, _dt.timedelta) else countdown
    return req
