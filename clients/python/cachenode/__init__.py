"""cachenode: the Python client of a cachenode cluster (standard library only),
and ``cachenode.django``, a Django app with the API of the original Django
cache library on top of it. See clients/python/README.md."""

from .args import decode_args, encode_args, match_forms
from .client import (
    Busy, BadRequest, CachedEntity, CachenodeError, Client, FillTimeout, InvalidationIncomplete,
    OriginError, Response, Unauthorized, Unavailable, UnknownModel, UnknownWorker,
)

__version__ = "0.1.0"

__all__ = [
    "Client", "Response", "CachedEntity", "encode_args", "decode_args", "match_forms",
    "CachenodeError", "BadRequest", "Unauthorized", "UnknownWorker", "UnknownModel",
    "OriginError", "FillTimeout", "Busy", "Unavailable", "InvalidationIncomplete",
]
