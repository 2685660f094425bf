package peer

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testServer is a Server serving on a loopback listener.
type testServer struct {
	*Server
	addr   string
	served chan error // Serve's result
}

// startServer starts a Server on a fresh loopback port, closed at the end
// of the test.
func startServer(t testing.TB, cfg ServerConfig, h Handler) *testServer {
	t.Helper()
	return startServerAt(t, "127.0.0.1:0", cfg, h)
}

func startServerAt(t testing.TB, addr string, cfg ServerConfig, h Handler) *testServer {
	t.Helper()
	s, err := NewServer(cfg, h)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	ts := &testServer{Server: s, addr: ln.Addr().String(), served: make(chan error, 1)}
	go func() { ts.served <- s.Serve(ln) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop closes the server and checks that Serve returned nil; it may be
// called more than once.
func (ts *testServer) stop(t testing.TB) {
	t.Helper()
	if err := ts.Close(); err != nil {
		t.Errorf("Server.Close: %v", err)
	}
	select {
	case err, ok := <-ts.served:
		if ok && err != nil {
			t.Errorf("Serve returned %v, want nil", err)
		}
		if ok {
			close(ts.served)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Serve did not return after Close")
	}
}

func newClient(t testing.TB, cfg ClientConfig) *Client {
	t.Helper()
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// echo answers every request with its op byte followed by its payload.
var echo = HandlerFunc(func(_ context.Context, op byte, payload []byte) ([]byte, error) {
	return append([]byte{op}, payload...), nil
})

// waitFor waits until cond holds, failing the test after 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// rawHello returns a client hello without a key.
func rawHello(maxFrame uint32) []byte {
	h := hello{maxFrame: maxFrame}
	return h.encode()
}

// rawConn dials addr and, if handshake is set, performs the keyless hello
// exchange by hand.
func rawConn(t testing.TB, addr string, handshake bool) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if handshake {
		if _, err := nc.Write(rawHello(DefaultMaxFrameSize)); err != nil {
			t.Fatalf("write hello: %v", err)
		}
		if _, _, err := readHello(nc); err != nil {
			t.Fatalf("read hello: %v", err)
		}
	}
	return nc
}

// expectClosed reads from nc until the peer closes it (EOF or reset).
func expectClosed(t testing.TB, nc net.Conn) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := nc.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open: %v", err)
		}
		return
	}
}

// header encodes a raw frame header.
func header(n uint32, kind, op byte, id uint64, budget uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, n)
	b = append(b, kind, op, 0, 0)
	b = binary.BigEndian.AppendUint64(b, id)
	return binary.BigEndian.AppendUint32(b, budget)
}
