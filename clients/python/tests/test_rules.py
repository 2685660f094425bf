"""How changes become events: default getters, is_invalidate, the fallback
when two workers' getters disagree on a name, and the origin's token."""

import unittest

from django.test import Client as DjangoClient
from django.test.utils import override_settings

from cachenode.django import conf
from cachenode.django.contrib import automatic
from cachenode.django.contrib.automatic import Change, automatic_invalidation, build_requests, values_of
from cachenode.django.shortcuts import get_cache
from tests import counting
from tests.foo.models import Foo
from tests.helpers import InvalidationSpy, origin_calls, unique


class Rules(unittest.TestCase):
    def test_default_outdated_and_newcomers_use_the_instance_getter(self):
        # simple_foo's rule has only an instance_getter
        u = unique("defaults")
        foo = Foo.objects.create(attr1=1, attr2=u, attr3=1.5)
        self.assertIn(foo, get_cache("simple_foo", attr1=1, attr2=u, attr3=1.5))
        self.assertEqual(len(get_cache("simple_foo", attr1=1, attr2=u, attr3=2.5)), 0)
        counting.reset()
        foo.attr3 = 2.5
        foo.save()
        self.assertEqual(len(get_cache("simple_foo", attr1=1, attr2=u, attr3=1.5)), 0)
        self.assertIn(foo, get_cache("simple_foo", attr1=1, attr2=u, attr3=2.5))
        self.assertEqual(origin_calls("simple_foo", attr1=1, attr2=u, attr3=1.5), 1)
        self.assertEqual(origin_calls("simple_foo", attr1=1, attr2=u, attr3=2.5), 1)

    def test_a_worker_whose_getter_lacks_a_name_gets_its_own_match(self):
        rules = automatic_invalidation.pool[Foo]
        automatic.register(Foo, {"echo": {"instance_getter": lambda i: {"attr2": "z" + i.attr2},
                                          "args": ["attr1", "attr2"]}})
        try:
            foo = Foo(attr1=1, attr2="q")
            reqs = build_requests(Foo, [Change("create", foo, None, values_of(foo))])
        finally:
            rules.pop("echo")
        self.assertEqual(reqs[0]["model"], "foo.Foo")
        self.assertEqual(reqs[0]["changes"][0]["new"]["attr2"], ['"q"', '"zq"'])
        self.assertEqual(reqs[1:], [{"label": "echo", "match": {"attr2": ['"zq"']}, "delay": False}])

    def test_is_invalidate(self):
        rules = automatic_invalidation.pool[Foo]
        saved = dict(rules)
        try:
            rules.clear()
            # getters as dotted paths
            automatic.register(Foo, {"filtered_foos": {"instance_getter": "tests.foo.getters.attr1_of",
                                                        "is_invalidate": "tests.foo.getters.positive"}})
            neg, pos = Foo(attr1=-1, attr2="n"), Foo(attr1=1, attr2="p")
            self.assertEqual(build_requests(Foo, [Change("create", neg, None, values_of(neg))]), [])
            reqs = build_requests(Foo, [Change("create", pos, None, values_of(pos))])
            self.assertEqual(reqs, [{"model": "foo.Foo", "changes": [{"op": "create", "new": {"attr1": ["1", "1.0"]}}],
                                     "delay": False}])
        finally:
            rules.clear()
            rules.update(saved)

    def test_batch_groups_saves_into_one_event(self):
        u = unique("batch")
        with InvalidationSpy() as spy:
            with automatic.batch():
                for i in range(5):
                    Foo.objects.create(attr1=i, attr2=u)
        self.assertEqual(len(spy.requests), 1)
        self.assertEqual(len(spy.requests[0]["changes"]), 5)


class OriginToken(unittest.TestCase):
    def test_the_origin_requires_its_token(self):
        c = DjangoClient()
        with override_settings(CACHENODE={**conf.get_all(), "ORIGIN_TOKEN": "s3cret"}):
            self.assertEqual(c.get("/cachenode/echo?a=1").status_code, 403)
            self.assertEqual(c.get("/cachenode/echo?a=1&_token=nope").status_code, 403)
            r = c.get("/cachenode/echo?a=1&_token=s3cret")
            self.assertEqual(r.status_code, 200)
            self.assertEqual(r.json(), {"a": ["int", 1]})
        self.assertEqual(c.get("/cachenode/nope").status_code, 404)
        self.assertEqual(c.post("/cachenode/echo").status_code, 405)
