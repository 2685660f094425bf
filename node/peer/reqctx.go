package peer

import (
	"context"
	"sync"
	"time"
)

// reqCtx is the context given to a handler. context.WithTimeout would cost
// a timer and a channel per request, about a microsecond on the
// remote-hit path, whose handlers mostly never wait on ctx. reqCtx makes
// neither until the handler calls Done: Err compares the clock with the
// deadline, and Done arms a timer and watches the parent only when asked.
type reqCtx struct {
	parent   context.Context // the connection's context
	deadline time.Time       // zero: none

	mu struct {
		sync.Mutex
		done       chan struct{} // made by Done; closed by cancel
		err        error         // set once by cancel
		timer      *time.Timer   // armed by Done when there is a deadline
		stopParent func() bool   // armed by Done
	}
}

var _ context.Context = (*reqCtx)(nil)

// Deadline implements context.Context.
func (c *reqCtx) Deadline() (time.Time, bool) {
	return c.deadline, !c.deadline.IsZero()
}

// Value implements context.Context.
func (c *reqCtx) Value(key any) any {
	return c.parent.Value(key)
}

// Err implements context.Context. When it finds the deadline passed or the
// parent done, it cancels c first, so that Done is closed whenever Err is
// non-nil, as the interface requires.
func (c *reqCtx) Err() error {
	c.mu.Lock()
	err := c.mu.err
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := c.parent.Err(); err != nil {
		return c.cancel(err)
	}
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		return c.cancel(context.DeadlineExceeded)
	}
	return nil
}

// Done implements context.Context.
func (c *reqCtx) Done() <-chan struct{} {
	c.mu.Lock()
	if c.mu.done != nil {
		defer c.mu.Unlock()
		return c.mu.done
	}
	c.mu.done = make(chan struct{})
	done := c.mu.done
	if c.mu.err != nil {
		close(done)
		c.mu.Unlock()
		return done
	}
	c.mu.Unlock()

	// Arm the watchers without holding mu: either may fire at once and call
	// cancel, which takes mu.
	var timer *time.Timer
	if !c.deadline.IsZero() {
		timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
	}
	stop := context.AfterFunc(c.parent, func() { c.cancel(c.parent.Err()) })
	c.mu.Lock()
	if c.mu.err != nil {
		// Cancelled while arming: cancel did not see the watchers.
		c.mu.Unlock()
		if timer != nil {
			timer.Stop()
		}
		stop()
		return done
	}
	c.mu.timer, c.mu.stopParent = timer, stop
	c.mu.Unlock()
	return done
}

// cancel ends c with err unless it has ended already, releases its
// watchers, and returns the error c ended with.
func (c *reqCtx) cancel(err error) error {
	c.mu.Lock()
	if c.mu.err != nil {
		err = c.mu.err
		c.mu.Unlock()
		return err
	}
	c.mu.err = err
	if c.mu.done != nil {
		close(c.mu.done)
	}
	timer, stop := c.mu.timer, c.mu.stopParent
	c.mu.timer, c.mu.stopParent = nil, nil
	c.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	if stop != nil {
		stop()
	}
	return err
}

// ended reports whether c was cancelled, or its parent is done, without
// reading the clock.
func (c *reqCtx) ended() bool {
	c.mu.Lock()
	err := c.mu.err
	c.mu.Unlock()
	return err != nil || c.parent.Err() != nil
}
