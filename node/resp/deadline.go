package resp

import (
	"context"
	"sync"
	"time"
)

// deadlineCtx is the deadline of one read, as context.WithDeadline makes
// it, but its timer (and its link to the parent's cancellation) is only
// made when something waits on it (Done): a hit never does, and a timer
// per read was 15% of a pipelined hit's CPU.
type deadlineCtx struct {
	parent   context.Context
	deadline time.Time

	mu    sync.Mutex
	done  chan struct{} // made by Done; closed when err is set
	err   error
	timer *time.Timer
	stop  func() bool // unlinks from the parent
}

var _ context.Context = (*deadlineCtx)(nil)

func withDeadline(parent context.Context, d time.Duration) *deadlineCtx {
	return &deadlineCtx{parent: parent, deadline: time.Now().Add(d)}
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *deadlineCtx) Value(key any) any { return c.parent.Value(key) }

func (c *deadlineCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	if c.err == nil {
		c.err = c.expiredLocked()
	}
	if c.err != nil {
		close(c.done)
		return c.done
	}
	c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
	c.stop = context.AfterFunc(c.parent, func() { c.cancel(c.parent.Err()) })
	return c.done
}

func (c *deadlineCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && c.done == nil {
		// Not armed: the deadline and the parent tell. Once an error is
		// seen it stays, as the context contract says.
		c.err = c.expiredLocked()
	}
	return c.err
}

// expiredLocked is the error of an unarmed context: its parent's, or the
// deadline's once it passed; c.mu is held.
func (c *deadlineCtx) expiredLocked() error {
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *deadlineCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
		if c.done != nil {
			close(c.done)
		}
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.stop != nil {
		c.stop()
	}
}

// release ends the context once the read is done, as the CancelFunc of
// context.WithDeadline does.
func (c *deadlineCtx) release() { c.cancel(context.Canceled) }
