package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fastEcho answers op 1 in the read loop (with "fast:" and the payload),
// declines op 2, panics on op 3, answers op 4 with more than any client
// accepts; HandlePeer answers everything with "slow:" and the payload.
type fastEcho struct {
	slow atomic.Int64
}

func (h *fastEcho) HandlePeer(_ context.Context, op byte, payload []byte) ([]byte, error) {
	h.slow.Add(1)
	return append([]byte("slow:"), payload...), nil
}

func (h *fastEcho) HandlePeerFast(dst []byte, op byte, payload []byte) ([]byte, bool) {
	switch op {
	case 1:
		dst = append(dst, "fast:"...)
		return append(dst, payload...), true
	case 3:
		dst = append(dst, "partial"...)
		panic("boom")
	case 4:
		return append(dst, make([]byte, 2048)...), true
	}
	return append(dst, "ignored"...), false
}

var _ FastHandler = (*fastEcho)(nil)

func TestFastHandler(t *testing.T) {
	h := &fastEcho{}
	ts := startServer(t, ServerConfig{}, h)
	c := newClient(t, ClientConfig{MaxFrameSize: 1024})
	ctx := ctxTimeout(t, 5*time.Second)

	// Many concurrent calls, so that requests share reads and answers
	// share writes; each must get its own answer.
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op := byte(1 + i%2)
			want := "fast:"
			if op == 2 {
				want = "slow:"
			}
			p := fmt.Appendf(nil, "req-%d", i)
			got, err := c.Call(ctx, ts.addr, op, p)
			if err != nil {
				errs <- err
				return
			}
			if string(got) != want+string(p) {
				errs <- fmt.Errorf("op %d: got %q, want %q", op, got, want+string(p))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := h.slow.Load(); got != 100 {
		t.Errorf("HandlePeer ran %d times, want 100 (the declined requests)", got)
	}

	// A panic is an internal error, and the connection goes on.
	_, err := c.Call(ctx, ts.addr, 3, []byte("x"))
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeInternal {
		t.Fatalf("panicking fast handler: got %v, want a RemoteError %q", err, CodeInternal)
	}
	// A response above the client's limit is refused as in HandlePeer.
	_, err = c.Call(ctx, ts.addr, 4, nil)
	if !errors.As(err, &re) || re.Code != CodeFrameTooLarge {
		t.Fatalf("oversized fast answer: got %v, want a RemoteError %q", err, CodeFrameTooLarge)
	}
	got, err := c.Call(ctx, ts.addr, 1, []byte("after"))
	if err != nil || string(got) != "fast:after" {
		t.Fatalf("after the errors: got %q, %v", got, err)
	}
	if st := ts.Stats(); st.HandlerErrors != 1 || st.Requests != 203 {
		t.Errorf("stats: %+v, want 1 handler error and 203 requests", st)
	}
}

// TestFastBatch sends many requests in one write and reads every answer.
func TestFastBatch(t *testing.T) {
	ts := startServer(t, ServerConfig{}, &fastEcho{})
	nc := rawConn(t, ts.addr, true)
	var batch []byte
	const n = 500
	for i := range n {
		batch = appendFrame(batch, kindRequest, 1, uint64(i+1), 0, fmt.Appendf(nil, "%d", i))
	}
	// A frame cut in two, its rest sent after the answers to the whole
	// frames have come back: the server must not wait for it to answer
	// them.
	last := appendFrame(nil, kindRequest, 1, n+1, 0, []byte("last"))
	batch = append(batch, last[:headerSize+2]...)
	if _, err := nc.Write(batch); err != nil {
		t.Fatal(err)
	}
	var hdr [headerSize]byte
	seen := make(map[uint64]bool)
	for range n {
		f, err := readFrame(nc, &hdr, DefaultMaxFrameSize)
		if err != nil {
			t.Fatalf("after %d answers: %v", len(seen), err)
		}
		if want := fmt.Sprintf("fast:%d", f.id-1); f.kind != kindResponse || string(f.payload) != want {
			t.Fatalf("answer %d: kind %d %q, want %q", f.id, f.kind, f.payload, want)
		}
		seen[f.id] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct answers, want %d", len(seen), n)
	}
	if _, err := nc.Write(last[headerSize+2:]); err != nil {
		t.Fatal(err)
	}
	f, err := readFrame(nc, &hdr, DefaultMaxFrameSize)
	if err != nil || !bytes.Equal(f.payload, []byte("fast:last")) {
		t.Fatalf("last answer: %q, %v", f.payload, err)
	}
}
