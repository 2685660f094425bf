package resp

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one client connection. Its goroutine reads commands, runs them
// one after the other and writes their replies; invalidation messages of
// the tracking table are written from other goroutines, between two
// replies, never inside one.
type conn struct {
	s       *Server
	id      int64
	nc      net.Conn
	rd      *reader
	created time.Time
	ctx     context.Context
	cancel  context.CancelFunc

	lastActive atomic.Int64 // unix nanoseconds of the last command
	proto      atomic.Int32 // 2 or 3
	lastCmd    atomic.Pointer[string]
	// trackOn mirrors tracking and subs len(subscribed), for the read
	// path without the lock.
	trackOn atomic.Bool
	subs    atomic.Int32

	// The connection goroutine's own state.
	out     writer // the reply being built
	authed  bool
	name    string
	libName string
	libVer  string
	inMulti bool
	queued  [][][]byte
	caching int8 // CLIENT CACHING: 1 yes, -1 no, for the next command
	// traceparent is the W3C traceparent CN.TRACEPARENT gave the next
	// command: the parent of its reads' spans.
	traceparent string

	wmu sync.Mutex
	// bw is the connection's buffered writer; guarded by wmu.
	bw *bufio.Writer
	// Guarded by wmu: tracking state, read by the tracking table's pushes.
	tracking      bool
	optin, optout bool
	redirect      int64
	subscribed    map[string]struct{}
	pending       map[string]int  // tracked key strings being read
	dirty         map[string]bool // of pending, invalidated during the read
	broken        bool            // a write failed: the connection is going
}

func (c *conn) serve() {
	defer c.s.removeConn(c)
	defer c.cancel()
	defer c.nc.Close()
	c.proto.Store(2)
	for {
		if c.rd.r.Buffered() == 0 {
			if !c.flush() {
				return
			}
			c.armIdle()
		}
		args, err := c.rd.command()
		if err != nil {
			if errors.Is(err, ErrProtocol) {
				c.out.reset(int(c.proto.Load()))
				c.out.err("ERR " + err.Error())
				c.emit(nil)
				c.flush()
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.s.log.Debug("connection", "client", c.nc.RemoteAddr().String(), "err", err)
			}
			return
		}
		c.lastActive.Store(time.Now().UnixNano())
		c.s.stats.commands.Add(1)
		c.out.reset(int(c.proto.Load()))
		quit := c.exec(args)
		if quit {
			c.flush()
			return
		}
	}
}

// armIdle sets the read deadline of the idle timeout (none for a
// connection subscribed to invalidation messages: it only listens).
func (c *conn) armIdle() {
	d := c.s.cfg.IdleTimeout
	if d < 0 || c.subs.Load() > 0 {
		c.nc.SetReadDeadline(time.Time{})
		return
	}
	c.nc.SetReadDeadline(time.Now().Add(d))
}

// emit moves the reply built in c.out to the buffered writer; tracked are
// the key strings this reply answered that were marked pending: those
// invalidated while they were read are invalidated again, after the reply,
// so that the client drops what it just cached.
func (c *conn) emit(tracked []string) {
	c.wmu.Lock()
	c.writeLocked(c.out.buf)
	var again []string
	for _, k := range tracked {
		if c.pending[k]--; c.pending[k] <= 0 {
			delete(c.pending, k)
			if c.dirty[k] {
				delete(c.dirty, k)
				again = append(again, k)
			}
		}
	}
	c.wmu.Unlock()
	if len(again) > 0 {
		c.invalidate(again)
	}
}

// writeLocked buffers b; when b does not fit, the buffered writer writes
// to the socket at once, under a fresh write deadline (the last one may be
// long past on a connection that was idle). c.wmu is held.
func (c *conn) writeLocked(b []byte) {
	if c.broken {
		return
	}
	if c.bw.Available() < len(b) {
		c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	}
	if _, err := c.bw.Write(b); err != nil {
		c.broken = true
		c.nc.Close()
	}
}

// flush writes the buffered replies; false if the connection failed.
func (c *conn) flush() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

func (c *conn) flushLocked() bool {
	if c.broken {
		return false
	}
	if c.bw == nil || c.bw.Buffered() == 0 {
		return true
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	if err := c.bw.Flush(); err != nil {
		c.broken = true
		c.nc.Close()
		return false
	}
	return true
}

// invalidate tells the client to forget keys (nil: every key), on this
// connection in RESP3 or on the connection it redirects to. Called by the
// tracking table; it returns once the message is written to the socket.
func (c *conn) invalidate(keys []string) {
	c.wmu.Lock()
	for _, k := range keys {
		if c.pending[k] > 0 {
			if c.dirty == nil {
				c.dirty = make(map[string]bool)
			}
			c.dirty[k] = true
		}
	}
	redirect, tracking := c.redirect, c.tracking
	if !tracking {
		c.wmu.Unlock()
		return
	}
	if redirect == 0 {
		w := writer{proto: int(c.proto.Load())}
		w.push(2)
		w.bulkString("invalidate")
		w.value(keys)
		c.writeLocked(w.buf)
		c.flushLocked()
		c.wmu.Unlock()
		return
	}
	c.wmu.Unlock()
	if t := c.s.conn(redirect); t != nil {
		t.message(invalidateChannel, keys)
	}
}

// invalidateChannel is the Pub/Sub channel of RESP2 tracking (REDIRECT).
const invalidateChannel = "__redis__:invalidate"

// message writes a Pub/Sub message of channel to c, if it subscribed to it.
func (c *conn) message(channel string, keys []string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, ok := c.subscribed[channel]; !ok {
		return
	}
	w := writer{proto: int(c.proto.Load())}
	w.push(3)
	w.bulkString("message")
	w.bulkString(channel)
	if keys == nil {
		w.nullArray()
	} else {
		w.value(keys)
	}
	c.writeLocked(w.buf)
	c.flushLocked()
}
