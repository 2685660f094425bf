package node

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

var errCut = errors.New("cut off by the test")

// cutter is a netHook that can cut a node off from everyone: its gossip
// packets and streams are dropped both ways and its peer connections are
// closed and refused, as a network partition would.
type cutter struct {
	cut   atomic.Bool
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// slow, when set, delays every write of this node's peer connections
	// to one address: a link that delivers late, as TCP does on a lossy one.
	slow atomic.Pointer[slowLink]
	// hang, when set, makes this node's dials to that address hang until
	// their deadline, as a SYN dropped by a firewall does.
	hang atomic.Pointer[string]
	hung atomic.Int32 // dials that hung
}

type slowLink struct {
	addr  string
	delay time.Duration
}

// slowTo delays this node's peer-transport writes to addr by d (0: no
// longer).
func (c *cutter) slowTo(addr string, d time.Duration) {
	if d == 0 {
		c.slow.Store(nil)
		return
	}
	c.slow.Store(&slowLink{addr: addr, delay: d})
}

// slowConn is a peer connection that looks at its cutter's slow link
// before each write.
type slowConn struct {
	net.Conn
	c    *cutter
	addr string
}

func (s slowConn) Write(b []byte) (int, error) {
	if l := s.c.slow.Load(); l != nil && l.addr == s.addr {
		time.Sleep(l.delay)
	}
	return s.Conn.Write(b)
}

var _ netHook = (*cutter)(nil)

func newCutter() *cutter { return &cutter{conns: map[net.Conn]struct{}{}} }

func (c *cutter) set(cut bool) {
	c.cut.Store(cut)
	if cut {
		c.mu.Lock()
		for conn := range c.conns {
			conn.Close()
		}
		clear(c.conns)
		c.mu.Unlock()
	}
}

func (c *cutter) track(conn net.Conn) net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut.Load() {
		conn.Close()
		return conn
	}
	c.conns[conn] = struct{}{}
	return conn
}

func (c *cutter) listener(ln net.Listener) net.Listener { return cutListener{ln, c} }

func (c *cutter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.cut.Load() {
		return nil, errCut
	}
	if h := c.hang.Load(); h != nil && *h == addr {
		c.hung.Add(1)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return c.track(slowConn{Conn: conn, c: c, addr: addr}), nil
}

type cutListener struct {
	net.Listener
	c *cutter
}

func (l cutListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.c.track(conn), nil
}

func (c *cutter) transport(mc *memberlist.Config) error {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger,
	})
	if err != nil {
		return err
	}
	mc.BindPort = nt.GetAutoBindPort()
	t := &cutTransport{NetTransport: nt, c: c, packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), done: make(chan struct{})}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	mc.Transport = t
	return nil
}

// cutTransport drops gossip while the node is cut off.
type cutTransport struct {
	*memberlist.NetTransport
	c       *cutter
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.c.cut.Load() {
		return time.Now(), nil
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *cutTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.c.cut.Load() {
		return nil, errCut
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

func (t *cutTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *cutTransport) StreamCh() <-chan net.Conn           { return t.streams }

func (t *cutTransport) forwardPackets() {
	defer t.wg.Done()
	for {
		select {
		case p := <-t.NetTransport.PacketCh():
			if t.c.cut.Load() {
				continue
			}
			select {
			case t.packets <- p:
			case <-t.done:
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *cutTransport) forwardStreams() {
	defer t.wg.Done()
	for {
		select {
		case conn := <-t.NetTransport.StreamCh():
			if t.c.cut.Load() {
				conn.Close()
				continue
			}
			select {
			case t.streams <- conn:
			case <-t.done:
				conn.Close()
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *cutTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	t.once.Do(func() { close(t.done) })
	t.wg.Wait()
	return err
}
