"""Counts the origin requests the nodes send, per path and query."""

import threading
from collections import Counter
from urllib.parse import parse_qsl, urlencode

_lock = threading.Lock()
_counts = Counter()


def key(label, pairs):
    return "/cachenode/" + label + "?" + urlencode(sorted(pairs))


def count(label, pairs):
    with _lock:
        return _counts[key(label, pairs)]


def total(label):
    with _lock:
        return sum(n for k, n in _counts.items() if k.startswith("/cachenode/" + label + "?"))


def reset():
    with _lock:
        _counts.clear()


class CountOrigin:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/cachenode/"):
            pairs = parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True)
            with _lock:
                _counts["/cachenode/" + request.path[len("/cachenode/"):] + "?" + urlencode(sorted(pairs))] += 1
        return self.get_response(request)
