package pgsource_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/invalidation/pgsource"
	"github.com/cachenode/cachenode/invalidation/pgsource/pgtest"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/worker"
)

const schema = `
CREATE TABLE foo (id serial PRIMARY KEY, attr1 int NOT NULL, val int NOT NULL, note text);
ALTER TABLE foo REPLICA IDENTITY FULL;
ALTER TABLE foo ALTER COLUMN note SET STORAGE EXTERNAL;
CREATE TABLE bar (id serial PRIMARY KEY, kind text NOT NULL, val int NOT NULL);
ALTER TABLE bar REPLICA IDENTITY FULL;
CREATE TABLE baz (id serial PRIMARY KEY, kind text NOT NULL);
INSERT INTO foo (attr1, val) VALUES (1, 10), (2, 20), (3, 30);
INSERT INTO bar (kind, val) VALUES ('a', 1), ('b', 2);
`

// fills counts the getter runs per variant, over the whole cluster.
type fills struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *fills) add(k string) {
	f.mu.Lock()
	f.n[k]++
	f.mu.Unlock()
}

func (f *fills) snapshot() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.n)
}

type cluster struct {
	t       testing.TB
	pg      *pgtest.Server
	pool    *pgxpool.Pool
	nodes   []*node.Node
	sources []*pgsource.Source
	cancels []context.CancelFunc
	fills   *fills
	replays bool // a reconnection may replay the last transaction
}

var variants = []string{"foos/1", "foos/2", "foos/3", "bars/a", "bars/b"}

func newCluster(t testing.TB, pg *pgtest.Server, size int) *cluster {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	c := &cluster{t: t, pg: pg, pool: pool, fills: &fills{n: map[string]int{}}}
	m := node.LocalMembership()
	m.ProbeInterval = 500 * time.Millisecond
	m.ProbeTimeout = 250 * time.Millisecond
	m.SuspicionMult = 4
	for i := range size {
		name := fmt.Sprintf("n%d", i+1)
		cfg := node.Config{Name: name, Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", Membership: m, Memory: 32 << 20,
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
		if len(c.nodes) > 0 {
			cfg.Join = []string{c.nodes[0].GossipAddr()}
		}
		n, err := node.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.register(n)
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		if err := n.WaitReady(wctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		c.nodes = append(c.nodes, n)
		t.Cleanup(func() { n.Close() })
	}
	waitFor(t, 20*time.Second, "the ring to agree", func() bool {
		for _, n := range c.nodes {
			if r := n.Ring(); r == nil || r.Len() != size || n.Owner("source/main") != c.nodes[0].Owner("source/main") {
				return false
			}
		}
		return true
	})
	for _, n := range c.nodes {
		c.startSource(n)
	}
	return c
}

func (c *cluster) register(n *node.Node) {
	t := c.t
	_, err := n.Cache().Register(worker.Config{Label: "foos", Getter: worker.GetterFunc(func(ctx context.Context, a worker.Args) (worker.Value, error) {
		c.fills.add(fmt.Sprintf("foos/%v", a["attr1"]))
		var cnt, sum int64
		err := c.pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(val), 0) FROM foo WHERE attr1 = $1", a["attr1"]).Scan(&cnt, &sum)
		return worker.Value{Data: fmt.Appendf(nil, "%d/%d", cnt, sum)}, err
	})})
	if err != nil {
		t.Fatal(err)
	}
	_, err = n.Cache().Register(worker.Config{Label: "bars", Getter: worker.GetterFunc(func(ctx context.Context, a worker.Args) (worker.Value, error) {
		c.fills.add(fmt.Sprintf("bars/%v", a["kind"]))
		var cnt, sum int64
		err := c.pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(val), 0) FROM bar WHERE kind = $1", a["kind"]).Scan(&cnt, &sum)
		return worker.Value{Data: fmt.Appendf(nil, "%d/%d", cnt, sum)}, err
	})})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.RegisterRules("Foo", map[string]invalidation.Rule{"foos": {Args: []string{"attr1"}}}); err != nil {
		t.Fatal(err)
	}
	if err := n.RegisterRules("Bar", map[string]invalidation.Rule{"bars": {Args: []string{"kind"}}}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) startSource(n *node.Node) *pgsource.Source {
	src, err := pgsource.New(pgsource.Config{
		Name: "main", URL: c.pg.URL, Tables: map[string]string{"foo": "Foo", "public.bar": "Bar"},
		Labels:   map[string][]string{"Foo": {"foos"}, "Bar": {"bars"}},
		Apply:    n.InvalidateEvent,
		Active:   func() bool { return n.Ready() && n.Owner("source/main") == n.Name() },
		Consumer: func() string { return n.Owner("source/main") },
		Self:     n.Name(), MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
		Logger: slog.New(slog.NewTextHandler(testWriter{c.t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", n.Name()),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx) }()
	c.t.Cleanup(func() { cancel(); <-done })
	c.sources = append(c.sources, src)
	c.cancels = append(c.cancels, cancel)
	return src
}

// consumer returns the source that consumes now.
func (c *cluster) consumer() *pgsource.Source {
	for _, s := range c.sources {
		if s.Status().State == pgsource.StateStreaming {
			return s
		}
	}
	return nil
}

func (c *cluster) transactions() uint64 {
	var n uint64
	for _, s := range c.sources {
		n += s.Status().Transactions
	}
	return n
}

func argsOf(v string) (string, worker.Args) {
	label, val, _ := strings.Cut(v, "/")
	if label == "foos" {
		var i int
		fmt.Sscan(val, &i)
		return label, worker.Args{"attr1": i}
	}
	return label, worker.Args{"kind": val}
}

// truth is the value of a variant in the database now.
func (c *cluster) truth(v string) string {
	label, a := argsOf(v)
	var cnt, sum int64
	q := "SELECT count(*), coalesce(sum(val), 0) FROM foo WHERE attr1 = $1"
	arg := a["attr1"]
	if label == "bars" {
		q, arg = "SELECT count(*), coalesce(sum(val), 0) FROM bar WHERE kind = $1", a["kind"]
	}
	if err := c.pool.QueryRow(context.Background(), q, arg).Scan(&cnt, &sum); err != nil {
		c.t.Fatal(err)
	}
	return fmt.Sprintf("%d/%d", cnt, sum)
}

// read returns what node n serves for variant v.
func read(t testing.TB, n *node.Node, v string) string {
	t.Helper()
	label, a := argsOf(v)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, _, err := n.Get(ctx, label, a, worker.Settings{})
	if err != nil {
		t.Fatalf("%s: get %s: %v", n.Name(), v, err)
	}
	return string(e.Value)
}

// warm reads every variant on every node, so each is cached on its owner
// and as a near-cache copy elsewhere.
func (c *cluster) warm() {
	for _, n := range c.nodes {
		for _, v := range variants {
			read(c.t, n, v)
		}
	}
}

// check runs one transaction and checks that exactly the variants in
// want were refreshed, each once, and that every node then serves the
// database's values.
func (c *cluster) check(what string, run func(), want ...string) {
	t := c.t
	t.Helper()
	c.warm()
	before := c.fills.snapshot()
	tx := c.transactions()
	// Any transaction applied with a commit past this position is this
	// one (a replay after a reconnection is not).
	var from pglogrepl.LSN
	var lsn string
	if err := c.pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	from, _ = pglogrepl.ParseLSN(lsn)
	run()
	waitFor(t, 30*time.Second, what+": the transaction applied", func() bool {
		for _, s := range c.sources {
			if s.Status().LastAppliedPosition > uint64(from) {
				return true
			}
		}
		return false
	})
	after := c.fills.snapshot()
	for _, v := range variants {
		d := after[v] - before[v]
		exp := 0
		for _, w := range want {
			if w == v {
				exp = 1
			}
		}
		// After a Postgres restart the slot may resume from an older
		// position than the one last reported (Postgres 15 keeps a logical
		// slot's confirmed position on disk only at checkpoints): replayed
		// transactions may refresh more, never less.
		if d != exp && !(c.replays && d > exp) {
			t.Errorf("%s: %s refreshed %d times, want %d", what, v, d, exp)
		}
	}
	// One event per transaction; after a reconnection the consumer may
	// replay the last one (its event ID makes the members skip it).
	if got := c.transactions() - tx; got != 1 && !c.replays {
		t.Errorf("%s: %d transactions applied, want 1", what, got)
	}
	for _, n := range c.nodes {
		for _, v := range variants {
			if got, want := read(t, n, v), c.truth(v); got != want {
				t.Errorf("%s: %s serves %s = %s, the database has %s", what, n.Name(), v, got, want)
			}
		}
	}
}

func TestChangesRefreshExactlyTheAffectedVariants(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec(schema)
	c := newCluster(t, pg, 3)
	waitFor(t, 30*time.Second, "a consumer streaming", func() bool { return c.consumer() != nil })
	bulk := make([]string, 0, 1000)
	for i := range 1000 {
		bulk = append(bulk, fmt.Sprintf("(3, %d)", i))
	}
	c.check("insert", func() { pg.Exec("INSERT INTO foo (attr1, val) VALUES (1, 5)") }, "foos/1")
	c.check("update moving a row", func() { pg.Exec("UPDATE foo SET attr1 = 2 WHERE val = 5") }, "foos/1", "foos/2")
	c.check("delete", func() { pg.Exec("DELETE FROM foo WHERE val = 5") }, "foos/2")
	c.check("insert 1,000 rows", func() { pg.Exec("INSERT INTO foo (attr1, val) VALUES " + strings.Join(bulk, ",")) }, "foos/3")
	c.check("bulk update of 1,000 rows", func() { pg.Exec("UPDATE foo SET val = val + 1 WHERE attr1 = 3 AND id > 3") }, "foos/3")
	c.check("raw SQL from psql", func() {
		if out, err := pg.Psql("UPDATE bar SET val = val + 1 WHERE kind = 'a'"); err != nil {
			t.Fatalf("psql: %v: %s", err, out)
		}
	}, "bars/a")
	c.check("a transaction on two tables", func() {
		pg.Exec("BEGIN; INSERT INTO foo (attr1, val) VALUES (1, 7); UPDATE bar SET val = val + 1 WHERE kind = 'b'; COMMIT")
	}, "foos/1", "bars/b")
	c.check("TOAST-unchanged column", func() {
		pg.Exec("UPDATE foo SET note = repeat('x', 10000) WHERE id = 1")
	}, "foos/1")
	c.check("update leaving the TOASTed column alone", func() { pg.Exec("UPDATE foo SET attr1 = 2 WHERE id = 1") }, "foos/1", "foos/2")
	c.check("a table no source maps", func() {
		pg.Exec("BEGIN; INSERT INTO baz (kind) VALUES ('x'); UPDATE bar SET val = val + 1 WHERE kind = 'a'; COMMIT")
	}, "bars/a")

	c.check("a transaction of 60,000 rows: every variant of the model", func() {
		pg.Exec("INSERT INTO foo (attr1, val) SELECT 3, g FROM generate_series(1, 60000) g")
	}, "foos/1", "foos/2", "foos/3")
	c.check("truncate: every variant of the model", func() {
		pg.Exec("BEGIN; TRUNCATE bar; INSERT INTO bar (kind, val) VALUES ('a', 9); COMMIT")
	}, "bars/a", "bars/b")

	st := c.consumer().Status()
	if st.LastAppliedLSN == "" || st.Consumer == "" || st.Transactions == 0 || st.Changes < 62000 {
		t.Errorf("consumer status %+v", st)
	}
	for _, s := range c.sources {
		if s2 := s.Status(); s2.Consumer != st.Consumer {
			t.Errorf("%s names %q as the consumer, the consumer is %q", s2.Name, s2.Consumer, st.Consumer)
		}
	}
}

// TestDefaultIdentity: without REPLICA IDENTITY FULL, an update carries
// no old row; the source warns at start, and the old variant the row left
// is covered by refreshing every variant of the label.
func TestDefaultIdentity(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec(schema + "ALTER TABLE foo REPLICA IDENTITY DEFAULT;")
	c := newCluster(t, pg, 1)
	waitFor(t, 30*time.Second, "a consumer streaming", func() bool { return c.consumer() != nil })
	st := c.consumer().Status()
	if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "public.foo has REPLICA IDENTITY DEFAULT") {
		t.Errorf("warnings %q", st.Warnings)
	}
	c.check("update under the default identity", func() { pg.Exec("UPDATE foo SET attr1 = 2 WHERE attr1 = 1") },
		"foos/1", "foos/2", "foos/3")
}

// TestPostgresRestart: the consumer reconnects with backoff after
// Postgres stops and comes back, and resumes from the confirmed position:
// changes committed while it was away are applied.
func TestPostgresRestart(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec(schema)
	c := newCluster(t, pg, 3)
	waitFor(t, 30*time.Second, "a consumer streaming", func() bool { return c.consumer() != nil })
	c.check("before the restart", func() { pg.Exec("INSERT INTO foo (attr1, val) VALUES (1, 1)") }, "foos/1")
	c.replays = true
	pg.Stop("immediate")
	waitFor(t, 30*time.Second, "the source to notice", func() bool {
		for _, s := range c.sources {
			if s.Status().Errors > 0 {
				return true
			}
		}
		return false
	})
	pg.StartServer()
	c.pool.Reset() // the getters' connections died with the server
	c.check("after the restart", func() { pg.Exec("UPDATE foo SET attr1 = 3 WHERE val = 1") }, "foos/1", "foos/3")
}

// TestTakeover: the consumer stops (its node leaves); another node takes
// the slot over and every transaction committed meanwhile is applied.
func TestTakeover(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec(schema)
	c := newCluster(t, pg, 3)
	waitFor(t, 30*time.Second, "a consumer streaming", func() bool { return c.consumer() != nil })
	c.warm()
	first := c.consumer()
	var firstNode *node.Node
	for i, s := range c.sources {
		if s == first {
			firstNode = c.nodes[i]
			c.cancels[i]()
		}
	}
	firstNode.Close()
	for i := range 20 {
		pg.Exec(fmt.Sprintf("UPDATE foo SET val = val + 1 WHERE attr1 = %d", 1+i%3))
	}
	waitFor(t, 60*time.Second, "another node consuming", func() bool {
		s := c.consumer()
		return s != nil && s != first
	})
	waitFor(t, 60*time.Second, "every change applied", func() bool {
		for _, n := range c.nodes {
			if n == firstNode {
				continue
			}
			for _, v := range variants[:3] {
				if read(t, n, v) != c.truth(v) {
					return false
				}
			}
		}
		return true
	})
}

// TestMaxLag: a slot further behind than max_lag is not replayed: every
// label of the source's models is refreshed once and the slot moves on.
func TestMaxLag(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec(schema)
	pg.Exec("SELECT pg_create_logical_replication_slot('cachenode', 'pgoutput')")
	for range 50 {
		pg.Exec("UPDATE foo SET val = val + 1")
	}
	pg.Exec("INSERT INTO bar (kind, val) SELECT 'a', g FROM generate_series(1, 20000) g")
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var n int
	var got []string
	src, err := pgsource.New(pgsource.Config{Name: "lag", URL: pg.URL, Tables: map[string]string{"foo": "Foo", "bar": "Bar"},
		Labels: map[string][]string{"Foo": {"foos"}, "Bar": {"bars"}}, MaxLag: 64 << 10,
		Apply: func(ctx context.Context, id string, reqs []invalidation.Request) (invalidation.Result, error) {
			n++
			for _, r := range reqs {
				got = append(got, r.Label+r.Model)
			}
			return invalidation.Result{Nodes: 1}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); src.Run(rctx) }()
	waitFor(t, 30*time.Second, "streaming", func() bool { return src.Status().State == pgsource.StateStreaming })
	cancel()
	<-done
	st := src.Status()
	if st.FullInvalidations != 1 || n != 1 || strings.Join(got, ",") != "bars,foos" {
		t.Errorf("full invalidations %d, applications %d of %v; want one of bars,foos", st.FullInvalidations, n, got)
	}
}

func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	if os.Getenv("PGSOURCE_TEST_LOGS") != "" {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
