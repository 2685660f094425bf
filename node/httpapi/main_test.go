package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/node/nodetest"
	"github.com/cachenode/cachenode/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// memberlist's package-level metrics sink is the only goroutine
		// allowed to linger (see node/main_test.go).
		goleak.IgnoreTopFunction("github.com/hashicorp/go-metrics.(*InmemSink).run"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/go-metrics.NewInmemSink"),
	)
}

// fooDB is the origin of the tests: Foo records with attr1, and counts of
// getter runs per key.
type fooDB struct {
	mu    sync.Mutex
	foos  map[string]string // id → attr1; guarded by mu
	rev   int               // guarded by mu
	calls map[string]int    // key → getter runs; guarded by mu
	// extra, when set, registers more workers on each node.
	extra func(t *testing.T, n *node.Node)
	// slack is the servers' Config.Slack (0: the default).
	slack time.Duration
}

func newFooDB() *fooDB {
	return &fooDB{foos: map[string]string{"1": "red", "2": "red", "3": "blue", "4": "green"}, calls: map[string]int{}}
}

func (db *fooDB) count(label string, args worker.Args) {
	k, _ := worker.KeyOf(label, args)
	db.mu.Lock()
	db.calls[k]++
	db.mu.Unlock()
}

func (db *fooDB) runs(key string) int {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.calls[key]
}

func (db *fooDB) register(t *testing.T, n *node.Node, m *Metrics) {
	t.Helper()
	filtered := worker.GetterFunc(func(ctx context.Context, args worker.Args) (worker.Value, error) {
		db.count("filtered", args)
		db.mu.Lock()
		defer db.mu.Unlock()
		var ids []string
		for id, a := range db.foos {
			if args["attr1"] == nil || args["attr1"] == a {
				ids = append(ids, id)
			}
		}
		b, _ := json.Marshal(map[string]any{"ids": len(ids), "rev": db.rev})
		return worker.Value{Data: b, ContentType: "application/json"}, nil
	})
	items := worker.GetterFunc(func(ctx context.Context, args worker.Args) (worker.Value, error) {
		db.count("items", args)
		time.Sleep(time.Millisecond) // an origin takes a moment
		if args["fail"] != nil {
			return worker.Value{}, fmt.Errorf("the database is down")
		}
		return worker.Value{Data: []byte(fmt.Sprintf("item %v", args["id"])), ContentType: "text/plain; charset=utf-8"}, nil
	})
	slow := worker.GetterFunc(func(ctx context.Context, args worker.Args) (worker.Value, error) {
		<-ctx.Done() // an origin slower than the fill timeout
		return worker.Value{}, ctx.Err()
	})
	for _, c := range []worker.Config{
		{Label: "slow", Getter: slow, FillTimeout: 50 * time.Millisecond, Settings: worker.Settings{Tick: 10 * time.Millisecond, TickAmount: worker.Int(5)}},
		{Label: "filtered", Getter: m.WrapGetter("filtered", origin{filtered, "http://db.internal/foos/filter"}), Settings: worker.Settings{Expires: time.Hour}},
		{Label: "items", Getter: m.WrapGetter("items", origin{items, "http://db.internal/items"}), Settings: worker.Settings{Expires: time.Hour,
			RelevanceInvalidation: worker.Bool(true), RelevanceExpires: 30 * time.Second}},
	} {
		if _, err := n.Cache().Register(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.RegisterRules("Foo", map[string]invalidation.Rule{"filtered": {Args: []string{"attr1"}}}); err != nil {
		t.Fatal(err)
	}
	if db.extra != nil {
		db.extra(t, n)
	}
}

// origin is a getter that names an origin, as the command's are.
type origin struct {
	worker.GetterFunc
	url string
}

func (o origin) Origin() string { return o.url }

// member is a node of a test cluster with its HTTP API.
type member struct {
	node    *node.Node
	api     *Server
	srv     *httptest.Server
	url     string
	metrics *Metrics
}

// startCluster starts size nodes on loopback, each serving its API, and
// waits until they agree on the ring.
func startCluster(t *testing.T, size int, token string, db *fooDB) []*member {
	t.Helper()
	return startClusterWith(t, size, token, db, nil)
}

// startClusterWith is startCluster with tune applied to each node's config.
func startClusterWith(t *testing.T, size int, token string, db *fooDB, tune func(*node.Config)) []*member {
	t.Helper()
	ms := make([]*member, size)
	c, err := nodetest.Start(context.Background(), nodetest.Config{Size: size,
		Configure: func(i int, cfg *node.Config) {
			ms[i] = &member{srv: httptest.NewUnstartedServer(nil), metrics: NewMetrics()}
			cfg.HTTP = ms[i].srv.Listener.Addr().String()
			cfg.OnPeerCall = ms[i].metrics.ObservePeerCall
			if tune != nil {
				tune(cfg)
			}
		},
		Setup: func(i int, n *node.Node) error {
			m := ms[i]
			db.register(t, n, m.metrics)
			api, err := New(Config{Node: n, Token: token, Metrics: m.metrics, Slack: db.slack})
			if err != nil {
				return err
			}
			m.node, m.api = n, api
			m.srv.Config = api.HTTPServer("")
			m.srv.Start()
			m.url = m.srv.URL
			t.Cleanup(m.srv.Close) // after the nodes' Close, registered below
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ms
}

type answer struct {
	code   int
	header http.Header
	body   []byte
}

var testClient = &http.Client{Timeout: 20 * time.Second}

func call(t *testing.T, method, url, token, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json") // the only type POST /v1/invalidate takes
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

func wantError(t *testing.T, a answer, status int, code string) {
	t.Helper()
	var e Error
	if a.code != status || json.Unmarshal(a.body, &e) != nil || e.Code != code || e.Error == "" {
		t.Errorf("got %d %s, want %d with code %q", a.code, a.body, status, code)
	}
}
