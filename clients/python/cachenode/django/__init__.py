"""cachenode.django: the original Django cache library's API on a cachenode cluster.

Add ``"cachenode.django"`` to ``INSTALLED_APPS``, set ``CACHENODE = {"NODES": [...],
"ORIGIN_BASE": "http://app:8000/cachenode/"}`` and ``path("cachenode/",
include("cachenode.django.urls"))``; then ``CacheWorker``, ``get_cache`` and
``automatic.register`` work as in the library (clients/python/README.md).
"""
