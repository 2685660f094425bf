package peer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Handler answers the requests of a Server.
type Handler interface {
	// HandlePeer answers one request. ctx expires at the caller's deadline
	// (as sent in the request), and is cancelled when the caller gives up,
	// when its connection breaks, and when the server closes; the result of a
	// request whose ctx has ended is not sent. payload belongs to the
	// handler. A returned error reaches the caller as a *RemoteError: with
	// its code if err is or wraps a *RemoteError, else with code "internal".
	// HandlePeer is called concurrently, from one goroutine per request.
	HandlePeer(ctx context.Context, op byte, payload []byte) ([]byte, error)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, op byte, payload []byte) ([]byte, error)

// HandlePeer calls f.
func (f HandlerFunc) HandlePeer(ctx context.Context, op byte, payload []byte) ([]byte, error) {
	return f(ctx, op, payload)
}

var _ Handler = HandlerFunc(nil)

// FastHandler is a Handler that can answer some requests at once, in the
// goroutine that reads their connection: no goroutine is started for them,
// and the answers to the requests that one read brought in leave together in
// one write.
type FastHandler interface {
	Handler
	// HandlePeerFast answers a request from memory, or reports false to
	// have HandlePeer answer it in a goroutine of its own, as usual. It runs
	// in the connection's read loop, so it must never block: no I/O, no
	// waiting for another goroutine (a short mutex is fine). It appends the
	// response payload to dst and returns the extended slice; when it
	// reports false, what it returns is ignored. payload is valid only during
	// the call (HandlePeer receives a copy). A panic is recovered and
	// answered as one in HandlePeer is. A request answered here cannot be
	// cancelled: it is over before the next frame is read.
	HandlePeerFast(dst []byte, op byte, payload []byte) (resp []byte, ok bool)
}

// ServerStats are the counters of a Server since it was created.
type ServerStats struct {
	Accepted       uint64 // connections accepted
	Conns          int    // connections open now (handshake done)
	Requests       uint64 // requests received
	HandlerErrors  uint64 // requests answered with an error (panics included)
	Canceled       uint64 // requests whose caller sent a cancel frame
	ProtocolErrors uint64 // connections closed for a malformed hello or frame
	AuthFailures   uint64 // connections rejected by the key handshake
	HandshakeFails uint64 // other failed handshakes: timeout, TLS, broken connection
	// Refused counts the connections closed at once because MaxConns or
	// MaxConnsPerIP was reached (not counted in Accepted).
	Refused uint64
	// IdleClosed counts the connections closed after IdleTimeout without
	// a frame.
	IdleClosed uint64
}

type serverCounters struct {
	accepted, requests, handlerErrors, canceled  atomic.Uint64
	protocolErrors, authFailures, handshakeFails atomic.Uint64
	refused, idleClosed                          atomic.Uint64
	conns                                        atomic.Int64
}

// Server answers peer requests on the listeners given to Serve.
//
// Lifecycle: NewServer, then Serve (any number of listeners, each from its
// own goroutine), then Close, which stops everything and waits for it. Close
// is safe to call more than once.
type Server struct {
	cfg  ServerConfig
	h    Handler
	ring [][]byte // Key and Keys, primary first; nil without a key
	warn *warnLimiter

	// ctx is the parent of every handler's context; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	// wg counts the connection goroutines; each waits for its handlers.
	wg    sync.WaitGroup
	once  sync.Once
	stats serverCounters

	mu struct {
		sync.Mutex
		closed    bool
		listeners map[net.Listener]struct{}
		conns     map[*serverConn]struct{}
		perIP     map[string]int // open connections by remote IP
	}
}

// NewServer returns a Server that answers requests with h. It fails if cfg
// is invalid; the error names the field.
func NewServer(cfg ServerConfig, h Handler) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("peer: NewServer: nil Handler")
	}
	s := &Server{cfg: cfg, h: h, ring: keyring(cfg.Key, cfg.Keys), warn: newWarnLimiter(warnEvery)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mu.listeners = make(map[net.Listener]struct{})
	s.mu.conns = make(map[*serverConn]struct{})
	s.mu.perIP = make(map[string]int)
	return s, nil
}

// Serve accepts connections on ln and serves them until Close, then returns
// nil. It returns ErrClosed at once (closing ln) if the Server is already
// closed, and the listener's error if accepting fails otherwise. Serve
// takes ownership of ln: Close closes it.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrClosed
	}
	s.mu.listeners[ln] = struct{}{}
	s.mu.Unlock()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			// Out of file descriptors and the like: wait and retry, as
			// net/http does, rather than give up the listener.
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.cfg.Logger.Warn("peer: accept", "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
				case <-s.ctx.Done():
				}
				continue
			}
			s.mu.Lock()
			delete(s.mu.listeners, ln)
			s.mu.Unlock()
			return fmt.Errorf("peer: accept: %w", err)
		}
		backoff = 0
		sc := &serverConn{s: s, nc: nc, ip: remoteIP(nc)}
		s.mu.Lock()
		if s.mu.closed {
			s.mu.Unlock()
			_ = nc.Close()
			return nil
		}
		if why := s.admitLocked(sc.ip); why != "" {
			s.mu.Unlock()
			// Counted before the close, so that a client that sees its
			// connection closed also sees it counted.
			s.stats.refused.Add(1)
			_ = nc.Close()
			s.warnf(sc.ip, "peer: refused connection", "remote", nc.RemoteAddr(), "reason", why)
			continue
		}
		s.stats.accepted.Add(1)
		s.mu.conns[sc] = struct{}{}
		s.mu.perIP[sc.ip]++
		s.wg.Add(1)
		s.mu.Unlock()
		go sc.serve()
	}
}

// admitLocked returns why a new connection from ip is refused, or "".
func (s *Server) admitLocked(ip string) string {
	switch {
	case s.cfg.MaxConns > 0 && len(s.mu.conns) >= s.cfg.MaxConns:
		return fmt.Sprintf("%d connections open, the limit (max_conns)", len(s.mu.conns))
	case s.cfg.MaxConnsPerIP > 0 && s.mu.perIP[ip] >= s.cfg.MaxConnsPerIP:
		return fmt.Sprintf("%d connections open from this address, the limit (max_conns_per_ip)", s.mu.perIP[ip])
	}
	return ""
}

// warnf logs a warning about the remote ip, at most one per ip every
// warnEvery; the warnings held back meanwhile are counted in the next one.
func (s *Server) warnf(ip, msg string, args ...any) {
	held, ok := s.warn.allow(ip, time.Now())
	if !ok {
		return
	}
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	s.cfg.Logger.Warn(msg, args...)
}

// remoteIP is the IP address of a connection's remote end, without port.
func remoteIP(nc net.Conn) string {
	a := nc.RemoteAddr()
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if a == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.closed
}

// Close closes the listeners and every connection, cancels the contexts of
// running handlers, and waits until the handlers have returned and every
// goroutine of the Server has exited. Responses not yet sent are dropped, so
// their callers see ErrConnLost. A handler that ignores its context delays
// Close until it returns. Close is safe to call more than once; the later
// calls wait too.
func (s *Server) Close() error {
	var errs []error
	s.once.Do(func() {
		s.mu.Lock()
		s.mu.closed = true
		lns := s.mu.listeners
		conns := s.mu.conns
		s.mu.listeners, s.mu.conns = nil, nil
		s.mu.Unlock()

		for ln := range lns {
			if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		s.cancel()
		for sc := range conns {
			_ = sc.nc.Close()
		}
	})
	s.wg.Wait()
	return errors.Join(errs...)
}

// Stats returns a snapshot of the Server's counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Accepted:       s.stats.accepted.Load(),
		Conns:          int(s.stats.conns.Load()),
		Requests:       s.stats.requests.Load(),
		HandlerErrors:  s.stats.handlerErrors.Load(),
		Canceled:       s.stats.canceled.Load(),
		ProtocolErrors: s.stats.protocolErrors.Load(),
		AuthFailures:   s.stats.authFailures.Load(),
		HandshakeFails: s.stats.handshakeFails.Load(),
		Refused:        s.stats.refused.Load(),
		IdleClosed:     s.stats.idleClosed.Load(),
	}
}

// serverConn is one accepted connection: its goroutine (serve) reads the
// frames and starts one goroutine per request.
type serverConn struct {
	s  *Server
	nc net.Conn // the accepted connection, closed by Server.Close
	ip string   // the remote IP, its key in Server.mu.perIP

	conn    net.Conn // nc, or its TLS wrapper
	w       *frameWriter
	peerMax int           // the client's maximum frame size
	sem     chan struct{} // one token per running handler
	// lastDone is when the last handler returned (Unix nanoseconds).
	lastDone atomic.Int64
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // the handler goroutines

	mu struct {
		sync.Mutex
		// inflight maps the id of each running request to its context. A
		// handler that finds its own entry gone was cancelled by the
		// client and sends no response.
		inflight map[uint64]*reqCtx
	}
}

func (sc *serverConn) serve() {
	s := sc.s
	defer s.wg.Done()
	defer func() {
		_ = sc.nc.Close()
		s.mu.Lock()
		if _, ok := s.mu.conns[sc]; ok {
			delete(s.mu.conns, sc)
			if s.mu.perIP[sc.ip]--; s.mu.perIP[sc.ip] <= 0 {
				delete(s.mu.perIP, sc.ip)
			}
		}
		s.mu.Unlock()
	}()

	if err := sc.handshake(); err != nil {
		switch {
		case errors.Is(err, ErrAuth):
			s.stats.authFailures.Add(1)
			s.warnf(sc.ip, "peer: rejected connection", "remote", sc.nc.RemoteAddr(), "err", err)
		case errors.Is(err, ErrProtocol):
			s.stats.protocolErrors.Add(1)
			s.warnf(sc.ip, "peer: rejected connection", "remote", sc.nc.RemoteAddr(), "err", err)
		case errors.Is(err, io.EOF) || s.isClosed():
			// A connection closed before saying anything: a port probe, or
			// our own Close.
		default:
			s.stats.handshakeFails.Add(1)
			s.cfg.Logger.Debug("peer: handshake failed", "remote", sc.nc.RemoteAddr(), "err", err)
		}
		return
	}

	s.stats.conns.Add(1)
	defer s.stats.conns.Add(-1)
	sc.ctx, sc.cancel = context.WithCancel(s.ctx)
	sc.sem = make(chan struct{}, s.cfg.MaxConcurrentPerConn)
	sc.mu.inflight = make(map[uint64]*reqCtx)
	sc.w = newFrameWriter(sc.conn, s.cfg.WriteTimeout, func(error) { _ = sc.nc.Close() })
	flusherDone := make(chan struct{})
	go func() {
		defer close(flusherDone)
		sc.w.run()
	}()

	err := sc.readLoop()
	if err != nil && !errors.Is(err, io.EOF) && !s.isClosed() {
		switch {
		case errors.Is(err, errIdle):
			s.stats.idleClosed.Add(1)
			s.cfg.Logger.Debug("peer: closing idle connection", "remote", sc.nc.RemoteAddr(), "idle", s.cfg.IdleTimeout)
		case errors.Is(err, ErrProtocol):
			s.stats.protocolErrors.Add(1)
			s.cfg.Logger.Warn("peer: closing connection", "remote", sc.nc.RemoteAddr(), "err", err)
		default:
			s.cfg.Logger.Debug("peer: connection ended", "remote", sc.nc.RemoteAddr(), "err", err)
		}
	}
	// Order: stop the handlers (their results are no longer wanted), wait
	// for them so none writes to a closed writer unawares, then stop the
	// flusher.
	sc.cancel()
	_ = sc.nc.Close()
	sc.wg.Wait()
	sc.w.close(ErrClosed)
	<-flusherDone
}

// handshake wraps the connection in TLS if configured and runs the hello
// exchange, all under HandshakeTimeout.
func (sc *serverConn) handshake() error {
	s := sc.s
	sc.conn = sc.nc
	if err := sc.nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout)); err != nil {
		return err
	}
	if s.cfg.TLS != nil {
		tc := tls.Server(sc.nc, s.cfg.TLS)
		if err := tc.HandshakeContext(s.ctx); err != nil {
			return fmt.Errorf("peer: TLS handshake: %w", err)
		}
		sc.conn = tc
	}
	peerMax, err := serverHandshake(sc.conn, s.ring, s.cfg.MaxFrameSize)
	if err != nil {
		return err
	}
	sc.peerMax = peerMax
	return sc.nc.SetDeadline(time.Time{})
}

// readLoop reads frames until the connection fails or breaks the protocol.
func (sc *serverConn) readLoop() error {
	s := sc.s
	tr := &timedReader{r: sc.conn, nc: sc.nc, idle: s.cfg.IdleTimeout, active: sc.active}
	br := bufio.NewReaderSize(tr, readBufferSize)
	var hdr [headerSize]byte
	fast, _ := s.h.(FastHandler)
	// out holds the frames answered by fast, sent when no whole frame is
	// left in br: the answers to a batch of requests leave together, and
	// before the loop can block in a read.
	var out []byte
	flush := func() error {
		if len(out) == 0 {
			return nil
		}
		err := sc.w.writeNow(out)
		if cap(out) > keepBufferCap {
			out = nil
		}
		out = out[:0]
		return err
	}
	for {
		if !frameBuffered(br) {
			if err := flush(); err != nil {
				return err
			}
		}
		f, peeked, err := peekFrame(br, &hdr, s.cfg.MaxFrameSize)
		if err != nil {
			return err
		}
		switch f.kind {
		case kindRequest:
			s.stats.requests.Add(1)
			if fast != nil {
				var ok bool
				out, ok = sc.answerFast(fast, out, f)
				if ok {
					_, _ = br.Discard(peeked)
					continue
				}
			}
			if peeked > 0 {
				// The handler's goroutine outlives br's buffer.
				f.payload = bytes.Clone(f.payload)
				_, _ = br.Discard(peeked)
			}
			if err := sc.startHandler(f, tr.last, flush); err != nil {
				return err
			}
		case kindCancel:
			sc.mu.Lock()
			ctx, ok := sc.mu.inflight[f.id]
			delete(sc.mu.inflight, f.id)
			sc.mu.Unlock()
			if ok {
				s.stats.canceled.Add(1)
				ctx.cancel(context.Canceled)
			}
		default:
			return fmt.Errorf("%w: a client sent a frame of kind %d", ErrProtocol, f.kind)
		}
	}
}

// startHandler runs the handler of request f in its own goroutine, once
// fewer than MaxConcurrentPerConn run; last is the time of the read that
// completed f, flush sends the fast answers ready.
func (sc *serverConn) startHandler(f frame, last time.Time, flush func() error) error {
	// Back-pressure: with MaxConcurrentPerConn handlers running,
	// stop reading this connection until one returns (after
	// sending the answers that are ready).
	select {
	case sc.sem <- struct{}{}:
	default:
		if err := flush(); err != nil {
			return err
		}
		select {
		case sc.sem <- struct{}{}:
		case <-sc.ctx.Done():
			return sc.ctx.Err()
		}
	}
	ctx := &reqCtx{parent: sc.ctx}
	if f.budget > 0 {
		// The clock reading of the read that completed this frame
		// is later than the moment the client computed the budget,
		// so this deadline is never before the client's.
		ctx.deadline = last.Add(time.Duration(f.budget) * time.Millisecond)
	}
	sc.mu.Lock()
	_, dup := sc.mu.inflight[f.id]
	if !dup {
		sc.mu.inflight[f.id] = ctx
	}
	sc.mu.Unlock()
	if dup {
		<-sc.sem
		return fmt.Errorf("%w: request id %d is already in flight", ErrProtocol, f.id)
	}
	sc.wg.Add(1)
	go sc.handle(ctx, f)
	return nil
}

// active returns now while requests of the connection are running, else
// the time the last one ended (zero if none ran): the connection's activity
// for its idle deadline, besides the frames it reads.
func (sc *serverConn) active() time.Time {
	if len(sc.sem) > 0 {
		return time.Now()
	}
	return time.Unix(0, sc.lastDone.Load())
}

// handle runs the handler for one request and queues its answer.
func (sc *serverConn) handle(ctx *reqCtx, f frame) {
	defer sc.wg.Done()
	defer func() {
		sc.lastDone.Store(time.Now().UnixNano())
		<-sc.sem
	}()

	resp, err := sc.call(ctx, f)

	sc.mu.Lock()
	_, mine := sc.mu.inflight[f.id]
	delete(sc.mu.inflight, f.id)
	sc.mu.Unlock()
	// The caller no longer waits once ctx has ended: it sent a cancel, the
	// connection is going away, or the handler saw the deadline pass (the
	// budget is rounded up, so the caller's passed first). The clock is not
	// read again here: a response that races the deadline is sent and
	// dropped by the client.
	ended := ctx.ended()
	ctx.cancel(context.Canceled)
	if err != nil {
		sc.s.stats.handlerErrors.Add(1)
	}
	if !mine || ended {
		return
	}
	kind := byte(kindResponse)
	switch {
	case err != nil:
		kind, resp = kindError, encodeRemoteError(err)
	case len(resp) > sc.peerMax:
		kind, resp = kindError, encodeRemoteError(&RemoteError{
			Code:    CodeFrameTooLarge,
			Message: fmt.Sprintf("response of %d bytes, the client accepts %d", len(resp), sc.peerMax),
		})
	}
	// A failure here means the connection is broken; serve's read loop sees
	// it too and tears the connection down.
	_ = sc.w.write(sc.ctx, nil, kind, f.op, f.id, 0, resp, false)
}

// answerFast offers request f to h and, if h answers it, appends the
// response frame to out. A panic in h is answered as an internal error, as
// in call.
func (sc *serverConn) answerFast(h FastHandler, out []byte, f frame) (res []byte, ok bool) {
	start := len(out)
	defer func() {
		if r := recover(); r != nil {
			sc.s.cfg.Logger.Error("peer: handler panicked", "op", f.op, "panic", r)
			sc.s.stats.handlerErrors.Add(1)
			res = appendFrame(out[:start], kindError, f.op, f.id, 0,
				encodeRemoteError(&RemoteError{Code: CodeInternal, Message: "handler panicked"}))
			ok = true
		}
	}()
	// The id of an answered request is never entered in inflight, but it
	// must not be one of the running requests either.
	sc.mu.Lock()
	_, dup := sc.mu.inflight[f.id]
	sc.mu.Unlock()
	if dup {
		return out, false // the slow path reports the protocol error
	}
	// The header goes first, its length filled in once the payload is
	// there: the handler appends the response in place.
	var zero [headerSize]byte
	out = append(out, zero[:]...)
	resp, ok := h.HandlePeerFast(out, f.op, f.payload)
	if !ok || len(resp) < start+headerSize {
		return out[:start], false
	}
	n := len(resp) - start - headerSize
	if n > sc.peerMax {
		return appendFrame(resp[:start], kindError, f.op, f.id, 0, encodeRemoteError(&RemoteError{
			Code:    CodeFrameTooLarge,
			Message: fmt.Sprintf("response of %d bytes, the client accepts %d", n, sc.peerMax),
		})), true
	}
	putHeader(resp[start:start+headerSize], uint32(n), kindResponse, f.op, f.id, 0)
	return resp, true
}

// call runs the handler, turning a panic into an error so that one bad
// request cannot take the node down.
func (sc *serverConn) call(ctx context.Context, f frame) (resp []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			sc.s.cfg.Logger.Error("peer: handler panicked", "op", f.op, "panic", r)
			resp, err = nil, &RemoteError{Code: CodeInternal, Message: "handler panicked"}
		}
	}()
	return sc.s.h.HandlePeer(ctx, f.op, f.payload)
}

// errIdle ends a server connection that stayed idle for IdleTimeout.
var errIdle = errors.New("peer: idle connection")

// timedReader records the time of its last successful read: one clock
// reading per read syscall rather than one per request. It also keeps the
// idle deadline of the connection: a read deadline idle after the last
// activity, moved forward at most every idle/16 (one timer update per burst
// of reads, not per read), so a connection is closed between 15/16 idle and
// idle after its last frame. When the deadline passes, the other activity
// that active reports counts too: a client waiting for a long answer is not
// idle, and an answer is left idle to be sent before the connection closes.
type timedReader struct {
	r    io.Reader
	nc   net.Conn // whose read deadline is set
	idle time.Duration
	// active returns the time of the connection's latest activity other
	// than reads: now while requests run, else when the last one ended.
	active func() time.Time
	last   time.Time
	armed  time.Time // the activity time the deadline was set from
}

func (t *timedReader) Read(p []byte) (int, error) {
	for {
		if t.idle > 0 {
			if t.last.IsZero() {
				t.last = time.Now()
			}
			if t.last.Sub(t.armed) > t.idle/16 {
				if err := t.nc.SetReadDeadline(t.last.Add(t.idle)); err != nil {
					return 0, err
				}
				t.armed = t.last
			}
		}
		n, err := t.r.Read(p)
		if n > 0 {
			t.last = time.Now()
		}
		if err != nil && n == 0 && t.idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			if a := t.active(); time.Since(a) < t.idle {
				t.last = a
				t.armed = time.Time{} // re-arm from a
				continue
			}
			return 0, errIdle
		}
		return n, err
	}
}
