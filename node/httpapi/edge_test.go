package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cachenode/cachenode/worker"
)

// errorOf decodes an error answer.
func errorOf(t *testing.T, a answer) Error {
	t.Helper()
	var e Error
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("%d %q is not an error body: %v", a.code, a.body, err)
	}
	return e
}

// TestReadBounds: a read over the limits of arguments answers 400
// too_many_args or args_too_large and runs no getter.
func TestReadBounds(t *testing.T) {
	db := newFooDB()
	n1 := startCluster(t, 1, "", db)[0]
	var q []string
	for i := range 3000 {
		q = append(q, fmt.Sprintf("a%d=%d", i, i))
	}
	wide := call(t, "GET", n1.url+"/v1/cache/items?"+strings.Join(q, "&"), "", "")
	wantError(t, wide, 400, "too_many_args")
	wantError(t, call(t, "GET", n1.url+"/v1/cache/items?id="+strings.Repeat("x", 9000), "", ""), 400, "args_too_large")
	// Overrides are not arguments: 64 arguments and an override pass.
	a := call(t, "GET", n1.url+"/v1/cache/items?"+strings.Join(q[:64], "&")+"&_entity=0", "", "")
	if a.code != 200 {
		t.Errorf("64 arguments: %d %s", a.code, a.body)
	}
	db.mu.Lock()
	runs := len(db.calls)
	db.mu.Unlock()
	if runs != 1 {
		t.Errorf("the getter ran for %d keys; want 1 (the read within bounds)", runs)
	}
}

// TestOverridesBounded: per-call overrides over HTTP stay within the
// worker's bounds, and those that multiply origin work need the admin
// token or a worker with overrides open.
func TestOverridesBounded(t *testing.T) {
	const token = "s3cret"
	db := newFooDB()
	n1 := startCluster(t, 1, token, db)[0]
	getter := worker.GetterFunc(func(ctx context.Context, a worker.Args) (worker.Value, error) {
		return worker.Value{Data: []byte("v")}, nil
	})
	for _, c := range []worker.Config{
		{Label: "bounded", Getter: getter, MaxExpires: 2 * time.Hour, Settings: worker.Settings{Expires: time.Hour}},
		{Label: "open", Getter: getter, OpenOverrides: true},
	} {
		if _, err := n1.node.Cache().Register(c); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		path, token string
		param       string // "" for a 200
	}{
		{"items?id=1&_expires=1h", "", ""},
		{"items?id=1&_expires=2h", "", "_expires"}, // items expires in 1h: its max_expires
		{"items?id=1&_expires=876000h", token, "_expires"},
		{"bounded?id=1&_expires=2h", "", ""},
		{"bounded?id=1&_expires=2h1s", "", "_expires"},
		{"items?id=1&_tick=50ms", "", ""},
		{"items?id=1&_tick=1s", "", "_tick"}, // 1s × 10 over the default 100ms × 10
		{"items?id=1&_tick_amount=11", "", "_tick"},
		{"items?id=1&_tick=200ms&_tick_amount=5", "", ""},
		{"items?id=1&_is_concurrent=false", "", "_is_concurrent"},
		{"items?id=1&_is_concurrent=false", "wrong", "_is_concurrent"},
		{"items?id=1&_is_concurrent=false", token, ""},
		{"items?id=1&_is_concurrent=true", "", ""},
		{"items?id=1&_delay_invalidation=true", "", "_delay_invalidation"},
		{"items?id=1&_delay_invalidation=false", "", "_delay_invalidation"},
		{"items?id=1&_delay_countdown=1s", "", "_delay_countdown"},
		{"items?id=1&_delay_countdown=1s", token, ""},
		{"open?id=1&_is_concurrent=false&_delay_invalidation=true", "", ""},
	} {
		a := call(t, "GET", n1.url+"/v1/cache/"+tc.path, tc.token, "")
		if tc.param == "" {
			if a.code != 200 {
				t.Errorf("%s (token %q): %d %s, want 200", tc.path, tc.token, a.code, a.body)
			}
			continue
		}
		if e := errorOf(t, a); a.code != 400 || e.Code != "override_not_allowed" || !strings.Contains(e.Error, tc.param) {
			t.Errorf("%s (token %q): %d %s, want 400 override_not_allowed naming %s", tc.path, tc.token, a.code, a.body, tc.param)
		}
	}
	// The bounds of the config in force are shown to the admin.
	a := call(t, "GET", n1.url+"/admin/workers", token, "")
	if !strings.Contains(string(a.body), `"max_expires":"2h0m0s","overrides":"admin"`) ||
		!strings.Contains(string(a.body), `"overrides":"open"`) {
		t.Errorf("/admin/workers: %s", a.body)
	}
}

// TestNoOverridesWithoutToken: with no admin token configured nobody is
// the admin, so the reserved overrides need overrides: open.
func TestNoOverridesWithoutToken(t *testing.T) {
	n1 := startCluster(t, 1, "", newFooDB())[0]
	a := call(t, "GET", n1.url+"/v1/cache/items?id=1&_is_concurrent=false", "", "")
	if e := errorOf(t, a); a.code != 400 || e.Code != "override_not_allowed" {
		t.Errorf("_is_concurrent=false on a node without a token: %d %s", a.code, a.body)
	}
}

// TestSecurityHeaders: every answer says nosniff; a cached value is
// sandboxed; POST /v1/invalidate takes JSON only.
func TestSecurityHeaders(t *testing.T) {
	const token = "s3cret"
	n1 := startCluster(t, 1, token, newFooDB())[0]
	for _, path := range []string{"/v1/cache/items?id=1", "/v1/cache/items?id=1&_entity=1", "/v1/cache/nope",
		"/healthz", "/readyz", "/metrics", "/admin/ring", "/admin", "/nowhere"} {
		a := call(t, "GET", n1.url+path, "", "")
		if a.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: %d without nosniff: %v", path, a.code, a.header)
		}
		if strings.HasPrefix(path, "/v1/cache/items") && a.header.Get("Content-Security-Policy") != "sandbox" {
			t.Errorf("GET %s: a value without Content-Security-Policy: sandbox: %v", path, a.header)
		}
	}
	post := func(contentType string) answer {
		req, err := http.NewRequest("POST", n1.url+"/v1/invalidate", strings.NewReader(`{"label":"items"}`))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{resp.StatusCode, resp.Header, b}
	}
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx", "text/json"} {
		wantError(t, post(ct), 415, "unsupported_media_type")
	}
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON"} {
		if a := post(ct); a.code != 200 {
			t.Errorf("Content-Type %q: %d %s", ct, a.code, a.body)
		}
	}
	// Without the token, 401 comes first: nothing is said to strangers.
	req, _ := http.NewRequest("POST", n1.url+"/v1/invalidate", strings.NewReader(`{"label":"items"}`))
	req.Header.Set("Content-Type", "text/plain")
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("text/plain without the token: %d, want 401", resp.StatusCode)
	}
}

// TestOriginErrorMessage: a 502 says what the origin did, in the
// getter's own words, without the wrapping of the worker or the peer that
// carried it from the owner.
func TestOriginErrorMessage(t *testing.T) {
	ms := startCluster(t, 2, "", newFooDB())
	for _, m := range ms {
		_, err := m.node.Cache().Register(worker.Config{Label: "down", Getter: worker.GetterFunc(
			func(ctx context.Context, a worker.Args) (worker.Value, error) {
				return worker.Value{}, fmt.Errorf("origin answered 503")
			})})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 { // keys owned by both nodes, read on the first
		a := call(t, "GET", ms[0].url+"/v1/cache/down?id="+url.QueryEscape(fmt.Sprint(i)), "", "")
		if e := errorOf(t, a); a.code != 502 || e.Code != "origin_error" || e.Error != "origin answered 503" {
			t.Errorf("read %d: %d %s, want 502 {origin answered 503, origin_error}", i, a.code, a.body)
		}
	}
}

// FuzzReadBounds: a query string through the parser, the limits and the
// bounds of overrides, as handleCache runs them: an error, never a panic;
// what passes without the admin token is within the worker's bounds.
func FuzzReadBounds(f *testing.F) {
	for _, s := range []string{"a=1&_expires=2h", "_tick=1s&_tick_amount=3", "_is_concurrent=false", "_delay_countdown=0",
		"_delay_invalidation=1&x=1&x=2", "_expires=99999999999", "_tick=1ns&_tick_amount=2147483647"} {
		f.Add(s, false)
	}
	c, err := worker.NewCache(worker.CacheConfig{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { c.Close() })
	wk, err := c.Register(worker.Config{Label: "w", MaxExpires: time.Hour, Getter: worker.GetterFunc(nil),
		Settings: worker.Settings{Expires: time.Minute}})
	if err != nil {
		f.Fatal(err)
	}
	base := wk.Policy()
	f.Fuzz(func(t *testing.T, raw string, admin bool) {
		q, err := ParseQuery(raw)
		if err != nil {
			return
		}
		_ = worker.DefaultLimits().Check(q.Args)
		pol, err := wk.PolicyFor(q.Overrides)
		if err != nil {
			return
		}
		ov := q.Overrides
		if err := CheckOverrides(wk, ov, pol, admin); err != nil {
			if !strings.HasPrefix(err.Error(), "_") {
				t.Fatalf("the error does not start with the parameter: %v", err)
			}
			return
		}
		if ov.Expires > time.Hour || (ov.Tick != 0 || ov.TickAmount != nil) && pol.Budget() > base.Budget() {
			t.Fatalf("%q passed beyond the bounds: expires %v, budget %v", raw, ov.Expires, pol.Budget())
		}
		if !admin && (ov.IsConcurrent != nil && !*ov.IsConcurrent || ov.DelayInvalidation != nil || ov.DelayCountdown != nil) {
			t.Fatalf("%q passed without the admin token", raw)
		}
	})
}
