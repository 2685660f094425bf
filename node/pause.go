package node

import (
	"sync"
	"sync/atomic"
	"time"
)

// pauseTick is the period of the pause watchdog.
const pauseTick = 100 * time.Millisecond

// pauseWatcher notices when this process was stopped (SIGSTOP, a VM pause,
// a long stall): the others may have declared it dead meanwhile and applied
// invalidations without it, so nothing it cached can be trusted. It reads
// Config.Clock: on a fake clock, an Advance longer than pauseLimit is a
// pause.
type pauseWatcher struct {
	epoch time.Time    // the clock's origin
	last  atomic.Int64 // the watchdog's last tick, in nanoseconds since epoch; 0 before it runs
	mu    sync.Mutex   // one drop per pause
}

// pauseWatch ticks the watchdog until the node closes.
func (n *Node) pauseWatch() {
	defer n.wg.Done()
	p := &n.pause
	p.last.Store(int64(n.cfg.Clock.Since(p.epoch)))
	for {
		t := n.cfg.Clock.NewTimer(pauseTick)
		select {
		case <-n.done:
			t.Stop()
			return
		case <-t.Chan():
			n.noticePause()
			p.last.Store(int64(n.cfg.Clock.Since(p.epoch)))
		}
	}
}

// pauseLimit is the longest gap between two ticks of the watchdog that
// cannot have let the others declare this node dead: the floor of
// memberlist's suspicion timeout (SuspicionMult × ProbeInterval; the probe
// that starts a suspicion comes on top).
func (n *Node) pauseLimit() time.Duration {
	m := n.cfg.Membership
	return time.Duration(m.SuspicionMult) * m.ProbeInterval
}

// noticePause drops every cached entry if the watchdog has not ticked for
// longer than pauseLimit, and reports whether it did. The read paths call
// it before answering: after a SIGCONT, the goroutines blocked in a read
// may run before the watchdog's next tick, and must not answer from a
// cache that may hold invalidated values.
func (n *Node) noticePause() bool {
	p := &n.pause
	limit := n.pauseLimit()
	if last := p.last.Load(); last == 0 || n.cfg.Clock.Since(p.epoch)-time.Duration(last) < limit {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	gap := n.cfg.Clock.Since(p.epoch) - time.Duration(p.last.Load())
	if gap < limit {
		return false // another reader, or the watchdog, dropped it
	}
	n.log.Warn("this process was paused: dropping every cached entry", "for", gap.Round(time.Millisecond))
	n.dropAll()
	p.last.Store(int64(n.cfg.Clock.Since(p.epoch)))
	return true
}
