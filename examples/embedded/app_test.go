package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cachenode/cachenode/node"
)

// TestClusterRefreshOnChange starts three instances of the service on
// loopback, sharing one SQLite file, reads both cached lists through each
// of them, changes a Foo through one instance's API, and checks that both
// affected lists (all_foos, and the filtered_foos variants the Foo left and
// joined) are refreshed on all three: the next reads are hits that show the
// change, each affected list was rebuilt once for the whole cluster, and
// an unaffected variant was not rebuilt.
func TestClusterRefreshOnChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	db := filepath.Join(t.TempDir(), "foos.db")

	var apps []*App
	for i := range 3 {
		cfg := Config{
			Name: fmt.Sprintf("app%d", i+1), HTTP: "127.0.0.1:0", Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0",
			DB: db, Rows: 3000, Membership: node.LocalMembership(),
		}
		if i > 0 {
			cfg.Join = []string{apps[0].Node().GossipAddr()}
		}
		a, err := New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		apps = append(apps, a)
		t.Cleanup(func() {
			if err := a.Close(); err != nil {
				t.Errorf("close %s: %v", cfg.Name, err)
			}
		})
	}
	for _, a := range apps {
		waitFor(t, ctx, a.Node().Name()+" sees a ring of 3", func() bool {
			r := a.Node().Ring()
			return a.Node().Ready() && r != nil && r.Len() == 3
		})
	}

	// A Foo to move from its filtered_foos variant (attr1=a, attr2=c) to
	// (attr1=a+1, attr2=c), and a variant the change does not touch.
	var all listAnswer
	get(t, apps[0].URL()+"/foos", &all)
	if all.Count != 3000 {
		t.Fatalf("all_foos has %d Foos, want the 3000 generated", all.Count)
	}
	foo := all.Foos[42]
	oldURL := fmt.Sprintf("/foos/filter?attr1=%d&attr2=%s", foo.Attr1, foo.Attr2)
	newAttr1 := (foo.Attr1 + 1) % 10
	newURL := fmt.Sprintf("/foos/filter?attr1=%d&attr2=%s", newAttr1, foo.Attr2)
	otherColour := colours[(slices.Index(colours, foo.Attr2)+1)%len(colours)]
	untouchedURL := fmt.Sprintf("/foos/filter?attr1=%d&attr2=%s", foo.Attr1, otherColour)

	// Fill every list through every instance.
	for _, a := range apps {
		for _, path := range []string{"/foos", oldURL, newURL, untouchedURL} {
			var ans listAnswer
			get(t, a.URL()+path, &ans)
		}
	}
	before := queries(apps)

	// Change the Foo through the second instance, as a client of the
	// service would.
	var ch changeAnswer
	patch(t, apps[1].URL()+fmt.Sprintf("/foos/%d", foo.ID), map[string]any{"attr1": newAttr1}, &ch)
	if ch.Invalidation == nil || ch.Invalidation.Nodes != 3 || ch.Invalidation.Keys < 3 {
		t.Fatalf("change answered %+v; want an invalidation applied on 3 nodes to at least 3 keys", ch.Invalidation)
	}

	for _, a := range apps {
		var ans listAnswer
		get(t, a.URL()+"/foos", &ans)
		checkHit(t, a, "/foos", ans)
		i := slices.IndexFunc(ans.Foos, func(f Foo) bool { return f.ID == foo.ID })
		if i < 0 || ans.Foos[i].Attr1 != newAttr1 {
			t.Errorf("%s: all_foos does not show Foo %d with attr1=%d", a.cfg.Name, foo.ID, newAttr1)
		}

		get(t, a.URL()+oldURL, &ans)
		checkHit(t, a, oldURL, ans)
		if slices.ContainsFunc(ans.Foos, func(f Foo) bool { return f.ID == foo.ID }) {
			t.Errorf("%s: %s still lists Foo %d", a.cfg.Name, oldURL, foo.ID)
		}

		get(t, a.URL()+newURL, &ans)
		checkHit(t, a, newURL, ans)
		if !slices.ContainsFunc(ans.Foos, func(f Foo) bool { return f.ID == foo.ID }) {
			t.Errorf("%s: %s does not list Foo %d", a.cfg.Name, newURL, foo.ID)
		}

		get(t, a.URL()+untouchedURL, &ans)
		checkHit(t, a, untouchedURL, ans)
	}

	// Each affected list was rebuilt once for the cluster (by its owner,
	// during the invalidation); the untouched one not at all.
	after := queries(apps)
	keyOf := func(path string) string {
		var ans listAnswer
		get(t, apps[0].URL()+path, &ans)
		return ans.Key
	}
	for path, want := range map[string]int{"/foos": 1, oldURL: 1, newURL: 1, untouchedURL: 0} {
		key := keyOf(path)
		if got := after[key] - before[key]; got != want {
			t.Errorf("%s (%s): %d database queries in the cluster after the change, want %d", path, key, got, want)
		}
	}
}

func checkHit(t *testing.T, a *App, path string, ans listAnswer) {
	t.Helper()
	if ans.Cache != "hit" {
		t.Errorf("%s %s: answered %q, want hit (a refresh replaces the value in place)", a.cfg.Name, path, ans.Cache)
	}
}

// queries sums the database queries of every instance, by key.
func queries(apps []*App) map[string]int {
	out := map[string]int{}
	for _, a := range apps {
		for k, n := range a.queries.snapshot() {
			out[k] += n
		}
	}
	return out
}

func get(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func patch(t *testing.T, url string, body, v any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPatch, url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("PATCH %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PATCH %s: %s %+v", url, resp.Status, v)
	}
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting until %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}
