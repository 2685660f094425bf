#!/usr/bin/env bash
# The dedicated example, end to end: builds cachenode and the example's
# origin, starts the origin and three nodes on loopback (with a gossip key
# and an admin token), and shows — checking each step — a fill, a hit on
# another node, an invalidation through a change of a record, an explicit
# invalidation, the admin page, and a graceful stop. It exits non-zero at
# the first step that does not behave, and stops everything it started.
#
#   examples/dedicated/run.sh          (from anywhere; CI runs it from scripts/test.sh)
#   KEEP=1 examples/dedicated/run.sh   leaves the cluster running until Ctrl-C
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/cachenode-dedicated.XXXXXX")"
pids=()

cleanup() {
  local code=$?
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$code" != 0 ]; then
    for f in "$work"/*.log; do
      [ -f "$f" ] && { echo "--- $(basename "$f") (last lines)"; tail -n 20 "$f"; }
    done
  fi
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
header() { grep -i "^$1:" "$2" | head -n1 | cut -d' ' -f2- | tr -d '\r'; }

origin_url=http://127.0.0.1:9100
node_url=(http://127.0.0.1:8181 http://127.0.0.1:8182 http://127.0.0.1:8183)

step "build cachenode (static, CGO_ENABLED=0) and the origin"
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$work/cachenode" ./cmd/cachenode)
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$work/origin" ./examples/dedicated/origin)
"$work/cachenode" version

for port in 9100 7201 7202 8181 7211 7212 8182 7221 7222 8183; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port on 127.0.0.1 is in use: stop what listens there (the example's ports are fixed in its config files)"
  fi
done

# Secrets: a gossip key (encrypts gossip, authenticates peer connections)
# and an admin token (guards /admin/* and POST /v1/invalidate).
"$work/cachenode" keygen "$work/gossip.key" # 32 random bytes, base64, mode 0600
od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$work/admin.token"
token="$(cat "$work/admin.token")"
auth=(-H "Authorization: Bearer $token")

step "start the origin and three nodes"
"$work/origin" -addr 127.0.0.1:9100 -notify "${node_url[0]}" -admin-token-file "$work/admin.token" \
  >"$work/origin.log" 2>&1 &
pids+=($!)
for i in 1 2 3; do
  (cd "$work" && exec ./cachenode serve --config "$here/n$i.yaml" \
    --gossip-key gossip.key --admin-token-file admin.token) >"$work/n$i.log" 2>&1 &
  pids+=($!)
done

deadline=$((SECONDS + 30))
for url in "$origin_url/stats" "${node_url[@]/%//readyz}"; do
  until curl -fs -o /dev/null "$url"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$url did not answer 200 within 30 s"
    sleep 0.1
  done
done
for url in "${node_url[@]}"; do
  until [ "$(curl -fs "${auth[@]}" "$url/admin/ring" | grep -o '"state":"alive"' | wc -l)" = 3 ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$url does not see 3 alive members within 30 s"
    sleep 0.1
  done
done
"$work/cachenode" ring --http 127.0.0.1:8181 --admin-token-file "$work/admin.token"

key_url="/v1/cache/filtered_foos?attr1=3&attr2=red"

step "a fill: the first read of a key, through n1"
echo "\$ curl -i '${node_url[0]}$key_url'"
curl -fs -D "$work/h1" -o "$work/b1" "${node_url[0]}$key_url" || fail "read through n1"
cat "$work/h1" | tr -d '\r' | grep -iE '^(HTTP|X-Cache|Age)'
head -c 300 "$work/b1"; echo
[ "$(header X-Cache "$work/h1")" = miss ] || fail "first read through n1: X-Cache is not miss"
grep -q '"id":3,' "$work/b1" || fail "filtered_foos(3, red) does not list Foo 3"
owner="$(header X-Cache-Owner "$work/h1")"
key="$(header X-Cache-Key "$work/h1")"

step "a hit on another node: the same key through n2 and n3"
for i in 1 2; do
  curl -fs -D "$work/h2" -o "$work/b2" "${node_url[$i]}$key_url" || fail "read through n$((i + 1))"
  tr -d '\r' <"$work/h2" | grep -iE '^X-Cache'
  [ "$(header X-Cache "$work/h2")" = hit ] || fail "read through n$((i + 1)): X-Cache is not hit"
  [ "$(header X-Cache-Key "$work/h2")" = "$key" ] || fail "n$((i + 1)) computes another key"
  [ "$(header X-Cache-Owner "$work/h2")" = "$owner" ] || fail "n$((i + 1)) names another owner"
done
requests="$(curl -fs "$origin_url/stats")"
echo "origin: $requests"
echo "$requests" | grep -q '"/foos/filter?attr1=3&attr2=red":1[,}]' ||
  fail "the origin was asked more than once for the key (want one fill for the cluster)"

step "an invalidation: Foo 3 moves from attr1=3 to attr1=4 in the origin, which sends the change event"
curl -fs -o /dev/null "${node_url[2]}/v1/cache/filtered_foos?attr1=4&attr2=red" || fail "read (4, red)"
echo "\$ curl -X PATCH $origin_url/foos/3 -d '{\"attr1\": 4}'"
change="$(curl -fs -X PATCH "$origin_url/foos/3" -d '{"attr1": 4}')" || fail "the origin's change failed"
echo "$change"
echo "$change" | grep -q '"nodes":3' || fail "the change event was not applied on 3 nodes"
for i in 0 1 2; do
  curl -fs -D "$work/h3" -o "$work/b3" "${node_url[$i]}$key_url" || fail "read through n$((i + 1))"
  st="$(header X-Cache "$work/h3")"
  echo "n$((i + 1)): (3, red) X-Cache: $st"
  [ "$st" = hit ] || fail "n$((i + 1)): (3, red) after the change is $st, want hit (refreshed in place)"
  ! grep -q '"id":3,' "$work/b3" || fail "n$((i + 1)) still lists Foo 3 under attr1=3"
  curl -fs -o "$work/b4" "${node_url[$i]}/v1/cache/filtered_foos?attr1=4&attr2=red" || fail "read (4, red)"
  grep -q '"id":3,' "$work/b4" || fail "n$((i + 1)) does not list Foo 3 under attr1=4"
done

step "an explicit invalidation needs the admin token"
curl -fs -o /dev/null "${node_url[0]}/v1/cache/all_foos" || fail "read all_foos"
code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "${node_url[1]}/v1/invalidate" -H 'Content-Type: application/json' -d '{"label": "all_foos"}')"
echo "without the token: $code"
[ "$code" = 401 ] || fail "POST /v1/invalidate without the token answered $code, want 401"
res="$(curl -fs "${auth[@]}" -X POST "${node_url[1]}/v1/invalidate" -H 'Content-Type: application/json' -d '{"label": "all_foos"}')" ||
  fail "POST /v1/invalidate with the token"
echo "with the token: $res"
echo "$res" | grep -q '"keys":1,"nodes":3' || fail "the invalidation did not refresh all_foos on 3 nodes"

step "the admin page"
for url in "${node_url[@]}"; do
  code="$(curl -s -o "$work/admin.html" -w '%{http_code}' -u ":$token" "$url/admin/")"
  [ "$code" = 200 ] || fail "$url/admin/ answered $code"
  grep -q 'filtered_foos' "$work/admin.html" || fail "$url/admin/ does not show the workers"
  echo "$url/admin/   (user: anything, password: the admin token)"
done

if [ -n "${KEEP:-}" ]; then
  echo
  echo "the cluster keeps running; the admin token is $token; Ctrl-C stops everything"
  wait "${pids[0]}" || true
fi

step "a graceful stop: SIGTERM, each node leaves the ring and exits 0"
for i in 3 2 1; do
  pid="${pids[$i]}"
  kill -TERM "$pid"
  if wait "$pid"; then
    echo "n$i stopped (exit 0)"
  else
    fail "n$i exited $? on SIGTERM"
  fi
done
pids=("${pids[0]}")
echo
echo "dedicated example: every step passed"
