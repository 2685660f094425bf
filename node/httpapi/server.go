// Package httpapi serves the HTTP API of one cachenode node: cached reads,
// invalidations, the admin endpoints and page, Prometheus metrics and
// health checks, as the project's contract states them.
//
// A Server is an http.Handler; HTTPServer wraps it in an *http.Server with
// the timeouts and header limits a server facing the network needs. Every
// error answer is JSON {"error": "...", "code": "..."}.
//
// Nothing here is process-wide: each Server has its own mux and its own
// Prometheus registry, so several nodes can serve in one process.
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node"
)

// DefaultMaxBody is the default bound on request bodies: 1 MiB.
const DefaultMaxBody = 1 << 20

// DefaultMaxConcurrentRequests is the default cap on the reads and
// invalidations a server handles at once.
const DefaultMaxConcurrentRequests = 4096

// Invalidator applies invalidation requests to the cluster. *node.Node
// implements it once the node's invalidation lands; until then the server
// answers POST /v1/invalidate with 501.
type Invalidator interface {
	Invalidate(ctx context.Context, req invalidation.Request) (invalidation.Result, error)
}

// Config configures a Server. New copies it.
type Config struct {
	// Node is the node whose API is served. Required.
	Node *node.Node
	// Token, when not empty, is the bearer token that /admin/* and
	// POST /v1/invalidate require (compared in constant time). HTTP Basic
	// credentials whose password is the token are accepted too, so that a
	// person can open the admin page in a browser. Default "": no guard.
	Token string
	// Metrics collects the node's metrics and recent fills. Default: a new
	// Metrics with its own registry. Pass the one whose ObservePeerCall and
	// WrapGetter the node and its workers were built with.
	Metrics *Metrics
	// Invalidator applies POST /v1/invalidate. Default: Node, if it
	// implements Invalidator.
	Invalidator Invalidator
	// MaxBody bounds request bodies; larger ones are answered 413.
	// Default DefaultMaxBody (1 MiB).
	MaxBody int64
	// Slack is added to the longest wait a read can need (twice the wait
	// budget plus the worker's fill timeout) to form the read's deadline;
	// past it the answer is 504 fill_timeout. Default 500ms.
	Slack time.Duration
	// Insecure marks a server that listens beyond loopback without a
	// Token (its program allowed it, as cachenode's insecure: true does):
	// the admin page shows "insecure" and /metrics cachenode_insecure 1, as
	// for a node running open (node.Node.Insecure). Default false.
	Insecure bool
	// Logger receives request errors. Default: discarded.
	Logger *slog.Logger
	// MaxConcurrentRequests caps the reads and invalidations this server
	// handles at once; past it a request is answered at once with 503
	// overloaded and Retry-After: 1, before it costs anything (issue 21:
	// shed load before the node and its origins fall over). Admin, metrics
	// and health endpoints are not counted. Default 4096; negative: no
	// cap.
	MaxConcurrentRequests int
	// Tracer, when set, spans each read of GET /v1/cache (a server span
	// named cachenode.get) under the W3C traceparent of the request, if it
	// has one; the node's own spans (node.Config.Tracer) follow it to the
	// owner. Default nil: no spans, the header is not read.
	Tracer trace.TracerProvider
}

// Server serves the HTTP API of one node. It is safe for concurrent use.
type Server struct {
	cfg      Config
	node     *node.Node
	inv      Invalidator
	metrics  *Metrics
	mux      *http.ServeMux
	log      *slog.Logger
	tokenSum [sha256.Size]byte
	draining atomic.Bool
	inFlight atomic.Int64 // reads and invalidations being handled
	started  time.Time
	page     *template.Template
	sources  atomic.Pointer[func() []SourceStatus] // set by SetSources (sources.go)
	tracer   trace.Tracer                          // nil: no tracing
}

var _ http.Handler = (*Server)(nil)

// ErrConfig is returned by New for an unusable Config.
var ErrConfig = errors.New("httpapi: invalid config")

// New builds the server of cfg.Node.
func New(cfg Config) (*Server, error) {
	if cfg.Node == nil {
		return nil, errors.Join(ErrConfig, errors.New("httpapi: node is required"))
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxBody < 0 {
		return nil, errors.Join(ErrConfig, errors.New("httpapi: max_body must be > 0"))
	}
	if cfg.Slack == 0 {
		cfg.Slack = 500 * time.Millisecond
	}
	if cfg.MaxConcurrentRequests == 0 {
		cfg.MaxConcurrentRequests = DefaultMaxConcurrentRequests
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.Invalidator == nil {
		if inv, ok := any(cfg.Node).(Invalidator); ok {
			cfg.Invalidator = inv
		}
	}
	s := &Server{cfg: cfg, node: cfg.Node, inv: cfg.Invalidator, metrics: cfg.Metrics,
		mux: http.NewServeMux(), log: cfg.Logger.With("node", cfg.Node.Name()), started: time.Now(),
		page: newPageTemplate()}
	s.tokenSum = sha256.Sum256([]byte(cfg.Token))
	if cfg.Tracer != nil {
		s.tracer = cfg.Tracer.Tracer("github.com/cachenode/cachenode/node/httpapi")
	}
	s.metrics.attach(cfg.Node)
	s.metrics.attachSecurity(s)
	s.routes()
	return s, nil
}

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Drain makes /readyz answer 503 from now on, so that load balancers stop
// sending requests while the process shuts down.
func (s *Server) Drain() { s.draining.Store(true) }

// ServeHTTP implements http.Handler. Every answer carries
// X-Content-Type-Options: nosniff: cached values are bytes of an origin,
// served on the origin of the admin page, and a browser must not read one
// as HTML or script because it looks like one.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

// HTTPServer returns an *http.Server for addr serving s, with the timeouts
// and limits of a server facing the network: 5 s to read the headers,
// 30 s to read a body, 2 minutes idle keep-alive, 64 KiB of headers. There
// is no write timeout: reads are bounded by their own deadline.
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

func (s *Server) routes() {
	m := s.mux
	m.Handle("/v1/cache/{label}", s.route("cache", "GET", s.capped(s.handleCache)))
	m.Handle("/v1/invalidate", s.route("invalidate", "POST", s.capped(s.guard(s.handleInvalidate))))
	m.Handle("/admin/{$}", s.route("admin_page", "GET", s.guard(s.handlePage)))
	m.Handle("/admin", http.RedirectHandler("/admin/", http.StatusMovedPermanently))
	m.Handle("/admin/ring", s.route("admin_ring", "GET", s.guard(s.handleRing)))
	m.Handle("/admin/workers", s.route("admin_workers", "GET", s.guard(s.handleWorkers)))
	m.Handle("/admin/records", s.route("admin_records", "GET", s.guard(s.handleRecords)))
	m.Handle("/admin/", s.route("admin_other", "", s.guard(notFound)))
	m.Handle("/metrics", s.route("metrics", "GET", s.metrics.handler().ServeHTTP))
	m.Handle("/healthz", s.route("healthz", "GET", s.handleHealth))
	m.Handle("/readyz", s.route("readyz", "GET", s.handleReady))
	m.Handle("/", s.route("other", "", notFound))
}

// route checks the method (GET also allows HEAD), counts the request in the
// metrics and runs h.
func (s *Server) route(name, method string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		defer func() { s.metrics.observeRequest(name, rw.code, time.Since(start)) }()
		if method != "" && r.Method != method && !(method == "GET" && r.Method == "HEAD") {
			allow := method
			if method == "GET" {
				allow = "GET, HEAD"
			}
			rw.Header().Set("Allow", allow)
			writeError(rw, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here; use "+allow)
			return
		}
		h(rw, r)
	})
}

// capped sheds the requests past MaxConcurrentRequests with a fast 503:
// a node that queues without bound only answers later what it cannot
// answer now, and holds memory and origin slots meanwhile.
func (s *Server) capped(h http.HandlerFunc) http.HandlerFunc {
	limit := int64(s.cfg.MaxConcurrentRequests)
	if limit < 0 {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if s.inFlight.Add(1) > limit {
			s.inFlight.Add(-1)
			s.metrics.shed.Inc()
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "overloaded", "the node is handling too many requests; retry later")
			return
		}
		defer s.inFlight.Add(-1)
		h(w, r)
	}
}

// guard requires the token, when one is configured.
func (s *Server) guard(h http.HandlerFunc) http.HandlerFunc {
	if s.cfg.Token == "" {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cachenode", Basic realm="cachenode admin"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
			return
		}
		h(w, r)
	}
}

// admin reports whether r carries the admin token. With no token
// configured nobody is the admin: the overrides reserved to it need the
// worker's overrides: open.
func (s *Server) admin(r *http.Request) bool {
	return s.cfg.Token != "" && s.authorized(r)
}

// authorized compares the request's credentials with the token in constant
// time: both sides are hashed first, so neither the length nor a prefix of
// the token leaks through timing.
func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	var got string
	switch {
	case len(h) > 7 && strings.EqualFold(h[:7], "bearer "):
		got = strings.TrimSpace(h[7:])
	case len(h) > 6 && strings.EqualFold(h[:6], "basic "):
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h[6:]))
		if err != nil {
			return false
		}
		_, pass, ok := strings.Cut(string(b), ":")
		if !ok {
			return false
		}
		got = pass
	default:
		return false
	}
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) == 1
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "node": s.node.Name()})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.draining.Load():
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "the node is shutting down")
	case !s.node.Ready():
		writeError(w, http.StatusServiceUnavailable, "not_ready", "the node has not joined the cluster yet")
	default:
		// Degraded records do not make a node unready: it serves every
		// read and fill from memory (see RecordsInfo).
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "node": s.node.Name(), "records": s.recordsInfo().State})
	}
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
}

// statusWriter remembers the status code for the metrics.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
