package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The end-to-end test builds the binary, starts a real origin and three
// cachenode processes on loopback from config files, and checks the
// contract through HTTP only.

const e2eToken = "s3cret-admin-token"

func TestMain(m *testing.M) {
	code := m.Run()
	if built.path != "" {
		os.RemoveAll(filepath.Dir(built.path))
	}
	os.Exit(code)
}

// buildBinary builds cachenode into a temporary directory. It builds with
// the race detector when the test runs with it, so that the packages the
// test already compiled are reused and the nodes are checked for races too.
func buildBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() { built.path, built.err = build(t) })
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// built is the binary, built once for the tests of this package.
var built struct {
	once sync.Once
	path string
	err  error
}

func build(t *testing.T) (string, error) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		if goTool, err = exec.LookPath("go"); err != nil {
			return "", fmt.Errorf("no go tool to build the binary: %v", err)
		}
	}
	dir, err := os.MkdirTemp("", "cachenode-e2e-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "cachenode")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command(goTool, append(args, ".")...)
	cmd.Env = os.Environ()
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	t.Logf("built the binary in %v (race: %v)", time.Since(start).Round(time.Millisecond), raceEnabled)
	return bin, nil
}

// e2eOrigin is the origin of the test: items by id, Foo records filtered
// by attr1, a failing endpoint, and a request count per query.
type e2eOrigin struct {
	mu     sync.Mutex
	counts map[string]int    // "path?sorted query" → requests; guarded by mu
	foos   map[string]string // foo id → attr1; guarded by mu
	rev    int               // bumped by every change; guarded by mu
	delay  atomic.Int64      // nanoseconds each answer waits
}

func newE2EOrigin() *e2eOrigin {
	return &e2eOrigin{counts: map[string]int{}, foos: map[string]string{"1": "red", "2": "red", "3": "blue", "4": "green"}}
}

func (o *e2eOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id := r.URL.Path + "?" + q.Encode() // Encode sorts by key
	o.mu.Lock()
	o.counts[id]++
	o.mu.Unlock()
	if d := o.delay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	switch r.URL.Path {
	case "/items":
		w.Header().Set("Content-Type", "application/vnd.e2e+json")
		tags := q["tag"]
		slices.Sort(tags)
		json.NewEncoder(w).Encode(map[string]any{"item": q.Get("id"), "tags": tags})
	case "/filter":
		o.mu.Lock()
		var ids []string
		for id, a := range o.foos {
			if len(q["attr1"]) == 0 || slices.Contains(q["attr1"], a) {
				ids = append(ids, id)
			}
		}
		rev := o.rev
		o.mu.Unlock()
		slices.Sort(ids)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"attr1": q["attr1"], "ids": ids, "rev": rev})
	case "/fail":
		http.Error(w, "the database is down", http.StatusInternalServerError)
	default:
		http.NotFound(w, r)
	}
}

func (o *e2eOrigin) count(pathQuery string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[pathQuery]
}

func (o *e2eOrigin) move(id, attr1 string) (old string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	old = o.foos[id]
	o.foos[id] = attr1
	o.rev++
	return old
}

// proc is one cachenode process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	http   string // base URL
	gossip string
	data   string // the Pebble directory
	exited chan struct{}
	code   int // exit code, once exited is closed

	mu  sync.Mutex
	log bytes.Buffer // stderr; guarded by mu
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

var servingLine = regexp.MustCompile(`msg="cachenode serving".* http=(\S+) gossip=(\S+)`)

// startProc starts the binary with a config file and waits for its
// "serving" log line, which carries the ports it bound.
func startProc(t *testing.T, bin, name, config string) *proc {
	t.Helper()
	return startProcArgs(t, bin, name, config)
}

// startProcArgs is startProc with more flags, which may name the data
// directory (by default one in a new temporary directory).
func startProcArgs(t *testing.T, bin, name, config string, flags ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, data: filepath.Join(dir, "data"), exited: make(chan struct{})}
	args := append([]string{"serve", "--config", cfgPath, "--data", p.data}, flags...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := servingLine.FindStringSubmatch(line); m != nil {
				serving <- [2]string{m[1], m[2]}
			}
		}
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("--- %s stderr ---\n%s", name, p.logs())
		}
	})
	select {
	case m := <-serving:
		p.http, p.gossip = m[0], m[1]
	case <-p.exited:
		t.Fatalf("%s exited with %d before serving:\n%s", name, p.code, p.logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not start:\n%s", name, p.logs())
	}
	return p
}

func nodeConfig(name, originURL, tokenFile string, join []string) string {
	j := "[]"
	if len(join) > 0 {
		j = "[" + strings.Join(join, ", ") + "]"
	}
	return fmt.Sprintf(`# e2e node %[1]s
name: %[1]s
gossip: 127.0.0.1:0
peer: 127.0.0.1:0
http: 127.0.0.1:0
join: %[4]s
memory: 64MiB
admin_token_file: %[3]s
log_level: info
membership:
  preset: local
  # steadier than the bare local preset: a starved but healthy node on a
  # two-core machine running the race detector is not declared dead
  probe_interval: 1s
  probe_timeout: 500ms
  suspicion_mult: 6
defaults:
  tick: 100ms
  tick_amount: 50
  relevance_expires: 60
workers:
  items:
    origin: %[2]s/items
    expires: 1h
  filtered:
    origin: %[2]s/filter
    expires: 3600
  failing:
    origin: %[2]s/fail
    expires: 1h
invalidation:
  Foo:
    filtered: {args: [attr1]}
`, name, originURL, tokenFile, j)
}

// client is an HTTP client for the test, with a timeout.
var e2eClient = &http.Client{Timeout: 30 * time.Second}

type answer struct {
	code   int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url, token string, body []byte) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json") // the only type POST /v1/invalidate takes
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e2eClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading: %v", method, url, err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

// wantError checks an error answer: status, JSON {"error","code"}.
func wantError(t *testing.T, a answer, status int, code string) {
	t.Helper()
	var e struct{ Error, Code string }
	if a.code != status || json.Unmarshal(a.body, &e) != nil || e.Code != code || e.Error == "" ||
		!strings.HasPrefix(a.header.Get("Content-Type"), "application/json") {
		t.Errorf("got %d %q (%s), want %d with code %q", a.code, a.body, a.header.Get("Content-Type"), status, code)
	}
}

type ringView struct {
	Self    string `json:"self"`
	Version uint64 `json:"version"`
	Members []struct {
		Name, State, HTTP string
		Partitions        int
		Keys              *int
	} `json:"members"`
	Partitions []string `json:"partitions"`
}

func readRing(t *testing.T, p *proc) ringView {
	t.Helper()
	a := do(t, "GET", p.http+"/admin/ring", e2eToken, nil)
	if a.code != 200 {
		t.Fatalf("%s /admin/ring: %d %s", p.name, a.code, a.body)
	}
	var rv ringView
	if err := json.Unmarshal(a.body, &rv); err != nil {
		t.Fatal(err)
	}
	return rv
}

// waitAgree waits until every process in ps reports a ring of exactly ps,
// with one version and one partition table.
func waitAgree(t *testing.T, ps []*proc, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var first *ringView
		ok := true
		for _, p := range ps {
			rv := readRing(t, p)
			alive := 0
			for _, m := range rv.Members {
				if m.State == "alive" {
					alive++
				}
			}
			if alive != len(ps) || (first != nil && (rv.Version != first.Version || !slices.Equal(rv.Partitions, first.Partitions))) {
				ok = false
				break
			}
			if first == nil {
				first = &rv
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %d nodes did not agree on the ring within %v", len(ps), limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts three processes")
	}
	start := time.Now()
	bin := buildBinary(t)

	origin := newE2EOrigin()
	osrv := httptest.NewServer(origin)
	defer osrv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e2eToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n1 := startProc(t, bin, "n1", nodeConfig("n1", osrv.URL, tokenFile, nil))
	n2 := startProc(t, bin, "n2", nodeConfig("n2", osrv.URL, tokenFile, []string{n1.gossip}))
	n3 := startProc(t, bin, "n3", nodeConfig("n3", osrv.URL, tokenFile, []string{n1.gossip}))
	nodes := []*proc{n1, n2, n3}
	waitAgree(t, nodes, 20*time.Second)
	t.Logf("cluster of 3 up after %v", time.Since(start).Round(time.Millisecond))

	t.Run("ring command", func(t *testing.T) {
		out, err := exec.Command(bin, "ring", "--http", strings.TrimPrefix(n2.http, "http://"), "--admin-token-file", tokenFile).CombinedOutput()
		if err != nil {
			t.Fatalf("cachenode ring: %v\n%s", err, out)
		}
		for _, want := range []string{"271 partitions", "as seen by n2 (ready)", "n1 ", "n2 *", "n3 ", "alive"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("cachenode ring output lacks %q:\n%s", want, out)
			}
		}
		if out, err := exec.Command(bin, "ring", "--http", strings.TrimPrefix(n2.http, "http://")).CombinedOutput(); err == nil ||
			!strings.Contains(string(out), "unauthorized") {
			t.Errorf("cachenode ring without the token: %v %s", err, out)
		}
	})

	t.Run("headers", func(t *testing.T) {
		sent := time.Now()
		a := do(t, "GET", n1.http+"/v1/cache/items?id=1&tag=b&tag=a", "", nil)
		took := time.Since(sent)
		if a.code != 200 || a.header.Get("X-Cache") != "miss" {
			t.Fatalf("first read: %d X-Cache=%q %s", a.code, a.header.Get("X-Cache"), a.body)
		}
		key, owner := a.header.Get("X-Cache-Key"), a.header.Get("X-Cache-Owner")
		if key != `items@id=s"1"&tag=[s"a",s"b"]` {
			t.Errorf("X-Cache-Key = %q", key)
		}
		if !slices.Contains([]string{"n1", "n2", "n3"}, owner) {
			t.Errorf("X-Cache-Owner = %q", owner)
		}
		if ct := a.header.Get("Content-Type"); ct != "application/vnd.e2e+json" {
			t.Errorf("Content-Type = %q, want the origin's", ct)
		}
		// A value just filled is as old as the request that filled it: 0
		// on a quiet machine, never more than the request took.
		if age, err := strconv.Atoi(a.header.Get("Age")); err != nil || age < 0 || time.Duration(age)*time.Second > took {
			t.Errorf("Age = %q after a request of %v", a.header.Get("Age"), took)
		}
		if string(a.body) != `{"item":"1","tags":["a","b"]}`+"\n" {
			t.Errorf("body = %s", a.body)
		}
		for _, p := range nodes {
			// Same key, same owner on every node, answered without the origin;
			// the parameters in another order are the same key.
			b := do(t, "GET", p.http+"/v1/cache/items?tag=a&tag=b&id=1", "", nil)
			if b.code != 200 || b.header.Get("X-Cache") != "hit" || b.header.Get("X-Cache-Key") != key ||
				b.header.Get("X-Cache-Owner") != owner || !bytes.Equal(b.body, a.body) {
				t.Errorf("%s: %d X-Cache=%q key=%q owner=%q body=%s", p.name, b.code, b.header.Get("X-Cache"),
					b.header.Get("X-Cache-Key"), b.header.Get("X-Cache-Owner"), b.body)
			}
		}
		if n := origin.count("/items?id=1&tag=a&tag=b") + origin.count("/items?id=1&tag=b&tag=a"); n != 1 {
			t.Errorf("origin asked %d times for one key", n)
		}
		e := do(t, "GET", n2.http+"/v1/cache/items?id=1&tag=a&tag=b&_entity=1", "", nil)
		var ent map[string]any
		if e.code != 200 || json.Unmarshal(e.body, &ent) != nil {
			t.Fatalf("_entity=1: %d %s", e.code, e.body)
		}
		for _, f := range []string{"label", "key", "args", "owner", "created_at", "relevance_to", "available_to", "value"} {
			if _, ok := ent[f]; !ok {
				t.Errorf("entity lacks %q: %s", f, e.body)
			}
		}
		if ent["key"] != key || ent["owner"] != owner {
			t.Errorf("entity key/owner = %v/%v", ent["key"], ent["owner"])
		}
	})

	t.Run("200 concurrent reads of a cold key, one origin request", func(t *testing.T) {
		origin.delay.Store(int64(300 * time.Millisecond))
		defer origin.delay.Store(0)
		const readers = 200
		var wg sync.WaitGroup
		bodies := make([][]byte, readers)
		codes := make([]int, readers)
		errs := make([]error, readers)
		gate := make(chan struct{})
		for i := range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				resp, err := e2eClient.Get(nodes[i%3].http + "/v1/cache/items?id=cold")
				if err != nil {
					errs[i] = err
					return
				}
				defer resp.Body.Close()
				codes[i] = resp.StatusCode
				bodies[i], errs[i] = io.ReadAll(resp.Body)
			}()
		}
		close(gate)
		wg.Wait()
		for i := range readers {
			if errs[i] != nil || codes[i] != 200 || !bytes.Equal(bodies[i], bodies[0]) {
				t.Fatalf("reader %d: %v %d %s", i, errs[i], codes[i], bodies[i])
			}
		}
		if n := origin.count("/items?id=cold"); n != 1 {
			t.Errorf("origin asked %d times for one cold key read by %d concurrent callers", n, readers)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		wantError(t, do(t, "GET", n1.http+"/v1/cache/nope?id=1", "", nil), 404, "unknown_worker")
		wantError(t, do(t, "GET", n1.http+"/v1/cache/items?id=1&_tick=soon", "", nil), 400, "bad_request")
		wantError(t, do(t, "GET", n1.http+"/v1/cache/items?id=1&_tick_amount=0", "", nil), 400, "bad_request")
		wantError(t, do(t, "GET", n1.http+"/v1/cache/items?id=1&_bogus=1", "", nil), 400, "bad_request")
		wantError(t, do(t, "GET", n1.http+"/v1/cache/items?id=%zz", "", nil), 400, "bad_request")
		wantError(t, do(t, "GET", n1.http+"/v1/cache/items?_expires=1s&_expires=2s", "", nil), 400, "bad_request")
		wantError(t, do(t, "DELETE", n1.http+"/v1/cache/items", "", nil), 405, "method_not_allowed")
		wantError(t, do(t, "GET", n1.http+"/v1/nothing", "", nil), 404, "not_found")
		inv := n2.http + "/v1/invalidate"
		wantError(t, do(t, "POST", inv, e2eToken, []byte(`{"label":`)), 400, "bad_request")
		wantError(t, do(t, "POST", inv, e2eToken, []byte(``)), 400, "bad_request")
		wantError(t, do(t, "POST", inv, e2eToken, []byte(`{"label":"items","bogus":1}`)), 400, "bad_request")
		wantError(t, do(t, "POST", inv, e2eToken, []byte(`{"label":"items","model":"Foo"}`)), 400, "bad_request")
		wantError(t, do(t, "POST", inv, e2eToken, []byte(`{"model":"Foo","changes":[{"op":"explode"}]}`)), 400, "bad_request")
		wantError(t, do(t, "POST", inv, e2eToken, []byte(`{"label":"nope"}`)), 404, "unknown_worker")
		wantError(t, do(t, "POST", inv, e2eToken, []byte(`{"model":"Bar","changes":[{"op":"create","new":{"a":1}}]}`)), 404, "unknown_model")
		big := append([]byte(`{"label":"items","args":{"id":"`), bytes.Repeat([]byte("x"), 1<<20+10)...)
		wantError(t, do(t, "POST", inv, e2eToken, append(big, `"}}`...)), 413, "body_too_large")
		wantError(t, do(t, "GET", n1.http+"/admin/records?limit=many", e2eToken, nil), 400, "bad_request")
		// An origin that fails: 502, and not cached.
		wantError(t, do(t, "GET", n3.http+"/v1/cache/failing?x=1", "", nil), 502, "origin_error")
		wantError(t, do(t, "GET", n3.http+"/v1/cache/failing?x=1", "", nil), 502, "origin_error")
		if n := origin.count("/fail?x=1"); n != 2 {
			t.Errorf("the failing origin was asked %d times for two reads, want 2 (errors are not cached)", n)
		}
		for _, p := range nodes {
			if a := do(t, "GET", p.http+"/healthz", "", nil); a.code != 200 {
				t.Errorf("%s healthz after bad input: %d", p.name, a.code)
			}
		}
	})

	t.Run("token", func(t *testing.T) {
		for _, path := range []string{"/admin/", "/admin/ring", "/admin/workers", "/admin/records"} {
			wantError(t, do(t, "GET", n1.http+path, "", nil), 401, "unauthorized")
			wantError(t, do(t, "GET", n1.http+path, "wrong-token", nil), 401, "unauthorized")
			if a := do(t, "GET", n1.http+path, e2eToken, nil); a.code != 200 {
				t.Errorf("%s with the token: %d %s", path, a.code, a.body)
			}
		}
		wantError(t, do(t, "POST", n1.http+"/v1/invalidate", "", []byte(`{"label":"items"}`)), 401, "unauthorized")
		for _, path := range []string{"/healthz", "/readyz", "/metrics", "/v1/cache/items?id=1"} {
			if a := do(t, "GET", n1.http+path, "", nil); a.code != 200 {
				t.Errorf("%s without a token: %d, want 200 (not guarded)", path, a.code)
			}
		}
	})

	t.Run("update event refreshes exactly the affected variants on every node", func(t *testing.T) {
		variants := []string{"red", "blue", "green"}
		read := func(p *proc, attr string) string {
			a := do(t, "GET", p.http+"/v1/cache/filtered?attr1="+attr, "", nil)
			if a.code != 200 {
				t.Fatalf("%s filtered %s: %d %s", p.name, attr, a.code, a.body)
			}
			return string(a.body)
		}
		before := map[string]string{}
		for _, attr := range variants {
			before[attr] = read(n1, attr)
			for _, p := range nodes { // near-cache copies on every node
				if got := read(p, attr); got != before[attr] {
					t.Fatalf("%s: %s, want %s", p.name, got, before[attr])
				}
			}
		}
		counts := map[string]int{}
		for _, attr := range variants {
			counts[attr] = origin.count("/filter?attr1=" + attr)
		}
		old := origin.move("2", "blue") // foo 2: red → blue
		ev := fmt.Sprintf(`{"model":"Foo","changes":[{"op":"update","old":{"id":"2","attr1":%q},"new":{"id":"2","attr1":"blue"}}]}`, old)
		a := do(t, "POST", n2.http+"/v1/invalidate", e2eToken, []byte(ev))
		var res struct{ Keys, Nodes int }
		if a.code != 200 || json.Unmarshal(a.body, &res) != nil || res.Nodes != 3 || res.Keys < 2 {
			t.Fatalf("invalidate: %d %s", a.code, a.body)
		}
		for _, p := range nodes {
			for _, attr := range variants {
				got := read(p, attr)
				changed := got != before[attr]
				if want := attr != "green"; changed != want {
					t.Errorf("%s filtered attr1=%s after the update: %s (before %s), changed=%v want %v", p.name, attr, got, before[attr], changed, want)
				}
			}
		}
		for _, attr := range variants {
			n := origin.count("/filter?attr1="+attr) - counts[attr]
			if want := map[bool]int{true: 1, false: 0}[attr != "green"]; n != want {
				t.Errorf("origin asked %d times for attr1=%s after the update, want %d", n, attr, want)
			}
		}
	})

	t.Run("records", func(t *testing.T) {
		seen := map[string]string{}
		for _, p := range nodes {
			after := ""
			for range 100 {
				u := p.http + "/admin/records?limit=2"
				if after != "" {
					u += "&after=" + url.QueryEscape(after)
				}
				a := do(t, "GET", u, e2eToken, nil)
				var page struct {
					Records []map[string]any `json:"records"`
					Next    *string          `json:"next"`
				}
				if a.code != 200 || json.Unmarshal(a.body, &page) != nil {
					t.Fatalf("%s records: %d %s", p.name, a.code, a.body)
				}
				for _, r := range page.Records {
					for _, f := range []string{"label", "key", "args", "owner", "created_at", "relevance_to", "available_to", "fill_ms", "size"} {
						if _, ok := r[f]; !ok {
							t.Errorf("record lacks %q: %v", f, r)
						}
					}
					if r["owner"] != p.name {
						t.Errorf("%s lists a record owned by %v", p.name, r["owner"])
					}
					seen[r["key"].(string)] = p.name
				}
				if page.Next == nil {
					break
				}
				after = *page.Next
			}
		}
		for _, k := range []string{`items@id=s"1"&tag=[s"a",s"b"]`, `items@id=s"cold"`, `filtered@attr1=s"red"`, `filtered@attr1=s"green"`} {
			if _, ok := seen[k]; !ok {
				t.Errorf("no node lists a record of %s (records: %v)", k, seen)
			}
		}
		if _, ok := seen[`failing@x=s"1"`]; ok {
			t.Errorf("a failed fill left a record")
		}
	})

	t.Run("metrics", func(t *testing.T) {
		for _, p := range nodes {
			a := do(t, "GET", p.http+"/metrics", "", nil)
			if a.code != 200 {
				t.Fatalf("%s /metrics: %d", p.name, a.code)
			}
			parser := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := parser.TextToMetricFamilies(bytes.NewReader(a.body))
			if err != nil {
				t.Fatalf("%s /metrics does not parse: %v", p.name, err)
			}
			for _, name := range []string{"cachenode_worker_hits_total", "cachenode_worker_fills_total", "cachenode_members",
				"cachenode_ring_partitions_owned", "cachenode_http_requests_total", "cachenode_fill_duration_seconds", "go_goroutines"} {
				if _, ok := fams[name]; !ok {
					t.Errorf("%s /metrics lacks %s", p.name, name)
				}
			}
		}
	})

	t.Run("SIGTERM of one node leaves the others serving every key", func(t *testing.T) {
		// Keys owned by every node, n2 included.
		for i := range 30 {
			if a := do(t, "GET", n1.http+fmt.Sprintf("/v1/cache/items?id=k%d", i), "", nil); a.code != 200 {
				t.Fatalf("k%d: %d", i, a.code)
			}
		}
		if err := n2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-n2.exited:
		case <-time.After(20 * time.Second):
			t.Fatal("n2 did not exit within 20s of SIGTERM")
		}
		if n2.code != 0 {
			t.Errorf("n2 exited with %d after SIGTERM, want 0", n2.code)
		}
		if !strings.Contains(n2.logs(), `msg=stopped`) {
			t.Errorf("n2 did not log a clean stop")
		}
		waitAgree(t, []*proc{n1, n3}, 10*time.Second)
		for i := range 30 {
			for _, p := range []*proc{n1, n3} {
				a := do(t, "GET", p.http+fmt.Sprintf("/v1/cache/items?id=k%d", i), "", nil)
				if a.code != 200 || a.header.Get("X-Cache-Owner") == "n2" {
					t.Errorf("%s k%d after n2 left: %d owner=%s %s", p.name, i, a.code, a.header.Get("X-Cache-Owner"), a.body)
				}
			}
		}
	})
	t.Logf("end-to-end test took %v", time.Since(start).Round(time.Millisecond))
}
