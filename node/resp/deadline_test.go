package resp

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDeadlineCtx(t *testing.T) {
	// Unarmed: Err follows the clock and the parent.
	c := withDeadline(context.Background(), time.Hour)
	if c.Err() != nil {
		t.Fatal("a fresh context has an error")
	}
	if d, ok := c.Deadline(); !ok || time.Until(d) < 59*time.Minute {
		t.Errorf("deadline %v %v", d, ok)
	}
	c.release()
	if !errors.Is(c.Err(), context.Canceled) {
		t.Errorf("after release: %v", c.Err())
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done of a released context is open")
	}

	// Armed: the deadline closes Done.
	c = withDeadline(context.Background(), 20*time.Millisecond)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the deadline did not close Done")
	}
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Errorf("after the deadline: %v", c.Err())
	}
	c.release()
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Errorf("release changed the error: %v", c.Err())
	}

	// Unarmed, past the deadline: Err says so, and Done is closed.
	c = withDeadline(context.Background(), -time.Second)
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Errorf("past the deadline: %v", c.Err())
	}
	<-c.Done()

	// The parent's cancellation reaches an armed context, and a child of it.
	parent, cancel := context.WithCancel(context.Background())
	c = withDeadline(parent, time.Hour)
	child, cancelChild := context.WithTimeout(c, time.Hour)
	defer cancelChild()
	cancel()
	select {
	case <-child.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the parent's cancellation did not reach the child")
	}
	if !errors.Is(c.Err(), context.Canceled) {
		t.Errorf("after the parent's cancel: %v", c.Err())
	}
	c.release()
}
