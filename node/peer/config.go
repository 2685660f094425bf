package peer

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"time"
)

// Defaults of ServerConfig and ClientConfig.
const (
	DefaultMaxFrameSize         = 64 << 20
	DefaultMaxConcurrentPerConn = 256
	DefaultHandshakeTimeout     = 5 * time.Second
	DefaultWriteTimeout         = 10 * time.Second
	DefaultConnsPerAddr         = 1
	DefaultDialTimeout          = 3 * time.Second
	DefaultMaxConns             = 1024
	DefaultMaxConnsPerIP        = 64
	DefaultServerIdleTimeout    = 2 * time.Minute
	DefaultClientIdleTimeout    = time.Minute
)

// maxConnsPerAddr bounds ClientConfig.ConnsPerAddr: more connections to one
// peer only add goroutines and buffers.
const maxConnsPerAddr = 64

// ServerConfig configures a Server. The zero value of each field means its
// default; NewServer copies the struct and never modifies the caller's.
type ServerConfig struct {
	// MaxFrameSize bounds the payload of a frame in bytes: a request
	// announcing more closes its connection. It is announced to clients,
	// which refuse to send larger requests. Default 64 MiB; at most
	// 4 GiB - 1.
	MaxFrameSize int

	// MaxConcurrentPerConn bounds the requests of one connection that are
	// handled at once, each in its own goroutine. When it is reached, the
	// server stops reading that connection until a handler returns (TCP
	// back-pressure on the client; its cancel frames wait too).
	// Default 256.
	MaxConcurrentPerConn int

	// Key, when set, is the shared secret (16, 24 or 32 bytes, the gossip
	// key) that every client must prove to know before it may send a
	// request (see the package documentation). The server proves it knows
	// Key in turn. Default none: no authentication.
	Key []byte

	// Keys are further keys accepted from clients besides Key: the rest of
	// a keyring during a key rotation (see the package documentation).
	// They need Key. Default none.
	Keys [][]byte

	// MaxConns bounds the connections open at once, handshakes included:
	// a connection accepted beyond it is closed at once. Default 1024;
	// negative: no bound.
	MaxConns int

	// MaxConnsPerIP bounds the connections open at once from one remote IP
	// address. Default 64 (the most a Client opens to one address);
	// negative: no bound.
	MaxConnsPerIP int

	// IdleTimeout closes a connection after its handshake when no frame
	// arrived for this long and no request of it is running. Clients keep
	// their own idle timeout below it (ClientConfig.IdleTimeout), so that
	// they, not the server, close a quiet connection. Default 2m.
	IdleTimeout time.Duration

	// TLS, when set, wraps every accepted connection in TLS with this
	// configuration (it is cloned). Default nil: plain TCP.
	TLS *tls.Config

	// HandshakeTimeout bounds the TLS handshake and the hello exchange of a
	// new connection. Default 5s.
	HandshakeTimeout time.Duration

	// WriteTimeout bounds one write to a connection: a client that stops
	// reading for this long has its connection closed. Default 10s.
	WriteTimeout time.Duration

	// Logger receives connection and handler failures. Default: discard.
	Logger *slog.Logger
}

// ClientConfig configures a Client. The zero value of each field means its
// default; NewClient copies the struct and never modifies the caller's.
type ClientConfig struct {
	// MaxFrameSize bounds the payload of a frame in bytes: Call refuses a
	// larger request without sending it, and a response announcing more
	// closes its connection. It is announced to servers, which answer a
	// larger response with an error. Default 64 MiB; at most 4 GiB - 1.
	MaxFrameSize int

	// ConnsPerAddr is the number of connections kept to each peer address,
	// dialed lazily as calls need them; calls are spread over them round
	// robin. One connection carries the most frames per syscall, which is
	// what the remote hit pays for (docs/BENCHMARKS.md). Default 1; at most
	// 64.
	ConnsPerAddr int

	// DialTimeout bounds the establishment of one connection: TCP dial, TLS
	// and the hello exchange. A Call's own context can end its wait sooner.
	// Default 3s.
	DialTimeout time.Duration

	// WriteTimeout bounds one write to a connection: a server that stops
	// reading for this long has its connection closed. Default 10s.
	WriteTimeout time.Duration

	// Key, when set, is the shared secret (16, 24 or 32 bytes, the gossip
	// key) used to authenticate every connection (see the package
	// documentation): the client proves it knows Key, and accepts a server
	// that proves it knows Key or one of Keys. Default none.
	Key []byte

	// Keys are further keys accepted from servers besides Key (the rest of
	// a keyring). They need Key. Default none.
	Keys [][]byte

	// IdleTimeout closes a connection on which no call was made for this
	// long, so that the client rather than the server (whose
	// ServerConfig.IdleTimeout must be longer) ends a quiet connection: a
	// call is never sent on a connection the server is closing. Default
	// 1m.
	IdleTimeout time.Duration

	// TLS, when set, wraps every connection in TLS with this configuration
	// (it is cloned; an empty ServerName is taken from the dialed address).
	// Default nil: plain TCP.
	TLS *tls.Config

	// DialContext opens the network connection. Default: a net.Dialer's
	// DialContext. Tests use it to inject faults.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// Logger receives connection failures. Default: discard.
	Logger *slog.Logger
}

// DefaultServerConfig returns a ServerConfig with every default filled in.
func DefaultServerConfig() ServerConfig {
	c, _ := ServerConfig{}.withDefaults()
	return c
}

// DefaultClientConfig returns a ClientConfig with every default filled in.
func DefaultClientConfig() ClientConfig {
	c, _ := ClientConfig{}.withDefaults()
	return c
}

// withDefaults returns a validated copy of c with defaults filled in. c is a
// value, so the caller's struct is untouched; the slices and pointers that
// the result keeps are cloned.
func (c ServerConfig) withDefaults() (ServerConfig, error) {
	var err error
	if c.MaxFrameSize, err = defaultInt("ServerConfig.MaxFrameSize", c.MaxFrameSize, DefaultMaxFrameSize, math.MaxUint32); err != nil {
		return c, err
	}
	if c.MaxConcurrentPerConn, err = defaultInt("ServerConfig.MaxConcurrentPerConn", c.MaxConcurrentPerConn, DefaultMaxConcurrentPerConn, math.MaxInt32); err != nil {
		return c, err
	}
	if c.HandshakeTimeout, err = defaultDuration("ServerConfig.HandshakeTimeout", c.HandshakeTimeout, DefaultHandshakeTimeout); err != nil {
		return c, err
	}
	if c.WriteTimeout, err = defaultDuration("ServerConfig.WriteTimeout", c.WriteTimeout, DefaultWriteTimeout); err != nil {
		return c, err
	}
	if c.Key, c.Keys, err = checkKeys("ServerConfig", c.Key, c.Keys); err != nil {
		return c, err
	}
	if c.MaxConns, err = defaultLimit("ServerConfig.MaxConns", c.MaxConns, DefaultMaxConns); err != nil {
		return c, err
	}
	if c.MaxConnsPerIP, err = defaultLimit("ServerConfig.MaxConnsPerIP", c.MaxConnsPerIP, DefaultMaxConnsPerIP); err != nil {
		return c, err
	}
	if c.IdleTimeout, err = defaultDuration("ServerConfig.IdleTimeout", c.IdleTimeout, DefaultServerIdleTimeout); err != nil {
		return c, err
	}
	if c.TLS != nil {
		c.TLS = c.TLS.Clone()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// withDefaults: see ServerConfig.withDefaults.
func (c ClientConfig) withDefaults() (ClientConfig, error) {
	var err error
	if c.MaxFrameSize, err = defaultInt("ClientConfig.MaxFrameSize", c.MaxFrameSize, DefaultMaxFrameSize, math.MaxUint32); err != nil {
		return c, err
	}
	if c.ConnsPerAddr, err = defaultInt("ClientConfig.ConnsPerAddr", c.ConnsPerAddr, DefaultConnsPerAddr, maxConnsPerAddr); err != nil {
		return c, err
	}
	if c.DialTimeout, err = defaultDuration("ClientConfig.DialTimeout", c.DialTimeout, DefaultDialTimeout); err != nil {
		return c, err
	}
	if c.WriteTimeout, err = defaultDuration("ClientConfig.WriteTimeout", c.WriteTimeout, DefaultWriteTimeout); err != nil {
		return c, err
	}
	if c.Key, c.Keys, err = checkKeys("ClientConfig", c.Key, c.Keys); err != nil {
		return c, err
	}
	if c.IdleTimeout, err = defaultDuration("ClientConfig.IdleTimeout", c.IdleTimeout, DefaultClientIdleTimeout); err != nil {
		return c, err
	}
	if c.TLS != nil {
		c.TLS = c.TLS.Clone()
	}
	if c.DialContext == nil {
		c.DialContext = (&net.Dialer{}).DialContext
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

func defaultInt(field string, v, def, limit int) (int, error) {
	switch {
	case v == 0:
		return def, nil
	case v < 0:
		return 0, fmt.Errorf("peer: %s: %d is negative", field, v)
	case v > limit:
		return 0, fmt.Errorf("peer: %s: %d is above the limit %d", field, v, limit)
	}
	return v, nil
}

func defaultDuration(field string, v, def time.Duration) (time.Duration, error) {
	switch {
	case v == 0:
		return def, nil
	case v < 0:
		return 0, fmt.Errorf("peer: %s: %v is negative", field, v)
	}
	return v, nil
}

// defaultLimit is defaultInt for a bound that a negative value lifts
// (returned as 0: no bound).
func defaultLimit(field string, v, def int) (int, error) {
	if v < 0 {
		return 0, nil
	}
	return defaultInt(field, v, def, math.MaxInt32)
}

// checkKeys checks a primary key and the further keys of its ring, and
// returns copies of them.
func checkKeys(cfg string, key []byte, keys [][]byte) ([]byte, [][]byte, error) {
	key, err := checkKey(cfg+".Key", key)
	if err != nil {
		return nil, nil, err
	}
	if len(keys) > 0 && key == nil {
		return nil, nil, fmt.Errorf("peer: %s.Keys: further keys need a primary Key", cfg)
	}
	var out [][]byte
	for i, k := range keys {
		c, err := checkKey(fmt.Sprintf("%s.Keys[%d]", cfg, i), k)
		if err != nil {
			return nil, nil, err
		}
		if c == nil {
			return nil, nil, fmt.Errorf("peer: %s.Keys[%d]: empty key", cfg, i)
		}
		out = append(out, c)
	}
	return key, out, nil
}

func checkKey(field string, key []byte) ([]byte, error) {
	switch len(key) {
	case 0:
		return nil, nil
	case 16, 24, 32:
		return slices.Clone(key), nil
	}
	return nil, fmt.Errorf("peer: %s: %d bytes, want 16, 24 or 32", field, len(key))
}
