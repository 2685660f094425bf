package peer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestKeyring: during a rotation a server and a client whose keyrings
// share a key (one side's primary among the other's keys) authenticate
// each other either way round, and a key outside the ring is refused.
func TestKeyring(t *testing.T) {
	oldK, newK, other := bytes.Repeat([]byte("o"), 32), bytes.Repeat([]byte("n"), 32), bytes.Repeat([]byte("x"), 32)
	ctx := ctxTimeout(t, 10*time.Second)
	for _, tc := range []struct {
		name           string
		server, client [][]byte // primary first
		ok             bool
	}{
		{"the new key installed on the server only", [][]byte{oldK, newK}, [][]byte{oldK}, true},
		{"the new key installed on the client only", [][]byte{oldK}, [][]byte{oldK, newK}, true},
		{"the server switched its primary", [][]byte{newK, oldK}, [][]byte{oldK, newK}, true},
		{"the client switched its primary", [][]byte{oldK, newK}, [][]byte{newK, oldK}, true},
		{"the server switched, the client lacks the new key", [][]byte{newK, oldK}, [][]byte{oldK}, false},
		{"the client switched, the server lacks the new key", [][]byte{oldK}, [][]byte{newK, oldK}, false},
		{"no shared key", [][]byte{newK, oldK}, [][]byte{other}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, ServerConfig{Key: tc.server[0], Keys: tc.server[1:]}, echo)
			c := newClient(t, ClientConfig{Key: tc.client[0], Keys: tc.client[1:]})
			_, err := c.Call(ctx, ts.addr, 1, nil)
			if tc.ok && err != nil {
				t.Fatalf("Call = %v, want success", err)
			}
			if !tc.ok && !errors.Is(err, ErrAuth) {
				t.Fatalf("Call = %v, want ErrAuth", err)
			}
		})
	}
	if _, err := NewServer(ServerConfig{Keys: [][]byte{oldK}}, echo); err == nil {
		t.Error("NewServer accepted Keys without a primary Key")
	}
	if _, err := NewClient(ClientConfig{Key: oldK, Keys: [][]byte{[]byte("short")}}); err == nil {
		t.Error("NewClient accepted a 5-byte key in Keys")
	}
}

// TestConnectionLimits: beyond MaxConnsPerIP connections from one address,
// or MaxConns in all, a new connection is closed at once and counted;
// closing one lets the next in.
func TestConnectionLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  ServerConfig
		max  int
	}{
		{"per IP", ServerConfig{MaxConnsPerIP: 3}, 3},
		{"in total", ServerConfig{MaxConns: 2, MaxConnsPerIP: -1}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.cfg, echo)
			var open []net.Conn
			for range tc.max {
				open = append(open, rawConn(t, ts.addr, true))
			}
			waitFor(t, "the connections to be served", func() bool { return ts.Stats().Conns == tc.max })
			over := rawConn(t, ts.addr, false)
			expectClosed(t, over)
			if st := ts.Stats(); st.Refused != 1 || st.Accepted != uint64(tc.max) {
				t.Fatalf("stats %+v, want 1 refused and %d accepted", st, tc.max)
			}
			_ = open[0].Close()
			waitFor(t, "the closed connection to be gone", func() bool { return ts.Stats().Conns == tc.max-1 })
			rawConn(t, ts.addr, true) // a handshake that completes
			waitFor(t, "the new connection to be served", func() bool { return ts.Stats().Conns == tc.max })
		})
	}
}

// TestDefaultConnectionLimits: the defaults are the documented ones.
func TestDefaultConnectionLimits(t *testing.T) {
	c := DefaultServerConfig()
	if c.MaxConns != 1024 || c.MaxConnsPerIP != 64 || c.IdleTimeout != 2*time.Minute {
		t.Errorf("defaults MaxConns %d MaxConnsPerIP %d IdleTimeout %v", c.MaxConns, c.MaxConnsPerIP, c.IdleTimeout)
	}
	if cc := DefaultClientConfig(); cc.IdleTimeout >= c.IdleTimeout {
		t.Errorf("client idle timeout %v is not below the server's %v", cc.IdleTimeout, c.IdleTimeout)
	}
}

// TestIdleConnectionClosed: a connection that sends nothing after its
// handshake is closed after IdleTimeout; one whose request is still running
// is not, and gets its answer.
func TestIdleConnectionClosed(t *testing.T) {
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, op byte, payload []byte) ([]byte, error) {
		if op == 2 {
			<-release
		}
		return []byte("ok"), nil
	})
	ts := startServer(t, ServerConfig{IdleTimeout: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}, h)
	idle := rawConn(t, ts.addr, true)
	expectClosed(t, idle)
	waitFor(t, "the idle close to be counted", func() bool { return ts.Stats().IdleClosed == 1 })

	// A client whose idle timeout is longer than the server's waits on a
	// long request: the connection stays.
	c := newClient(t, ClientConfig{IdleTimeout: time.Hour})
	done := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), ts.addr, 2, nil)
		done <- err
	}()
	waitFor(t, "the request to run", func() bool { return ts.Stats().Requests == 1 })
	// Several idle periods pass while the request runs (the server's
	// IdleClosed counter would move if it closed the connection).
	deadline := time.Now().Add(400 * time.Millisecond)
	for time.Now().Before(deadline) {
		if ts.Stats().IdleClosed != 1 {
			t.Fatal("the server closed a connection whose request was running")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("long call: %v", err)
	}
}

// TestClientRetiresIdleConnection: the client closes a connection unused
// for its IdleTimeout, before the server would; the next call dials anew
// and succeeds.
func TestClientRetiresIdleConnection(t *testing.T) {
	ts := startServer(t, ServerConfig{}, echo)
	c := newClient(t, ClientConfig{IdleTimeout: 50 * time.Millisecond})
	ctx := ctxTimeout(t, 10*time.Second)
	if _, err := c.Call(ctx, ts.addr, 1, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the client to retire the idle connection", func() bool { return c.Stats().Conns == 0 })
	if st := c.Stats(); st.ConnsLost != 0 {
		t.Errorf("an idle retirement counted as a lost connection: %+v", st)
	}
	if _, err := c.Call(ctx, ts.addr, 1, nil); err != nil {
		t.Fatalf("call after the retirement: %v", err)
	}
	if st := c.Stats(); st.Dials != 2 {
		t.Errorf("dials = %d, want 2", st.Dials)
	}
	if st := ts.Stats(); st.IdleClosed != 0 {
		t.Errorf("the server closed the connection as idle: %+v", st)
	}
}

// TestClientIdleKeepsBusyConnection: calls that keep coming keep the
// connection; many concurrent calls around the idle time never fail.
func TestClientIdleKeepsBusyConnection(t *testing.T) {
	ts := startServer(t, ServerConfig{}, echo)
	c := newClient(t, ClientConfig{IdleTimeout: 5 * time.Millisecond})
	ctx := ctxTimeout(t, 10*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if _, err := c.Call(ctx, ts.addr, 1, nil); err != nil {
					errs <- err
					return
				}
				if i%20 == 0 {
					time.Sleep(6 * time.Millisecond) // let the connection go idle now and then
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("call failed around idle retirements: %v", err)
	}
}

// TestRefusalWarningsRateLimited: a remote that fails the handshake in a
// loop gets one warning per minute; the next carries the count held back.
func TestRefusalWarningsRateLimited(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	key := bytes.Repeat([]byte("k"), 32)
	ts := startServer(t, ServerConfig{Key: key, Logger: log}, echo)
	c := newClient(t, ClientConfig{Key: bytes.Repeat([]byte("w"), 32)})
	ctx := ctxTimeout(t, 10*time.Second)
	for range 5 {
		if _, err := c.Call(ctx, ts.addr, 1, nil); !errors.Is(err, ErrAuth) {
			t.Fatalf("Call = %v, want ErrAuth", err)
		}
	}
	waitFor(t, "five failures", func() bool { return ts.Stats().AuthFailures == 5 })
	mu.Lock()
	got := strings.Count(buf.String(), "rejected connection")
	mu.Unlock()
	if got != 1 {
		t.Errorf("%d warnings for 5 refusals within a minute, want 1:\n%s", got, buf.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestWarnLimiter: one warning per remote per period, the count of those
// held back in the next, and a bounded memory of remotes.
func TestWarnLimiter(t *testing.T) {
	l := newWarnLimiter(time.Minute)
	t0 := time.Unix(1000, 0)
	if held, ok := l.allow("a", t0); !ok || held != 0 {
		t.Fatalf("first warning: %d, %v", held, ok)
	}
	for i := range 3 {
		if _, ok := l.allow("a", t0.Add(time.Duration(i+1)*time.Second)); ok {
			t.Fatal("a second warning within the minute")
		}
	}
	if _, ok := l.allow("b", t0.Add(time.Second)); !ok {
		t.Fatal("another remote is held back by the first")
	}
	if held, ok := l.allow("a", t0.Add(time.Minute)); !ok || held != 3 {
		t.Fatalf("after a minute: held %d, ok %v; want 3, true", held, ok)
	}
	for i := range 2 * warnTracked {
		l.allow(strings.Repeat("x", 1+i%7)+string(rune(i)), t0.Add(2*time.Minute))
	}
	l.mu.Lock()
	n := len(l.mu.remotes)
	l.mu.Unlock()
	if n > warnTracked+1 {
		t.Errorf("%d remotes remembered, bound %d", n, warnTracked)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
