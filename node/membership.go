package node

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/ring"
)

// State is a member's state as this node sees it.
type State string

// Member states. memberlist's own Node.State is not kept up to date in
// Members(), so the node tracks states from the event delegate.
const (
	StateAlive State = "alive"
	// StateSuspect: alive for memberlist, but this node's probes of it have
	// not been answered for two probe rounds; it is about to be declared
	// dead unless it answers or refutes.
	StateSuspect State = "suspect"
	StateDead    State = "dead"
	StateLeft    State = "left"
)

// Member is what this node knows of a member of the cluster.
type Member struct {
	Name   string
	Gossip string
	Peer   string
	HTTP   string
	Proto  int
	State  State
	Since  time.Time

	leaving bool // announced a graceful leave
}

// memberlistConfig builds memberlist's configuration from the node's.
func (n *Node) memberlistConfig() (*memberlist.Config, error) {
	m := n.cfg.Membership
	var mc *memberlist.Config
	if m.Preset == "local" {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = n.cfg.Name
	host, port, err := splitHostPort(n.cfg.Gossip)
	if err != nil {
		return nil, fmt.Errorf("%w: gossip: %v", ErrConfig, err)
	}
	mc.BindAddr, mc.BindPort = host, port
	if n.cfg.Advertise != "" {
		h, p, _ := splitHostPort(n.cfg.Advertise)
		mc.AdvertiseAddr, mc.AdvertisePort = h, p
	}
	mc.ProbeInterval = m.ProbeInterval
	mc.ProbeTimeout = m.ProbeTimeout
	mc.SuspicionMult = m.SuspicionMult
	if m.SuspicionMaxTimeoutMult > 0 {
		mc.SuspicionMaxTimeoutMult = m.SuspicionMaxTimeoutMult
	}
	mc.GossipInterval = m.GossipInterval
	mc.PushPullInterval = m.PushPullInterval
	mc.SecretKey = n.cfg.GossipKey
	if len(n.cfg.GossipKeys) > 0 {
		// memberlist encrypts with the primary (SecretKey) and decrypts
		// with any key of the ring.
		kr, err := memberlist.NewKeyring(n.cfg.GossipKeys, n.cfg.GossipKey)
		if err != nil {
			return nil, fmt.Errorf("%w: gossip_key: %v", ErrConfig, err)
		}
		mc.Keyring = kr
	}
	mc.Delegate = delegate{n}
	mc.Events = events{n}
	mc.Ping = pings{n}
	mc.Logger = log.New(slogWriter{n.log}, "", 0)
	return mc, nil
}

// slogWriter sends memberlist's log lines to the node's logger at debug
// level (memberlist logs every probe failure as a warning; the node logs
// state changes itself).
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(trimNewline(p)), "component", "memberlist")
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

var _ io.Writer = slogWriter{}

// delegate publishes the node's metadata, carries invalidation events by
// gossip (the fallback of the direct fan-out), and exchanges the recent
// events on push/pull so that a member that was cut off applies what it
// missed.
type delegate struct{ n *Node }

func (d delegate) NodeMeta(limit int) []byte {
	b, err := msgpack.Marshal(meta{Proto: protoVersion, Peer: d.n.peerAddr, HTTP: d.n.cfg.HTTP, Leaving: d.n.leaving.Load()})
	if err != nil || len(b) > limit {
		d.n.log.Error("node metadata does not fit", "limit", limit, "err", err)
		return nil
	}
	return b
}

// NotifyMsg receives a gossiped event. memberlist reuses buf: copy it.
func (d delegate) NotifyMsg(buf []byte) { d.n.applyBackground(append([]byte(nil), buf...)) }

func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.n.bcast.GetBroadcasts(overhead, limit)
}
func (d delegate) LocalState(join bool) []byte { return d.n.localState() }
func (d delegate) MergeRemoteState(buf []byte, join bool) {
	d.n.mergeState(append([]byte(nil), buf...))
}

// events tracks member states and rebuilds the ring. memberlist calls it
// from its own goroutines, one event at a time.
type events struct{ n *Node }

func (e events) NotifyJoin(m *memberlist.Node) {
	if !e.n.gossipDown.Load() {
		e.n.memberUp(m)
	}
}

func (e events) NotifyUpdate(m *memberlist.Node) {
	if !e.n.gossipDown.Load() {
		e.n.memberUp(m)
	}
}

func (e events) NotifyLeave(m *memberlist.Node) {
	if e.n.gossipDown.Load() {
		return // a suspicion timer that outlived Shutdown
	}
	// m.State is not reliable here (memberlist updates its own copy of the
	// state, not the Node it passes); the leaving flag of the metadata is.
	st := StateDead
	var md meta
	if m.State == memberlist.StateLeft || unmarshal(m.Meta, &md) == nil && md.Leaving {
		st = StateLeft
	}
	e.n.memberDown(m.Name, st)
}

func (n *Node) memberUp(m *memberlist.Node) {
	var md meta
	if err := unmarshal(m.Meta, &md); err != nil || md.Peer == "" {
		n.log.Warn("member without usable metadata: not routing to it", "member", m.Name, "err", err)
		return
	}
	if md.Proto != protoVersion {
		n.log.Warn("member speaks another protocol version: not routing to it", "member", m.Name, "proto", md.Proto)
		return
	}
	gossip := net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
	n.mu.Lock()
	defer n.mu.Unlock()
	old, known := n.mu.members[m.Name]
	if md.Leaving {
		// Announced before a graceful leave; NotifyLeave follows. Keep it
		// in the ring until then: it still answers for its keys.
		if known {
			old.leaving = true
		}
		return
	}
	healed := known && old.State != StateAlive
	if healed {
		// A member we had declared dead is back: either it restarted or a
		// partition healed. Either way invalidations may have been missed
		// on one side; near-cache copies are dropped and recent events are
		// exchanged with it (see maintain).
		n.mu.heal = true
		n.mu.healed = append(n.mu.healed, gossip)
		// A call made with a routing snapshot from before it was declared
		// dead may have left a dial to it hanging in TCP's SYN
		// retransmission (its packets were dropped): calls now must not
		// wait for that one.
		if n.client != nil {
			n.client.CloseAddr(md.Peer)
		}
	}
	if !known || old.State != StateAlive {
		n.log.Info("member alive", "member", m.Name, "gossip", gossip, "peer", md.Peer)
	}
	n.mu.members[m.Name] = &Member{Name: m.Name, Gossip: gossip, Peer: md.Peer, HTTP: md.HTTP, Proto: md.Proto,
		State: StateAlive, Since: time.Now()}
	if n.mu.isolated && !n.isolatedLocked() {
		// Back in the majority: what this node cached while cut off may
		// have been invalidated meanwhile. Drop it before the new ring
		// sends requests here again.
		n.mu.isolated = false
		n.log.Warn("reconnected to the majority: dropping every cached entry")
		n.dropAll()
	}
	n.rebuildLocked()
}

func (n *Node) memberDown(name string, st State) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m, ok := n.mu.members[name]
	if !ok {
		return
	}
	if name == n.cfg.Name {
		return
	}
	n.log.Info("member "+string(st), "member", name)
	cp := *m
	if m.leaving {
		st = StateLeft
	}
	cp.State, cp.Since = st, time.Now()
	n.mu.members[name] = &cp
	if !n.mu.isolated && n.isolatedLocked() {
		// Cut off from most of the cluster: invalidations may stop reaching
		// this node, so nothing cached so far can be trusted later.
		n.mu.isolated = true
		n.log.Warn("cut off from most members: dropping every cached entry")
		n.dropAll()
	}
	if n.client != nil {
		n.client.CloseAddr(m.Peer)
	}
	n.rebuildLocked()
}

// rebuildLocked builds the ring of the alive members and publishes the new
// routing snapshot. n.mu must be held.
func (n *Node) rebuildLocked() {
	names := make([]string, 0, len(n.mu.members))
	peers := make(map[string]*remote, len(n.mu.members))
	for name, m := range n.mu.members {
		if m.State != StateAlive {
			continue
		}
		names = append(names, name)
		if name != n.cfg.Name {
			peers[name] = &remote{n: n, name: name, addr: m.Peer}
		}
	}
	slices.Sort(names)
	r, err := ring.New(n.cfg.Ring, names)
	if err != nil {
		n.log.Error("cannot build the ring", "members", names, "err", err)
		return
	}
	old := n.route.Load()
	if old != nil && old.ring.Version() == r.Version() {
		// Same members: keep the snapshot, refresh addresses.
		n.route.Store(&routing{ring: old.ring, peers: peers})
		return
	}
	n.route.Store(&routing{ring: r, peers: peers})
	select {
	case n.changed <- struct{}{}:
	default:
	}
}

// routing is an immutable snapshot of the ring and the peers' addresses,
// read without locks on the Get path.
type routing struct {
	ring  *ring.Ring
	peers map[string]*remote
}

// isolatedLocked reports whether this node sees fewer than half of the
// other members (those that did not leave) alive: it is then probably on
// the minority side of a partition. n.mu must be held.
func (n *Node) isolatedLocked() bool {
	others, alive := 0, 0
	for name, m := range n.mu.members {
		if name == n.cfg.Name || m.State == StateLeft {
			continue
		}
		others++
		if m.State == StateAlive {
			alive++
		}
	}
	return others > 0 && 2*alive < others
}

// dropAll removes every cached entry (owned and near-cache copies) and
// keeps fills running now from being stored.
func (n *Node) dropAll() {
	for e := range n.cache.EntriesWithoutArgs() {
		if w, ok := n.cache.Worker(e.Label); ok {
			w.Drop(e.Key)
		}
	}
	n.notifyDropped(Dropped{All: true}) // see OnDropped
}

// pings records when each member last answered a probe of this node:
// memberlist keeps its suspicion state to itself, so the node derives
// "suspect" from its own probes (see Node.Members).
type pings struct{ n *Node }

func (p pings) AckPayload() []byte { return nil }
func (p pings) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	p.n.lastAck.Store(other.Name, time.Now())
}

// suspectAfter is how long a member may go without answering this node's
// probes before it shows as suspect: two rounds of probes over the other
// members, plus a probe's timeout.
func (n *Node) suspectAfter(members int) time.Duration {
	m := n.cfg.Membership
	return 2*time.Duration(max(members-1, 1))*m.ProbeInterval + m.ProbeTimeout + m.ProbeInterval
}

// markLeaving records that a member announced a graceful leave, so that its
// departure is recorded as "left", not "dead".
func (n *Node) markLeaving(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if m, ok := n.mu.members[name]; ok {
		m.leaving = true
	}
}

// announceLeave tells every member directly that this node is leaving, and
// publishes it in the metadata for members the direct message missed.
func (n *Node) announceLeave() {
	n.leaving.Store(true)
	r := n.route.Load()
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Membership.LeaveTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range r.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.call(ctx, p, opLeaving, []byte(n.cfg.Name))
		}()
	}
	wg.Wait()
	if err := n.ml.UpdateNode(n.cfg.Membership.LeaveTimeout); err != nil {
		n.log.Debug("leave announcement", "err", err)
	}
}
