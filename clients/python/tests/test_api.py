"""The rest of the library's API on the cluster: cached_entity, per-call
overrides, settings-declared workers, argument types, the shortcuts, the
commands, and the client's errors and failover."""

import datetime
import io
import os
import subprocess
import unittest
from unittest import mock

from django.core.management import call_command
from django.test.utils import override_settings

from cachenode import BadRequest, CachedEntity, Client, OriginError, Unavailable, UnknownWorker
from cachenode.django import conf
from cachenode.django.contrib import CacheWorker, workers_collection
from cachenode.django.shortcuts import (
    get_cache, get_cache_worker, invalidate_all_cache, invalidate_cache, save_cache,
)
from tests import state
from tests.foo.models import Foo
from tests.helpers import InvalidationSpy, node_clients, origin_calls, unique, wait_until


class Entity(unittest.TestCase):
    def test_cached_entity_worker(self):
        u = unique("entity")
        foo = Foo.objects.create(attr1=1, attr2=u)
        e = get_cache("foo_entity", attr1=1, attr2=u)
        self.assertIsInstance(e, CachedEntity)
        self.assertIn(foo, e.value)
        self.assertEqual(e.label, "foo_entity")
        self.assertEqual(e.key, get_cache_worker("foo_entity").get_key(attr1=1, attr2=u))
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLessEqual(e.created_at, now + datetime.timedelta(seconds=1))
        self.assertAlmostEqual((e.available_to - e.created_at).total_seconds(), 300, delta=1)
        self.assertAlmostEqual((e.relevance_to - e.created_at).total_seconds(), 120, delta=1)
        self.assertTrue(e.is_relevance_invalidation)

    def test_cached_entity_per_call(self):
        u = unique("entity2")
        e = get_cache("filtered_foos", attr1=1, attr2=u, _cached_entity=True)
        self.assertIsInstance(e, CachedEntity)
        self.assertEqual(list(e.value), [])
        self.assertIsNone(e.relevance_to)
        self.assertEqual(e.args, {"attr1": "1", "attr2": f'"{u}"'})


class Overrides(unittest.TestCase):
    def test_expires_and_ticks_per_call(self):
        u = unique("over")
        e = get_cache("simple_foo", attr1=1, attr2=u, attr3=None, _expires=600, _tick=0.05,
                      _tick_amount=20, _cached_entity=True)
        self.assertAlmostEqual((e.available_to - e.created_at).total_seconds(), 600, delta=1)
        e = get_cache("simple_foo", attr1=2, attr2=u, attr3=None, _cached_entity=True)
        self.assertAlmostEqual((e.available_to - e.created_at).total_seconds(), 20, delta=1,
                               msg="without the override: the worker's timeout=20")
        e = get_cache("simple_foo", attr1=3, attr2=u, attr3=None, _timeout=datetime.timedelta(minutes=2),
                      _relevance_invalidation=True, _relevance_expires=30, _cached_entity=True)
        self.assertAlmostEqual((e.available_to - e.created_at).total_seconds(), 120, delta=1)
        self.assertAlmostEqual((e.relevance_to - e.created_at).total_seconds(), 30, delta=1)

    def test_bad_overrides(self):
        with self.assertRaises(BadRequest) as cm:
            get_cache("simple_foo", attr1=1, attr2="x", attr3=None, _expires=7200)
        self.assertEqual(cm.exception.code, "override_not_allowed")
        with self.assertRaises(TypeError):
            get_cache("simple_foo", attr1=1, attr2="x", attr3=None, _nonsense=1)


class SettingsWorkers(unittest.TestCase):
    def test_declared_in_settings_with_a_dotted_path(self):
        w = get_cache_worker("settings_foos")
        self.assertEqual(w.expires, 100000)
        self.assertTrue(w.delay_invalidation)
        self.assertEqual(w.tick_amount, 50, "the global default of settings")
        self.assertEqual(w.tick, 0.1, "the library's default")
        u = unique("settings")
        Foo.objects.create(attr1=1, attr2=u)
        self.assertEqual(get_cache("settings_foos", attr2=u), {"attr2": u, "count": 1})
        Foo.objects.create(attr1=2, attr2=u)  # not a rule of this worker: still 1
        self.assertEqual(get_cache("settings_foos", attr2=u)["count"], 1)
        with InvalidationSpy() as spy:
            invalidate_all_cache("settings_foos")
        self.assertEqual(spy.requests, [{"label": "settings_foos", "delay": True, "countdown": 1}])
        wait_until(lambda: get_cache("settings_foos", attr2=u)["count"] == 2, 30,
                   "the delayed invalidation of settings_foos")

    def test_settings_list_form_and_defaults(self):
        decl = [{"label": "listed", "structure_getter": "tests.foo.getters.count_foos", "timeout": 30}]
        with override_settings(DJANGO_CACHE_WORKERS=decl, CACHENODE={**conf.get_all(), "DEFAULTS": {"tick": 0.05}}):
            w = get_cache_worker("listed")
            self.assertEqual((w.expires, w.tick), (30, 0.05))
            self.assertIsNone(workers_collection.get("settings_foos"))
        self.assertIsNotNone(workers_collection.get("settings_foos"))
        self.assertIsNone(workers_collection.get("listed"))


class Arguments(unittest.TestCase):
    def test_types_survive_the_round_trip(self):
        args = dict(i=1, f=1.0, g=1.5, s="1", n=None, t=True, b=False, z=0, e="", l=[2, 1], one=["x"],
                    empty=[], text="a&b=c d", uni="é")
        got = get_cache("echo", **args)
        self.assertEqual(got, {
            "i": ["int", 1], "f": ["float", 1.0], "g": ["float", 1.5], "s": ["str", "1"],
            "n": ["NoneType", None], "t": ["bool", True], "b": ["bool", False], "z": ["int", 0],
            "e": ["str", ""], "l": ["list", [1, 2]], "one": ["list", ["x"]], "empty": ["list", []],
            "text": ["str", "a&b=c d"], "uni": ["str", "é"],
        })

    def test_equal_arguments_one_key_on_every_node(self):
        w = get_cache_worker("echo")
        u = unique("key")
        keys = set()
        for c in node_clients():
            r = c.read("echo", {"u": u, "l": [3, 1, 2]})
            keys.add(r.key)
            r = c.read("echo", {"l": [2, 3, 1], "u": u})
            keys.add(r.key)
        self.assertEqual(keys, {w.get_key(u=u, l=[1, 2, 3])})
        self.assertEqual(origin_calls("echo", u=u, l=[1, 2, 3]), 1)
        self.assertNotEqual(w.get_key(a=1), w.get_key(a="1"))
        self.assertNotEqual(w.get_key(a=True), w.get_key(a=1))
        self.assertNotEqual(w.get_key(a=None), w.get_key(a=""))
        self.assertNotEqual(w.get_key(a=["x"]), w.get_key(a="x"))
        self.assertNotEqual(w.get_key(a=[]), w.get_key(a=None))

    def test_a_model_instance_argument_is_its_pk(self):
        foo = Foo.objects.create(attr1=1, attr2=unique("pk"))
        self.assertEqual(get_cache("echo", foo=foo), {"foo": ["int", foo.pk]})

    def test_a_bad_argument_is_a_clear_error(self):
        with self.assertRaises(TypeError) as cm:
            get_cache("echo", when=datetime.date(2020, 1, 1))
        self.assertIn("when", str(cm.exception))


class Shortcuts(unittest.TestCase):
    def test_invalidate_cache_and_save_cache(self):
        u = unique("short")
        foo = Foo.objects.create(attr1=1, attr2=u)
        self.assertEqual(len(get_cache("filtered_foos", attr1=1, attr2=u)), 1)
        Foo._base_manager.filter(pk=foo.pk)._raw_delete(Foo.objects.db)  # no signal, no event
        self.assertEqual(len(get_cache("filtered_foos", attr1=1, attr2=u)), 1, "still cached")
        invalidate_cache("filtered_foos", {"attr1": 1, "attr2": u})
        self.assertEqual(len(get_cache("filtered_foos", attr1=1, attr2=u)), 0)
        Foo._base_manager.bulk_create([Foo(attr1=1, attr2=u)])  # plain manager: no event
        self.assertEqual(len(get_cache("filtered_foos", attr1=1, attr2=u)), 0)
        self.assertEqual(len(save_cache("filtered_foos", attr1=1, attr2=u)), 1, "save rebuilds now")
        self.assertEqual(len(get_cache("filtered_foos", attr1=1, attr2=u)), 1)
        w = get_cache_worker("filtered_foos")
        with InvalidationSpy() as spy:
            w.invalidate({"attr1": 1, "attr2": u}, {"attr1": 2, "attr2": u})
        self.assertEqual(len(spy.requests), 2)
        with self.assertRaises(LookupError):
            get_cache_worker("nope")

    def test_worker_in_code_with_aliases(self):
        w = CacheWorker(label="code_worker", structure_getter=lambda: 1, timeout=5, relevance_timeout=2,
                        is_register=False)
        self.assertEqual((w.expires, w.relevance_expires, w.timeout), (5, 2, 5))
        with self.assertRaises(ValueError):
            CacheWorker(label="x", structure_getter=lambda: 1, timeout=5, expires=5, is_register=False)


class Commands(unittest.TestCase):
    def test_cachenode_config_is_accepted_by_cachenode(self):
        out = io.StringIO()
        call_command("cachenode_config", stdout=out)
        text = out.getvalue()
        self.assertEqual(text, state.config, "the cluster runs on this very output")
        self.assertIn("filtered_foos: {args: [attr1, attr2]}", text)
        self.assertIn('"foo.Foo":', text)
        # cachenode itself read it: the three nodes started with it, and hold its workers
        for label, w in Client(state.cluster.http[:1]).workers().items():
            self.assertTrue(w["config"]["origin"].startswith(state.origin.base), label)
        self.assertEqual(sorted(Client(state.cluster.http[:1]).workers()), sorted(workers_collection.all()))
        # a broken one is refused by cachenode (exit 2, naming the field)
        bad = os.path.join(state.workdir, "bad.yaml")
        with open(bad, "w") as f:
            f.write("name: bad\nhttp: 127.0.0.1:0\ngossip: 127.0.0.1:0\npeer: 127.0.0.1:0\n"
                    + text.replace("expires: 20\n", "expires: soon\n"))
        p = subprocess.run([state.binary, "serve", "--config", bad, "--data="], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("expires", p.stderr)

    def test_cachenode_check(self):
        out = io.StringIO()
        call_command("cachenode_check", stdout=out)
        self.assertIn("7 workers, as in Django", out.getvalue())
        w = get_cache_worker("filtered_foos")
        w._fields["tick_amount"] = 3
        try:
            out = io.StringIO()
            with self.assertRaises(SystemExit) as cm:
                call_command("cachenode_check", node=state.cluster.http[1], stdout=out)
            self.assertEqual(cm.exception.code, 1)
            self.assertIn("filtered_foos.tick_amount: node has 50, Django says 3", out.getvalue())
        finally:
            del w._fields["tick_amount"]


class ClientErrors(unittest.TestCase):
    def test_unknown_worker_and_origin_error(self):
        c = Client(state.cluster.http)
        with self.assertRaises(UnknownWorker):
            c.get("no_such_worker")
        with self.assertRaises(OriginError):
            get_cache("failing", a=1)

    def test_failover_to_a_live_node(self):
        dead = "127.0.0.1:1"
        c = Client([dead, state.cluster.http[0]])
        for _ in range(4):  # every start node, dead or alive
            self.assertEqual(c.get("echo", x=1), {"x": ["int", 1]})
        with self.assertRaises(Unavailable):
            Client([dead, "127.0.0.1:2"]).get("echo", x=1)

    def test_connections_are_kept_alive(self):
        c = Client(state.cluster.http[:1])
        import http.client
        made = []
        real = http.client.HTTPConnection.connect

        def connect(self):
            made.append(1)
            return real(self)
        with mock.patch.object(http.client.HTTPConnection, "connect", connect):
            for i in range(20):
                c.get("echo", i=i % 3)
        self.assertEqual(len(made), 1)
