package peer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	ts := startServer(t, ServerConfig{}, echo)
	c := newClient(t, ClientConfig{})
	ctx := ctxTimeout(t, 5*time.Second)

	for _, payload := range [][]byte{[]byte("hello"), nil, bytes.Repeat([]byte{7}, 200<<10)} {
		got, err := c.Call(ctx, ts.addr, 42, payload)
		if err != nil {
			t.Fatalf("Call: %v", err)
		}
		if want := append([]byte{42}, payload...); !bytes.Equal(got, want) {
			t.Fatalf("Call = %d bytes, want %d", len(got), len(want))
		}
	}
	empty := HandlerFunc(func(context.Context, byte, []byte) ([]byte, error) { return nil, nil })
	ts2 := startServer(t, ServerConfig{}, empty)
	got, err := c.Call(ctx, ts2.addr, 1, []byte("x"))
	if err != nil || len(got) != 0 {
		t.Fatalf("Call to an empty handler = %q, %v; want empty, nil", got, err)
	}
}

func TestConcurrentCallsSharePool(t *testing.T) {
	const calls, conns = 1000, 3
	ts := startServer(t, ServerConfig{}, echo)
	c := newClient(t, ClientConfig{ConnsPerAddr: conns})
	ctx := ctxTimeout(t, 20*time.Second)

	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := binary.BigEndian.AppendUint32(nil, uint32(i))
			got, err := c.Call(ctx, ts.addr, byte(i), payload)
			if err != nil {
				errs <- err
				return
			}
			if want := append([]byte{byte(i)}, payload...); !bytes.Equal(got, want) {
				errs <- fmt.Errorf("call %d got %x, want %x", i, got, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := c.Stats()
	if st.Dials == 0 || st.Dials > conns {
		t.Errorf("Dials = %d, want 1..%d", st.Dials, conns)
	}
	if st.Calls != calls {
		t.Errorf("client Calls = %d, want %d", st.Calls, calls)
	}
	if got := ts.Stats().Requests; got != calls {
		t.Errorf("server Requests = %d, want %d", got, calls)
	}
}

func TestDeadline(t *testing.T) {
	handlerErr := make(chan error, 1)
	ts := startServer(t, ServerConfig{}, HandlerFunc(func(ctx context.Context, op byte, _ []byte) ([]byte, error) {
		if op == 0 {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			handlerErr <- ctx.Err()
		case <-time.After(10 * time.Second):
			handlerErr <- errors.New("handler context never ended")
		}
		return []byte("too late"), nil
	}))
	const budget = 50 * time.Millisecond
	// The deadline comes from ctx, from CallBefore, or from ctx when it is
	// the earlier of the two.
	variants := map[string]func(c *Client) ([]byte, error){
		"ctx": func(c *Client) ([]byte, error) {
			return c.Call(ctxTimeout(t, budget), ts.addr, 1, []byte("slow"))
		},
		"CallBefore": func(c *Client) ([]byte, error) {
			return c.CallBefore(context.Background(), time.Now().Add(budget), ts.addr, 1, []byte("slow"))
		},
		"ctx before CallBefore's": func(c *Client) ([]byte, error) {
			return c.CallBefore(ctxTimeout(t, budget), time.Now().Add(time.Hour), ts.addr, 1, []byte("slow"))
		},
	}
	for name, call := range variants {
		t.Run(name, func(t *testing.T) {
			c := newClient(t, ClientConfig{})
			// Dial first so that the deadline measures the call alone.
			if _, err := c.Call(ctxTimeout(t, 5*time.Second), ts.addr, 0, nil); err != nil {
				t.Fatalf("warm-up call: %v", err)
			}
			start := time.Now()
			_, err := call(c)
			took := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Call error = %v, want context.DeadlineExceeded", err)
			}
			if took > budget+500*time.Millisecond {
				t.Errorf("Call returned after %v, want about %v", took, budget)
			}
			select {
			case err := <-handlerErr:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("handler ctx ended with %v, want DeadlineExceeded", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the handler's context did not expire")
			}
			if st := c.Stats(); st.Canceled != 1 {
				t.Errorf("client Canceled = %d, want 1", st.Canceled)
			}
		})
	}
}

func TestCancelReachesHandler(t *testing.T) {
	started := make(chan struct{}, 1)
	handlerErr := make(chan error, 1)
	ts := startServer(t, ServerConfig{}, HandlerFunc(func(ctx context.Context, op byte, _ []byte) ([]byte, error) {
		if op != 1 {
			return nil, nil
		}
		started <- struct{}{}
		<-ctx.Done()
		handlerErr <- ctx.Err()
		return nil, nil
	}))
	c := newClient(t, ClientConfig{})
	ctx, cancel := context.WithCancel(context.Background()) // no deadline
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, ts.addr, 1, nil)
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Call error = %v, want context.Canceled", err)
	}
	select {
	case err := <-handlerErr:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("handler ctx ended with %v, want Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cancel did not reach the handler")
	}
	waitFor(t, "server Canceled = 1", func() bool { return ts.Stats().Canceled == 1 })
	// The connection is still good.
	if _, err := c.Call(ctxTimeout(t, 5*time.Second), ts.addr, 2, nil); err != nil {
		t.Fatalf("Call after a cancel: %v", err)
	}
}

func TestRemoteError(t *testing.T) {
	ts := startServer(t, ServerConfig{}, HandlerFunc(func(_ context.Context, op byte, _ []byte) ([]byte, error) {
		switch op {
		case 1:
			return nil, fmt.Errorf("looking: %w", &RemoteError{Code: "not_found", Message: "no such key"})
		case 2:
			return nil, errors.New("disk on fire")
		case 3:
			panic("bug")
		}
		return []byte("ok"), nil
	}))
	c := newClient(t, ClientConfig{})
	ctx := ctxTimeout(t, 5*time.Second)
	for _, tc := range []struct {
		op         byte
		code, mesg string
	}{
		{1, "not_found", "no such key"},
		{2, CodeInternal, "disk on fire"},
		{3, CodeInternal, "handler panicked"},
	} {
		_, err := c.Call(ctx, ts.addr, tc.op, nil)
		var re *RemoteError
		if !errors.As(err, &re) {
			t.Fatalf("op %d: error %v is not a *RemoteError", tc.op, err)
		}
		if re.Code != tc.code || re.Message != tc.mesg {
			t.Errorf("op %d: RemoteError{%q, %q}, want {%q, %q}", tc.op, re.Code, re.Message, tc.code, tc.mesg)
		}
		if !errors.Is(err, &RemoteError{Code: tc.code}) {
			t.Errorf("op %d: errors.Is by code %q fails", tc.op, tc.code)
		}
	}
	if got, err := c.Call(ctx, ts.addr, 0, nil); err != nil || string(got) != "ok" {
		t.Fatalf("Call after errors = %q, %v", got, err)
	}
	if st := ts.Stats(); st.HandlerErrors != 3 {
		t.Errorf("server HandlerErrors = %d, want 3", st.HandlerErrors)
	}
}

func TestServerKilledMidCall(t *testing.T) {
	started := make(chan struct{}, 1)
	block := HandlerFunc(func(ctx context.Context, _ byte, _ []byte) ([]byte, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ts := startServer(t, ServerConfig{}, block)
	c := newClient(t, ClientConfig{ConnsPerAddr: 1})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(ctxTimeout(t, 10*time.Second), ts.addr, 1, nil)
		errc <- err
	}()
	<-started
	ts.stop(t)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrConnLost) {
			t.Fatalf("Call error = %v, want ErrConnLost", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Call hangs after the server died")
	}
	// While the server is down, calls fail fast.
	if _, err := c.Call(ctxTimeout(t, 5*time.Second), ts.addr, 1, nil); err == nil {
		t.Fatal("Call to a dead server succeeded")
	}

	ts2 := startServerAt(t, ts.addr, ServerConfig{}, echo)
	got, err := c.Call(ctxTimeout(t, 5*time.Second), ts2.addr, 9, []byte("again"))
	if err != nil || string(got) != "\x09again" {
		t.Fatalf("Call after restart = %q, %v", got, err)
	}
	st := c.Stats()
	if st.Dials != 2 || st.ConnsLost != 1 || st.DialErrors != 1 {
		t.Errorf("client stats %+v, want Dials 2, ConnsLost 1, DialErrors 1", st)
	}
}

func TestClose(t *testing.T) {
	started := make(chan struct{}, 1)
	ts := startServer(t, ServerConfig{}, HandlerFunc(func(ctx context.Context, _ byte, _ []byte) ([]byte, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, nil
	}))
	c, err := NewClient(ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(ctxTimeout(t, 10*time.Second), ts.addr, 1, nil)
		errc <- err
	}()
	<-started
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("in-flight Call error = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Call(context.Background(), ts.addr, 1, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Call after Close = %v, want ErrClosed", err)
	}

	ts.stop(t)
	ts.stop(t) // twice is safe
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Serve(ln); !errors.Is(err, ErrClosed) {
		t.Errorf("Serve after Close = %v, want ErrClosed", err)
	}
}

func TestCloseAddr(t *testing.T) {
	ts := startServer(t, ServerConfig{}, echo)
	c := newClient(t, ClientConfig{ConnsPerAddr: 1})
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := c.Call(ctx, ts.addr, 1, nil); err != nil {
		t.Fatal(err)
	}
	c.CloseAddr(ts.addr)
	waitFor(t, "the connection to close", func() bool { return c.Stats().Conns == 0 })
	if _, err := c.Call(ctx, ts.addr, 1, nil); err != nil {
		t.Fatalf("Call after CloseAddr: %v", err)
	}
	if st := c.Stats(); st.Dials != 2 || st.ConnsLost != 0 {
		t.Errorf("stats %+v, want Dials 2, ConnsLost 0", st)
	}
}

func TestFrameLimits(t *testing.T) {
	big := make([]byte, 2000)
	ts := startServer(t, ServerConfig{MaxFrameSize: 1024}, echo)
	ctx := ctxTimeout(t, 5*time.Second)

	small := newClient(t, ClientConfig{MaxFrameSize: 1024})
	if _, err := small.Call(ctx, ts.addr, 1, big); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("request above the client's limit: %v, want ErrFrameTooLarge", err)
	}
	if small.Stats().Dials != 0 {
		t.Errorf("the client dialed for a request it must refuse")
	}
	large := newClient(t, ClientConfig{})
	if _, err := large.Call(ctx, ts.addr, 1, big); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("request above the server's limit: %v, want ErrFrameTooLarge", err)
	}
	if got := ts.Stats().Requests; got != 0 {
		t.Errorf("server received %d requests, want 0", got)
	}

	// A response above the client's limit comes back as an error, and the
	// connection survives.
	ts2 := startServer(t, ServerConfig{}, HandlerFunc(func(_ context.Context, op byte, _ []byte) ([]byte, error) {
		return make([]byte, int(op)*100), nil
	}))
	_, err := small.Call(ctx, ts2.addr, 20, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeFrameTooLarge || !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized response: %v, want a RemoteError %q", err, CodeFrameTooLarge)
	}
	if got, err := small.Call(ctx, ts2.addr, 1, nil); err != nil || len(got) != 100 {
		t.Errorf("Call after an oversized response: %d bytes, %v", len(got), err)
	}
}

func TestDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	c := newClient(t, ClientConfig{})
	if _, err := c.Call(ctxTimeout(t, 5*time.Second), addr, 1, nil); err == nil {
		t.Fatal("Call to a closed port succeeded")
	}
	if st := c.Stats(); st.DialErrors != 1 || st.Dials != 0 {
		t.Errorf("stats %+v, want DialErrors 1", st)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		field string
	}{
		{"server MaxFrameSize", func() error { _, err := NewServer(ServerConfig{MaxFrameSize: -1}, echo); return err }(), "ServerConfig.MaxFrameSize"},
		{"server Key", func() error { _, err := NewServer(ServerConfig{Key: []byte("short")}, echo); return err }(), "ServerConfig.Key"},
		{"server WriteTimeout", func() error { _, err := NewServer(ServerConfig{WriteTimeout: -time.Second}, echo); return err }(), "ServerConfig.WriteTimeout"},
		{"client ConnsPerAddr", func() error { _, err := NewClient(ClientConfig{ConnsPerAddr: 1000}); return err }(), "ClientConfig.ConnsPerAddr"},
		{"client DialTimeout", func() error { _, err := NewClient(ClientConfig{DialTimeout: -1}); return err }(), "ClientConfig.DialTimeout"},
		{"client Key", func() error { _, err := NewClient(ClientConfig{Key: make([]byte, 33)}); return err }(), "ClientConfig.Key"},
	} {
		if tc.err == nil || !bytes.Contains([]byte(tc.err.Error()), []byte(tc.field)) {
			t.Errorf("%s: error %v does not name %s", tc.name, tc.err, tc.field)
		}
	}
	if _, err := NewServer(ServerConfig{}, nil); err == nil {
		t.Error("NewServer accepted a nil Handler")
	}

	key := bytes.Repeat([]byte{1}, 16)
	cfg := ClientConfig{Key: key}
	c := newClient(t, cfg)
	key[0] = 99 // the client keeps its own copy
	if cfg.ConnsPerAddr != 0 || cfg.Logger != nil {
		t.Error("NewClient modified the caller's config")
	}
	if c.cfg.Key[0] != 1 {
		t.Error("the client shares the caller's key slice")
	}
	if d := DefaultClientConfig(); d.ConnsPerAddr != DefaultConnsPerAddr || d.MaxFrameSize != DefaultMaxFrameSize {
		t.Errorf("DefaultClientConfig = %+v", d)
	}
	if d := DefaultServerConfig(); d.MaxConcurrentPerConn != DefaultMaxConcurrentPerConn {
		t.Errorf("DefaultServerConfig = %+v", d)
	}
}

func TestConcurrencyBoundPerConn(t *testing.T) {
	const limit, calls = 4, 12
	var mu sync.Mutex
	running, peak := 0, 0
	release := make(chan struct{})
	ts := startServer(t, ServerConfig{MaxConcurrentPerConn: limit}, HandlerFunc(func(ctx context.Context, _ byte, _ []byte) ([]byte, error) {
		mu.Lock()
		running++
		peak = max(peak, running)
		mu.Unlock()
		<-release
		mu.Lock()
		running--
		mu.Unlock()
		return nil, nil
	}))
	c := newClient(t, ClientConfig{ConnsPerAddr: 1})
	ctx := ctxTimeout(t, 10*time.Second)
	var wg sync.WaitGroup
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Call(ctx, ts.addr, 1, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	waitFor(t, "the handlers to fill the bound", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return running == limit
	})
	close(release)
	wg.Wait()
	if peak != limit {
		t.Errorf("peak concurrent handlers = %d, want %d", peak, limit)
	}
}
