"""What ``django_cache.contrib`` exported: CacheWorker (and its old name
Cacher), the workers collection, invalidate / invalidate_all, and the
automatic invalidation (``automatic.register``)."""

from ..worker import Cacher, CacheWorker, invalidate, invalidate_all, workers_collection
from . import automatic
from .automatic import automatic_invalidation, default_newcomers_getter, default_outdated_getter

__all__ = ["CacheWorker", "Cacher", "workers_collection", "invalidate", "invalidate_all",
           "automatic", "automatic_invalidation", "default_outdated_getter", "default_newcomers_getter"]
