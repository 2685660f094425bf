# The seed README's example, written as in the seed; only the imports differ
# (django_cache.contrib -> cachenode.django.contrib, my_application -> tests.foo).
from typing import Dict

from cachenode.django.contrib import CacheWorker, automatic
from cachenode.django.contrib.automatic import (
    default_outdated_getter, default_newcomers_getter
)

from tests.foo.models import Foo


# Getter without arguments
def get_all_foo_list():
    return Foo.objects.all()


all_foos_cache = CacheWorker(
    label="all_foos",  # Unique cache worker label
    structure_getter=get_all_foo_list,  # Function which generation cache value
    expires=100000,  # Cache live in seconds
)


# Filtering by arguments
def filter_foos(attr1, attr2, **kwargs):
    return Foo.objects.filter(attr1=attr1, attr2=attr2)


filtered_foos = CacheWorker(
    label="filtered_foos",  # Unique cache worker label
    structure_getter=filter_foos,  # Function which generation cache value
    expires=100000,  # Cache live in seconds
)


def filtered_foos_outdated_getter(instance: Foo, attrs: Dict) -> Dict:
    default_attrs = default_outdated_getter()
    return {
        "attr1": default_attrs.get("attr1"),
        "attr2": default_attrs.get("attr2"),
    }


def filtered_foos_newcomers_getter(instance: Foo, attrs: Dict) -> Dict:
    default_attrs = default_newcomers_getter()
    return {
        "attr1": default_attrs.get("attr1"),
        "attr2": default_attrs.get("attr2"),
    }


automatic.register = automatic.register(
    Foo, {
        "all_foos": {"is_empty": True},
        "filtered_foos": {
            # Callable or string (path to callable)
            "instance_getter": lambda instance: {
                "attr1": instance.attr1, "attr2": instance.attr2
            },
            # Callable or string (path to callable)
            "outdated_getter": filtered_foos_outdated_getter,
            "newcomers_getter": filtered_foos_newcomers_getter,
        }
    }
)


# The original's tests' worker with three typed arguments, as there
# (``timeout`` is the library's older name of ``expires``).
def get_foo(attr1, attr2, attr3):
    return Foo.objects.filter(attr1=attr1, attr2=attr2, attr3=attr3)


simple_foo = CacheWorker(
    structure_getter=get_foo,
    label="simple_foo",
    timeout=20,
    max_expires=3600,
)

automatic.register(Foo, {
    "simple_foo": {
        "instance_getter": lambda instance: {
            "attr1": instance.attr1, "attr2": instance.attr2, "attr3": instance.attr3,
        },
        # outdated/newcomers: default (the instance getter of the old and the new values)
    },
})

foo_entity = CacheWorker(
    structure_getter=filter_foos,
    label="foo_entity",
    expires=300,
    cached_entity=True,
    relevance_invalidation=True,
    relevance_expires=120,
)

echo = CacheWorker(structure_getter="tests.foo.getters.echo", label="echo", expires=300)
failing = CacheWorker(structure_getter="tests.foo.getters.failing", label="failing", expires=300)
