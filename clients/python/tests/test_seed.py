"""The seed README's Foo example, with its workers and rules as written there
(tests/foo/cache.py), against three nodes."""

import threading
import unittest

from django.db import transaction

from cachenode.django.shortcuts import get_cache, get_cache_worker
from tests import counting
from tests.foo.models import Foo
from tests.helpers import InvalidationSpy, node_clients, origin_calls, unique


class SeedExample(unittest.TestCase):
    def test_values_come_back_as_model_instances(self):
        u = unique()
        foo1 = Foo.objects.create(attr1=1, attr2=u, attr3=1.1)
        foo2 = Foo.objects.create(attr1=2, attr2=u, attr3=None)
        filtered = get_cache("filtered_foos", attr1=1, attr2=u)
        self.assertIn(foo1, filtered)
        self.assertNotIn(foo2, filtered)
        self.assertEqual(filtered.model, Foo)
        got = list(filtered)[0]
        self.assertIsInstance(got, Foo)
        self.assertEqual((got.pk, got.attr1, got.attr2, got.attr3), (foo1.pk, 1, u, 1.1))
        self.assertFalse(got._state.adding)
        # the original's test worker, three typed arguments
        self.assertIn(foo1, get_cache("simple_foo", attr1=1, attr2=u, attr3=1.1))
        self.assertIn(foo2, get_cache("all_foos"))
        # positional arguments bind to the getter's parameters, as in the library
        self.assertIn(foo1, get_cache("filtered_foos", 1, u))
        # a model instance read from the cache can be saved
        got.attr3 = 2.5
        got.save()
        foo1.refresh_from_db()
        self.assertEqual(foo1.attr3, 2.5)

    def test_one_origin_call_per_key_for_many_readers_on_three_nodes(self):
        u = unique("readers")
        Foo.objects.create(attr1=5, attr2=u)
        clients = node_clients()
        barrier = threading.Barrier(30)
        seen, errors = [], []

        def read(i):
            try:
                barrier.wait()
                if i % 2:
                    seen.append(("get_cache", len(get_cache("filtered_foos", attr1=5, attr2=u))))
                else:
                    r = clients[i % 3].read("filtered_foos", {"attr1": 5, "attr2": u})
                    seen.append((r.node, r.key))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=read, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(origin_calls("filtered_foos", attr1=5, attr2=u), 1)
        nodes = {n for n, _ in seen if n != "get_cache"}
        self.assertEqual(len(nodes), 3, f"reads went through {nodes}")
        keys = {k for n, k in seen if n != "get_cache"}
        self.assertEqual(keys, {get_cache_worker("filtered_foos").get_key(attr1=5, attr2=u)})
        self.assertEqual({k for n, k in seen if n == "get_cache"}, {1})

    def test_update_moves_a_foo_between_variants_and_both_are_refreshed(self):
        u = unique("move")
        foo = Foo.objects.create(attr1=1, attr2=u)
        other = Foo.objects.create(attr1=2, attr2=u)
        clients = node_clients()
        for c in clients:  # a near-cache copy on every node
            c.read("filtered_foos", {"attr1": 1, "attr2": u})
            c.read("filtered_foos", {"attr1": 2, "attr2": u})
        self.assertIn(foo, get_cache("filtered_foos", attr1=1, attr2=u))
        counting.reset()
        foo.attr1 = 2
        with InvalidationSpy() as spy:
            foo.save()
        self.assertEqual(len(spy.requests), 1, spy.requests)
        self.assertEqual(spy.requests[0]["model"], "foo.Foo")
        for c in clients:
            old = c.read("filtered_foos", {"attr1": 1, "attr2": u})
            new = c.read("filtered_foos", {"attr1": 2, "attr2": u})
            self.assertEqual(old.status, "hit", "refreshed in place, not dropped")
            self.assertEqual([o["pk"] for o in old.value()["objects"]], [])
            self.assertEqual(sorted(o["pk"] for o in new.value()["objects"]), sorted([foo.pk, other.pk]))
        self.assertEqual(origin_calls("filtered_foos", attr1=1, attr2=u), 1)
        self.assertEqual(origin_calls("filtered_foos", attr1=2, attr2=u), 1)
        self.assertNotIn(foo, get_cache("filtered_foos", attr1=1, attr2=u))
        self.assertIn(foo, get_cache("filtered_foos", attr1=2, attr2=u))

    def test_bulk_update_of_1000_rows_refreshes_each_variant_once(self):
        u = unique("bulk")
        with InvalidationSpy() as spy:
            Foo.objects.bulk_create([Foo(attr1=i % 10, attr2=u) for i in range(1000)])
        self.assertEqual(len(spy.requests), 1, "bulk_create: one event")
        self.assertEqual(len(spy.requests[0]["changes"]), 10, "1000 creates in 10 variants")
        for a in range(12):
            self.assertEqual(len(get_cache("filtered_foos", attr1=a, attr2=u)), 100 if a < 10 else 0)
        all_before = len(get_cache("all_foos"))
        counting.reset()
        with InvalidationSpy() as spy:
            n = Foo.objects.filter(attr2=u).update(attr1=11)
        self.assertEqual(n, 1000)
        self.assertEqual(len(spy.requests), 1, "update() of 1000 rows: one event")
        for a in range(10):
            self.assertEqual(origin_calls("filtered_foos", attr1=a, attr2=u), 1, f"variant {a}")
            self.assertEqual(len(get_cache("filtered_foos", attr1=a, attr2=u)), 0)
        self.assertEqual(origin_calls("filtered_foos", attr1=11, attr2=u), 1)
        self.assertEqual(len(get_cache("filtered_foos", attr1=11, attr2=u)), 1000)
        self.assertEqual(origin_calls("filtered_foos", attr1=10, attr2=u), 0, "an unaffected variant")
        self.assertEqual(origin_calls("all_foos"), 1)
        self.assertEqual(len(get_cache("all_foos")), all_before)

    def test_bulk_create_refreshes_each_affected_variant_once(self):
        u = unique("create")
        for a in (1, 2, 3):
            self.assertEqual(len(get_cache("filtered_foos", attr1=a, attr2=u)), 0)
        counting.reset()
        with InvalidationSpy() as spy:
            Foo.objects.bulk_create([Foo(attr1=1 + i % 2, attr2=u) for i in range(50)])
        self.assertEqual(len(spy.requests), 1)
        self.assertEqual(origin_calls("filtered_foos", attr1=1, attr2=u), 1)
        self.assertEqual(origin_calls("filtered_foos", attr1=2, attr2=u), 1)
        self.assertEqual(origin_calls("filtered_foos", attr1=3, attr2=u), 0)
        self.assertEqual(len(get_cache("filtered_foos", attr1=1, attr2=u)), 25)
        self.assertEqual(len(get_cache("filtered_foos", attr1=2, attr2=u)), 25)

    def test_bulk_update_method(self):
        u = unique("bulkupd")
        objs = [Foo.objects.create(attr1=1, attr2=u) for _ in range(5)]
        self.assertEqual(len(get_cache("filtered_foos", attr1=1, attr2=u)), 5)
        self.assertEqual(len(get_cache("filtered_foos", attr1=4, attr2=u)), 0)
        for o in objs[:3]:
            o.attr1 = 4
        with InvalidationSpy() as spy:
            Foo.objects.bulk_update(objs, ["attr1"])
        self.assertEqual(len(spy.requests), 1)
        self.assertEqual(len(get_cache("filtered_foos", attr1=1, attr2=u)), 2)
        self.assertEqual(len(get_cache("filtered_foos", attr1=4, attr2=u)), 3)

    def test_delete(self):
        u = unique("delete")
        foos = [Foo.objects.create(attr1=7, attr2=u) for _ in range(4)]
        self.assertEqual(len(get_cache("filtered_foos", attr1=7, attr2=u)), 4)
        foos[0].delete()
        left = get_cache("filtered_foos", attr1=7, attr2=u)
        self.assertEqual(len(left), 3)
        self.assertNotIn(foos[0], left)
        counting.reset()
        with InvalidationSpy() as spy:
            Foo.objects.filter(attr2=u).delete()
        self.assertEqual(len(spy.requests), 1, "a queryset delete: one event")
        self.assertEqual(len(get_cache("filtered_foos", attr1=7, attr2=u)), 0)
        self.assertEqual(origin_calls("filtered_foos", attr1=7, attr2=u), 1)

    def test_events_wait_for_the_commit(self):
        u = unique("commit")
        foo = Foo.objects.create(attr1=1, attr2=u)
        self.assertEqual(len(get_cache("filtered_foos", attr1=3, attr2=u)), 0)
        with InvalidationSpy() as spy:
            with transaction.atomic():
                foo.attr1 = 3
                foo.save()
                self.assertEqual(spy.requests, [], "nothing is sent before the commit")
            self.assertEqual(len(spy.requests), 1)
        self.assertEqual(len(get_cache("filtered_foos", attr1=3, attr2=u)), 1)
        with InvalidationSpy() as spy:
            try:
                with transaction.atomic():
                    foo.attr1 = 4
                    foo.save()
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
        self.assertEqual(spy.requests, [], "a rolled back change sends nothing")

    def test_a_float_field_matches_an_int_argument(self):
        # simple_foo(attr3=2) with an int; the record's FloatField holds 2.0
        u = unique("float")
        self.assertEqual(len(get_cache("simple_foo", attr1=1, attr2=u, attr3=2)), 0)
        self.assertEqual(len(get_cache("simple_foo", attr1=1, attr2=u, attr3=2.0)), 0)
        self.assertNotEqual(get_cache_worker("simple_foo").get_key(attr1=1, attr2=u, attr3=2),
                            get_cache_worker("simple_foo").get_key(attr1=1, attr2=u, attr3=2.0))
        foo = Foo.objects.create(attr1=1, attr2=u, attr3=2.0)
        self.assertIn(foo, get_cache("simple_foo", attr1=1, attr2=u, attr3=2))
        self.assertIn(foo, get_cache("simple_foo", attr1=1, attr2=u, attr3=2.0))

    def test_delay_invalidation_sends_delay(self):
        w = get_cache_worker("filtered_foos")
        u = unique("delay")
        foo = Foo.objects.create(attr1=1, attr2=u)
        self.assertEqual(len(get_cache("filtered_foos", attr1=1, attr2=u)), 1)
        w._fields["delay_invalidation"] = True
        try:
            with InvalidationSpy() as spy:
                foo.delete()
        finally:
            del w._fields["delay_invalidation"]
        self.assertEqual(spy.requests[0]["delay"], True)
        self.assertEqual(spy.requests[0]["countdown"], 1.0)
        from tests.helpers import wait_until
        wait_until(lambda: len(get_cache("filtered_foos", attr1=1, attr2=u)) == 0, 30,
                   "the delayed invalidation to be applied")

    def test_unchanged_save_sends_nothing(self):
        foo = Foo.objects.create(attr1=1, attr2=unique("same"))
        with InvalidationSpy() as spy:
            foo.save()
        self.assertEqual(spy.requests, [])
