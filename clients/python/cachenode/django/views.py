"""The origin: one URL per worker label, which cachenode calls on a miss."""

import hmac
import logging

from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_http_methods

from cachenode.args import decode_args

from . import conf, serialize

log = logging.getLogger("cachenode.django")


@require_http_methods(["GET", "HEAD"])
def origin(request, label):
    """``GET <include>/<label>?args``: runs the worker's structure_getter with
    the decoded arguments and answers its value as JSON (cachenode.django.serialize).
    Parameters starting with ``_`` are not arguments (``_token``: the
    ORIGIN_TOKEN, when set)."""
    from .shortcuts import get_cache_worker

    tok = conf.get("ORIGIN_TOKEN")
    if tok and not hmac.compare_digest(request.GET.get("_token", ""), tok):
        return JsonResponse({"error": "a valid _token is required", "code": "forbidden"}, status=403)
    try:
        worker = get_cache_worker(label)
    except LookupError:
        return JsonResponse({"error": f"no worker {label!r}", "code": "unknown_worker"}, status=404)
    params = {k: v for k, v in request.GET.lists() if not k.startswith("_")}
    kwargs = decode_args(params)
    try:
        value = worker.structure_getter(**kwargs)
    except TypeError as e:
        # Most often a call with arguments the getter does not take.
        log.warning("cachenode origin %s(%r): %s", label, kwargs, e)
        return JsonResponse({"error": f"{label}: {e}", "code": "bad_arguments"}, status=400)
    return HttpResponse(serialize.dumps(value), content_type="application/json")
