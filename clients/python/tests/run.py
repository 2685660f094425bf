"""Runs the Python package's tests against three real cachenode processes.

    cd clients/python && /usr/bin/python3 -m tests.run [-v] [unittest names...]

CACHENODE_BIN names the cachenode binary; without it, it is built with
``go build`` from the repository. Exit status 0 when every test passed.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REPO = os.path.abspath(os.path.join(ROOT, "..", ".."))


def main(argv):
    work = tempfile.mkdtemp(prefix="cachenode-py-")
    os.environ["CACHENODE_TEST_DIR"] = work
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    sys.path.insert(0, ROOT)
    binary = os.environ.get("CACHENODE_BIN")
    if not binary:
        binary = os.path.join(work, "cachenode")
        subprocess.run(["go", "build", "-o", binary, "./cmd/cachenode"], cwd=REPO, check=True)

    import logging

    import django
    django.setup()
    # the origin's tracebacks of the failing worker, which a test asks for
    logging.getLogger("django.request").setLevel(logging.CRITICAL)
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from cachenode.django import conf
    from tests import cluster, state

    call_command("migrate", run_syncdb=True, verbosity=0)
    with connection.cursor() as c:
        c.execute("PRAGMA journal_mode=WAL")

    origin = cluster.Origin()
    settings.CACHENODE["ORIGIN_BASE"] = origin.base
    body = cluster.cachenode_config(origin.base)
    state.config = body
    cl = None
    code = 1
    try:
        cl = cluster.Cluster(binary, work, body)
        settings.CACHENODE["NODES"] = cl.http
        conf.reset()
        state.cluster = cl
        state.origin = origin
        state.binary = binary
        state.workdir = work
        verbosity = 2 if "-v" in argv else 1
        names = [a for a in argv if not a.startswith("-")]
        loader = unittest.TestLoader()
        if names:
            suite = loader.loadTestsFromNames(names)
        else:
            suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=ROOT)
        result = unittest.TextTestRunner(verbosity=verbosity).run(suite)
        if not result.wasSuccessful():
            print(cl.logs(), file=sys.stderr)
        code = 0 if result.wasSuccessful() else 1
    finally:
        if cl is not None:
            cl.stop()
        origin.stop()
        shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
