package main

import (
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dirBytes is the total size of the files under dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// edgeConfig is a node whose origins carry secrets in their URLs: a user
// name and password, and an api_key in the query.
func edgeConfig(name, originURL, deadURL, tokenFile string, join []string) string {
	j := "[]"
	if len(join) > 0 {
		j = "[" + strings.Join(join, ", ") + "]"
	}
	u, _ := url.Parse(originURL)
	secret := "http://robot:hunter2@" + u.Host
	return fmt.Sprintf(`name: %[1]s
gossip: 127.0.0.1:0
peer: 127.0.0.1:0
http: 127.0.0.1:0
join: %[5]s
memory: 64MiB
admin_token_file: %[4]s
membership: {preset: local, probe_interval: 1s, probe_timeout: 500ms, suspicion_mult: 6}
defaults: {tick: 100ms, tick_amount: 50}
workers:
  bench:
    origin: %[2]s/items?api_key=SECRETKEY
    expires: 1h
  failing:
    origin: %[2]s/fail?api_key=SECRETKEY
    expires: 1h
  dead:
    origin: %[3]s/gone?api_key=SECRETKEY
    expires: 1h
`, name, secret, deadURL, tokenFile, j)
}

// TestEdgeEndToEnd checks the bounds of HTTP requests through the real
// binary: the 3,000-argument read that once wrote 153 MB, overrides
// reserved to the admin, origin failures that say nothing of the origin's
// URL, and invalidations that must be JSON.
func TestEdgeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts two processes")
	}
	bin := buildBinary(t)
	origin := newE2EOrigin()
	osrv := httptest.NewServer(origin)
	defer osrv.Close()
	// An address where nothing listens: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + ln.Addr().String()
	ln.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e2eToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n1 := startProc(t, bin, "n1", edgeConfig("n1", osrv.URL, deadURL, tokenFile, nil))
	n2 := startProc(t, bin, "n2", edgeConfig("n2", osrv.URL, deadURL, tokenFile, []string{n1.gossip}))
	nodes := []*proc{n1, n2}
	waitAgree(t, nodes, 20*time.Second)
	secrets := []string{"SECRETKEY", "hunter2", "robot", "api_key", osrv.Listener.Addr().String(),
		strings.TrimPrefix(deadURL, "http://"), "/items", "/fail", "/gone"}

	t.Run("3000 arguments", func(t *testing.T) {
		var q []string
		for i := range 3000 {
			q = append(q, fmt.Sprintf("a%d=%d", i, i))
		}
		// Whichever node owns the key would write its record: count both.
		dataBytes := func() int64 { return dirBytes(t, n1.data) + dirBytes(t, n2.data) }
		before := dataBytes()
		for range 3 {
			wantError(t, do(t, "GET", n1.http+"/v1/cache/bench?"+strings.Join(q, "&"), "", nil), 400, "too_many_args")
		}
		wantError(t, do(t, "GET", n1.http+"/v1/cache/bench?id="+strings.Repeat("x", 9<<10), "", nil), 400, "args_too_large")
		if grew := dataBytes() - before; grew >= 1<<20 {
			t.Errorf("the data directories grew by %d bytes for refused reads", grew)
		} else {
			t.Logf("the data directories grew by %d bytes", grew)
		}
		origin.mu.Lock()
		n := len(origin.counts)
		origin.mu.Unlock()
		if n != 0 {
			t.Errorf("the origin was asked %d times", n)
		}
	})

	t.Run("overrides", func(t *testing.T) {
		a := do(t, "GET", n1.http+"/v1/cache/bench?id=1&_is_concurrent=false", "", nil)
		wantError(t, a, 400, "override_not_allowed")
		if !strings.Contains(string(a.body), "_is_concurrent") {
			t.Errorf("the error does not name the parameter: %s", a.body)
		}
		wantError(t, do(t, "GET", n1.http+"/v1/cache/bench?id=1&_expires=876000h", "", nil), 400, "override_not_allowed")
		wantError(t, do(t, "GET", n1.http+"/v1/cache/bench?id=1&_delay_invalidation=true", "", nil), 400, "override_not_allowed")
		if a := do(t, "GET", n1.http+"/v1/cache/bench?id=1&_is_concurrent=false", e2eToken, nil); a.code != 200 {
			t.Errorf("_is_concurrent=false with the admin token: %d %s", a.code, a.body)
		}
	})

	t.Run("headers", func(t *testing.T) {
		a := do(t, "GET", n2.http+"/v1/cache/bench?id=1", "", nil)
		if a.code != 200 || a.header.Get("X-Content-Type-Options") != "nosniff" || a.header.Get("Content-Security-Policy") != "sandbox" {
			t.Errorf("a value: %d %v", a.code, a.header)
		}
		e := do(t, "GET", n2.http+"/v1/cache/nope", "", nil)
		if e.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("an error: %d %v", e.code, e.header)
		}
	})

	t.Run("origin failures name no part of the origin", func(t *testing.T) {
		for _, tc := range []struct{ label, msg string }{
			{"failing", "origin answered 500"},
			{"dead", "origin unreachable: connection refused"},
		} {
			for i, p := range []*proc{n1, n2, n1} {
				a := do(t, "GET", fmt.Sprintf("%s/v1/cache/%s?x=%d", p.http, tc.label, i%2), "", nil)
				wantError(t, a, 502, "origin_error")
				for _, s := range secrets {
					if strings.Contains(string(a.body), s) {
						t.Errorf("%s: the 502 of %s holds %q: %s", p.name, tc.label, s, a.body)
					}
				}
				if !strings.Contains(string(a.body), `"error":"`+tc.msg+`"`) {
					t.Errorf("%s: the 502 of %s is %s, want the error %q", p.name, tc.label, a.body, tc.msg)
				}
			}
		}
		w := do(t, "GET", n1.http+"/admin/workers", e2eToken, nil)
		for _, s := range []string{"SECRETKEY", "hunter2", "robot"} {
			if strings.Contains(string(w.body), s) {
				t.Errorf("/admin/workers shows %q: %s", s, w.body)
			}
		}
		if !strings.Contains(string(w.body), "api_key=xxxxx") || !strings.Contains(string(w.body), "http://xxxxx@") {
			t.Errorf("/admin/workers does not show the redacted origins: %s", w.body)
		}
		for _, p := range nodes {
			logs := p.logs()
			if !strings.Contains(logs, "read failed") {
				t.Errorf("%s logged no failed read", p.name)
			}
			for _, s := range []string{"SECRETKEY", "hunter2", "robot"} {
				if strings.Contains(logs, s) {
					t.Errorf("%s's log holds %q", p.name, s)
				}
			}
		}
	})

	t.Run("invalidation must be JSON", func(t *testing.T) {
		post := func(ct string) int {
			req, err := http.NewRequest("POST", n1.http+"/v1/invalidate", strings.NewReader(`{"label":"bench"}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+e2eToken)
			req.Header.Set("Content-Type", ct)
			resp, err := e2eClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if code := post("text/plain"); code != 415 {
			t.Errorf("text/plain invalidation: %d, want 415", code)
		}
		if code := post("application/json; charset=utf-8"); code != 200 {
			t.Errorf("JSON invalidation: %d, want 200", code)
		}
	})
}
