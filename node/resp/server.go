// Package resp serves the cached reads and the invalidations of one
// cachenode node over RESP, the protocol of Redis, so that every Redis
// client, tool and dashboard can talk to it: RESP2 and RESP3 (HELLO),
// pipelining, and client-side caching (CLIENT TRACKING: the node pushes
// "invalidate" for a key a tracking client read once the key is
// invalidated anywhere in the cluster, refreshed, past its freshness, or
// owned by another member).
//
// A key is the path-and-query form of the HTTP read: GET "items?id=1"
// answers what GET /v1/cache/items?id=1 answers, with the same arguments,
// "_" overrides, limits and errors (the HTTP code words: -ERR
// unknown_worker ..., -ERR origin_error ...). DEL and UNLINK invalidate
// keys, CN.INVALIDATE takes the body of POST /v1/invalidate; both need
// AUTH with the admin token when the node has one, as POST /v1/invalidate
// needs it. Writes (SET and the like) are refused: a key is filled by its
// worker.
//
// Nothing here is process-wide: several servers can run in one process.
package resp

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/node/httpapi"
)

// Defaults of Config.
const (
	DefaultMaxConns     = 10000
	DefaultIdleTimeout  = 5 * time.Minute
	DefaultWriteTimeout = 10 * time.Second
)

// Config configures a Server. New copies it.
type Config struct {
	// Node is the node whose reads and invalidations are served. Required.
	Node *node.Node
	// Token, when not empty, is the admin token: AUTH [user] TOKEN gives a
	// connection the right to invalidate (DEL, UNLINK, CN.INVALIDATE) and
	// the overrides reserved to the admin, as the bearer token does on
	// HTTP. Reads need no AUTH. Default "": no guard.
	Token string
	// Invalidator applies DEL, UNLINK and CN.INVALIDATE. Default: Node.
	Invalidator httpapi.Invalidator
	// Limits bound one command. Defaults: see Limits.
	Limits Limits
	// MaxConns bounds the connections served at once; a connection over
	// it is answered -ERR max number of clients reached and closed.
	// Default DefaultMaxConns.
	MaxConns int
	// IdleTimeout closes a connection that sent nothing for that long
	// (not one subscribed to invalidation messages). Default
	// DefaultIdleTimeout; negative: never.
	IdleTimeout time.Duration
	// WriteTimeout bounds the write of one batch of replies or of one
	// invalidation message to a client that does not read. Default
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Slack is added to a read's longest legitimate wait to form its
	// deadline, as on HTTP (httpapi.ReadTimeout). Default 500ms.
	Slack time.Duration
	// TrackingTableMaxKeys bounds the tracking table. Default
	// DefaultTrackingTableMaxKeys.
	TrackingTableMaxKeys int
	// Logger receives connection errors. Default: discarded.
	Logger *slog.Logger
	// Tracer, when set, spans each read (a server span named
	// cachenode.resp.get) under the W3C traceparent that CN.TRACEPARENT
	// gave the connection for its next command, if any; the node's own
	// spans (node.Config.Tracer) follow it to the owner. Default nil.
	Tracer trace.TracerProvider
}

// ErrConfig is returned by New for an unusable Config.
var ErrConfig = errors.New("resp: invalid config")

// Server serves RESP for one node. It is safe for concurrent use.
type Server struct {
	cfg      Config
	node     *node.Node
	inv      httpapi.Invalidator
	log      *slog.Logger
	tokenSum [sha256.Size]byte
	track    *tracker
	stop     func() // unregisters the OnDropped listener
	started  time.Time
	nextID   atomic.Int64
	stats    stats
	cmds     map[string]*command
	parsed   parseCache
	cmdNames []string     // sorted
	tracer   trace.Tracer // nil: no tracing

	mu struct {
		sync.Mutex
		conns  map[int64]*conn
		lns    map[net.Listener]struct{}
		closed bool
	}
	wg sync.WaitGroup
}

type stats struct {
	connections    atomic.Int64 // accepted
	rejected       atomic.Int64 // over MaxConns
	commands       atomic.Int64
	hits, misses   atomic.Int64
	errors         atomic.Int64
	trackingPushes atomic.Int64 // keys invalidated to tracking clients
}

// New builds the server of cfg.Node and registers its tracking table as a
// listener of the node's dropped keys (node.Node.OnDropped).
func New(cfg Config) (*Server, error) {
	if cfg.Node == nil {
		return nil, errors.Join(ErrConfig, errors.New("resp: node is required"))
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConns < 0 {
		return nil, errors.Join(ErrConfig, errors.New("resp: max connections must be > 0"))
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Slack == 0 {
		cfg.Slack = 500 * time.Millisecond
	}
	if cfg.TrackingTableMaxKeys <= 0 {
		cfg.TrackingTableMaxKeys = DefaultTrackingTableMaxKeys
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Invalidator == nil {
		cfg.Invalidator = cfg.Node
	}
	s := &Server{cfg: cfg, node: cfg.Node, inv: cfg.Invalidator, log: cfg.Logger.With("node", cfg.Node.Name(), "front", "resp"),
		started: time.Now()}
	s.tokenSum = sha256.Sum256([]byte(cfg.Token))
	if cfg.Tracer != nil {
		s.tracer = cfg.Tracer.Tracer("github.com/cachenode/cachenode/node/resp")
	}
	s.cmds = commandTable()
	for name := range s.cmds {
		s.cmdNames = append(s.cmdNames, name)
	}
	slices.Sort(s.cmdNames)
	s.mu.conns = make(map[int64]*conn)
	s.mu.lns = make(map[net.Listener]struct{})
	s.track = newTracker(s, cfg.TrackingTableMaxKeys)
	s.stop = cfg.Node.OnDropped(s.track.dropped)
	return s, nil
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("resp: server closed")

// Serve accepts connections on ln until Close; it always returns an error
// (ErrServerClosed after Close).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.mu.lns[ln] = struct{}{}
	s.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.mu.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors, or a connection reset before
				// it was accepted: back off and go on.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept", "err", err)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.stats.connections.Add(1)
		c := s.newConn(nc)
		if c == nil {
			s.stats.rejected.Add(1)
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			nc.Write([]byte("-ERR max number of clients reached\r\n"))
			nc.Close()
			continue
		}
		go c.serve()
	}
}

// isTemporary reports accept errors worth retrying (out of file
// descriptors, a connection reset before accept).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// ListenAndServe listens on addr and serves.
func (s *Server) ListenAndServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Close stops the listeners, closes every connection and waits for their
// goroutines, and unregisters the tracking table from the node.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.mu.closed = true
	for ln := range s.mu.lns {
		ln.Close()
	}
	for _, c := range s.mu.conns {
		c.cancel() // ends the reads and invalidations it runs
		c.nc.Close()
	}
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
	return nil
}

// newConn registers a connection, or returns nil when MaxConns are served.
func (s *Server) newConn(nc net.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed || len(s.mu.conns) >= s.cfg.MaxConns {
		return nil
	}
	c := &conn{s: s, id: s.nextID.Add(1), nc: nc, created: time.Now()}
	c.rd = newReader(nc, s.cfg.Limits)
	c.bw = newBufWriter(nc)
	c.out.errs = &s.stats.errors
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.lastActive.Store(c.created.UnixNano())
	s.mu.conns[c.id] = c
	s.wg.Add(1)
	return c
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.mu.conns, c.id)
	s.mu.Unlock()
	s.track.forget(c.id)
	s.wg.Done()
}

func (s *Server) conn(id int64) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.conns[id]
}

func (s *Server) conns() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*conn, 0, len(s.mu.conns))
	for _, c := range s.mu.conns {
		out = append(out, c)
	}
	return out
}

// authorized compares a token with the admin token in constant time (both
// hashed first, so that neither its length nor a prefix leaks).
func (s *Server) authorized(token []byte) bool {
	sum := sha256.Sum256(token)
	return subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) == 1
}
