package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ClientStats are the counters of a Client since it was created.
type ClientStats struct {
	Dials          uint64 // connections established (handshake done)
	DialErrors     uint64 // failed connection attempts, authentication failures included
	AuthFailures   uint64 // connection attempts rejected by the key handshake
	Conns          int    // connections open now
	ConnsLost      uint64 // connections that broke while open (not closed by this side)
	ProtocolErrors uint64 // connections closed because the server broke the protocol
	Calls          uint64 // calls made
	Canceled       uint64 // calls whose context ended before their response
	LateResponses  uint64 // responses that arrived after their caller gave up; dropped
}

type clientCounters struct {
	dials, dialErrors, authFailures, connsLost, protocolErrors atomic.Uint64
	calls, canceled, lateResponses                             atomic.Uint64
	conns                                                      atomic.Int64
}

// Client calls peers. It keeps up to ConnsPerAddr connections to each
// address, dialed when calls need them and redialed after a failure, and
// multiplexes any number of concurrent calls over them.
//
// Lifecycle: NewClient, then Call from any number of goroutines, CloseAddr
// when a peer leaves, and Close, which fails the calls in flight with
// ErrClosed and waits for the Client's goroutines. Close is safe to call more
// than once.
type Client struct {
	cfg  ClientConfig
	ring [][]byte // Key and Keys, primary first; nil without a key

	// ctx bounds every dial; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	// wg counts the dial goroutines and the reader and flusher goroutines
	// of every connection.
	wg      sync.WaitGroup
	once    sync.Once
	waiters sync.Pool // of *waiter
	timers  sync.Pool // of stopped *time.Timer, for CallBefore's deadlines
	stats   clientCounters

	mu struct {
		sync.RWMutex
		closed bool
		pools  map[string]*pool
	}
}

// NewClient returns a Client. It fails if cfg is invalid; the error names
// the field.
func NewClient(cfg ClientConfig) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, ring: keyring(cfg.Key, cfg.Keys)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.mu.pools = make(map[string]*pool)
	c.waiters.New = func() any { return &waiter{ch: make(chan struct{}, 1)} }
	c.timers.New = func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}
	return c, nil
}

// Call sends a request with op and payload to the server at addr and returns
// its response payload. ctx bounds the whole call: waiting for a connection,
// queueing the request and waiting for the response; its deadline is sent
// along so that the server's handler stops when the caller stops waiting.
// The payload is not retained after Call returns; the response belongs to
// the caller.
//
// Errors: ctx.Err() (wrapped) when ctx ends first, in which case a late
// response is dropped; a *RemoteError from the handler; ErrFrameTooLarge
// for a payload above the client's or the server's MaxFrameSize (nothing is
// sent); ErrConnLost when the connection broke during the call; ErrAuth when
// the key handshake failed; ErrClosed after Close; dial errors.
func (c *Client) Call(ctx context.Context, addr string, op byte, payload []byte) ([]byte, error) {
	return c.CallBefore(ctx, time.Time{}, addr, op, payload)
}

// CallBefore is Call with a deadline of its own besides ctx's (none when
// zero): the call ends at the earlier of the two, as if ctx had that
// deadline, and fails with context.DeadlineExceeded (wrapped). It spares
// the caller a context.WithDeadline, whose timer and channel cost as much
// as the rest of a call's allocations.
func (c *Client) CallBefore(ctx context.Context, deadline time.Time, addr string, op byte, payload []byte) ([]byte, error) {
	if d, ok := ctx.Deadline(); ok && !deadline.IsZero() && d.Before(deadline) {
		deadline = time.Time{} // ctx's own deadline comes first: it rules
	}
	c.stats.calls.Add(1)
	if len(payload) > c.cfg.MaxFrameSize {
		return nil, fmt.Errorf("peer: call %s op %d: %w: request of %d bytes, limit %d",
			addr, op, ErrFrameTooLarge, len(payload), c.cfg.MaxFrameSize)
	}
	if err := ctx.Err(); err != nil {
		c.stats.canceled.Add(1)
		return nil, fmt.Errorf("peer: call %s op %d: %w", addr, op, err)
	}
	// ended is the error of a call whose ctx ended or whose deadline passed.
	ended := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return context.DeadlineExceeded
		}
		return nil
	}
	// A connection can be dropped between the moment it is picked and the
	// moment the request is queued (the server went away, CloseAddr);
	// nothing was sent then, so it is safe to pick again, a few times.
	for attempt := 0; ; attempt++ {
		cc, err := c.conn(ctx, deadline, addr)
		if err != nil {
			if e := ended(); e != nil {
				c.stats.canceled.Add(1)
				err = e
			}
			return nil, fmt.Errorf("peer: call %s op %d: %w", addr, op, err)
		}
		resp, err := cc.call(ctx, deadline, op, payload)
		if ns, ok := err.(notSentError); ok {
			if attempt < 3 {
				continue
			}
			err = ns.err
		}
		if err != nil {
			var re *RemoteError
			if !errors.As(err, &re) {
				err = fmt.Errorf("peer: call %s op %d: %w", addr, op, err)
			}
			return nil, err
		}
		return resp, nil
	}
}

// notSentError is the error of a call that failed before its request was
// queued: nothing was sent, so the call may be retried on another
// connection.
type notSentError struct{ err error }

func (e notSentError) Error() string { return e.err.Error() }
func (e notSentError) Unwrap() error { return e.err }

// conn returns a connection to addr, dialing one if needed; the wait for a
// dial ends with ctx or at deadline (none when zero).
func (c *Client) conn(ctx context.Context, deadline time.Time, addr string) (*clientConn, error) {
	for {
		c.mu.RLock()
		closed := c.mu.closed
		p := c.mu.pools[addr]
		c.mu.RUnlock()
		if closed {
			return nil, ErrClosed
		}
		if p == nil {
			c.mu.Lock()
			if c.mu.closed {
				c.mu.Unlock()
				return nil, ErrClosed
			}
			if p = c.mu.pools[addr]; p == nil {
				p = &pool{c: c, addr: addr}
				p.mu.slots = make([]slot, c.cfg.ConnsPerAddr)
				c.mu.pools[addr] = p
			}
			c.mu.Unlock()
		}
		cc, err := p.get(ctx, deadline)
		if errors.Is(err, errPoolClosed) {
			continue // CloseAddr raced with us: start a fresh pool
		}
		return cc, err
	}
}

// CloseAddr closes the connections to addr, failing the calls in flight on
// them with ErrConnLost; use it when a peer leaves the cluster. A later Call
// to addr dials again.
func (c *Client) CloseAddr(addr string) {
	c.mu.Lock()
	p := c.mu.pools[addr]
	delete(c.mu.pools, addr)
	c.mu.Unlock()
	if p != nil {
		p.close()
	}
}

// Close closes every connection, fails the calls in flight with ErrClosed,
// and waits until the Client's goroutines have exited. Later calls fail with
// ErrClosed. Close is safe to call more than once; the later calls wait too.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.mu.closed = true
		pools := c.mu.pools
		c.mu.pools = nil
		c.mu.Unlock()
		c.cancel()
		for _, p := range pools {
			p.close()
		}
	})
	c.wg.Wait()
	return nil
}

func (c *Client) isClosed() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.mu.closed
}

// Stats returns a snapshot of the Client's counters.
func (c *Client) Stats() ClientStats {
	return ClientStats{
		Dials:          c.stats.dials.Load(),
		DialErrors:     c.stats.dialErrors.Load(),
		AuthFailures:   c.stats.authFailures.Load(),
		Conns:          int(c.stats.conns.Load()),
		ConnsLost:      c.stats.connsLost.Load(),
		ProtocolErrors: c.stats.protocolErrors.Load(),
		Calls:          c.stats.calls.Load(),
		Canceled:       c.stats.canceled.Load(),
		LateResponses:  c.stats.lateResponses.Load(),
	}
}

// errPoolClosed is returned by pool.get after CloseAddr or Close.
var errPoolClosed = errors.New("peer: pool closed")

// pool holds the connections to one address.
type pool struct {
	c    *Client
	addr string
	next atomic.Uint32 // round-robin cursor

	mu struct {
		sync.Mutex
		closed bool
		slots  []slot // ConnsPerAddr of them
	}
}

// slot is one connection position of a pool: empty, dialing, or connected.
type slot struct {
	conn *clientConn
	dial *dialing
}

// dialing is a dial in progress; done is closed when conn or err is set.
type dialing struct {
	done chan struct{}
	conn *clientConn
	err  error
}

// get returns a connection for one call. It takes the next slot round
// robin; if that slot has no connection it starts dialing one there, and
// meanwhile uses any other connected slot, or waits for the dial. So the
// pool fills up as calls come, at most one dial per slot at a time. The
// wait for a dial ends with ctx or at deadline (none when zero).
func (p *pool) get(ctx context.Context, deadline time.Time) (*clientConn, error) {
	i := int(p.next.Add(1) % uint32(p.c.cfg.ConnsPerAddr))
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return nil, errPoolClosed
	}
	s := &p.mu.slots[i]
	if s.conn != nil {
		cc := s.conn
		p.mu.Unlock()
		return cc, nil
	}
	if s.dial == nil {
		d := &dialing{done: make(chan struct{})}
		if !p.c.startDial(p, i, d) {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		s.dial = d
	}
	d := s.dial
	for j := range p.mu.slots {
		if cc := p.mu.slots[j].conn; cc != nil {
			p.mu.Unlock()
			return cc, nil
		}
	}
	p.mu.Unlock()
	var expired <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-d.done:
		return d.conn, d.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-expired:
		return nil, context.DeadlineExceeded
	}
}

// startDial starts the goroutine that dials slot i of p. The dial is bounded
// by DialTimeout and Close, not by the context of the call that started it,
// because other calls may wait for it too. It reports false if the Client
// is closed.
func (c *Client) startDial(p *pool, i int, d *dialing) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.mu.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		cc, err := c.dial(p.addr)
		var unwanted *clientConn
		p.mu.Lock()
		if p.mu.slots[i].dial == d {
			p.mu.slots[i].dial = nil
		}
		if err == nil && p.mu.closed {
			// CloseAddr or Close came first: nobody will use this one.
			err = errPoolClosed
			if c.isClosed() {
				err = ErrClosed
			}
			unwanted, cc = cc, nil
		}
		if err == nil {
			p.mu.slots[i].conn = cc
			cc.pool, cc.slot = p, i
		}
		d.conn, d.err = cc, err
		close(d.done)
		p.mu.Unlock()
		if unwanted != nil {
			// Never started and never in a slot: closing it is all.
			_ = unwanted.nc.Close()
		}
		if cc != nil {
			cc.start()
		}
	}()
	return true
}

// close closes the pool's connections and makes get fail.
func (p *pool) close() {
	p.mu.Lock()
	p.mu.closed = true
	var conns []*clientConn
	for i := range p.mu.slots {
		if cc := p.mu.slots[i].conn; cc != nil {
			conns = append(conns, cc)
			p.mu.slots[i].conn = nil
		}
	}
	p.mu.Unlock()
	err := fmt.Errorf("%w: closed by CloseAddr", ErrConnLost)
	if p.c.isClosed() {
		err = ErrClosed
	}
	for _, cc := range conns {
		cc.close(err)
	}
}

// drop empties the slot of a connection that has ended, so that the next
// call dials again.
func (p *pool) drop(cc *clientConn) {
	p.mu.Lock()
	if cc.slot < len(p.mu.slots) && p.mu.slots[cc.slot].conn == cc {
		p.mu.slots[cc.slot].conn = nil
	}
	p.mu.Unlock()
}

// dial establishes one connection to addr: TCP, TLS if configured, and the
// hello exchange, within DialTimeout.
func (c *Client) dial(addr string) (*clientConn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout)
	defer cancel()
	cc, err := c.dialConn(ctx, addr)
	if err != nil {
		c.stats.dialErrors.Add(1)
		if errors.Is(err, ErrAuth) {
			c.stats.authFailures.Add(1)
		}
		if c.isClosed() {
			err = ErrClosed
		}
		c.cfg.Logger.Debug("peer: dial failed", "addr", addr, "err", err)
		return nil, err
	}
	c.stats.dials.Add(1)
	return cc, nil
}

func (c *Client) dialConn(ctx context.Context, addr string) (*clientConn, error) {
	nc, err := c.cfg.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("peer: dial %s: %w", addr, err)
	}
	// The handshake blocks in reads and writes: the deadline bounds them,
	// and closing the connection interrupts them on Close.
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	conn := nc
	if c.cfg.TLS != nil {
		cfg := c.cfg.TLS
		if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
			cfg = cfg.Clone()
			if host, _, err := net.SplitHostPort(addr); err == nil {
				cfg.ServerName = host
			} else {
				cfg.ServerName = addr
			}
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("peer: dial %s: TLS handshake: %w", addr, err)
		}
		conn = tc
	}
	peerMax, err := clientHandshake(conn, c.ring, c.cfg.MaxFrameSize)
	if err == nil && !stop() {
		err = ctx.Err() // the connection was closed under us
	}
	if err == nil {
		err = nc.SetDeadline(time.Time{})
	}
	if err != nil {
		_ = nc.Close()
		if ctx.Err() != nil && !errors.Is(err, ErrAuth) {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("peer: dial %s: %w", addr, err)
	}
	cc := &clientConn{c: c, addr: addr, nc: nc, conn: conn, peerMax: peerMax}
	cc.mu.pending = make(map[uint64]*waiter)
	cc.w = newFrameWriter(conn, c.cfg.WriteTimeout, cc.close)
	return cc, nil
}

// waiter is where a call waits for its response. Waiters are pooled: the
// one who removes a waiter from clientConn.mu.pending (the reader delivering
// a response, the teardown failing it, or the caller giving up) is the only
// one who may signal it, so a recycled waiter never receives a stale signal.
type waiter struct {
	ch   chan struct{} // capacity 1
	resp []byte
	err  error
}

// clientConn is one established connection to a server.
type clientConn struct {
	c       *Client
	addr    string
	nc      net.Conn // the TCP connection
	conn    net.Conn // nc, or its TLS wrapper
	w       *frameWriter
	peerMax int
	pool    *pool // set before start
	slot    int
	nextID  atomic.Uint64
	// used is the time of the last call (Unix nanoseconds); idle fires to
	// retire the connection once it has been unused for IdleTimeout.
	used atomic.Int64
	idle *time.Timer

	closeOnce sync.Once
	mu        struct {
		sync.Mutex
		pending map[uint64]*waiter // calls waiting for a response, by id
		err     error              // set once the connection has ended
		cause   error              // why this side closed it, if it did
	}
}

// start launches the reader and the flusher goroutines, and the idle timer.
func (cc *clientConn) start() {
	cc.used.Store(time.Now().UnixNano())
	// The timer is set before it can fire, so retireIdle sees cc.idle.
	cc.idle = time.AfterFunc(time.Hour, cc.retireIdle)
	cc.idle.Stop()
	cc.idle.Reset(cc.c.cfg.IdleTimeout)
	cc.c.stats.conns.Add(1)
	cc.c.wg.Add(2)
	go func() {
		defer cc.c.wg.Done()
		cc.w.run()
	}()
	go func() {
		defer cc.c.wg.Done()
		cc.readLoop()
	}()
}

// close closes the connection; the reader then fails the pending calls
// with cause (the first cause given wins). The connection leaves its pool
// slot at once, so that new calls dial rather than pick a dying connection
// while the reader is still on its way to the teardown.
func (cc *clientConn) close(cause error) {
	cc.mu.Lock()
	if cc.mu.cause == nil {
		cc.mu.cause = cause
	}
	cc.mu.Unlock()
	_ = cc.nc.Close()
	if cc.pool != nil {
		cc.pool.drop(cc)
	}
}

// call sends one request and waits for its response, until ctx ends or
// deadline (none when zero) passes.
func (cc *clientConn) call(ctx context.Context, deadline time.Time, op byte, payload []byte) ([]byte, error) {
	if len(payload) > cc.peerMax {
		return nil, fmt.Errorf("%w: request of %d bytes, the server accepts %d", ErrFrameTooLarge, len(payload), cc.peerMax)
	}
	if deadline.IsZero() {
		deadline, _ = ctx.Deadline()
	}
	budget, ok := budgetFor(deadline, !deadline.IsZero())
	if !ok {
		cc.c.stats.canceled.Add(1)
		return nil, context.DeadlineExceeded
	}
	// A deadline that is not ctx's own is watched by a pooled timer.
	var expired <-chan time.Time
	if d, ok := ctx.Deadline(); !deadline.IsZero() && (!ok || !d.Equal(deadline)) {
		t := cc.c.timers.Get().(*time.Timer)
		t.Reset(time.Until(deadline))
		defer func() {
			t.Stop()
			cc.c.timers.Put(t)
		}()
		expired = t.C
	}
	w := cc.c.waiters.Get().(*waiter)
	id := cc.nextID.Add(1)
	cc.used.Store(time.Now().UnixNano())
	cc.mu.Lock()
	if err := cc.mu.err; err != nil {
		cc.mu.Unlock()
		cc.c.waiters.Put(w)
		return nil, notSentError{err}
	}
	cc.mu.pending[id] = w
	cc.mu.Unlock()

	if err := cc.w.write(ctx, expired, kindRequest, op, id, budget, payload, false); err != nil {
		if !cc.forget(id) {
			<-w.ch // the teardown is failing it: wait for its signal
		}
		w.resp, w.err = nil, nil
		cc.c.waiters.Put(w)
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			cc.c.stats.canceled.Add(1)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		return nil, notSentError{err}
	}

	var ended error
	select {
	case <-w.ch:
	case <-ctx.Done():
		ended = ctx.Err()
	case <-expired:
		ended = context.DeadlineExceeded
	}
	if ended != nil {
		if cc.forget(id) {
			// Tell the server to stop; the response, if it comes, is
			// dropped. A deadline needs no cancel: the server's copy of it
			// expires at the same time.
			if ended == context.Canceled {
				_ = cc.w.write(ctx, nil, kindCancel, op, id, 0, nil, true)
			}
			cc.c.waiters.Put(w)
			cc.c.stats.canceled.Add(1)
			return nil, ended
		}
		// The response (or the connection's failure) is being delivered
		// right now: take it.
		<-w.ch
	}
	resp, err := w.resp, w.err
	w.resp, w.err = nil, nil
	cc.c.waiters.Put(w)
	return resp, err
}

// forget removes a pending call; it reports false if someone else removed
// it first (and will signal its waiter).
func (cc *clientConn) forget(id uint64) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if _, ok := cc.mu.pending[id]; ok {
		delete(cc.mu.pending, id)
		return true
	}
	return false
}

// readLoop delivers responses until the connection ends, then tears it
// down.
func (cc *clientConn) readLoop() {
	c := cc.c
	br := bufio.NewReaderSize(cc.conn, readBufferSize)
	var hdr [headerSize]byte
	var err error
	for {
		var f frame
		f, err = readFrame(br, &hdr, c.cfg.MaxFrameSize)
		if err != nil {
			break
		}
		if f.kind != kindResponse && f.kind != kindError {
			err = fmt.Errorf("%w: a server sent a frame of kind %d", ErrProtocol, f.kind)
			break
		}
		cc.mu.Lock()
		w := cc.mu.pending[f.id]
		delete(cc.mu.pending, f.id)
		cc.mu.Unlock()
		if w == nil {
			c.stats.lateResponses.Add(1)
			continue
		}
		if f.kind == kindError {
			w.err = decodeRemoteError(f.payload)
		} else {
			w.resp = f.payload
		}
		w.ch <- struct{}{}
	}
	cc.teardown(err)
}

// errIdleConn is the cause of a connection the client retired as idle.
var errIdleConn = fmt.Errorf("%w: idle, closed by the client", ErrConnLost)

// retireIdle closes the connection if no call used it for IdleTimeout and
// none is waiting on it, else looks again when it could be idle. The check
// and the removal from the pool slot happen under the pool's lock, and the
// connection is marked ended under its own: a call that picked it before
// is either pending (and the connection stays) or finds it ended before
// sending anything and picks another, which cannot be this one.
func (cc *clientConn) retireIdle() {
	idle := cc.c.cfg.IdleTimeout
	p := cc.pool
	p.mu.Lock()
	cc.mu.Lock()
	left := idle - time.Since(time.Unix(0, cc.used.Load()))
	retire := cc.mu.err == nil && left <= 0 && len(cc.mu.pending) == 0
	if retire {
		cc.mu.err = errIdleConn
		if cc.mu.cause == nil {
			cc.mu.cause = errIdleConn
		}
		if cc.slot < len(p.mu.slots) && p.mu.slots[cc.slot].conn == cc {
			p.mu.slots[cc.slot].conn = nil
		}
	}
	ended := cc.mu.err != nil
	cc.mu.Unlock()
	p.mu.Unlock()
	switch {
	case retire:
		cc.c.cfg.Logger.Debug("peer: closing idle connection", "addr", cc.addr, "idle", idle)
		_ = cc.nc.Close()
	case !ended:
		if left <= 0 {
			left = idle // calls are waiting: look again later
		}
		cc.idle.Reset(left)
	}
}

// teardown ends the connection after its reader stopped with readErr: it
// fails the pending calls, stops the flusher, and frees the pool slot.
func (cc *clientConn) teardown(readErr error) {
	c := cc.c
	cc.idle.Stop()
	_ = cc.nc.Close()
	cc.mu.Lock()
	cause := cc.mu.cause
	if cause == nil {
		// Not closed by this side: the server went away or misbehaved.
		switch {
		case errors.Is(readErr, ErrProtocol):
			c.stats.protocolErrors.Add(1)
			c.cfg.Logger.Warn("peer: closing connection", "addr", cc.addr, "err", readErr)
		case errors.Is(readErr, io.EOF):
			readErr = errors.New("closed by the server")
		}
		c.stats.connsLost.Add(1)
		cause = fmt.Errorf("%w: %w", ErrConnLost, readErr)
	} else if !errors.Is(cause, ErrClosed) && !errors.Is(cause, ErrConnLost) {
		// A write failure reported by the flusher.
		c.stats.connsLost.Add(1)
		cause = fmt.Errorf("%w: %w", ErrConnLost, cause)
	}
	cc.mu.err = cause
	pending := cc.mu.pending
	cc.mu.pending = nil
	cc.mu.Unlock()
	// Free the slot before failing the calls: a caller that sees its call
	// fail and calls again must not be handed this connection.
	cc.pool.drop(cc)
	c.stats.conns.Add(-1)
	cc.w.close(cause)
	for _, w := range pending {
		w.err = cause
		w.ch <- struct{}{}
	}
}
