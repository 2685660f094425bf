#!/usr/bin/env bash
# The project's test command: installs what the tests need on a fresh
# Debian machine (when run as root), then vets and runs every test with the
# race detector. CI (.ci/run) calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages some tests use. Tests that need a package that is missing
# skip with a message saying so; as root on a fresh machine we install them.
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# headless browser test of the admin page (node/httpapi)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# examples/dedicated/run.sh
command -v curl >/dev/null 2>&1 || need+=(curl)
# clients/python: the Django app's tests (Debian's Django, for /usr/bin/python3)
/usr/bin/python3 -c 'import django' >/dev/null 2>&1 || need+=(python3-django)
# tests against a real PostgreSQL (invalidation/pgsource, cmd/cachenode): initdb, pg_ctl, psql
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# the RESP front's tests with real clients (node/resp), bench/ ceilings, and
# the memory scenario's comparison with Redis (bench/internal/scenario)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) ||
    echo "warning: could not install ${need[*]}; the tests that need them will skip"
fi

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on: $unformatted" >&2
  exit 1
fi
go vet ./...
go test -race -timeout 15m "$@" ./...

# The dedicated example end to end (about 30 s): it builds cachenode as
# deploy/Dockerfile does (CGO_ENABLED=0 -trimpath; the deploy tests above
# built the same, so the build cache has it), starts an origin and three
# nodes on loopback, checks a fill, a hit elsewhere, an invalidation, the
# admin page and a graceful stop, and stops what it started.
examples/dedicated/run.sh

# examples/embedded is a module of its own, so that `go test -race ./...`
# above does not build modernc.org/sqlite (large, and slow to compile with
# -race). Its test starts three instances and runs in a few seconds; it runs
# without -race to keep CI time down, with CGO_ENABLED=0 -trimpath to share
# the build cache with the static binary. -mod=mod: the module takes the
# main module's requirements through its replace directive, and a
# dependency added to the main go.mod would otherwise stop it on a missing
# go.sum line.
(cd examples/embedded &&
  CGO_ENABLED=0 go vet -mod=mod -trimpath ./... &&
  CGO_ENABLED=0 go test -mod=mod -trimpath -timeout 5m ./...)


# The chaos scenarios (chaos/, issue 7): real cachenode processes, each in
# its own network namespace when run as root (CI is), with kill -9,
# SIGSTOP, partitions, joins, leaves and full data disks (disk-full, a
# tmpfs per node, issue 20; about 20 s); every scenario 8 s, about 2.5 min in
# all, then the probes of the issues it found (regression tests, 40 s). It
# runs here on its own, not inside `go test -race ./...` above: beside the
# other packages' race-built tests on two cores, the nodes miss their wait
# budgets and fall back, which the fill invariant counts. It fails on any
# violated invariant. CHAOS_SEED=N replays a run (the seed is in the log);
# CHAOS_SCENARIOS=disk-full runs one scenario.
CACHENODE_CHAOS=1 go test -race -count=1 -timeout 8m -run 'TestChaos|TestProbe' ./chaos
