package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node/client"
	"github.com/cachenode/cachenode/worker"
)

func TestParseQuery(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		raw  string
		want Query
		err  string
	}{
		{raw: "", want: Query{Args: worker.Args{}}},
		{raw: "a=1&b=x&b=y", want: Query{Args: worker.Args{"a": "1", "b": []any{"x", "y"}}}},
		{raw: "a=&b=0", want: Query{Args: worker.Args{"a": "", "b": "0"}}},
		{raw: "a=1&_expires=90&_tick=50ms&_tick_amount=3&_is_concurrent=false&_relevance_invalidation=1&_relevance_expires=1m&_delay_invalidation=true&_delay_countdown=0&_entity=1",
			want: Query{Args: worker.Args{"a": "1"}, Entity: &yes, Overrides: worker.Settings{
				Expires: 90 * time.Second, Tick: 50 * time.Millisecond, TickAmount: worker.Int(3), IsConcurrent: &no,
				RelevanceInvalidation: &yes, RelevanceExpires: time.Minute, DelayInvalidation: &yes, DelayCountdown: worker.Duration(0)}}},
		{raw: "_tick=0", err: "_tick: must be > 0"},
		{raw: "_tick=-1s", err: "negative"},
		{raw: "_tick=soon", err: `_tick: bad duration "soon"`},
		{raw: "_tick_amount=0", err: "_tick_amount"},
		{raw: "_is_concurrent=maybe", err: "_is_concurrent"},
		{raw: "_nope=1", err: "unknown override"},
		{raw: "_expires=1s&_expires=2s", err: "given 2 times"},
		{raw: "a=%zz", err: "malformed query"},
		{raw: "=x", err: "empty name"},
	} {
		got, err := ParseQuery(tc.raw)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one containing %q", tc.raw, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: got %+v, %v; want %+v", tc.raw, got, err, tc.want)
		}
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"a=1&b=2&b=3", "_tick=1s", "_entity=1&x=%20", "a=%zz", "_tick_amount=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := ParseQuery(raw)
		if err != nil {
			return
		}
		for name := range q.Args {
			if strings.HasPrefix(name, "_") {
				t.Fatalf("override %q taken as an argument", name)
			}
		}
	})
}

func FuzzDecodeInvalidation(f *testing.F) {
	for _, s := range []string{`{"label":"x"}`, `{"label":"x","args":{"a":1}}`, `{"label":"x","match":{"a":[1,"b"]}}`,
		`{"model":"M","changes":[{"op":"update","old":{"a":1},"new":{"a":2}}],"delay":true,"countdown":"5s"}`, `[]`, `{"label":"x"} {}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeInvalidation(body)
		if err == nil {
			if err := req.Validate(); err != nil {
				t.Fatalf("accepted a request that does not validate: %v", err)
			}
		}
	})
}

func TestAPI(t *testing.T) {
	db := newFooDB()
	const token = "tok"
	ms := startCluster(t, 2, token, db)
	n1, n2 := ms[0], ms[1]

	t.Run("read", func(t *testing.T) {
		a := call(t, "GET", n1.url+"/v1/cache/items?id=7", "", "")
		if a.code != 200 || string(a.body) != "item 7" || a.header.Get("X-Cache") != "miss" ||
			a.header.Get("X-Cache-Key") != `items@id=s"7"` || a.header.Get("Content-Type") != "text/plain; charset=utf-8" ||
			a.header.Get("Age") != "0" || a.header.Get("X-Cache-Owner") != n1.node.Owner(`items@id=s"7"`) {
			t.Fatalf("got %d %q %v", a.code, a.body, a.header)
		}
		b := call(t, "GET", n2.url+"/v1/cache/items?id=7", "", "")
		if b.header.Get("X-Cache") != "hit" || b.header.Get("X-Cache-Owner") != a.header.Get("X-Cache-Owner") {
			t.Errorf("second read: %v", b.header)
		}
		h := call(t, "HEAD", n2.url+"/v1/cache/items?id=7", "", "")
		if h.code != 200 || len(h.body) != 0 || h.header.Get("Content-Length") != "6" {
			t.Errorf("HEAD: %d %q %v", h.code, h.body, h.header)
		}
		e := call(t, "GET", n2.url+"/v1/cache/items?id=7&_entity=true", "", "")
		var ent Entity
		if e.code != 200 || json.Unmarshal(e.body, &ent) != nil || ent.Key != `items@id=s"7"` || ent.ValueBase64 == nil ||
			*ent.ValueBase64 != "aXRlbSA3" || ent.RelevanceTo == nil || ent.Args["id"] != "7" {
			t.Errorf("entity: %d %s", e.code, e.body)
		}
		j := call(t, "GET", n1.url+"/v1/cache/filtered?attr1=red&_entity=1", "", "")
		var raw map[string]json.RawMessage
		if j.code != 200 || json.Unmarshal(j.body, &raw) != nil || string(raw["value"]) != `{"ids":2,"rev":0}` || raw["relevance_to"] == nil {
			t.Errorf("JSON entity: %d %s", j.code, j.body)
		}
		if string(raw["relevance_to"]) != "null" {
			t.Errorf("relevance_to of a worker without relevance: %s", raw["relevance_to"])
		}
		if db.runs(`items@id=s"7"`) != 1 {
			t.Errorf("getter ran %d times", db.runs(`items@id=s"7"`))
		}
	})

	t.Run("errors", func(t *testing.T) {
		wantError(t, call(t, "GET", n1.url+"/v1/cache/nope", "", ""), 404, "unknown_worker")
		wantError(t, call(t, "GET", n1.url+"/v1/cache/items?_tick=x", "", ""), 400, "bad_request")
		wantError(t, call(t, "GET", n1.url+"/v1/cache/items?_relevance_expires=-1", "", ""), 400, "bad_request")
		wantError(t, call(t, "GET", n1.url+"/v1/cache/items?id=1&fail=1", "", ""), 502, "origin_error")
		wantError(t, call(t, "GET", n2.url+"/v1/cache/items?id=1&fail=1", "", ""), 502, "origin_error")
		if n := db.runs(`items@fail=s"1"&id=s"1"`); n != 2 {
			t.Errorf("a failing getter ran %d times for two reads; errors must not be cached", n)
		}
		for _, m := range ms { // filled here, and by the owner for the other node
			wantError(t, call(t, "GET", m.url+"/v1/cache/slow?x=1", "", ""), 504, "fill_timeout")
		}
		wantError(t, call(t, "POST", n1.url+"/v1/cache/items", "", ""), 405, "method_not_allowed")
		wantError(t, call(t, "GET", n1.url+"/v1/invalidate", token, ""), 405, "method_not_allowed")
		wantError(t, call(t, "GET", n1.url+"/nope", "", ""), 404, "not_found")
		wantError(t, call(t, "GET", n1.url+"/admin/nope", token, ""), 404, "not_found")
		wantError(t, call(t, "POST", n1.url+"/v1/invalidate", token, `{"label":"nope"}`), 404, "unknown_worker")
		wantError(t, call(t, "POST", n1.url+"/v1/invalidate", token, `{"model":"Nope","changes":[{"op":"create","new":{}}]}`), 404, "unknown_model")
		wantError(t, call(t, "POST", n1.url+"/v1/invalidate", token, `{"label":"items"} trailing`), 400, "bad_request")
		wantError(t, call(t, "POST", n1.url+"/v1/invalidate", token, `{"label":"items","args":{"id":"1"},"match":{"id":["1"]}}`), 400, "bad_request")
		wantError(t, call(t, "POST", n1.url+"/v1/invalidate", token, `{"label":"items","x":1}`), 400, "bad_request")
		wantError(t, call(t, "POST", n1.url+"/v1/invalidate", token, strings.Repeat(" ", DefaultMaxBody+1)), 413, "body_too_large")
		for _, q := range []string{"limit=0", "limit=x", "limit=100000", "label=nope", "label=bad%20label", "bogus=1", "label=items&after=filtered@x"} {
			a := call(t, "GET", n1.url+"/admin/records?"+q, token, "")
			if a.code != 400 && a.code != 404 {
				t.Errorf("records?%s: %d %s", q, a.code, a.body)
			}
		}
	})

	t.Run("token", func(t *testing.T) {
		for _, p := range []string{"/admin/", "/admin/ring", "/admin/workers", "/admin/records", "/admin/nope"} {
			a := call(t, "GET", n1.url+p, "", "")
			wantError(t, a, 401, "unauthorized")
			if !strings.Contains(a.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s: WWW-Authenticate %q", p, a.header.Get("WWW-Authenticate"))
			}
			wantError(t, call(t, "GET", n1.url+p, "tok2", ""), 401, "unauthorized")
			wantError(t, call(t, "GET", n1.url+p, "to", ""), 401, "unauthorized")
		}
		wantError(t, call(t, "POST", n1.url+"/v1/invalidate", "", `{"label":"items"}`), 401, "unauthorized")
		// Basic credentials whose password is the token: a browser's prompt.
		req, _ := http.NewRequest("GET", n1.url+"/admin/", nil)
		req.SetBasicAuth("admin", token)
		resp, err := testClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("basic auth: %v %v", resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	})

	t.Run("admin json", func(t *testing.T) {
		var ri client.RingInfo
		a := call(t, "GET", n1.url+"/admin/ring", token, "")
		if a.code != 200 || json.Unmarshal(a.body, &ri) != nil {
			t.Fatalf("ring: %d %s", a.code, a.body)
		}
		if ri.Self != "n1" || !ri.Ready || ri.PartitionCount != 271 || len(ri.Partitions) != 271 || len(ri.Members) != 2 ||
			ri.Version != n1.node.Ring().Version() || ri.Ring.Config().PartitionCount != 271 {
			t.Errorf("ring: %+v", ri)
		}
		sum := 0
		for _, m := range ri.Members {
			sum += m.Partitions
			if m.State != "alive" || m.HTTP == "" || m.Peer == "" || m.Gossip == "" {
				t.Errorf("member %+v", m)
			}
			if (m.Keys != nil) != (m.Name == "n1") {
				t.Errorf("member %s keys %v: only self knows its count", m.Name, m.Keys)
			}
		}
		if sum != 271 {
			t.Errorf("members own %d partitions in all", sum)
		}
		var ri2 client.RingInfo
		json.Unmarshal(call(t, "GET", n2.url+"/admin/ring", token, "").body, &ri2)
		if ri2.Version != ri.Version || !reflect.DeepEqual(ri2.Partitions, ri.Partitions) {
			t.Errorf("members that agree on the ring report different partitions")
		}

		var ws struct{ Workers []WorkerInfo }
		a = call(t, "GET", n1.url+"/admin/workers", token, "")
		if a.code != 200 || json.Unmarshal(a.body, &ws) != nil || len(ws.Workers) != 3 {
			t.Fatalf("workers: %d %s", a.code, a.body)
		}
		it := ws.Workers[1]
		if it.Label != "items" || it.Config.Expires != "1h0m0s" || !it.Config.RelevanceInvalidation || it.Config.RelevanceExpires != "30s" ||
			it.Config.TickAmount != 10 || it.Config.Action != "refresh" {
			t.Errorf("items worker: %+v", it)
		}
		for _, f := range []string{`"hits"`, `"misses"`, `"stale"`, `"fills"`, `"fill_errors"`, `"fallbacks"`, `"waits"`, `"wait_timeouts"`, `"invalidations"`} {
			if !bytes.Contains(a.body, []byte(f)) {
				t.Errorf("workers JSON lacks the counter %s", f)
			}
		}
	})

	t.Run("records pages", func(t *testing.T) {
		want := map[string]bool{}
		for i := range 25 {
			label, q := "items", fmt.Sprintf("id=p%02d", i)
			if i%3 == 0 {
				label, q = "filtered", fmt.Sprintf("attr1=p%02d", i)
			}
			a := call(t, "GET", n1.url+"/v1/cache/"+label+"?"+q, "", "")
			if a.code != 200 {
				t.Fatal(a.code)
			}
			want[a.header.Get("X-Cache-Key")] = true
		}
		got := map[string]bool{}
		for _, m := range ms {
			for _, limit := range []int{1, 4, 1000} {
				after, pages := "", 0
				seen := map[string]bool{}
				for {
					u := fmt.Sprintf("%s/admin/records?limit=%d", m.url, limit)
					if after != "" {
						u += "&after=" + url.QueryEscape(after)
					}
					var page struct {
						Records []Record
						Next    *string
					}
					a := call(t, "GET", u, token, "")
					if a.code != 200 || json.Unmarshal(a.body, &page) != nil || len(page.Records) > limit {
						t.Fatalf("%s: %d %s", u, a.code, a.body)
					}
					for _, r := range page.Records {
						if seen[r.Key] {
							t.Fatalf("limit %d: %s listed twice", limit, r.Key)
						}
						seen[r.Key] = true
						got[r.Key] = true
						if r.Owner != m.node.Name() || r.CreatedAt.IsZero() || r.AvailableTo == nil || r.Size == 0 {
							t.Errorf("record %+v", r)
						}
					}
					pages++
					if page.Next == nil {
						break
					}
					after = *page.Next
					if pages > 200 {
						t.Fatal("paging does not end")
					}
				}
			}
		}
		for k := range want {
			if !got[k] {
				t.Errorf("no record of %s", k)
			}
		}
		a := call(t, "GET", n1.url+"/admin/records?label=filtered&limit=1000", token, "")
		var page struct{ Records []Record }
		json.Unmarshal(a.body, &page)
		for _, r := range page.Records {
			if r.Label != "filtered" {
				t.Errorf("label=filtered lists %s", r.Key)
			}
		}
	})

	t.Run("invalidate", func(t *testing.T) {
		for _, id := range []string{"1", "3", "4"} {
			call(t, "GET", n2.url+"/v1/cache/filtered?attr1="+map[string]string{"1": "red", "3": "blue", "4": "green"}[id], "", "")
		}
		before := db.runs(`filtered@attr1=s"green"`)
		red := db.runs(`filtered@attr1=s"red"`)
		db.mu.Lock()
		db.foos["2"], db.rev = "blue", db.rev+1
		db.mu.Unlock()
		a := call(t, "POST", n1.url+"/v1/invalidate", token,
			`{"model":"Foo","changes":[{"op":"update","old":{"attr1":"red"},"new":{"attr1":"blue"}}]}`)
		var res map[string]int
		if a.code != 200 || json.Unmarshal(a.body, &res) != nil || res["nodes"] != 2 || res["keys"] < 2 {
			t.Fatalf("invalidate: %d %s", a.code, a.body)
		}
		if db.runs(`filtered@attr1=s"green"`) != before || db.runs(`filtered@attr1=s"red"`) != red+1 {
			t.Errorf("green ran %d→%d, red %d→%d", before, db.runs(`filtered@attr1=s"green"`), red, db.runs(`filtered@attr1=s"red"`))
		}
		for _, m := range ms {
			b := call(t, "GET", m.url+"/v1/cache/filtered?attr1=red", "", "")
			if string(b.body) != `{"ids":1,"rev":1}` {
				t.Errorf("%s serves %s after the invalidation", m.node.Name(), b.body)
			}
		}
		q := call(t, "POST", n1.url+"/v1/invalidate", token, `{"label":"items","delay":true,"countdown":"1h"}`)
		var qr map[string]any
		if q.code != 202 || json.Unmarshal(q.body, &qr) != nil || qr["queued"] == nil {
			t.Errorf("delayed: %d %s", q.code, q.body)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		a := call(t, "GET", n1.url+"/metrics", "", "")
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(bytes.NewReader(a.body))
		if a.code != 200 || err != nil {
			t.Fatalf("metrics: %d %v", a.code, err)
		}
		for _, name := range []string{"cachenode_worker_hits_total", "cachenode_worker_misses_total", "cachenode_fill_duration_seconds",
			"cachenode_peer_call_duration_seconds", "cachenode_http_requests_total", "cachenode_members", "cachenode_ring_members",
			"cachenode_ready", "cachenode_cache_entries", "cachenode_invalidation_requests_total", "process_cpu_seconds_total"} {
			if _, ok := fams[name]; !ok {
				t.Errorf("no %s", name)
			}
		}
		if v := fams["cachenode_ring_members"].Metric[0].GetGauge().GetValue(); v != 2 {
			t.Errorf("ring members %v", v)
		}
	})

	t.Run("health", func(t *testing.T) {
		if a := call(t, "GET", n1.url+"/healthz", "", ""); a.code != 200 {
			t.Errorf("healthz %d", a.code)
		}
		if a := call(t, "GET", n1.url+"/readyz", "", ""); a.code != 200 {
			t.Errorf("readyz %d", a.code)
		}
		n2.api.Drain()
		wantError(t, call(t, "GET", n2.url+"/readyz", "", ""), 503, "shutting_down")
	})
}

// fakeInvalidator answers with a fixed result.
type fakeInvalidator struct {
	res invalidation.Result
	err error
}

func (f fakeInvalidator) Invalidate(ctx context.Context, req invalidation.Request) (invalidation.Result, error) {
	return f.res, f.err
}

func TestInvalidateAnswers(t *testing.T) {
	ms := startCluster(t, 1, "", newFooDB())
	for _, tc := range []struct {
		inv  fakeInvalidator
		code int
		body string
	}{
		{fakeInvalidator{res: invalidation.Result{Keys: 3, Nodes: 2}}, 200, `{"keys":3,"nodes":2}`},
		{fakeInvalidator{res: invalidation.Result{Queued: 42}}, 202, `{"queued":42}`},
		{fakeInvalidator{res: invalidation.Result{Keys: 1, Nodes: 1, Missing: []string{"n9"}}}, 504, `"code":"invalidation_incomplete"`},
		{fakeInvalidator{err: fmt.Errorf("x: %w", invalidation.ErrBadRequest)}, 400, `"code":"bad_request"`},
		{fakeInvalidator{err: errors.New("disk on fire")}, 500, `"code":"internal"`},
	} {
		api, err := New(Config{Node: ms[0].node, Invalidator: tc.inv})
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/v1/invalidate", strings.NewReader(`{"label":"items"}`))
		req.Header.Set("Content-Type", "application/json")
		api.ServeHTTP(rec, req)
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("%+v: got %d %s", tc.inv, rec.Code, rec.Body)
		}
	}
	api, _ := New(Config{Node: ms[0].node})
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest("GET", "/admin/", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "<svg") {
		t.Errorf("admin page: %d", rec.Code)
	}
}

func TestNewNeedsANode(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrConfig) {
		t.Errorf("New without a node: %v", err)
	}
}

// TestInvalidationArgsNameTheKeyAQueryFilled checks that JSON arguments of
// POST /v1/invalidate name the key that the same values in a query string
// filled: numbers and booleans in JSON are text in a query.
func TestInvalidationArgsNameTheKeyAQueryFilled(t *testing.T) {
	req, err := DecodeInvalidation([]byte(`{"label":"w","args":{"id":7,"ratio":1.5,"on":true,"tags":["a",2],"one":["x"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParseQuery("id=7&ratio=1.5&on=true&tags=a&tags=2&one=x")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := worker.KeyOf("w", q.Args)
	got, _ := worker.KeyOf("w", req.Args)
	if got != want {
		t.Fatalf("invalidation key %q, query key %q", got, want)
	}
	if _, err := DecodeInvalidation([]byte(`{"label":"w","args":{"x":[[1]]}}`)); err == nil {
		t.Fatal("nested list accepted")
	}
}
