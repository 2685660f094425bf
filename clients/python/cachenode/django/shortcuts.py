"""The library's shortcuts (``django_cache.shortcuts``)."""

from .worker import invalidate, invalidate_all, workers_collection


def get_cache_worker(label):
    """The worker of ``label``; raises LookupError for an unknown label."""
    w = workers_collection.get(label)
    if w is None:
        workers_collection.load_settings()
        w = workers_collection.get(label)
    if w is None:
        raise LookupError(f"no cache worker {label!r} is registered")
    return w


def get_cache(label, *args, **kwargs):
    """The cached value of ``label`` for these arguments (see CacheWorker.get)."""
    return get_cache_worker(label).get(*args, **kwargs)


def save_cache(label, *args, **kwargs):
    """Rebuild the value of ``label`` for these arguments now, and return it."""
    return get_cache_worker(label).save(*args, **kwargs)


def clear_all(label):
    get_cache_worker(label).clear_all()


def invalidate_cache(label, old_data, new_data=None):
    """Refresh the variants of ``label`` that match ``old_data`` (and ``new_data``)."""
    invalidate(get_cache_worker(label), old_data, new_data)


def invalidate_all_cache(label):
    """Refresh every key of ``label``."""
    invalidate_all(get_cache_worker(label))
