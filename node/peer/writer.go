package peer

import (
	"context"
	"net"
	"runtime"
	"sync"
	"time"
)

// Buffer sizes of a connection.
const (
	// writeHighWater is the amount of queued frames above which a writer
	// waits for the flusher (back-pressure from a slow peer).
	writeHighWater = 1 << 20
	// keepBufferCap is the largest write buffer kept for reuse after a
	// write; a larger one (left by a big frame) is dropped.
	keepBufferCap = 256 << 10
	// readBufferSize is the size of a connection's bufio.Reader.
	readBufferSize = 64 << 10
)

// frameWriter serialises the outgoing frames of one connection. Writers
// append whole frames to a shared buffer under mu, which is a memory copy,
// never I/O; one flusher goroutine (run) swaps the buffer out and writes it
// to the connection without holding mu. Frames appended while a write is in
// progress leave together in the next write, so concurrent callers share
// syscalls, and a caller never waits on the network unless more than
// writeHighWater bytes are queued. Because the payload is copied, a caller
// may reuse it as soon as write returns.
type frameWriter struct {
	nc      net.Conn
	timeout time.Duration
	// fail is called by the flusher or writeNow when a write fails; it
	// closes the connection.
	fail func(error)

	// io serialises the writes to nc (the flusher's and writeNow's), so
	// that frames never interleave, and guards deadlineSet.
	io struct {
		sync.Mutex
		deadlineSet time.Time // when the write deadline was last moved
	}

	kick chan struct{} // capacity 1: buf became non-empty
	stop chan struct{} // closed by close: the flusher exits
	done chan struct{} // closed when the flusher has exited

	mu struct {
		sync.Mutex
		buf     []byte        // frames not yet taken by the flusher
		err     error         // sticky: set on a write failure or close
		drained chan struct{} // made by a blocked writer, closed when buf is taken
	}
}

func newFrameWriter(nc net.Conn, timeout time.Duration, fail func(error)) *frameWriter {
	w := &frameWriter{
		nc:      nc,
		timeout: timeout,
		fail:    fail,
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	w.mu.buf = make([]byte, 0, 4096)
	return w
}

// write queues one frame. Unless force is set, it waits (bounded by ctx,
// and by expired when not nil, which fails it with
// context.DeadlineExceeded) while more than writeHighWater bytes are queued;
// force is for tiny control frames that must not block. It fails with the
// writer's sticky error once the connection is broken or closed.
func (w *frameWriter) write(ctx context.Context, expired <-chan time.Time, kind, op byte, id uint64, budget uint32, payload []byte, force bool) error {
	w.mu.Lock()
	for {
		if w.mu.err != nil {
			err := w.mu.err
			w.mu.Unlock()
			return err
		}
		if force || len(w.mu.buf) == 0 || len(w.mu.buf)+headerSize+len(payload) <= writeHighWater {
			break
		}
		if w.mu.drained == nil {
			w.mu.drained = make(chan struct{})
		}
		drained := w.mu.drained
		w.mu.Unlock()
		select {
		case <-drained:
		case <-w.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-expired:
			return context.DeadlineExceeded
		}
		w.mu.Lock()
	}
	wasEmpty := len(w.mu.buf) == 0
	w.mu.buf = appendFrame(w.mu.buf, kind, op, id, budget, payload)
	w.mu.Unlock()
	// Only the append that makes buf non-empty needs to wake the flusher:
	// later ones find a kick pending, or the flusher looping back for more.
	if wasEmpty {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// run is the flusher goroutine. It returns after close, or after a write
// failure (having called fail).
func (w *frameWriter) run() {
	defer close(w.done)
	spare := make([]byte, 0, 4096)
	for {
		select {
		case <-w.kick:
		case <-w.stop:
			return
		}
		// Let the goroutines that are runnable now (callers, handlers
		// answering a batch of requests) append their frames first, so
		// that one write carries many frames: on loopback a write costs
		// as much as the receiver's whole network stack.
		runtime.Gosched()
		for {
			w.mu.Lock()
			if w.mu.err != nil || len(w.mu.buf) == 0 {
				w.mu.Unlock()
				break
			}
			out := w.mu.buf
			w.mu.buf = spare
			if w.mu.drained != nil {
				close(w.mu.drained)
				w.mu.drained = nil
			}
			w.mu.Unlock()

			if err := w.writeOut(out); err != nil {
				return
			}
			if cap(out) > keepBufferCap {
				out = make([]byte, 0, 4096)
			}
			spare = out[:0]
		}
	}
}

// writeNow writes b, whole frames, to the connection from the caller's
// goroutine, without waiting for the flusher: for a goroutine that is about
// to block anyway (a server's read loop). b may be reused when it returns.
// It fails with the writer's sticky error once the connection is broken or
// closed.
func (w *frameWriter) writeNow(b []byte) error {
	w.mu.Lock()
	err := w.mu.err
	w.mu.Unlock()
	if err != nil {
		return err
	}
	return w.writeOut(b)
}

// writeOut writes b to the connection; on failure it closes the writer and
// calls fail.
func (w *frameWriter) writeOut(b []byte) error {
	w.io.Lock()
	// Moving the deadline costs a timer update; do it once per quarter of
	// the timeout, so a write gets between 3/4 of the timeout and all of it.
	if now := time.Now(); now.After(w.io.deadlineSet.Add(w.timeout / 4)) {
		_ = w.nc.SetWriteDeadline(now.Add(w.timeout))
		w.io.deadlineSet = now
	}
	_, err := w.nc.Write(b)
	w.io.Unlock()
	if err != nil {
		w.close(err)
		w.fail(err)
	}
	return err
}

// close makes every later write fail with err (the first cause wins) and
// stops the flusher; queued frames are dropped. It does not wait: see done.
func (w *frameWriter) close(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.mu.err != nil {
		return
	}
	w.mu.err = err
	w.mu.buf = nil
	close(w.stop)
	if w.mu.drained != nil {
		close(w.mu.drained)
		w.mu.drained = nil
	}
}
