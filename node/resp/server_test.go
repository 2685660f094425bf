package resp

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cachenode/cachenode/worker"
)

// rawConn is a connection speaking raw RESP.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *rawConn) send(raw string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(raw)); err != nil {
		c.t.Fatal(err)
	}
}

// reply reads one reply, nested elements included, as its lines.
func (c *rawConn) reply() string {
	c.t.Helper()
	var b strings.Builder
	c.read(&b)
	return b.String()
}

func (c *rawConn) read(b *strings.Builder) {
	c.t.Helper()
	l, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (so far %q)", err, b.String())
	}
	b.WriteString(l)
	n := 0
	for _, ch := range strings.TrimRight(l[1:], "\r\n") {
		n = n*10 + int(ch-'0')
	}
	switch l[0] {
	case '$', '=':
		if l[1] == '-' {
			return
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.br, buf); err != nil {
			c.t.Fatal(err)
		}
		b.Write(buf)
	case '*', '>':
		if l[1] == '-' {
			return
		}
		for range n {
			c.read(b)
		}
	case '%':
		for range 2 * n {
			c.read(b)
		}
	}
}

func TestPipeliningAndProtocols(t *testing.T) {
	o := newOrigin()
	a := startCluster(t, 2, "", o)[0]
	c := dial(t, a.addr)
	// 50 commands in one write; the replies come in order.
	var sb strings.Builder
	for i := range 50 {
		sb.WriteString("*2\r\n$3\r\nGET\r\n$" + itoa(len("items?id=")+len(itoa(i))) + "\r\nitems?id=" + itoa(i) + "\r\n")
	}
	c.send(sb.String())
	for i := range 50 {
		want := o.value(itoa(i))
		if got := c.reply(); got != "$"+itoa(len(want))+"\r\n"+want+"\r\n" {
			t.Fatalf("reply %d: %q, want %q", i, got, want)
		}
	}
	// HELLO 3: maps, nulls and pushes from now on.
	c.send("HELLO 3\r\n")
	if got := c.reply(); !strings.HasPrefix(got, "%8\r\n") || !strings.Contains(got, "proto\r\n:3\r\n") {
		t.Errorf("HELLO 3: %q", got)
	}
	c.send("CLIENT GETNAME\r\nHELLO 4\r\nHELLO 2\r\n")
	if got := c.reply(); got != "_\r\n" {
		t.Errorf("CLIENT GETNAME in RESP3: %q", got)
	}
	if got := c.reply(); !strings.HasPrefix(got, "-NOPROTO") {
		t.Errorf("HELLO 4: %q", got)
	}
	if got := c.reply(); !strings.HasPrefix(got, "*16\r\n") {
		t.Errorf("HELLO 2: %q", got)
	}
	c.send("CLIENT GETNAME\r\nCLIENT TRACKING ON\r\n")
	if got := c.reply(); got != "$-1\r\n" {
		t.Errorf("CLIENT GETNAME in RESP2: %q", got)
	}
	if got := c.reply(); !strings.Contains(got, "REDIRECT") {
		t.Errorf("CLIENT TRACKING ON in RESP2 without REDIRECT: %q", got)
	}
	// The entity, as JSON in RESP2.
	c.send("CN.ENTITY items?id=1\r\nGET items?id=1&_entity=1\r\n")
	for range 2 {
		if got := c.reply(); !strings.Contains(got, `"label":"items"`) || !strings.Contains(got, `"owner":"n`) {
			t.Errorf("entity: %q", got)
		}
	}
	// A fill slower than its timeout: the read's deadline ends it.
	c.send("GET slow?id=1\r\n")
	if got := c.reply(); !strings.HasPrefix(got, "-ERR fill_timeout") {
		t.Errorf("a slow fill: %q, want fill_timeout", got)
	}
	c.send("QUIT\r\n")
	if got := c.reply(); got != "+OK\r\n" {
		t.Errorf("QUIT: %q", got)
	}
	if _, err := c.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("after QUIT: %v, want the connection closed", err)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// TestConnectionBounds: past MaxConns a connection is refused with an
// error; an idle connection is closed after IdleTimeout.
func TestConnectionBounds(t *testing.T) {
	o := newOrigin()
	m := startCluster(t, 1, "", o)[0]
	serve := func(cfg Config) (*Server, string) {
		t.Helper()
		cfg.Node = m.node
		srv, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		t.Cleanup(func() {
			srv.Close()
			<-served
		})
		return srv, ln.Addr().String()
	}
	bounded, addr := serve(Config{MaxConns: 2, IdleTimeout: time.Hour})
	c1, c2 := dial(t, addr), dial(t, addr)
	c1.send("PING\r\n")
	c2.send("PING\r\n")
	c1.reply()
	c2.reply()
	c3 := dial(t, addr)
	if got := c3.reply(); !strings.HasPrefix(got, "-ERR max number of clients reached") {
		t.Errorf("a third connection: %q", got)
	}
	if bounded.stats.rejected.Load() != 1 {
		t.Errorf("%d rejected", bounded.stats.rejected.Load())
	}
	idle, addr := serve(Config{IdleTimeout: 200 * time.Millisecond})
	c := dial(t, addr)
	c.send("PING\r\n")
	c.reply()
	if _, err := c.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("an idle connection: %v, want it closed", err)
	}
	waitFor(t, "the idle connection removed", func() bool { return len(idle.conns()) == 0 })
}

// TestTrackedKeyMovesOwner: a tracked key whose owner changes (a member
// joins and takes it) is invalidated.
func TestTrackedKeyMovesOwner(t *testing.T) {
	o := newOrigin()
	a := startCluster(t, 1, "", o)[0]
	c := dial(t, a.addr)
	c.send("HELLO 3\r\n")
	c.reply()
	c.send("CLIENT TRACKING ON\r\n")
	if got := c.reply(); got != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING ON: %q", got)
	}
	// Track many keys: a second member takes about half of them.
	w, _ := a.node.Cache().Worker("items")
	var sb strings.Builder
	for i := range 40 {
		sb.WriteString("GET items?id=" + itoa(i) + "\r\n")
	}
	c.send(sb.String())
	for range 40 {
		c.reply()
	}
	tracked := a.srv.track.len()
	if tracked != 40 {
		t.Fatalf("%d keys tracked, want 40", tracked)
	}
	// Join a second node to a: the ring changes on a.
	o2 := newOrigin()
	joinTo(t, a, o2)
	waitFor(t, "a ring of two", func() bool { r := a.node.Ring(); return r != nil && r.Len() == 2 })
	moved := 0
	for i := range 40 {
		k, _ := w.Key(worker.Args{"id": itoa(i)})
		if a.node.Owner(k) != "n1" {
			moved++
		}
	}
	if moved == 0 {
		t.Skip("no key moved to the new member")
	}
	got := c.reply()
	if !strings.HasPrefix(got, ">2\r\n$10\r\ninvalidate\r\n*") {
		t.Fatalf("after the ring change: %q, want an invalidate push", got)
	}
	waitFor(t, "the moved keys untracked", func() bool { return a.srv.track.len() == 40-moved })
}

// TestTrackingForgetsClosedConnections: the keys of a tracking connection
// leave the table when it closes, or turns tracking off.
func TestTrackingForgetsClosedConnections(t *testing.T) {
	o := newOrigin()
	a := startCluster(t, 1, "", o)[0]
	open := func() *rawConn {
		c := dial(t, a.addr)
		c.send("HELLO 3\r\nCLIENT TRACKING ON\r\nGET items?id=1\r\nGET items?id=2\r\nGET items?id=1&x=1\r\n")
		for range 5 {
			c.reply()
		}
		return c
	}
	c1, c2 := open(), open()
	if n := a.srv.track.len(); n != 3 {
		t.Fatalf("%d keys tracked, want 3", n)
	}
	c1.nc.Close()
	// c2 still reads the three keys.
	waitFor(t, "c1 forgotten", func() bool {
		a.srv.track.mu.Lock()
		defer a.srv.track.mu.Unlock()
		return len(a.srv.track.byConn) == 1
	})
	if n := a.srv.track.len(); n != 3 {
		t.Errorf("%d keys tracked after c1 closed, want c2's 3", n)
	}
	c2.send("CLIENT TRACKING OFF\r\n")
	if got := c2.reply(); got != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING OFF: %q", got)
	}
	if n := a.srv.track.len(); n != 0 {
		t.Errorf("%d keys tracked after c2 turned tracking off", n)
	}
}
