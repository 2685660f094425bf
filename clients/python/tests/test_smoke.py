import unittest

from cachenode.django.shortcuts import get_cache
from tests.foo.models import Foo


class Smoke(unittest.TestCase):
    def test_smoke(self):
        f = Foo.objects.create(attr1=1, attr2="smoke", attr3=1.1)
        v = get_cache("filtered_foos", attr1=1, attr2="smoke")
        self.assertIn(f, v)
