package peer

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestReqCtx(t *testing.T) {
	t.Run("deadline without Done", func(t *testing.T) {
		c := &reqCtx{parent: context.Background(), deadline: time.Now().Add(-time.Millisecond)}
		if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Err = %v", err)
		}
		select {
		case <-c.Done():
		default:
			t.Fatal("Err is set but Done is open")
		}
	})
	t.Run("deadline fires Done", func(t *testing.T) {
		c := &reqCtx{parent: context.Background(), deadline: time.Now().Add(20 * time.Millisecond)}
		if d, ok := c.Deadline(); !ok || d != c.deadline {
			t.Fatalf("Deadline = %v, %v", d, ok)
		}
		if c.Err() != nil {
			t.Fatal("Err before the deadline")
		}
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Done never closed")
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err = %v", c.Err())
		}
	})
	t.Run("parent cancel", func(t *testing.T) {
		parent, cancel := context.WithCancel(context.WithValue(context.Background(), "k", "v"))
		c := &reqCtx{parent: parent}
		if _, ok := c.Deadline(); ok {
			t.Fatal("a deadline without one")
		}
		if c.Value("k") != "v" {
			t.Fatal("Value does not reach the parent")
		}
		done := c.Done()
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Done did not follow the parent")
		}
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("Err = %v", c.Err())
		}
	})
	t.Run("cancel before Done", func(t *testing.T) {
		c := &reqCtx{parent: context.Background(), deadline: time.Now().Add(time.Hour)}
		c.cancel(context.Canceled)
		c.cancel(context.DeadlineExceeded) // the first error wins
		<-c.Done()
		if !errors.Is(c.Err(), context.Canceled) || !c.ended() {
			t.Fatalf("Err = %v", c.Err())
		}
	})
	t.Run("child context", func(t *testing.T) {
		c := &reqCtx{parent: context.Background()}
		child, cancel := context.WithCancel(c)
		defer cancel()
		c.cancel(context.Canceled)
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the child did not follow")
		}
	})
}
