package resp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
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

// origin is the test's database: items by id, each with a revision that
// an update bumps.
type origin struct {
	mu    sync.Mutex
	rev   map[string]int // id → revision; guarded by mu
	calls int            // guarded by mu
}

func newOrigin() *origin { return &origin{rev: map[string]int{}} }

func (o *origin) bump(id string) {
	o.mu.Lock()
	o.rev[id]++
	o.mu.Unlock()
}

func (o *origin) value(id string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprintf("item %s rev %d", id, o.rev[id])
}

func (o *origin) register(t *testing.T, n *node.Node) {
	t.Helper()
	items := worker.GetterFunc(func(ctx context.Context, args worker.Args) (worker.Value, error) {
		o.mu.Lock()
		o.calls++
		o.mu.Unlock()
		if args["fail"] != nil {
			return worker.Value{}, fmt.Errorf("the database is down")
		}
		id, _ := args["id"].(string)
		return worker.Value{Data: []byte(o.value(id)), ContentType: "text/plain"}, nil
	})
	slow := worker.GetterFunc(func(ctx context.Context, args worker.Args) (worker.Value, error) {
		<-ctx.Done() // an origin slower than the fill timeout
		return worker.Value{}, ctx.Err()
	})
	for _, c := range []worker.Config{
		{Label: "slow", Getter: slow, FillTimeout: 50 * time.Millisecond, Settings: worker.Settings{Tick: 10 * time.Millisecond, TickAmount: worker.Int(5)}},
		{Label: "items", Getter: items, Settings: worker.Settings{Expires: time.Hour}},
		{Label: "short", Getter: items, Settings: worker.Settings{Expires: 300 * time.Millisecond}},
	} {
		if _, err := n.Cache().Register(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.RegisterRules("Item", map[string]invalidation.Rule{"items": {Args: []string{"id"}}}); err != nil {
		t.Fatal(err)
	}
}

// member is a node of a test cluster with its RESP front.
type member struct {
	node *node.Node
	srv  *Server
	addr string
}

// startCluster starts size nodes on loopback, each with a RESP front, and
// waits until they agree on the ring.
func startCluster(t *testing.T, size int, token string, o *origin) []*member {
	t.Helper()
	c, err := nodetest.Start(context.Background(), nodetest.Config{
		Size:      size,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Configure: func(i int, cfg *node.Config) { cfg.HTTP = "127.0.0.1:1" },
		Setup:     func(i int, n *node.Node) error { o.register(t, n); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var ms []*member
	for _, n := range c.Nodes() {
		srv, err := New(Config{Node: n, Token: token, TrackingTableMaxKeys: 1000})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		ms = append(ms, &member{node: n, srv: srv, addr: ln.Addr().String()})
		t.Cleanup(func() {
			srv.Close()
			<-served
		})
	}
	return ms
}

// joinTo starts a node n2 (without a RESP front) that joins m.
func joinTo(t *testing.T, m *member, o *origin) {
	t.Helper()
	n, err := node.New(node.Config{Name: "n2", Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", HTTP: "127.0.0.1:1",
		Membership: nodetest.Steady(), Memory: 32 << 20, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Join: []string{m.node.GossipAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	o.register(t, n)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
}

// keyOwnedBy returns an items key (items?id=N) that owner owns.
func keyOwnedBy(t *testing.T, m *member, owner string) (key, id string) {
	t.Helper()
	w, _ := m.node.Cache().Worker("items")
	for i := range 1000 {
		id := fmt.Sprint(i)
		k, err := w.Key(worker.Args{"id": id})
		if err != nil {
			t.Fatal(err)
		}
		if m.node.Owner(k) == owner {
			return "items?id=" + id, id
		}
	}
	t.Fatalf("no key of %s", owner)
	return "", ""
}

// needTool returns the path of a program the test runs, or skips the
// test when it is missing; in CI (CI=true) a missing program fails it.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (Debian package %s; scripts/test.sh installs it)", name, pkg)
		}
		t.Skipf("%s is not installed (apt-get install -y %s)", name, pkg)
	}
	return p
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
