package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node/peer"
	"github.com/cachenode/cachenode/persist"
	"github.com/cachenode/cachenode/ring"
	"github.com/cachenode/cachenode/worker"
)

var errClosedStore = persist.ErrClosed

// Errors returned by a [Node].
var (
	// ErrClosed is returned by calls on a closed node.
	ErrClosed = errors.New("node: closed")
	// ErrNotStarted is returned by calls that need Start first.
	ErrNotStarted = errors.New("node: not started")
)

// Node is one member of a cachenode cluster. See the package documentation
// for its lifecycle. It is safe for concurrent use.
type Node struct {
	cfg    Config
	log    *slog.Logger
	tracer trace.Tracer // nil: no tracing
	cache  *worker.Cache
	store  *persist.Store

	client   *peer.Client
	server   *peer.Server
	peerAddr string // advertised peer address, set by Start before gossip begins
	ml       *memberlist.Memberlist

	rules      *invalidation.Rules
	events     eventState
	bcast      *memberlist.TransmitLimitedQueue // invalidation gossip fallback
	outboxWake chan struct{}                    // a delayed invalidation was queued; buffered 1

	route   atomic.Pointer[routing]
	changed chan struct{} // a new ring was published; buffered 1
	joined  atomic.Bool
	started atomic.Bool
	leaving atomic.Bool
	// gossipDown is set as memberlist shuts down: its suspicion timers
	// outlive Shutdown and may still report a member dead, which a closed
	// node ignores (its logger may belong to a test that has ended).
	gossipDown atomic.Bool
	lastAck    sync.Map // member name → time.Time of its last answered probe
	// lastInvalidation: worker label → when this node last applied an
	// invalidation of it, on the cache's clock; handed-off entries older
	// than that are refused.
	lastInvalidation sync.Map
	pause            pauseWatcher
	// unwritten counts the fills of workers without delay_logging that
	// were answered without their synchronous record (see record).
	unwritten atomic.Uint64
	// unrecordedDrops counts the entries dropped because their record
	// could not be queued (see record).
	unrecordedDrops atomic.Uint64
	refused         refusals         // peer requests refused, by op and code
	outbox          outboxBytes      // bytes of the delayed invalidations queued
	dropped         droppedListeners // see OnDropped

	done chan struct{} // closed by Close: stops the background loops
	wg   sync.WaitGroup

	mu struct {
		sync.Mutex
		members map[string]*Member
		heal    bool     // a member came back from dead: drop near-cache copies
		healed  []string // gossip addresses of members that came back, for a push/pull
		// isolated: fewer than half of the other members are alive, as on
		// the minority side of a partition (see isolatedLocked).
		isolated bool
		closed   bool
	}
	closeOnce sync.Once
	closeErr  error
}

// New validates cfg and builds a node: the cache (register workers on
// Cache() before or after Start) and the records store. It does not touch
// the network. It works on a copy of cfg, with [Config.EnsureDefaults]
// and [Config.Validate], and never changes the caller's struct.
func New(cfg Config) (*Node, error) {
	cfg = cfg.clone()
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var err error
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.Name), changed: make(chan struct{}, 1), done: make(chan struct{}),
		rules: invalidation.NewRules(), outboxWake: make(chan struct{}, 1)}
	n.mu.members = make(map[string]*Member)
	if cfg.Tracer != nil {
		n.tracer = cfg.Tracer.Tracer(tracerName)
	}
	n.events = newEventState()
	// A nanosecond back, so that no tick is at 0 ("not started"), also on a
	// fake clock that has not moved.
	n.pause.epoch = cfg.Clock.Now().Add(-time.Nanosecond)
	n.bcast = &memberlist.TransmitLimitedQueue{RetransmitMult: 3, NumNodes: func() int {
		if r := n.route.Load(); r != nil {
			return r.ring.Len()
		}
		return 1
	}}
	n.store, err = persist.Open(persist.Config{Dir: cfg.Data, Logger: n.log, FS: cfg.DataFS,
		OnCorruption: cfg.DataOnCorruption, KeepCorrupt: cfg.DataKeepCorrupt,
		ReopenBackoff: cfg.DataReopenBackoff, ReopenBackoffMax: max(cfg.DataReopenBackoff, persist.DefaultReopenBackoffMax),
		MemoryBudget: recordsBudget(cfg.Memory), OnBudgetRemoved: n.dropUnrecordedKeys, Now: cfg.Clock.Now})
	if err != nil {
		return nil, fmt.Errorf("node: records: %w", err)
	}
	if err := n.countOutbox(); err != nil {
		n.store.Close()
		return nil, fmt.Errorf("node: outbox: %w", err)
	}
	n.cache, err = worker.NewCache(worker.CacheConfig{
		MaxBytes:    cfg.Memory - recordsBudget(cfg.Memory),
		Defaults:    cfg.Defaults,
		Clock:       cfg.Clock,
		Self:        cfg.Name,
		Peers:       picker{n},
		NoNearCache: cfg.NoNearCache,
		OnFill:      n.record,
		Logger:      n.log,
	})
	if err != nil {
		n.store.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	cc := peer.ClientConfig{Key: cfg.GossipKey, Keys: cfg.GossipKeys, TLS: cfg.PeerTLS, Logger: n.log}
	if cfg.hook != nil {
		cc.DialContext = cfg.hook.dial
	}
	n.client, err = peer.NewClient(cc)
	if err != nil {
		n.cache.Close()
		n.store.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	return n, nil
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Cache returns the node's worker cache: register workers on it, with
// Cache().Register or worker.Register for typed workers.
func (n *Node) Cache() *worker.Cache { return n.cache }

// Store returns the node's created-cache records.
func (n *Node) Store() *persist.Store { return n.store }

// Start binds the peer and gossip ports and starts serving; joining the
// addresses of Config.Join goes on in the background with backoff until one
// answers (see Ready and WaitReady).
func (n *Node) Start() error {
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("node: already started")
	}
	ln, err := net.Listen("tcp", n.cfg.Peer)
	if err != nil {
		return fmt.Errorf("node: peer listen: %w", err)
	}
	if n.cfg.hook != nil {
		ln = n.cfg.hook.listener(ln)
	}
	lim := n.cfg.PeerLimits
	n.server, err = peer.NewServer(peer.ServerConfig{Key: n.cfg.GossipKey, Keys: n.cfg.GossipKeys, TLS: n.cfg.PeerTLS,
		MaxConns: lim.MaxConns, MaxConnsPerIP: lim.MaxConnsPerIP, IdleTimeout: lim.IdleTimeout, Logger: n.log}, peerHandler{n})
	if err != nil {
		ln.Close()
		return fmt.Errorf("node: %w", err)
	}
	mc, err := n.memberlistConfig()
	if err != nil {
		ln.Close()
		return err
	}
	if n.cfg.hook != nil {
		if err := n.cfg.hook.transport(mc); err != nil {
			ln.Close()
			return fmt.Errorf("node: gossip transport: %w", err)
		}
	}
	// The peer address must be known before memberlist publishes our
	// metadata, which happens inside Create.
	n.peerAddr = n.advertisedPeer(ln.Addr().(*net.TCPAddr), mc)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.server.Serve(ln); err != nil {
			n.log.Error("peer server stopped", "err", err)
		}
	}()
	ml, err := memberlist.Create(mc)
	if err != nil {
		n.server.Close()
		return fmt.Errorf("node: gossip: %w", err)
	}
	n.ml = ml
	n.wg.Add(5)
	go n.pauseWatch()
	go n.maintain()
	go n.joinLoop()
	go n.outboxLoop()
	go n.reconnectLoop()
	n.log.Info("node started", "gossip", ml.LocalNode().Address(), "peer", n.peerAddr)
	n.warnExposure()
	return nil
}

// warnExposure logs, at every start, what of the node is open to the
// network: everything when Insecure let it start without a secret, gossip
// when only the peer transport has TLS.
func (n *Node) warnExposure() {
	open := func(addr string) bool { return !IsLoopback(addr) }
	c := n.cfg
	switch {
	case c.GossipKey == nil && c.PeerTLS == nil && (open(c.Gossip) || open(c.Peer)):
		n.log.Warn("INSECURE: gossip and peer ports are open to the network without a key or TLS (insecure: true): anyone who reaches them can join the cluster, read every value and plant or wipe values; set gossip_key (cachenode keygen FILE) or tls.peer",
			"gossip", c.Gossip, "peer", c.Peer)
	case c.GossipKey == nil && open(c.Gossip):
		n.log.Warn("gossip is not encrypted (no gossip_key): anyone who reaches the gossip port can join the membership and take partitions, which the members then cannot reach over TLS; set gossip_key too",
			"gossip", c.Gossip)
	}
}

// Insecure reports whether the node runs open to the network: a gossip or
// peer address that is not loopback, without gossip key or peer TLS (see
// Config.Insecure).
func (n *Node) Insecure() bool {
	c := n.cfg
	return c.GossipKey == nil && c.PeerTLS == nil && (!IsLoopback(c.Gossip) || !IsLoopback(c.Peer))
}

func (n *Node) advertisedPeer(bound *net.TCPAddr, mc *memberlist.Config) string {
	if n.cfg.PeerAdvertise != "" {
		return n.cfg.PeerAdvertise
	}
	host := bound.IP.String()
	if bound.IP.IsUnspecified() {
		host = mc.AdvertiseAddr
		if host == "" {
			if h, _, err := splitHostPort(n.cfg.Gossip); err == nil && h != "" && !net.ParseIP(h).IsUnspecified() {
				host = h
			} else if ip, err := privateIP(); err == nil {
				host = ip
			} else {
				host = "127.0.0.1"
			}
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(bound.Port))
}

// privateIP returns the first non-loopback IPv4 address of the machine, as
// memberlist does for an unspecified bind address.
func privateIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
	}
	return "", errors.New("no private address")
}

// joinLoop joins the configured members, retrying with doubling backoff,
// then joins every member it learned of: a push/pull with each makes the
// new node known everywhere at once instead of after the next gossip
// rounds (in a small cluster an alive message is retransmitted only a few
// times, and the next periodic push/pull can be many seconds away).
func (n *Node) joinLoop() {
	defer n.wg.Done()
	if len(n.cfg.Join) == 0 {
		n.joined.Store(true)
		return
	}
	backoff := n.cfg.Membership.JoinBackoff
	for attempt := 1; ; attempt++ {
		k, err := n.ml.Join(n.cfg.Join)
		if err == nil && k > 0 {
			n.joinAll()
			n.joined.Store(true)
			n.log.Info("joined the cluster", "contacted", k, "members", n.ml.NumMembers())
			return
		}
		n.log.Warn("join failed, retrying", "attempt", attempt, "in", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-n.done:
			t.Stop()
			return
		}
		backoff = min(2*backoff, n.cfg.Membership.JoinBackoffMax)
	}
}

func (n *Node) joinAll() {
	var addrs []string
	self := n.ml.LocalNode().Name
	for _, m := range n.ml.Members() {
		if m.Name != self {
			addrs = append(addrs, m.Address())
		}
	}
	if len(addrs) > 0 {
		if _, err := n.ml.Join(addrs); err != nil {
			n.log.Debug("join of every member incomplete", "err", err)
		}
	}
}

// reconnectLoop tries, every push/pull interval, to reach the members it
// holds for dead (as serf's reconnect does). A partition can leave both
// sides believing the other dead, and memberlist alone stops gossiping to
// dead members after a while; a push/pull with each of them merges the two
// sides again as soon as the network lets it.
func (n *Node) reconnectLoop() {
	defer n.wg.Done()
	for tick := 1; ; tick++ {
		t := time.NewTimer(n.cfg.Membership.PushPullInterval)
		select {
		case <-n.done:
			t.Stop()
			return
		case <-t.C:
		}
		var addrs []string
		n.mu.Lock()
		for _, m := range n.mu.members {
			if m.State == StateDead && time.Since(m.Since) < reconnectFor {
				addrs = append(addrs, m.Gossip)
			}
		}
		n.mu.Unlock()
		if tick%seedRejoinEvery == 0 && n.joined.Load() {
			// Join the configured addresses again, resolved anew: nodes
			// started together that each found only themselves at first
			// (a DNS name listing not-yet-started pods) merge here instead
			// of staying separate clusters for good.
			addrs = append(addrs, n.cfg.Join...)
		}
		if len(addrs) > 0 {
			if k, err := n.ml.Join(addrs); k > 0 {
				n.log.Debug("push/pull with members held for dead and seeds", "reached", k, "tried", len(addrs), "err", err)
			}
		}
	}
}

// reconnectFor is how long a dead member is tried again.
const reconnectFor = 24 * time.Hour

// seedRejoinEvery: the configured join addresses are joined again every
// this many push/pull intervals.
const seedRejoinEvery = 3

// Ready reports whether the node has joined the cluster (or started a new
// one) and its ring includes itself.
func (n *Node) Ready() bool {
	r := n.route.Load()
	return n.joined.Load() && r != nil && r.ring.Has(n.cfg.Name)
}

// WaitReady waits until Ready or ctx ends.
func (n *Node) WaitReady(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !n.Ready() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.done:
			return ErrClosed
		}
	}
	return nil
}

// GossipAddr returns the gossip address other members use to reach this
// node, or "" before Start.
func (n *Node) GossipAddr() string {
	if n.ml == nil {
		return ""
	}
	return n.ml.LocalNode().Address()
}

// PeerAddr returns the advertised peer-transport address, or "" before
// Start.
func (n *Node) PeerAddr() string { return n.peerAddr }

// Ring returns the current ring, or nil before Start.
func (n *Node) Ring() *ring.Ring {
	if r := n.route.Load(); r != nil {
		return r.ring
	}
	return nil
}

// Members returns what this node knows of every member, sorted by name. A
// member is "suspect" while alive for memberlist but silent to this node's
// probes for two probe rounds.
func (n *Node) Members() []Member {
	n.mu.Lock()
	out := make([]Member, 0, len(n.mu.members))
	for _, m := range n.mu.members {
		out = append(out, *m)
	}
	n.mu.Unlock()
	limit := n.suspectAfter(len(out))
	now := time.Now()
	for i := range out {
		m := &out[i]
		if m.State != StateAlive || m.Name == n.cfg.Name || now.Sub(m.Since) < limit {
			continue
		}
		if t, ok := n.lastAck.Load(m.Name); !ok || now.Sub(t.(time.Time)) > limit {
			m.State = StateSuspect
		}
	}
	sortMembers(out)
	return out
}

func sortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
}

// record writes the created-cache record of an owned fill: before the fill
// returns, or in the background with delay_logging.
//
// While the records are degraded (a storage fault, see Records), a
// synchronous record cannot be written before the answer: the fill is
// answered all the same (the records index the cache, they are not the
// cache), the broken promise is counted (UnwrittenRecords), and the record
// is queued in memory like a delay_logging one, to be written when the
// store reopens (or dropped, counted, beyond the queue's bound).
func (n *Node) record(e *worker.Entry, pol worker.Policy) {
	match, err := worker.MatchValues(e.Args)
	if err != nil {
		n.log.Error("record: arguments", "key", e.Key, "err", err)
		return
	}
	rec := persist.Record{
		Label: e.Label, Key: e.Key, Args: e.Args, Match: match, Owner: e.Owner,
		CreatedAt: e.CreatedAt, RelevanceTo: e.RelevanceTo, AvailableTo: e.AvailableTo,
		FillDuration: e.FillDuration, Size: int64(len(e.Value)),
	}
	if pol.DelayLogging {
		err = n.store.PutAsync(rec)
	} else {
		err = n.store.Put(rec)
		if errors.Is(err, persist.ErrUnavailable) {
			n.unwritten.Add(1)
			err = n.store.PutAsync(rec)
		}
	}
	switch {
	case err == nil, errors.Is(err, persist.ErrClosed):
	case errors.Is(err, persist.ErrQueueFull) && n.store.Health().Degraded:
		// Counted in the store's Dropped; the store logged the fault.
		// While degraded, rule-based invalidations match the in-memory
		// entries, so the entry stays (the records degrade, not the cache).
	case errors.Is(err, persist.ErrQueueFull), errors.Is(err, persist.ErrOverBudget):
		// The writer is behind (a burst of delay_logging fills beyond the
		// async queue) or in-memory records are beyond their part of
		// --memory: counted in the store's Dropped
		// (cachenode_records_dropped_total). No record will index this
		// entry, so an invalidation by rule could not find it: it is not
		// kept. The callers of this fill still get the value; the next
		// read fills again and writes its record.
		n.dropUnrecorded(e.Label, e.Key)
	default:
		n.log.Error("record not written", "key", e.Key, "err", err)
	}
}

// Records returns the state of the records store: Degraded while a storage
// fault keeps it closed (the node serves and fills from memory meanwhile).
func (n *Node) Records() persist.Health { return n.store.Health() }

// UnwrittenRecords counts the fills of workers without delay_logging that
// were answered while the records were degraded, so without the record
// their worker promises before the answer.
func (n *Node) UnwrittenRecords() uint64 { return n.unwritten.Load() }

// dropUnrecordedKeys drops the entries of keys, whose records the store could
// not queue or removed to stay within its memory budget: an entry no record
// indexes would escape invalidations by rule. The store calls it only once
// it holds records, so after fills, so after New set n.cache.
//
// The entries go just after their records: until then (a Drop each, which
// for thousands of keys on a loaded machine takes seconds) an invalidation
// by rule can miss them. Withdrawing the entries before the records are
// removed would close that window.
func (n *Node) dropUnrecordedKeys(keys []string) {
	for _, key := range keys {
		if e, ok := n.cache.Lookup(key); ok {
			n.dropUnrecorded(e.Label, key)
		}
	}
}

// dropUnrecorded drops the entry of key, of the worker of label, whose
// record is lost (see dropUnrecordedKeys).
func (n *Node) dropUnrecorded(label, key string) {
	if w, ok := n.cache.Worker(label); ok {
		w.Drop(key)
		n.unrecordedDrops.Add(1)
	}
}

// UnrecordedDrops counts the entries not kept because their record could
// not be queued (the records writer behind, or in-memory records over
// their budget): an entry without a record would escape invalidations by
// rule.
func (n *Node) UnrecordedDrops() uint64 { return n.unrecordedDrops.Load() }

// maintain applies ring changes to the cache: entries whose key moved to
// another owner are dropped (the new owner fills them once), near-cache
// copies of partitions whose owner changed are dropped, and after a member
// came back from dead every near-cache copy is dropped, since this node or
// that one may have missed invalidations.
func (n *Node) maintain() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case <-n.changed:
		}
		r := n.route.Load()
		n.mu.Lock()
		heal, healed := n.mu.heal, n.mu.healed
		n.mu.heal, n.mu.healed = false, nil
		n.mu.Unlock()
		if len(healed) > 0 {
			// A push/pull with each member that came back exchanges the
			// recent invalidation events both sides may have missed.
			if _, err := n.ml.Join(healed); err != nil {
				n.log.Debug("push/pull with returning members", "err", err)
			}
		}
		self := n.cfg.Name
		moved, near := 0, 0
		for e := range n.cache.EntriesWithoutArgs() {
			owner, _ := r.ring.Owner(e.Key)
			switch {
			case e.Owner == self && owner != self:
				moved++
			case e.Owner != self && (heal || owner != e.Owner):
				near++
			default:
				continue
			}
			if w, ok := n.cache.Worker(e.Label); ok {
				w.Drop(e.Key)
			}
		}
		n.notifyDropped(Dropped{Ring: true, All: heal}) // see OnDropped
		if moved+near > 0 {
			n.log.Debug("ring change applied", "version", r.ring.Version(), "moved", moved, "near_dropped", near, "heal", heal)
		}
	}
}

// Close hands hot entries to their next owners, leaves the cluster, stops
// serving and closes the store. It is safe to call twice.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close(true) })
	return n.closeErr
}

func (n *Node) close(graceful bool) error {
	n.mu.Lock()
	n.mu.closed = true
	n.mu.Unlock()
	var errs []error
	if n.ml != nil {
		if graceful {
			n.handoff()
			n.handOverOutbox()
			n.announceLeave()
			if err := n.ml.Leave(n.cfg.Membership.LeaveTimeout); err != nil {
				// Typically a timeout waiting for the leave message to go
				// out when every other member is leaving too: nothing is
				// lost, the others see this node gone either way.
				n.log.Warn("leave message not confirmed", "err", err)
			}
		}
		n.gossipDown.Store(true)
		if err := n.ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("gossip: %w", err))
		}
	}
	close(n.done)
	if n.server != nil {
		errs = append(errs, n.server.Close())
	}
	n.wg.Wait()
	errs = append(errs, n.client.Close(), n.cache.Close(), n.store.Close())
	return errors.Join(errs...)
}

// crash stops the node as a kill -9 would look to the others: no handoff,
// no leave message, sockets closed. For tests.
func (n *Node) crash() {
	n.closeOnce.Do(func() { n.closeErr = n.close(false) })
}

// recordsBudget is the part of the node's memory bound that the records
// store may hold on the heap (Pebble's memtables and block cache, its key
// counts, an in-memory database): a quarter. The entries get the rest.
func recordsBudget(memory int64) int64 { return memory / 4 }

// MemoryBytes returns the heap the node's cached state holds, by part, as
// its memory bound counts it: "entries" (the store's weight of the cached
// entries), and the records store's parts (see [persist.Store.MemoryBytes]).
func (n *Node) MemoryBytes() map[string]int64 {
	out := n.store.MemoryBytes()
	out["entries"] = int64(n.cache.Bytes())
	return out
}
