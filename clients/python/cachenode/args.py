"""How Python arguments travel in a query string, and back.

The cluster reads a query parameter given once as a string and one given
several times as a list of strings (README of cachenode, HTTP API). Text
alone cannot say whether ``1`` was an int or a str, nor carry ``None``, a
bool or a list of one element, so every value is sent as its JSON text:

========================  =====================================
Python                    query string
========================  =====================================
``attr1=1``               ``attr1=1``
``attr3=1.5``             ``attr3=1.5``
``attr3=1.0``             ``attr3=1.0`` (a float stays a float)
``attr2="test"``          ``attr2=%22test%22`` (``"test"``)
``flag=True``, ``None``   ``flag=true``, ``flag=null``
``bars=[2, 1]``           ``bars=%5B&bars=1&bars=2``
``bars=[]``               ``bars=%5B``
========================  =====================================

A list (or tuple, or set) is the parameter repeated: a first value ``[``
(which is no JSON scalar, so it cannot be mistaken for one) marks it as a
list, then one value per element, as JSON text, sorted. Lists are sets for
the key, as in the original library, so ``[2, 1]`` and ``[1, 2]`` are one
key and the getter receives ``[1, 2]``. Names are sorted. The same Python
arguments thus give the same query string in every process, and the
cluster, which sorts names and list elements again, gives them one key on
every node (``X-Cache-Key``).

Decoding (what the origin view does) reverses this. A value that is not
JSON text is taken as a plain string, so that a hand-written
``?attr2=test`` still works (it is another key than ``attr2="test"``).

Invalidation events name values with :func:`match_forms`: the forms a value
takes in arguments, so that the cluster's matching (exact on these strings)
agrees with Python's equality of numbers: ``1`` and ``1.0`` give the forms
``["1", "1.0"]``.
"""

import json
import math

LIST_MARK = "["

_SCALARS = (str, int, float, bool, type(None))


def _check(name, v, depth=0):
    if isinstance(v, float) and not math.isfinite(v):
        raise TypeError(f"argument {name!r}: {v!r} cannot be a cache argument (not a finite number)")
    if isinstance(v, _SCALARS):
        return
    if isinstance(v, (list, tuple, set, frozenset)):
        if depth > 16:
            raise TypeError(f"argument {name!r}: lists nested too deeply")
        for x in v:
            _check(name, x, depth + 1)
        return
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError(f"argument {name!r}: dict keys must be strings")
            _check(name, x, depth + 1)
        return
    raise TypeError(
        f"argument {name!r}: {type(v).__name__} cannot be a cache argument "
        "(use int, float, str, bool, None, or lists and dicts of them)")


def dumps(v):
    """The compact, deterministic JSON text of a value (lists inside lists keep their order)."""
    if isinstance(v, (set, frozenset)):
        v = sorted(v, key=dumps)
    if isinstance(v, tuple):
        v = list(v)
    return json.dumps(v, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False,
                      default=_default)


def _default(v):
    if isinstance(v, (set, frozenset)):
        return sorted(v, key=dumps)
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"{type(v).__name__} is not JSON")


def encode_value(name, v):
    """The query parameter values of one argument (a list of str)."""
    _check(name, v)
    if isinstance(v, (list, tuple, set, frozenset)):
        return [LIST_MARK] + sorted(dumps(x) for x in v)
    return [dumps(v)]


def encode_args(args):
    """The (name, value) pairs of a query string for ``args``, names sorted."""
    pairs = []
    for name in sorted(args):
        if not isinstance(name, str) or not name:
            raise TypeError(f"argument names must be non-empty strings, got {name!r}")
        if name.startswith("_"):
            raise TypeError(f"argument {name!r}: names starting with '_' are per-call overrides, not arguments")
        for text in encode_value(name, args[name]):
            pairs.append((name, text))
    return pairs


def _loads(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def decode_args(params):
    """The arguments of a parsed query: ``params`` maps each name to its list of values
    (``urllib.parse.parse_qs(..., keep_blank_values=True)`` or a Django ``QueryDict.lists()``)."""
    out = {}
    for name, values in params.items():
        values = list(values)
        if LIST_MARK in values:
            values.remove(LIST_MARK)
            out[name] = [_loads(t) for t in values]
        elif len(values) == 1:
            out[name] = _loads(values[0])
        else:
            # repeated without the mark: a list written by hand (?a=1&a=2)
            out[name] = [_loads(t) for t in values]
    return out


def match_forms(v):
    """The strings a value takes in arguments, for matching an invalidation event:
    one for most values, two for a number equal to an integer (1 and 1.0). A
    list gives the forms of each of its elements."""
    if isinstance(v, (list, tuple, set, frozenset)):
        out = []
        for x in v:
            for f in match_forms(x):
                if f not in out:
                    out.append(f)
        return out
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return [dumps(v)]
    if isinstance(v, int):
        forms = [dumps(v)]
        if abs(v) < 2 ** 53:
            forms.append(dumps(float(v)))
        return forms
    if isinstance(v, float):
        if not math.isfinite(v):
            return [dumps(str(v))]
        forms = [dumps(v)]
        if v == int(v) and abs(v) < 2 ** 53:
            forms.append(dumps(int(v)))
        return forms
    return [dumps(v)]


MAX_KEY_LEN = 250


def _quote(s):
    return 's"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _escape_name(s):
    out = []
    for c in s:
        if c in '\\=&#':
            out.append("\\")
        out.append(c)
    return "".join(out)


def cluster_key(label, args):
    """The key the cluster gives ``label`` and ``args`` (``X-Cache-Key``): the
    canonical key of worker.KeyOf over the query-string texts of the arguments."""
    groups = {}
    for name, text in encode_args(args):
        groups.setdefault(name, []).append(text)
    parts = []
    for name in sorted(groups):
        texts = groups[name]
        if len(texts) == 1:
            v = _quote(texts[0])
        else:
            v = "[" + ",".join(sorted(_quote(t) for t in texts)) + "]"
        parts.append(_escape_name(name) + "=" + v)
    key = label + "@" + "&".join(parts)
    raw = key.encode("utf-8")
    if len(raw) <= MAX_KEY_LEN:
        return key
    import hashlib
    tail = 1 + 64 + 1
    return (raw[:MAX_KEY_LEN - tail].decode("utf-8", "surrogateescape")
            + "#" + hashlib.sha256(raw).hexdigest() + "#")
