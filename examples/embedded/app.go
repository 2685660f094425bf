package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/node/httpapi"
	"github.com/cachenode/cachenode/worker"
)

// Config configures one instance of the service.
type Config struct {
	// Name is the instance's node name, unique in the cluster. Required.
	Name string
	// HTTP is the address of the service's API, which also serves the
	// node's HTTP API (/v1/cache, /admin/, /metrics, /healthz, /readyz).
	// Port 0 picks a free port. Default "127.0.0.1:8091".
	HTTP string
	// Gossip and Peer are the node's gossip and peer-transport addresses.
	// Defaults "127.0.0.1:7101" and "127.0.0.1:7102".
	Gossip, Peer string
	// Join lists gossip addresses of running instances. Empty: this
	// instance starts the cluster.
	Join []string
	// DB is the SQLite file every instance shares. Default "foos.db".
	DB string
	// Rows is how many Foos are generated when the database is new.
	// Default 5000.
	Rows int
	// Data is the node's Pebble directory for its created-cache records;
	// "" keeps them in memory. Default "".
	Data string
	// Membership is the node's failure-detection preset. Default
	// node.LocalMembership(): the instances of this example share a
	// machine. Use node.LANMembership() across machines.
	Membership node.Membership
	// Logger receives the logs. Default: discarded.
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		return c, errors.New("name is required")
	}
	if c.HTTP == "" {
		c.HTTP = "127.0.0.1:8091"
	}
	if c.Gossip == "" {
		c.Gossip = "127.0.0.1:7101"
	}
	if c.Peer == "" {
		c.Peer = "127.0.0.1:7102"
	}
	if c.DB == "" {
		c.DB = "foos.db"
	}
	if c.Rows == 0 {
		c.Rows = 5000
	}
	if c.Membership == (node.Membership{}) {
		c.Membership = node.LocalMembership()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Join = slices.Clone(c.Join)
	return c, nil
}

// App is one instance of the Foo service: a SQLite database, an embedded
// cachenode node with the two workers of the original README, and an HTTP
// API whose writes send the change events the Django models sent through
// their signals.
type App struct {
	cfg      Config
	log      *slog.Logger
	db       *store
	node     *node.Node
	api      *httpapi.Server
	allFoos  *worker.Typed[[]Foo]
	filtered *worker.Typed[[]Foo]
	queries  queryCounter
	srv      *http.Server
	ln       net.Listener
	served   chan error
}

// The workers' labels, as in the original README.
const (
	labelAll      = "all_foos"
	labelFiltered = "filtered_foos"
)

// New opens the database, builds and starts the node, and serves the API.
// The node joins the cluster in the background; see Ready.
func New(ctx context.Context, cfg Config) (*App, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, log: cfg.Logger.With("app", cfg.Name), served: make(chan error, 1)}
	a.queries.n = map[string]int{}
	if a.db, err = openStore(ctx, cfg.DB, cfg.Rows); err != nil {
		return nil, err
	}
	// Listen first: the node publishes the API's address with its real port.
	if a.ln, err = net.Listen("tcp", cfg.HTTP); err != nil {
		a.db.Close()
		return nil, fmt.Errorf("http: %w", err)
	}
	if err := a.startNode(); err != nil {
		a.ln.Close()
		a.db.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /foos", a.getAll)
	mux.HandleFunc("GET /foos/filter", a.getFiltered)
	mux.HandleFunc("GET /foos/{id}", a.getOne)
	mux.HandleFunc("POST /foos", a.create)
	mux.HandleFunc("PATCH /foos/{id}", a.update)
	mux.HandleFunc("DELETE /foos/{id}", a.delete)
	mux.HandleFunc("GET /stats", a.stats)
	mux.Handle("/", a.api) // /v1/cache, /v1/invalidate, /admin/, /metrics, /healthz, /readyz
	a.srv = a.api.HTTPServer(cfg.HTTP)
	a.srv.Handler = mux
	go func() { a.served <- a.srv.Serve(a.ln) }()
	return a, nil
}

// startNode builds the node, registers the workers and the rules, and
// starts it.
func (a *App) startNode() error {
	metrics := httpapi.NewMetrics()
	n, err := node.New(node.Config{
		Name:       a.cfg.Name,
		Gossip:     a.cfg.Gossip,
		Peer:       a.cfg.Peer,
		HTTP:       a.ln.Addr().String(),
		Join:       a.cfg.Join,
		Data:       a.cfg.Data,
		Membership: a.cfg.Membership,
		OnPeerCall: metrics.ObservePeerCall,
		Logger:     a.log,
	})
	if err != nil {
		return err
	}
	a.node = n
	fail := func(err error) error {
		n.Close()
		return err
	}

	// all_foos: every Foo. The original's
	//   CacheWorker(label="all_foos", structure_getter=get_all_foo_list, expires=100000)
	w, err := n.Cache().Register(worker.Config{
		Label:    labelAll,
		Getter:   metrics.WrapGetter(labelAll, worker.TypedGetter(a.loadAll)),
		Settings: worker.Settings{Expires: 100000 * time.Second},
	})
	if err != nil {
		return fail(err)
	}
	a.allFoos = worker.NewTyped[[]Foo](w)

	// filtered_foos: the Foos of given attr1 and attr2. The original's
	//   CacheWorker(label="filtered_foos", structure_getter=filter_foos, expires=100000)
	w, err = n.Cache().Register(worker.Config{
		Label:    labelFiltered,
		Getter:   metrics.WrapGetter(labelFiltered, worker.TypedGetter(a.loadFiltered)),
		Settings: worker.Settings{Expires: 100000 * time.Second},
	})
	if err != nil {
		return fail(err)
	}
	a.filtered = worker.NewTyped[[]Foo](w)

	// The original's automatic.register(Foo, {...}): any change of a Foo
	// refreshes all_foos; a Foo belongs to the filtered_foos variant of
	// its attr1 and attr2, and an update refreshes the variant it left
	// (outdated, from the old values) and the one it joined (newcomers,
	// from the new values). Variants that do not constrain an attribute
	// (no attr2, say) match every value of it.
	instance := func(rec map[string]any) invalidation.Match {
		return invalidation.Match{"attr1": {rec["attr1"]}, "attr2": {rec["attr2"]}}
	}
	if err := n.RegisterRules("Foo", map[string]invalidation.Rule{
		labelAll: {IsEmpty: true},
		labelFiltered: {
			Instance:  instance,
			Outdated:  func(old, _ map[string]any) invalidation.Match { return instance(old) },
			Newcomers: func(_, new map[string]any) invalidation.Match { return instance(new) },
		},
	}); err != nil {
		return fail(err)
	}
	if a.api, err = httpapi.New(httpapi.Config{Node: n, Metrics: metrics, Logger: a.log}); err != nil {
		return fail(err)
	}
	if err := n.Start(); err != nil {
		return fail(err)
	}
	return nil
}

// loadAll is the getter of all_foos.
func (a *App) loadAll(ctx context.Context, args worker.Args) ([]Foo, error) {
	a.queries.inc(labelAll, args)
	return a.db.All(ctx)
}

// loadFiltered is the getter of filtered_foos. Its arguments may have
// crossed the wire (a fill asked by another instance, a refresh from the
// stored record): integers arrive in any width, lists as []any.
func (a *App) loadFiltered(ctx context.Context, args worker.Args) ([]Foo, error) {
	a.queries.inc(labelFiltered, args)
	attr1, err := int64List(args["attr1"])
	if err != nil {
		return nil, fmt.Errorf("attr1: %w", err)
	}
	attr2, err := stringList(args["attr2"])
	if err != nil {
		return nil, fmt.Errorf("attr2: %w", err)
	}
	return a.db.Filter(ctx, attr1, attr2)
}

// Node returns the instance's node.
func (a *App) Node() *node.Node { return a.node }

// URL returns the base URL of the instance's API.
func (a *App) URL() string { return "http://" + a.ln.Addr().String() }

// Close stops the instance: readiness goes to 503, requests in flight
// finish, the node hands its hot entries over and leaves the cluster, and
// the database is closed. It returns the errors of every step.
func (a *App) Close() error {
	a.api.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(a.srv.Shutdown(ctx), a.node.Close(), a.db.Close())
}

// Done receives the HTTP server's error if it stops on its own.
func (a *App) Done() <-chan error { return a.served }

// queryCounter counts the database queries the getters of this instance
// ran, by cache key: the proof that a key is filled once for the cluster.
type queryCounter struct {
	mu sync.Mutex
	n  map[string]int // key → queries; guarded by mu
}

func (q *queryCounter) inc(label string, args worker.Args) {
	key, err := worker.KeyOf(label, args)
	if err != nil {
		key = label + "@?"
	}
	q.mu.Lock()
	q.n[key]++
	q.mu.Unlock()
}

func (q *queryCounter) snapshot() map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[string]int, len(q.n))
	for k, v := range q.n {
		out[k] = v
	}
	return out
}

// int64List reads an integer argument: absent, one value, or a list.
func int64List(v any) ([]int64, error) {
	if v == nil {
		return nil, nil
	}
	if l, ok := v.([]any); ok {
		out := make([]int64, 0, len(l))
		for _, e := range l {
			i, err := toInt64(e)
			if err != nil {
				return nil, err
			}
			out = append(out, i)
		}
		return out, nil
	}
	i, err := toInt64(v)
	return []int64{i}, err
}

func toInt64(v any) (int64, error) {
	switch x := v.(type) {
	case int:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint64:
		return int64(x), nil
	case string:
		return strconv.ParseInt(x, 10, 64)
	}
	return 0, fmt.Errorf("%v (%T) is not an integer", v, v)
}

// stringList reads a string argument: absent, one value, or a list.
func stringList(v any) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	if l, ok := v.([]any); ok {
		out := make([]string, 0, len(l))
		for _, e := range l {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%v (%T) is not a string", e, e)
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("%v (%T) is not a string", v, v)
	}
	return []string{s}, nil
}

// writeJSON answers v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code string, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error(), "code": code})
}
