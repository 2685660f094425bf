"""The client's pieces: errors by code, times, the argument encoding and the
key computed locally against the cluster's."""

import datetime
import unittest
from urllib.parse import parse_qs, urlencode

from cachenode import Busy, CachenodeError, Client, FillTimeout, OriginError, Unavailable, UnknownWorker
from cachenode.args import cluster_key, decode_args, encode_args
from cachenode.client import _error, parse_time
from tests import state


class Errors(unittest.TestCase):
    def test_codes(self):
        def err(status, code, headers=None):
            return _error(status, headers or {}, ('{"error": "x", "code": "%s"}' % code).encode())
        self.assertIsInstance(err(404, "unknown_worker"), UnknownWorker)
        self.assertIsInstance(err(502, "origin_error"), OriginError)
        self.assertIsInstance(err(504, "fill_timeout"), FillTimeout)
        b = err(503, "origin_busy", {"Retry-After": "2"})
        self.assertIsInstance(b, Busy)
        self.assertIsInstance(b, Unavailable)
        self.assertEqual(b.retry_after, 2.0)
        self.assertIsInstance(err(503, "shutting_down"), Unavailable)
        e = _error(500, {}, b"not json")
        self.assertIsInstance(e, CachenodeError)
        self.assertIn("500", str(e))

    def test_times(self):
        t = parse_time("2026-12-04T02:11:11.123456789Z")
        self.assertEqual(t, datetime.datetime(2026, 12, 4, 2, 11, 11, 123456, tzinfo=datetime.timezone.utc))
        self.assertEqual(parse_time("2026-12-04T02:11:11-06:00").utcoffset(), datetime.timedelta(hours=-6))
        self.assertIsNone(parse_time(None))

    def test_bad_nodes_and_args(self):
        with self.assertRaises(ValueError):
            Client([])
        with self.assertRaises(ValueError):
            Client(["ftp://x:1"])
        with self.assertRaises(TypeError):
            encode_args({"_x": 1})
        with self.assertRaises(TypeError):
            encode_args({"x": float("nan")})


class Encoding(unittest.TestCase):
    CASES = [
        {}, {"a": 1}, {"a": "1"}, {"a": 1.0}, {"a": None}, {"a": True}, {"a": ""}, {"a": []}, {"a": ["x"]},
        {"a": [3, 1, 2], "b": ["y", "x"]}, {"a": {"k": [1, 2]}}, {"a": [[1, 2], [3]]},
        {"a=b&c#d\\e": 'q"uo\\te', "é": "ü"}, {"long": "x" * 400}, {"l": list(range(100))},
    ]

    def test_round_trip(self):
        for args in self.CASES:
            q = urlencode(encode_args(args))
            got = decode_args(parse_qs(q, keep_blank_values=True))
            want = {k: sorted(v, key=repr) if isinstance(v, list) and all(isinstance(x, int) for x in v) else v
                    for k, v in args.items()}
            if "b" in args:
                want["b"] = ["x", "y"]
            self.assertEqual(got, want, q)

    def test_local_key_is_the_clusters(self):
        c = Client(state.cluster.http)
        for args in self.CASES:
            r = c.read("echo", args)
            self.assertEqual(r.key, cluster_key("echo", args), args)
