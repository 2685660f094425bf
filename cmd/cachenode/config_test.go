package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cachenode/cachenode/worker"
)

// The contract's example config, verbatim.
const contractConfig = `name: n1
gossip: 127.0.0.1:7946
peer: 127.0.0.1:7947
http: 127.0.0.1:8080
join: [127.0.0.1:7956]
data: ./data/n1
memory: 1GiB

defaults:                  # the process-wide defaults of every worker field
  tick: 100ms
  tick_amount: 10
  relevance_expires: 60s
  delay_countdown: 5s

workers:
  all_foos:
    origin: http://127.0.0.1:9000/foos        # GET origin?arg=value...; a 200 body is the value
    expires: 100000s
    relevance_invalidation: true
    relevance_expires: 30s
  filtered_foos:
    origin: http://127.0.0.1:9000/foos/filter
    expires: 1h
    delay_invalidation: true

invalidation:              # automatic invalidation rules, per model
  Foo:
    all_foos: {is_empty: true}
    filtered_foos: {args: [attr1, attr2]}     # the worker's arguments are these fields of the record
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func noEnv(string) string { return "" }

func TestContractConfig(t *testing.T) {
	path := writeFile(t, "c.yaml", contractConfig)
	rc, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	nc := rc.Node
	if nc.Name != "n1" || nc.Gossip != "127.0.0.1:7946" || nc.Peer != "127.0.0.1:7947" || rc.HTTP != "127.0.0.1:8080" ||
		len(nc.Join) != 1 || nc.Join[0] != "127.0.0.1:7956" || nc.Data != "./data/n1" || nc.Memory != 1<<30 {
		t.Errorf("node config %+v http %s", nc, rc.HTTP)
	}
	d := nc.Defaults
	if d.Tick != 100*time.Millisecond || d.TickAmount != 10 || d.RelevanceExpires != time.Minute || d.DelayCountdown != 5*time.Second ||
		d.Expires != worker.DefaultPolicy().Expires {
		t.Errorf("defaults %+v", d)
	}
	all := rc.Workers["all_foos"]
	def := all.workerDef("all_foos", d, nil, nil)
	if def.Expires != 100000*time.Second || !*def.RelevanceInvalidation || def.RelevanceExpires != 30*time.Second || def.FillTimeout != time.Second {
		t.Errorf("all_foos %+v", def)
	}
	if f := rc.Workers["filtered_foos"]; f.origin() != "http://127.0.0.1:9000/foos/filter" || !*f.DelayInvalidation {
		t.Errorf("filtered_foos %+v", f)
	}
	rules := rulesOf(rc.Rules["Foo"])
	if !rules["all_foos"].IsEmpty || strings.Join(rules["filtered_foos"].Args, ",") != "attr1,attr2" {
		t.Errorf("rules %+v", rules)
	}
}

func TestPrecedence(t *testing.T) {
	path := writeFile(t, "c.yaml", "name: file\nmemory: 64MiB\nhttp: 127.0.0.1:1\ndata: ''\n")
	env := map[string]string{"CACHENODE_NAME": "env", "CACHENODE_MEMORY": "2GiB", "CACHENODE_JOIN": "a:1, b:2", "CACHENODE_INSECURE": "1"}
	rc, err := loadConfig([]string{"--config", path, "--name", "flag"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if rc.Node.Name != "flag" || rc.Node.Memory != 2<<30 || rc.HTTP != "127.0.0.1:1" || strings.Join(rc.Node.Join, " ") != "a:1 b:2" || rc.Node.Data != "" {
		t.Errorf("flags > env > file: %+v http %s", rc.Node, rc.HTTP)
	}
	rc, err = loadConfig([]string{"--name=x", "--data=", "--memory", "1.5 GiB", "--insecure"}, noEnv, &bytes.Buffer{})
	if err != nil || rc.Node.Data != "" || rc.Node.Memory != 3<<29 || rc.HTTP != "127.0.0.1:8080" || rc.Node.Gossip != "0.0.0.0:7946" {
		t.Errorf("--data= keeps records in memory: %+v %v", rc, err)
	}
	if rc.RESP != "" {
		t.Errorf("the RESP front is on by default: %q", rc.RESP)
	}
	path = writeFile(t, "r.yaml", "name: r\nresp: 127.0.0.1:6380\ninsecure: true\n")
	if rc, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{}); err != nil || rc.RESP != "127.0.0.1:6380" {
		t.Errorf("resp: in the file: %q %v", rc.RESP, err)
	}
	if rc, err := loadConfig([]string{"--config", path, "--resp", "127.0.0.1:6381"}, func(k string) string { return map[string]string{"CACHENODE_RESP": "127.0.0.1:6382"}[k] }, &bytes.Buffer{}); err != nil || rc.RESP != "127.0.0.1:6381" {
		t.Errorf("--resp over CACHENODE_RESP over the file: %+v %v", rc, err)
	}
	if _, err := loadConfig([]string{"--name=x", "--insecure", "--resp", "nonsense"}, noEnv, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "resp") {
		t.Errorf("--resp nonsense: %v", err)
	}
	rc, err = loadConfig([]string{"--name=x", "--insecure"}, noEnv, &bytes.Buffer{})
	if err != nil || rc.Node.Data != filepath.Join("cachenode-data", "x") || rc.Node.Membership.Preset != "lan" {
		t.Errorf("default data dir: %q %v", rc.Node.Data, err)
	}
	path = writeFile(t, "n.yaml", "name: n\ninsecure: true\ndata:\n")
	if rc, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{}); err != nil || rc.Node.Data != "" {
		t.Errorf("data: with nothing after it keeps records in memory: %q %v", rc.Node.Data, err)
	}
	path = writeFile(t, "m.yaml", "name: m\nmembership: local\ninsecure: true\n")
	if rc, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{}); err != nil || rc.Node.Membership.Preset != "local" {
		t.Errorf("membership: local: %v", err)
	}
	path = writeFile(t, "m2.yaml", "name: m\nmembership: {preset: local, probe_interval: 2s, suspicion_mult: 9}\ninsecure: true\n")
	if rc, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{}); err != nil ||
		rc.Node.Membership.ProbeInterval != 2*time.Second || rc.Node.Membership.SuspicionMult != 9 || rc.Node.Membership.GossipInterval != 20*time.Millisecond {
		t.Errorf("tuned membership: %+v %v", rc.Node.Membership, err)
	}
}

func TestBadConfig(t *testing.T) {
	key := writeFile(t, "key", "0123456789abcdef0123456789abcdef\n") // 16 bytes in hex
	for _, tc := range []struct {
		file string
		args []string
		want string
	}{
		{"name: a\nnmae: b\n", nil, "line 2: nmae: unknown field"},
		{"tracing:\n  otlp: collector:4318\n", nil, "tracing.otlp: want an http:// or https:// URL"},
		{"tracing:\n  otpl: http://collector:4318\n", nil, "line 2: tracing.otpl: unknown field"},
		{"workers:\n  w:\n    origin: http://x/\n    expirse: 1s\n", nil, "line 4: workers.w.expirse: unknown field"},
		{"workers:\n  w:\n    origin: http://x/\n    expires: soon\n", nil, `line 4: workers.w.expires: bad duration "soon"`},
		{"workers:\n  w:\n    origin: http://x/\n    tick_amount: ten\n", nil, "line 4: workers.w.tick_amount: cannot unmarshal"},
		{"workers:\n  w:\n    origin: http://x/\n    tick_amount: 0\n", nil, "workers.w.tick_amount: must be >= 1"},
		{"workers:\n  w:\n    expires: 1s\n", nil, "workers.w.origin: required"},
		{"workers:\n  w:\n    origin: ftp://x/\n", nil, "workers.w.origin"},
		{"workers:\n  w:\n    origin: \"http://u:hunter2@h/%zz?k=1\"\n", nil, "workers.w.origin: not an http(s) URL"},
		{"workers:\n  bad label:\n    origin: http://x/\n", nil, "workers.bad label"},
		{"workers:\n  w:\n    origin: http://x/\n    key_gen: mine\n", nil, "workers.w.key_gen"},
		{"workers:\n  w:\n    origin: http://x/\n    action: burn\n", nil, "workers.w.action"},
		{"defaults:\n  tick: -1s\n", nil, "line 2: defaults.tick: negative duration"},
		{"defaults:\n  tikc: 1s\n", nil, "line 2: defaults.tikc: unknown field"},
		{"memory: 12XB\n", nil, `line 1: memory: bad size "12XB"`},
		{"membership: wan\n", nil, `membership.preset: must be lan or local, got "wan"`},
		{"membership: {preset: local, probe: 1s}\n", nil, "line 1: membership.probe: unknown field"},
		{"invalidation:\n  Foo:\n    nope: {is_empty: true}\n", nil, "invalidation.Foo.nope: no worker"},
		{"invalidation:\n  Foo:\n    w: {is_empty: yes, argz: [a]}\n", nil, "invalidation.Foo.w.argz: unknown field"},
		{"name: a\nname: b\n", nil, "line 2: name: given twice"},
		{"name: [a\n", nil, "line"},
		{"gossip: nohost\n", nil, "gossip:"},
		{"", []string{"--memory", "lots"}, "memory: bad size"},
		{"", []string{"--log-level", "loud"}, "log-level"},
		{"", []string{"--gossip-key", "/nonexistent"}, "gossip-key"},
		{"", []string{"--admin-token-file", "/nonexistent"}, "admin-token-file"},
		{"", []string{"--join", "a:1,b"}, "join"},
		{"", []string{"--bogus"}, "flag provided but not defined: -bogus"},
		{"", []string{"extra"}, `unexpected argument "extra"`},
		{"ring: {partition_count: -3}\n", nil, "ring:"},
		{"tls: {cert: a.pem}\n", nil, "tls: give both"},
		{"peer_limits: {max_conns: many}\n", nil, "peer_limits.max_conns"},
		{"peer_limits: {idle_timeout: 0s}\n", nil, "peer_limits.idle_timeout"},
		{"peer_limits: {max_enqueue_bytes: lots}\n", nil, "peer_limits.max_enqueue_bytes"},
		{"peer_limits: {idle: 1s}\n", nil, "peer_limits.idle: unknown field"},
		{"", []string{"--insecure=maybe"}, "insecure"},
		{"origin_limits: {max_concurrent_fills: -1}\nworkers:\n  w:\n    origin: http://x/\n", nil, "origin_limits (x:80): worker: invalid config: max_concurrent_fills must be > 0"},
		{"origin_limits: {max_concurrent: 3}\n", nil, "line 1: origin_limits.max_concurrent: unknown field"},
		{"origin_limits:\n  hosts:\n    \"y:80\": {max_queued_fills: 2}\nworkers:\n  w:\n    origin: http://x/\n", nil, "origin_limits.hosts.y:80: no worker's origin is on this host"},
		{"max_concurrent_requests: -1\n", nil, "max_concurrent_requests: must be > 0"},
		{"workers:\n  w: 3\n", nil, "line 2: workers.w: want a mapping of fields"},
		{"membership: [lan]\n", nil, "line 1: membership: want a preset (lan or local) or a mapping of fields"},
		{"peer_limits: {idle_timeout: 1m, max_enqueue_countdown: soon}\n", nil, `line 1: peer_limits.max_enqueue_countdown: bad duration "soon"`},
		{"", []string{"--memory", "1000"}, "memory: 1000 bytes is too small"},
		{"", []string{"--data-on-corruption", "ignore"}, `data-on-corruption: "ignore" is not one of move-aside, fail`},
		{"workers:\n  w:\n    origin: http://x/\n    refresh_unread: true\n    refresh_if_read_within: 1m\n", nil, "workers.w: give refresh_if_read_within or refresh_unread"},
	} {
		args := append([]string{"--name", "t", "--gossip-key", key}, tc.args...)
		if tc.file != "" {
			args = append(args, "--config", writeFile(t, "bad.yaml", tc.file))
		}
		_, err := loadConfig(args, noEnv, &bytes.Buffer{})
		if _, ok := err.(usageError); !ok || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q %v: got %v, want a one-line usage error containing %q", tc.file, tc.args, err, tc.want)
		}
	}
}

func TestExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"serve", "--memory", "x"}, &out, &errb); code != 2 || strings.Count(errb.String(), "\n") != 1 ||
		!strings.HasPrefix(errb.String(), "cachenode: memory:") {
		t.Errorf("bad flag: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
	out.Reset()
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "cachenode ") {
		t.Errorf("version: %d %q", code, out.String())
	}
	if code := run([]string{"ring"}, &out, &errb); code != 2 {
		t.Errorf("ring without --http: exit %d", code)
	}
	errb.Reset()
	if code := run([]string{"--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-admin-token-file") {
		t.Errorf("--help: exit %d %q", code, errb.String())
	}
}

func TestOriginGetter(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.RawQuery)
		switch r.URL.Query().Get("mode") {
		case "big":
			w.Write(bytes.Repeat([]byte("x"), 2000))
		case "404":
			http.NotFound(w, r)
		case "slow":
			time.Sleep(200 * time.Millisecond)
		default:
			w.Header().Set("Content-Type", "text/csv")
			w.Write([]byte("a,b"))
		}
	}))
	defer srv.Close()
	g, err := newOriginGetter(srv.URL+"/v?fixed=1", newOriginClient(), 1000, "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v, err := g.Get(ctx, worker.Args{"b": []any{"y", "x"}, "a": "1", "n": int64(3), "t": true})
	if err != nil || string(v.Data) != "a,b" || v.ContentType != "text/csv" || got[0] != "a=1&b=y&b=x&fixed=1&n=3&t=true" {
		t.Errorf("got %q %q %v, query %q", v.Data, v.ContentType, err, got)
	}
	if _, err := g.Get(ctx, worker.Args{"mode": "big"}); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("big body: %v", err)
	}
	if _, err := g.Get(ctx, worker.Args{"mode": "404"}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404: %v", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := g.Get(tctx, worker.Args{"mode": "slow"}); err == nil {
		t.Errorf("slow origin past the deadline: no error")
	}
	if g.Origin() != srv.URL+"/v?fixed=xxxxx" { // query values are redacted
		t.Errorf("Origin() = %q", g.Origin())
	}
}

func TestPeerTLSConfig(t *testing.T) {
	cert, key, _ := selfSigned(t)
	path := writeFile(t, "c.yaml", "name: n\ndata: ''\ntls:\n  cert: "+cert+"\n  key: "+key+"\n  ca: "+cert+"\n  peer: true\n")
	rc, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if rc.Node.PeerTLS == nil || len(rc.Node.PeerTLS.Certificates) != 1 || rc.Node.PeerTLS.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("peer TLS not configured: %+v", rc.Node.PeerTLS)
	}
	path = writeFile(t, "bad.yaml", "name: n\ndata: ''\ntls:\n  peer: true\n")
	if _, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("tls.peer without a certificate: %v", err)
	}
}

func TestDataOnCorruptionConfig(t *testing.T) {
	path := writeFile(t, "d.yaml", "name: d\ninsecure: true\ndata_on_corruption: fail\ndata_keep_corrupt: 3\n")
	rc, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{})
	if err != nil || rc.Node.DataOnCorruption != "fail" || rc.Node.DataKeepCorrupt != 3 {
		t.Fatalf("data_on_corruption from the file: %+v %v", rc, err)
	}
	rc, err = loadConfig([]string{"--config", path, "--data-on-corruption=move-aside"}, noEnv, &bytes.Buffer{})
	if err != nil || rc.Node.DataOnCorruption != "move-aside" {
		t.Errorf("--data-on-corruption wins over the file: %+v %v", rc, err)
	}
	_, err = loadConfig([]string{"--name=x", "--insecure", "--data-on-corruption=ignore"}, noEnv, &bytes.Buffer{})
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "data-on-corruption") {
		t.Errorf("a bad --data-on-corruption = %v, want a usage error naming it", err)
	}
}

func TestLimitsAndOverridesConfig(t *testing.T) {
	rc, err := loadConfig([]string{"--name=x", "--insecure"}, noEnv, &bytes.Buffer{})
	if err != nil || rc.Node.Limits != worker.DefaultLimits() {
		t.Errorf("default limits: %+v %v", rc.Node.Limits, err)
	}
	path := writeFile(t, "l.yaml", "name: l\ninsecure: true\nlimits: {max_args: 10, max_arg_bytes: 2KiB}\nworkers:\n"+
		"  w:\n    origin: http://x/\n    expires: 1h\n    max_expires: 2h\n    overrides: open\n"+
		"  v:\n    origin: http://x/\n")
	rc, err = loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if rc.Node.Limits != (worker.Limits{MaxArgs: 10, MaxArgBytes: 2048}) {
		t.Errorf("limits %+v", rc.Node.Limits)
	}
	w := rc.Workers["w"].workerDef("w", rc.Node.Defaults, nil, nil)
	v := rc.Workers["v"].workerDef("v", rc.Node.Defaults, nil, nil)
	if w.MaxExpires != 2*time.Hour || !w.OpenOverrides || v.MaxExpires != 0 || v.OpenOverrides {
		t.Errorf("w: max_expires %v open %v; v: %v %v", w.MaxExpires, w.OpenOverrides, v.MaxExpires, v.OpenOverrides)
	}
	for file, want := range map[string]string{
		"limits: {max_args: 0}\n":                                       "limits.max_args: must be >= 1",
		"limits: {max_arg_bytes: 0}\n":                                  "limits.max_arg_bytes",
		"limits: {max_arg_bytes: 2GiB}\n":                               "limits.max_arg_bytes",
		"limits: {max_args: 1, maxargs: 2}\n":                           "limits.maxargs: unknown field",
		"workers:\n  w:\n    origin: http://x/\n    overrides: all\n":   "workers.w.overrides",
		"workers:\n  w:\n    origin: http://x/\n    max_expires: 0\n":   "workers.w.max_expires",
		"workers:\n  w:\n    origin: http://x/\n    max_expires: -1s\n": "workers.w.max_expires",
	} {
		_, err := loadConfig([]string{"--name=t", "--insecure", "--config", writeFile(t, "bad.yaml", file)}, noEnv, &bytes.Buffer{})
		if _, ok := err.(usageError); !ok || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want a usage error containing %q", file, err, want)
		}
	}
	// A bad origin is not repeated: it may hold secrets.
	for _, origin := range []string{"http://u:hunter2@h/%zz?k=1", "ftp://u:hunter2@h/"} {
		file := writeFile(t, "o.yaml", "workers:\n  w:\n    origin: \""+origin+"\"\n")
		_, err := loadConfig([]string{"--name=t", "--insecure", "--config", file}, noEnv, &bytes.Buffer{})
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("origin %s: %v", origin, err)
		}
	}
}
