package peer

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// TestServerSurvivesGarbage sends malformed input on raw connections: each
// must be closed and counted, and a well-behaved client must keep working.
func TestServerSurvivesGarbage(t *testing.T) {
	ts := startServer(t, ServerConfig{MaxFrameSize: 1 << 20}, echo)
	good := newClient(t, ClientConfig{})
	ctx := ctxTimeout(t, 10*time.Second)
	if _, err := good.Call(ctx, ts.addr, 1, []byte("before")); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name      string
		handshake bool
		send      []byte
	}{
		{"garbage instead of a hello", false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + string(make([]byte, 40)))},
		{"truncated hello", false, []byte("CNP\x01\x00")},
		{"garbage frame", true, bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 16)},
		{"oversized announced length", true, header(math.MaxUint32, kindRequest, 1, 1, 0)},
		{"length just above the limit", true, header(1<<20+1, kindRequest, 1, 1, 0)},
		{"unknown kind", true, header(0, 9, 1, 1, 0)},
		{"reserved bytes set", true, func() []byte { h := header(0, kindRequest, 1, 1, 0); h[7] = 1; return h }()},
		{"request id zero", true, header(0, kindRequest, 1, 0, 0)},
		{"response sent to a server", true, header(0, kindResponse, 1, 1, 0)},
		{"cancel with a payload", true, append(header(1, kindCancel, 1, 1, 0), 'x')},
		{"truncated frame", true, append(header(100, kindRequest, 1, 1, 0), "only ten b"...)},
		{"truncated header", true, header(100, kindRequest, 1, 1, 0)[:7]},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc := rawConn(t, ts.addr, tc.handshake)
			if _, err := nc.Write(tc.send); err != nil {
				t.Fatalf("write: %v", err)
			}
			// A truncated input only shows as such once the peer stops
			// sending.
			_ = nc.(*net.TCPConn).CloseWrite()
			expectClosed(t, nc)
			waitFor(t, "the protocol error to be counted", func() bool {
				return ts.Stats().ProtocolErrors == uint64(i+1)
			})
			got, err := good.Call(ctx, ts.addr, 2, []byte("still there"))
			if err != nil || string(got) != "\x02still there" {
				t.Fatalf("good client after %s: %q, %v", tc.name, got, err)
			}
		})
	}
	if st := good.Stats(); st.DialErrors != 0 || st.ConnsLost != 0 {
		t.Errorf("the good client was disturbed: %+v", st)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	ts := startServer(t, ServerConfig{HandshakeTimeout: 100 * time.Millisecond}, echo)
	nc := rawConn(t, ts.addr, false)
	_, _ = nc.Write([]byte("CNP")) // then silence
	expectClosed(t, nc)
	waitFor(t, "the failed handshake to be counted", func() bool { return ts.Stats().HandshakeFails == 1 })
}

// fakeServer accepts one connection, does the keyless hello, and then
// runs script on it.
func fakeServer(t *testing.T, script func(nc net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := readHello(nc); err != nil {
			return
		}
		if _, err := nc.Write(rawHello(DefaultMaxFrameSize)); err != nil {
			return
		}
		script(nc)
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// readRequest reads one request frame on a fake server.
func readRequest(t *testing.T, nc net.Conn) frame {
	var hdr [headerSize]byte
	f, err := readFrame(nc, &hdr, DefaultMaxFrameSize)
	if err != nil {
		t.Errorf("fake server: %v", err)
	}
	return f
}

func TestClientSurvivesBadServer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(f frame) []byte
	}{
		{"oversized announced length", func(f frame) []byte { return header(math.MaxUint32, kindResponse, f.op, f.id, 0) }},
		{"unknown kind", func(f frame) []byte { return header(0, 77, f.op, f.id, 0) }},
		{"request sent to a client", func(f frame) []byte { return header(0, kindRequest, f.op, f.id, 0) }},
		{"truncated frame", func(f frame) []byte { return append(header(10, kindResponse, f.op, f.id, 0), "abc"...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeServer(t, func(nc net.Conn) {
				f := readRequest(t, nc)
				_, _ = nc.Write(tc.reply(f))
			})
			c := newClient(t, ClientConfig{MaxFrameSize: 1 << 20})
			_, err := c.Call(ctxTimeout(t, 5*time.Second), addr, 1, []byte("hi"))
			if !errors.Is(err, ErrConnLost) || !errors.Is(err, ErrProtocol) {
				t.Fatalf("Call = %v, want ErrConnLost and ErrProtocol", err)
			}
			if st := c.Stats(); st.ProtocolErrors != 1 {
				t.Errorf("ProtocolErrors = %d, want 1", st.ProtocolErrors)
			}
		})
	}
}

func TestLateResponseDropped(t *testing.T) {
	addr := fakeServer(t, func(nc net.Conn) {
		f := readRequest(t, nc)
		// A response for an id nobody waits for, then the real one, then
		// a malformed error payload.
		_, _ = nc.Write(appendFrame(nil, kindResponse, f.op, f.id+100, 0, []byte("stray")))
		_, _ = nc.Write(appendFrame(nil, kindResponse, f.op, f.id, 0, []byte("real")))
		f = readRequest(t, nc)
		_, _ = nc.Write(appendFrame(nil, kindError, f.op, f.id, 0, []byte{0xc1}))
		f = readRequest(t, nc)
		_, _ = nc.Write(appendFrame(nil, kindResponse, f.op, f.id, 0, []byte("fine")))
	})
	c := newClient(t, ClientConfig{})
	ctx := ctxTimeout(t, 5*time.Second)
	if got, err := c.Call(ctx, addr, 1, nil); err != nil || string(got) != "real" {
		t.Fatalf("Call = %q, %v", got, err)
	}
	if _, err := c.Call(ctx, addr, 1, nil); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Call with an undecodable error = %v, want ErrProtocol", err)
	}
	if got, err := c.Call(ctx, addr, 1, nil); err != nil || string(got) != "fine" {
		t.Fatalf("Call = %q, %v", got, err)
	}
	if st := c.Stats(); st.LateResponses != 1 || st.Dials != 1 {
		t.Errorf("stats %+v, want LateResponses 1 on one connection", st)
	}
}

func TestAuth(t *testing.T) {
	key := bytes.Repeat([]byte("k"), 32)
	ts := startServer(t, ServerConfig{Key: key}, echo)
	plain := startServer(t, ServerConfig{}, echo)
	ctx := ctxTimeout(t, 10*time.Second)

	right := newClient(t, ClientConfig{Key: key})
	if got, err := right.Call(ctx, ts.addr, 1, []byte("x")); err != nil || string(got) != "\x01x" {
		t.Fatalf("right key: %q, %v", got, err)
	}
	for i, tc := range []struct {
		name string
		key  []byte
	}{
		{"wrong key", bytes.Repeat([]byte("w"), 32)},
		{"shorter wrong key", bytes.Repeat([]byte("k"), 16)},
		{"no key", nil},
	} {
		c := newClient(t, ClientConfig{Key: tc.key})
		if _, err := c.Call(ctx, ts.addr, 1, nil); !errors.Is(err, ErrAuth) {
			t.Errorf("%s: Call = %v, want ErrAuth", tc.name, err)
		}
		if st := c.Stats(); st.AuthFailures != 1 || st.Dials != 0 {
			t.Errorf("%s: client stats %+v", tc.name, st)
		}
		waitFor(t, "the server to count the failure", func() bool { return ts.Stats().AuthFailures == uint64(i+1) })
		// The server keeps serving the right client.
		if _, err := right.Call(ctx, ts.addr, 1, nil); err != nil {
			t.Fatalf("right key after %s: %v", tc.name, err)
		}
	}
	// A client with a key refuses a server without one.
	if _, err := right.Call(ctx, plain.addr, 1, nil); !errors.Is(err, ErrAuth) {
		t.Errorf("keyed client to a keyless server: %v, want ErrAuth", err)
	}
	waitFor(t, "the keyless server to count the failure", func() bool { return plain.Stats().AuthFailures == 1 })

	// A raw client that knows the protocol but not the key cannot get a
	// request through: after a bad proof the server closes.
	nc := rawConn(t, ts.addr, false)
	h := hello{mode: modeHMAC, maxFrame: DefaultMaxFrameSize}
	_, _ = nc.Write(h.encode())
	if _, _, err := readHello(nc); err != nil {
		t.Fatal(err)
	}
	_, _ = nc.Write(make([]byte, proofSize)) // a forged proof
	_, _ = nc.Write(appendFrame(nil, kindRequest, 1, 1, 0, nil))
	expectClosed(t, nc)
	if got := ts.Stats().Requests; got != 4 {
		t.Errorf("server Requests = %d, want the 4 of the right client", got)
	}
}

func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	key := bytes.Repeat([]byte("k"), 16)
	ts := startServer(t, ServerConfig{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Key: key}, echo)
	c := newClient(t, ClientConfig{TLS: &tls.Config{RootCAs: pool}, Key: key})
	got, err := c.Call(ctxTimeout(t, 5*time.Second), ts.addr, 3, []byte("secret"))
	if err != nil || string(got) != "\x03secret" {
		t.Fatalf("Call over TLS = %q, %v", got, err)
	}
	// A plain client cannot talk to a TLS server.
	plain := newClient(t, ClientConfig{Key: key, DialTimeout: time.Second})
	if _, err := plain.Call(ctxTimeout(t, 5*time.Second), ts.addr, 3, nil); err == nil {
		t.Fatal("a plain client reached a TLS server")
	}
}

// selfSigned makes a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cachenode test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, pool
}

func TestDialBoundedByCallContext(t *testing.T) {
	// A listener that never answers the hello: the dial waits for
	// DialTimeout, but the call gives up at its own deadline.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
		}
	}()
	c := newClient(t, ClientConfig{DialTimeout: 300 * time.Millisecond})
	start := time.Now()
	_, err = c.Call(ctxTimeout(t, 50*time.Millisecond), ln.Addr().String(), 1, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call = %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 250*time.Millisecond {
		t.Errorf("Call took %v, want about 50ms", took)
	}
	waitFor(t, "the dial to time out", func() bool { return c.Stats().DialErrors == 1 })
	_ = ln.Close()
	<-done
	mu.Lock()
	for _, nc := range conns {
		_ = nc.Close()
	}
	mu.Unlock()
}

// TestServerNotReading checks that a server that stops reading neither
// blocks callers past their deadline nor keeps the connection forever.
func TestServerNotReading(t *testing.T) {
	stop := make(chan struct{})
	addr := fakeServer(t, func(net.Conn) { <-stop })
	t.Cleanup(func() { close(stop) })
	c := newClient(t, ClientConfig{WriteTimeout: 300 * time.Millisecond})
	payload := make([]byte, 1<<20)
	const budget = 100 * time.Millisecond
	giveUp := time.Now().Add(10 * time.Second)
	for i := 0; c.Stats().ConnsLost == 0; i++ {
		if time.Now().After(giveUp) {
			t.Fatal("the connection to a server that does not read was never closed")
		}
		start := time.Now()
		_, err := c.Call(ctxTimeout(t, budget), addr, 1, payload)
		if err == nil {
			t.Fatal("a call to a server that does not read succeeded")
		}
		if took := time.Since(start); took > budget+500*time.Millisecond {
			t.Fatalf("call %d took %v with a %v deadline", i, took, budget)
		}
	}
}
