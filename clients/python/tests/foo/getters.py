"""Getters named by dotted paths (settings-declared workers)."""

from .models import Foo


def count_foos(attr2):
    return {"attr2": attr2, "count": Foo.objects.filter(attr2=attr2).count()}


def failing(**kwargs):
    raise RuntimeError("this origin fails")


def echo(**kwargs):
    """The arguments as received, with their Python types."""
    return {k: [type(v).__name__, v] for k, v in sorted(kwargs.items())}


def attr1_of(instance):
    return {"attr1": instance.attr1}


def positive(instance, *args):
    return instance.attr1 > 0
