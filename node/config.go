package node

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachenode/cachenode/node/peer"
	"github.com/cachenode/cachenode/persist"
	"github.com/cachenode/cachenode/ring"
	"github.com/cachenode/cachenode/worker"
)

// ErrConfig is wrapped by every configuration error; the message names the
// field at fault.
var ErrConfig = errors.New("node: invalid config")

// Config configures a [Node]. New copies it and never modifies the
// caller's struct.
type Config struct {
	// Name is the node's name, unique in the cluster. Required.
	Name string
	// Gossip is the memberlist bind address, HOST:PORT (TCP and UDP). Port 0
	// picks a free port. Default "0.0.0.0:7946".
	Gossip string
	// Advertise is the gossip address other members should use. Default:
	// the bind address (with an unspecified host replaced by memberlist's
	// choice of a private address).
	Advertise string
	// Peer is the peer-transport listen address. Port 0 picks a free port.
	// Default "0.0.0.0:7947".
	Peer string
	// PeerAdvertise is the peer address other members should use. Default:
	// the bound peer address, with an unspecified host replaced by the
	// advertised gossip host.
	PeerAdvertise string
	// HTTP is the client API address published in the node's metadata (the
	// node does not serve HTTP itself). Default "".
	HTTP string
	// Join lists gossip addresses of members to join; retried with backoff
	// until one answers. Empty: the node starts a new cluster.
	Join []string
	// Memory bounds the heap of the node's cached state: the entries
	// (owned and near-cache copies, each weighed with its measured cost)
	// get three quarters, the created-cache records (Pebble's memtables and
	// block cache, the writer's key counts, and with Data "" the records
	// themselves) a quarter. The process's heap after a GC stays within
	// about 1.1 × Memory + 32 MiB (see docs/BENCHMARKS.md, memory).
	// Default 256 MiB.
	Memory int64
	// Data is the Pebble directory of the created-cache records. "" keeps
	// them in memory. Default "".
	Data string
	// DataOnCorruption says what New does with a records database that is
	// corrupt: "move-aside" (the default) renames it to
	// Data.corrupt-<UTC time> and starts with no records; "fail" makes New
	// fail.
	DataOnCorruption string
	// DataKeepCorrupt is how many moved-aside directories are kept.
	// Default 1; negative keeps none.
	DataKeepCorrupt int
	// DataReopenBackoff is the first wait before the records database is
	// reopened after a storage fault (see [Node.Records]); it doubles up to
	// 30 s. Default 1 s.
	DataReopenBackoff time.Duration
	// DataFS is the filesystem of Data. Default: the operating system's.
	// Tests inject storage faults through it (Pebble's vfs/errorfs).
	DataFS vfs.FS
	// PeerTLS, when set, wraps peer-transport connections in TLS both ways:
	// the server side uses Certificates, ClientCAs and ClientAuth, the
	// client side Certificates and RootCAs (the server name is taken from
	// the dialed address). Set ClientAuth to RequireAndVerifyClientCert for
	// mutual TLS. Default nil: plain TCP (authenticated by GossipKey when
	// set).
	PeerTLS *tls.Config
	// NoNearCache stops the node from keeping copies of values it fetched
	// from their owners. Default false.
	NoNearCache bool
	// GossipKey encrypts gossip and authenticates peer connections: 16, 24
	// or 32 bytes. It is the primary key of the keyring: the one gossip is
	// encrypted with and peer connections prove. Default none.
	GossipKey []byte
	// GossipKeys are further keys, accepted for gossip and for peer
	// connections besides GossipKey, so that a key is rotated without a
	// cut (memberlist's keyring): add the new key here on every member,
	// then make it GossipKey everywhere, then drop the old one. They need
	// GossipKey. Default none.
	GossipKeys [][]byte
	// Insecure lets a node whose gossip or peer address is not loopback
	// start without GossipKey or PeerTLS. Without it such a node refuses to
	// start (an error wrapping ErrConfig and ErrInsecure): anyone who
	// reaches those ports could join the cluster, read every value and
	// plant or wipe values. Default false.
	Insecure bool
	// PeerLimits bound what the peer port accepts. The zero value of each
	// field means its default.
	PeerLimits PeerLimits
	// Membership holds the failure-detection and gossip timings. Default
	// [LANMembership]; tests and single-host clusters use
	// [LocalMembership].
	Membership Membership
	// Ring configures the consistent hashing. Default ring.DefaultConfig().
	// Every member must use the same ring configuration.
	Ring ring.Config
	// Defaults are the process-wide defaults of every worker field. The
	// zero value means worker.DefaultPolicy().
	Defaults worker.Policy
	// HandoffEntries bounds how many hot entries a gracefully leaving node
	// hands to their new owners. Default 10000; negative disables handoff.
	HandoffEntries int
	// HandoffBytes bounds the bytes of values handed off. Default 64 MiB.
	HandoffBytes int64
	// Limits bound the arguments of every read this node serves: Get (and
	// so the HTTP API) and the fetches of other members, which are checked
	// when their request is decoded, before anything is computed or
	// written. Over them a read fails with worker.ErrTooManyArgs or
	// worker.ErrArgsTooLarge. Default worker.DefaultLimits() (64 arguments,
	// 8 KiB); every member should use the same limits.
	Limits worker.Limits
	// OnPeerCall, when set, is called after every peer-transport call this
	// node makes, with the operation ("fetch", "handoff", "invalidate"), the
	// peer's name, the call's duration and its error: the hook for latency
	// metrics. It must not block. Default nil.
	OnPeerCall func(op, peer string, d time.Duration, err error)
	// Clock is the node's time source for what it decides about cached
	// data: entry TTLs and relevance, wait budgets, the origin limiter's
	// queue, records' expiry in persist, invalidation timestamps and the
	// invalidation core's logical time, the outbox's due times, redelivery
	// rounds and the pause watchdog. Tests give a clockwork.FakeClock and
	// Advance it instead of sleeping (an Advance longer than the suspicion
	// timeout reads as a pause and drops the cache, as a SIGSTOP would).
	// Network timeouts, retries, membership and latency figures stay on the
	// system clock: memberlist and sockets know no other. Default the
	// system clock.
	Clock worker.Clock
	// Logger receives the node's logs. Default: discarded.
	Logger *slog.Logger
	// Tracer, when set, traces the reads that reach another member: a
	// client span around each fetch from an owner, whose W3C traceparent
	// goes with the request, and on the owner a server span, parent of the
	// getter's context (the origin's request, when the getter traces it). A
	// read that carries no span (see httpapi.Config.Tracer) starts a new
	// trace. Hits that an owner answers from its connection's read loop are
	// not spanned there; a fetch that carries a traceparent takes the
	// owner's usual path. Default nil: no spans, nothing on the wire.
	Tracer trace.TracerProvider

	// hook wraps the node's sockets; tests use it to cut a node off.
	hook netHook
}

// PeerLimits bound the connections of the peer port and the delayed
// invalidations other members may hand to this node.
type PeerLimits struct {
	// MaxConns bounds the peer connections open at once. Default 1024;
	// negative: no bound.
	MaxConns int
	// MaxConnsPerIP bounds the peer connections open at once from one
	// remote IP address. Default 64; negative: no bound.
	MaxConnsPerIP int
	// IdleTimeout closes a peer connection on which nothing arrived for
	// this long after its handshake (and no request runs). Default 2m.
	IdleTimeout time.Duration
	// MaxEnqueueItem bounds one delayed invalidation handed over by a
	// leaving member. Default 1 MiB.
	MaxEnqueueItem int
	// MaxEnqueueBytes bounds the bytes of this node's outbox of delayed
	// invalidations that a handed-over one may bring it to. Default 64 MiB.
	MaxEnqueueBytes int64
	// MaxEnqueueCountdown bounds how far in the future a handed-over
	// delayed invalidation may be due. Default 1h.
	MaxEnqueueCountdown time.Duration
}

// DefaultPeerLimits returns the default PeerLimits.
func DefaultPeerLimits() PeerLimits {
	return PeerLimits{
		MaxConns: peer.DefaultMaxConns, MaxConnsPerIP: peer.DefaultMaxConnsPerIP, IdleTimeout: peer.DefaultServerIdleTimeout,
		MaxEnqueueItem: 1 << 20, MaxEnqueueBytes: 64 << 20, MaxEnqueueCountdown: time.Hour,
	}
}

// ensureDefaults fills the zero fields of l.
func (l *PeerLimits) ensureDefaults() {
	d := DefaultPeerLimits()
	orDefault(&l.MaxConns, d.MaxConns)
	orDefault(&l.MaxConnsPerIP, d.MaxConnsPerIP)
	orDefault(&l.IdleTimeout, d.IdleTimeout)
	orDefault(&l.MaxEnqueueItem, d.MaxEnqueueItem)
	orDefault(&l.MaxEnqueueBytes, d.MaxEnqueueBytes)
	orDefault(&l.MaxEnqueueCountdown, d.MaxEnqueueCountdown)
}

func (l PeerLimits) validate() error {
	switch {
	case l.IdleTimeout <= peer.DefaultClientIdleTimeout:
		// Members close their own quiet connections after the client's
		// idle timeout; a server closing first could cut a call.
		return fieldErr("peer_limits.idle_timeout", "must be above %v, got %v", peer.DefaultClientIdleTimeout, l.IdleTimeout)
	case l.MaxEnqueueItem < 0:
		return fieldErr("peer_limits.max_enqueue_item", "must be > 0")
	case l.MaxEnqueueBytes < 0:
		return fieldErr("peer_limits.max_enqueue_bytes", "must be > 0")
	case l.MaxEnqueueCountdown < 0:
		return fieldErr("peer_limits.max_enqueue_countdown", "must be > 0")
	}
	return nil
}

// orDefault sets *v to def when it is zero.
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Membership is the gossip and failure-detection tuning of a node. Its
// zero fields are filled one by one from the preset that Preset names, so
// that a Membership{Preset: "local", ProbeInterval: time.Second} is
// LocalMembership with a slower probe.
type Membership struct {
	// Preset names the base: "lan" (the default) for LANMembership, or
	// "local" for LocalMembership. The zero fields below take the preset's
	// values, and memberlist's parameters that Membership does not expose
	// (TCP timeout, indirect checks, retransmits) its base configuration:
	// memberlist.DefaultLANConfig or DefaultLocalConfig.
	Preset string
	// ProbeInterval is how often a random member is probed; ProbeTimeout
	// how long a probe waits for an ack before indirect probes.
	ProbeInterval, ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspect member has to refute before
	// it is declared dead (SuspicionMult × log10(N) × ProbeInterval).
	SuspicionMult int
	// SuspicionMaxTimeoutMult bounds the suspicion timeout when no other
	// member confirms the suspicion: at most SuspicionMaxTimeoutMult times
	// the timeout above (6 in the lan preset, memberlist's default; 2 in
	// the local one).
	SuspicionMaxTimeoutMult int
	// GossipInterval is the period of gossip rounds.
	GossipInterval time.Duration
	// PushPullInterval is the period of full state exchanges with a random
	// member; they heal partitions and spread members whose alive message
	// was lost.
	PushPullInterval time.Duration
	// LeaveTimeout bounds the wait for the leave message to spread on Close.
	LeaveTimeout time.Duration
	// JoinBackoff is the first wait between join attempts; it doubles up to
	// JoinBackoffMax.
	JoinBackoff, JoinBackoffMax time.Duration
}

// LANMembership returns the preset for a data-center network: memberlist's
// LAN timings, with a push/pull every 5 s instead of 30 s so that a member
// whose alive message was lost is known everywhere in seconds. A failed
// member is declared dead after about 5-6 s in a 5-node cluster.
func LANMembership() Membership {
	return Membership{
		Preset:                  "lan",
		ProbeInterval:           time.Second,
		ProbeTimeout:            500 * time.Millisecond,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 6,
		GossipInterval:          200 * time.Millisecond,
		PushPullInterval:        5 * time.Second,
		LeaveTimeout:            2 * time.Second,
		JoinBackoff:             200 * time.Millisecond,
		JoinBackoffMax:          10 * time.Second,
	}
}

// LocalMembership returns the fast preset for loopback and tests: a failed
// member is declared dead in well under a second, joins spread in tens of
// milliseconds. It costs more gossip traffic than LAN.
func LocalMembership() Membership {
	return Membership{
		Preset:        "local",
		ProbeInterval: 200 * time.Millisecond,
		ProbeTimeout:  150 * time.Millisecond,
		SuspicionMult: 3,
		// Without confirmations a suspicion lasts at most twice its base
		// timeout (1.2 s here) instead of six times: failure detection stays
		// near one second even when no other member confirms it.
		SuspicionMaxTimeoutMult: 2,
		GossipInterval:          20 * time.Millisecond,
		PushPullInterval:        time.Second,
		LeaveTimeout:            500 * time.Millisecond,
		JoinBackoff:             50 * time.Millisecond,
		JoinBackoffMax:          time.Second,
	}
}

// presets are the Membership presets by name.
var presets = map[string]func() Membership{"lan": LANMembership, "local": LocalMembership}

// ensureDefaults fills the zero fields of m from its preset (lan when
// none is named; an unknown name is left for validate to report).
func (m *Membership) ensureDefaults() {
	if m.Preset == "" {
		m.Preset = "lan"
	}
	base := LANMembership()
	if p, ok := presets[m.Preset]; ok {
		base = p()
	}
	orDefault(&m.ProbeInterval, base.ProbeInterval)
	orDefault(&m.ProbeTimeout, base.ProbeTimeout)
	orDefault(&m.SuspicionMult, base.SuspicionMult)
	orDefault(&m.SuspicionMaxTimeoutMult, base.SuspicionMaxTimeoutMult)
	orDefault(&m.GossipInterval, base.GossipInterval)
	orDefault(&m.PushPullInterval, base.PushPullInterval)
	orDefault(&m.LeaveTimeout, base.LeaveTimeout)
	orDefault(&m.JoinBackoff, base.JoinBackoff)
	orDefault(&m.JoinBackoffMax, base.JoinBackoffMax)
}

func (m Membership) validate() error {
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"probe_interval", m.ProbeInterval}, {"probe_timeout", m.ProbeTimeout}, {"gossip_interval", m.GossipInterval},
		{"push_pull_interval", m.PushPullInterval}, {"leave_timeout", m.LeaveTimeout}} {
		if d.v < 0 {
			return fieldErr("membership."+d.field, "must be > 0, got %v", d.v)
		}
	}
	switch {
	case presets[m.Preset] == nil:
		return fieldErr("membership.preset", "must be lan or local, got %q", m.Preset)
	case m.SuspicionMult < 0:
		return fieldErr("membership.suspicion_mult", "must be > 0")
	case m.SuspicionMaxTimeoutMult < 0:
		return fieldErr("membership.suspicion_max_timeout_mult", "must be > 0")
	case m.JoinBackoff < 0 || m.JoinBackoffMax < m.JoinBackoff:
		return fieldErr("membership.join_backoff", "must be > 0 and <= join_backoff_max")
	}
	return nil
}

// Defaults of Config.
const (
	DefaultGossip         = "0.0.0.0:7946"
	DefaultPeer           = "0.0.0.0:7947"
	DefaultMemory         = 256 << 20
	DefaultHandoffEntries = 10000
	DefaultHandoffBytes   = 64 << 20
	// MinMemory is the least Memory a node accepts: below it a value
	// such as 256 is taken for a typo of 256MiB.
	MinMemory = 1 << 20
)

// EnsureDefaults fills the zero fields of c with the defaults their docs
// give; Membership is filled field by field from its preset. It does not
// validate (Validate does) and does not copy: New works on a copy of the
// caller's Config and calls EnsureDefaults and then Validate on it. A
// program that builds a Config from its own sources (cmd/cachenode does:
// file, environment, flags) calls the two to report a bad value before it
// opens anything.
func (c *Config) EnsureDefaults() {
	orDefault(&c.Gossip, DefaultGossip)
	orDefault(&c.Peer, DefaultPeer)
	orDefault(&c.Memory, DefaultMemory)
	orDefault(&c.DataOnCorruption, persist.CorruptionMoveAside)
	orDefault(&c.DataKeepCorrupt, 1)
	orDefault(&c.DataReopenBackoff, persist.DefaultReopenBackoff)
	c.PeerLimits.ensureDefaults()
	c.Membership.ensureDefaults()
	orDefault(&c.Ring, ring.DefaultConfig())
	orDefault(&c.Defaults, worker.DefaultPolicy())
	c.Limits = c.Limits.WithDefaults()
	orDefault(&c.HandoffEntries, DefaultHandoffEntries)
	orDefault(&c.HandoffBytes, DefaultHandoffBytes)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = worker.SystemClock()
	}
}

// Validate reports the first field of c that is out of range, as a
// *ConfigError naming it (it wraps ErrConfig, and ErrInsecure for a node
// open to the network without a secret). Call it after EnsureDefaults: a
// zero field that EnsureDefaults would fill may be out of range.
func (c *Config) Validate() error {
	if c.Name == "" {
		return fieldErr("name", "required")
	}
	for _, f := range []struct{ field, addr string }{{"gossip", c.Gossip}, {"advertise", c.Advertise}, {"peer", c.Peer},
		{"peer_advertise", c.PeerAdvertise}, {"http", c.HTTP}} {
		if f.addr == "" {
			continue
		}
		if err := checkHostPort(f.addr); err != nil {
			return fieldErr(f.field, "%v", err)
		}
	}
	for _, j := range c.Join {
		if err := checkHostPort(j); err != nil {
			return fieldErr("join", "%v", err)
		}
	}
	if c.Memory < MinMemory {
		return fieldErr("memory", "%d bytes is too small (at least 1MiB)", c.Memory)
	}
	switch c.DataOnCorruption {
	case persist.CorruptionMoveAside, persist.CorruptionFail:
	default:
		return fieldErr("data_on_corruption", "%q is not one of %s, %s", c.DataOnCorruption, persist.CorruptionMoveAside, persist.CorruptionFail)
	}
	if c.DataReopenBackoff < 0 {
		return fieldErr("data_reopen_backoff", "must be > 0")
	}
	switch len(c.GossipKey) {
	case 0, 16, 24, 32:
	default:
		return fieldErr("gossip_key", "must be 16, 24 or 32 bytes, got %d", len(c.GossipKey))
	}
	if len(c.GossipKeys) > 0 && len(c.GossipKey) == 0 {
		return fieldErr("gossip_key", "further keys need a primary key")
	}
	for i, k := range c.GossipKeys {
		switch len(k) {
		case 16, 24, 32:
		default:
			return fieldErr("gossip_key", "key %d of the ring must be 16, 24 or 32 bytes, got %d", i+2, len(k))
		}
	}
	if err := c.PeerLimits.validate(); err != nil {
		return err
	}
	if err := c.Membership.validate(); err != nil {
		return err
	}
	if _, err := ring.New(c.Ring, nil); err != nil {
		return fieldErr("ring", "%v", err)
	}
	if err := c.Defaults.Validate(); err != nil {
		return fieldErr("defaults", "%v", err)
	}
	if err := c.Limits.Validate(); err != nil {
		return fieldErr("limits", "%v", err)
	}
	// Last: a bad address is reported as such, not as an open one.
	return c.checkExposure()
}

// clone returns a copy of c that shares no slice or TLS config with it.
func (c Config) clone() Config {
	if c.PeerTLS != nil {
		c.PeerTLS = c.PeerTLS.Clone()
	}
	c.Join = slices.Clone(c.Join)
	c.GossipKey = bytes.Clone(c.GossipKey)
	if len(c.GossipKey) == 0 {
		c.GossipKey = nil
	}
	keys := make([][]byte, 0, len(c.GossipKeys))
	for _, k := range c.GossipKeys {
		keys = append(keys, bytes.Clone(k))
	}
	c.GossipKeys = keys
	return c
}

// A ConfigError is a field of a Config that is out of range. It wraps
// ErrConfig, and also ErrInsecure when the node would be open to the
// network.
type ConfigError struct {
	// Field is the field's name as the config file writes it:
	// "memory", "membership.probe_interval", "peer_limits.idle_timeout".
	Field string
	// Problem says what is wrong with it and, where it helps, the fix.
	Problem string

	insecure bool
}

func (e *ConfigError) Error() string { return ErrConfig.Error() + ": " + e.Field + ": " + e.Problem }

// Unwrap returns ErrConfig, and ErrInsecure for an open node.
func (e *ConfigError) Unwrap() []error {
	if e.insecure {
		return []error{ErrConfig, ErrInsecure}
	}
	return []error{ErrConfig}
}

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// ErrInsecure is wrapped (with ErrConfig) by the error of a node that
// would listen on a non-loopback gossip or peer address with neither a
// gossip key nor peer TLS, and is not marked Insecure.
var ErrInsecure = errors.New("node: open to the network")

// checkExposure refuses a node that others could join or call without a
// secret, unless Insecure says so.
func (c Config) checkExposure() error {
	if c.Insecure || c.GossipKey != nil || c.PeerTLS != nil {
		return nil
	}
	for _, f := range []struct{ field, addr string }{{"gossip", c.Gossip}, {"peer", c.Peer}} {
		if !IsLoopback(f.addr) {
			return &ConfigError{Field: f.field, insecure: true, Problem: fmt.Sprintf("%s is not a loopback address and there is no gossip key or peer TLS, so anyone who reaches it could join the cluster, read every value and plant or wipe values: set gossip_key (make one with: cachenode keygen FILE) or tls.peer, or bind %s to 127.0.0.1, or set insecure: true to run open",
				f.addr, f.field)}
		}
	}
	return nil
}

// IsLoopback reports whether a HOST:PORT address listens on loopback only:
// a loopback IP, or the name localhost. An empty or unspecified host
// (every interface) and other names are not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkHostPort reports an address that is not HOST:PORT with a numeric
// port (an empty host, every interface, is HOST:PORT).
func checkHostPort(addr string) error {
	_, _, err := splitHostPort(addr)
	return err
}

func splitHostPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not HOST:PORT", addr)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, ps)
	}
	return host, port, nil
}
