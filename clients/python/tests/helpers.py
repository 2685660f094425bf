import itertools
import threading
from unittest import mock

from django.db import connection

from cachenode import Client
from cachenode.args import encode_args
from cachenode.django import conf
from tests import counting, state
from tests.cluster import wait_until  # noqa: F401  (re-exported)
from tests.foo.models import Foo

_seq = itertools.count()
_lock = threading.Lock()


def unique(prefix="t"):
    """A fresh attr2 value, so that each test has keys of its own."""
    with _lock:
        return f"{prefix}-{next(_seq)}"


def wipe():
    with connection.cursor() as c:
        c.execute(f"DELETE FROM {Foo._meta.db_table}")


def origin_calls(label, **args):
    """How many times the nodes called the origin of label for these arguments."""
    return counting.count(label, encode_args(args))


def node_clients():
    """One Client per node, to read through a given node."""
    return [Client([n]) for n in state.cluster.http]


class InvalidationSpy:
    """Counts the POST /v1/invalidate the app sends (and keeps their bodies)."""

    def __init__(self):
        self.requests = []
        self._real = conf.client().invalidate

    def __enter__(self):
        def spy(req):
            self.requests.append(req)
            return self._real(req)
        self._patch = mock.patch.object(conf.client(), "invalidate", side_effect=spy)
        self._patch.start()
        return self

    def __exit__(self, *exc):
        self._patch.stop()
