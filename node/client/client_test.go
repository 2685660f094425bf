package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/node/client"
	"github.com/cachenode/cachenode/node/httpapi"
	"github.com/cachenode/cachenode/node/nodetest"
	"github.com/cachenode/cachenode/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/hashicorp/go-metrics.(*InmemSink).run"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/go-metrics.NewInmemSink"),
	)
}

type member struct {
	node *node.Node
	srv  *httptest.Server
	once sync.Once
}

func (m *member) stop() {
	m.once.Do(func() {
		m.srv.Close()
		m.node.Close()
	})
}

// counter counts getter runs per key.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) get(label string) worker.Getter {
	return worker.GetterFunc(func(ctx context.Context, args worker.Args) (worker.Value, error) {
		k, _ := worker.KeyOf(label, args)
		c.mu.Lock()
		c.n[k]++
		c.mu.Unlock()
		return worker.Value{Data: []byte(k), ContentType: "text/plain"}, nil
	})
}

func (c *counter) runs(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

func startCluster(t *testing.T, size int, token string, c *counter) []*member {
	t.Helper()
	ms := make([]*member, size)
	cl, err := nodetest.Start(context.Background(), nodetest.Config{Size: size, Memory: 16 << 20,
		Configure: func(i int, cfg *node.Config) {
			ms[i] = &member{srv: httptest.NewUnstartedServer(nil)}
			cfg.HTTP = ms[i].srv.Listener.Addr().String()
		},
		Setup: func(i int, n *node.Node) error {
			if _, err := n.Cache().Register(worker.Config{Label: "items", Getter: c.get("items"), Settings: worker.Settings{Expires: time.Hour}}); err != nil {
				return err
			}
			api, err := httpapi.New(httpapi.Config{Node: n, Token: token})
			if err != nil {
				return err
			}
			ms[i].node = n
			ms[i].srv.Config = api.HTTPServer("")
			ms[i].srv.Start()
			t.Cleanup(ms[i].stop)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return ms
}

// waitRing waits until the members ms agree on a ring of exactly them.
func waitRing(t *testing.T, ms []*member) {
	t.Helper()
	nodes := make([]*node.Node, len(ms))
	for i, m := range ms {
		nodes[i] = m.node
	}
	deadline := time.Now().Add(10 * time.Second)
	for !nodetest.Converged(nodes, nil) {
		if time.Now().After(deadline) {
			t.Fatalf("no agreement on a ring of %d", len(ms))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReadsGoToTheOwner(t *testing.T) {
	c := &counter{n: map[string]int{}}
	ms := startCluster(t, 3, "", c)
	cl, err := client.New(client.Config{Nodes: []string{ms[1].srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	args := []client.Args{
		{"id": 1}, {"id": "1", "tag": []string{"b", "a"}}, {"id": 2.5, "on": true}, {"x": []any{3, "y"}},
		{"only": []string{"one"}}, {"empty": ""}, {"nil": nil}, {"n": int64(-7)},
	}
	for i := range 30 {
		args = append(args, client.Args{"k": i})
	}
	for _, a := range args {
		key, err := client.Key("items", a)
		if err != nil {
			t.Fatal(err)
		}
		r, err := cl.Get(ctx, "items", a)
		if err != nil {
			t.Fatalf("%v: %v", a, err)
		}
		if r.Key != key || string(r.Value) != key {
			t.Errorf("%v: the client computed %q, the node %q", a, key, r.Key)
		}
		owner := ms[0].node.Owner(key)
		if r.Node != owner || r.Owner != owner {
			t.Errorf("%v: answered by %s, owner %s, want the owner %s", a, r.Node, r.Owner, owner)
		}
		if o, _ := cl.Owner(ctx, "items", a); o != owner {
			t.Errorf("Owner: %s, want %s", o, owner)
		}
		if r.Status != "miss" || r.ContentType != "text/plain" {
			t.Errorf("%v: %+v", a, r)
		}
		if r2, err := cl.Get(ctx, "items", a); err != nil || r2.Status != "hit" {
			t.Errorf("%v again: %+v %v", a, r2, err)
		}
		if c.runs(key) != 1 {
			t.Errorf("%s filled %d times", key, c.runs(key))
		}
	}
	var ce *client.Error
	if _, err := cl.Get(ctx, "nope", client.Args{}); !errors.As(err, &ce) || ce.Code != "unknown_worker" || ce.StatusCode != 404 {
		t.Errorf("unknown worker: %v", err)
	}
	if _, err := cl.Get(ctx, "items", client.Args{"_tick": "1s"}); !errors.Is(err, worker.ErrBadArgs) {
		t.Errorf("argument starting with _: %v", err)
	}
	if _, err := cl.Get(ctx, "items", client.Args{"m": map[string]int{}}); !errors.Is(err, worker.ErrBadArgs) {
		t.Errorf("map argument: %v", err)
	}
	r, err := cl.GetWith(ctx, "items", client.Args{"ov": 1}, worker.Settings{Expires: time.Minute, TickAmount: worker.Int(3)})
	if err != nil || r.Status != "miss" {
		t.Errorf("GetWith: %+v %v", r, err)
	}
	// Without an admin token, the overrides reserved to the admin are refused.
	if _, err := cl.GetWith(ctx, "items", client.Args{"ov": 2}, worker.Settings{IsConcurrent: worker.Bool(false)}); !errors.As(err, &ce) ||
		ce.Code != "override_not_allowed" || ce.StatusCode != 400 {
		t.Errorf("GetWith(IsConcurrent false) without a token: %v", err)
	}
}

// TestReservedOverridesWithToken: a client given the admin token sends it
// with its reads, so the overrides reserved to the admin work.
func TestReservedOverridesWithToken(t *testing.T) {
	ms := startCluster(t, 1, "tok", &counter{n: map[string]int{}})
	cl, err := client.New(client.Config{Nodes: []string{ms[0].srv.URL}, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	r, err := cl.GetWith(context.Background(), "items", client.Args{"ov": 1},
		worker.Settings{IsConcurrent: worker.Bool(false), DelayCountdown: worker.Duration(time.Second)})
	if err != nil || r.Status != "miss" {
		t.Errorf("GetWith with the token: %+v %v", r, err)
	}
}

func TestRingRefreshWhenANodeLeaves(t *testing.T) {
	c := &counter{n: map[string]int{}}
	ms := startCluster(t, 3, "tok", c)
	cl, err := client.New(client.Config{Nodes: []string{ms[0].srv.URL, ms[2].srv.URL}, Token: "tok", MinRefreshInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := cl.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	ms[1].stop() // n2 leaves gracefully
	waitRing(t, []*member{ms[0], ms[2]})
	for i := range 40 {
		r, err := cl.Get(ctx, "items", client.Args{"k": i})
		if err != nil {
			t.Fatalf("k%d after n2 left: %v", i, err)
		}
		if r.Owner == "n2" {
			t.Errorf("k%d: owner n2 after it left", i)
		}
	}
	// The client learned the new ring: reads go straight to the owner.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := cl.Get(ctx, "items", client.Args{"k": 1000})
		if err == nil && r.Node == r.Owner {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reads still do not go to the owner: %+v %v", r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	res, err := cl.Invalidate(ctx, invalidation.Request{Label: "items", Args: worker.Args{"k": "1"}})
	if err != nil || res.Nodes != 2 || res.Keys < 1 {
		t.Errorf("Invalidate: %+v %v", res, err)
	}
	if c.runs(`items@k=s"1"`) != 2 {
		t.Errorf("the invalidated key was rebuilt %d times, want once more", c.runs(`items@k=s"1"`)-1)
	}
	bad, _ := client.New(client.Config{Nodes: []string{ms[0].srv.URL}})
	defer bad.Close()
	var ce *client.Error
	if err := bad.Refresh(ctx); !errors.As(err, &ce) || ce.StatusCode != http.StatusUnauthorized {
		t.Errorf("refresh without the token: %v", err)
	}
}

func TestNoNodes(t *testing.T) {
	if _, err := client.New(client.Config{}); err == nil {
		t.Error("New without nodes")
	}
	if _, err := client.New(client.Config{Nodes: []string{"ftp://x"}}); err == nil {
		t.Error("New with a non-HTTP node")
	}
	cl, _ := client.New(client.Config{Nodes: []string{"127.0.0.1:1"}})
	defer cl.Close()
	if _, err := cl.Get(context.Background(), "items", client.Args{}); !errors.Is(err, client.ErrNoNodes) {
		t.Errorf("unreachable cluster: %v", err)
	}
}
