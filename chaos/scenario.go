package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// Fault kinds.
const (
	faultKill      = "kill"               // kill -9, restart with the same data dir
	faultStop      = "stop"               // SIGSTOP, then SIGCONT
	faultPartOne   = "partition-one"      // one node cut off from the rest, then healed
	faultPartMinor = "partition-minority" // a minority cut off from the majority, then healed
	faultJoin      = "join"               // a new node joins
	faultLeave     = "leave"              // a node leaves gracefully (SIGTERM)
)

// scenario is a named mix of faults.
type scenario struct {
	Name   string
	Desc   string
	Faults []string
}

var scenarios = []scenario{
	{"kill", "kill -9 a node, restart it with the same data dir", []string{faultKill}},
	{"stop", "SIGSTOP a node (a stall, shorter or longer than failure detection), SIGCONT", []string{faultStop}},
	{"partition-one", "cut one node off from the others (iptables DROP), heal", []string{faultPartOne}},
	{"partition-minority", "cut a minority off from the majority, heal", []string{faultPartMinor}},
	{"join", "new nodes join the running cluster", []string{faultJoin}},
	{"leave", "nodes leave gracefully on SIGTERM", []string{faultLeave}},
	{"disk-full", "fill a node's data disk (a tmpfs of its own) to 100%, then free it", []string{faultDiskFull}},
	{"mixed", "all of the above, drawn at random", []string{faultKill, faultStop, faultPartOne, faultPartMinor, faultJoin, faultLeave}},
}

func needsPartition(kind string) bool { return kind == faultPartOne || kind == faultPartMinor }

// event is one step of a fault: the injection or the recovery. Its
// failure-detection window runs from At until the cluster converged on
// the membership the step leads to.
type event struct {
	At        time.Time
	Kind      string // kill -9, restart, SIGSTOP, SIGCONT, partition, heal, join, leave
	Targets   []string
	Converge  time.Duration
	Converged bool
	// MustConverge: not converging within the bound is a violation (a
	// recovery, a join, a leave, a detected partition); a kill or a stall
	// shorter than failure detection need not be noticed.
	MustConverge bool
	Note         string
}

// cutWindow is a time during which nodes were on the minority side of a
// partition, until the cluster converged after the heal.
type cutWindow struct {
	Nodes    []string
	From, To time.Time
}

// recordCheck is the check of the records of a node after kill -9 (or,
// with Fault disk-full, after its full disk was freed).
type recordCheck struct {
	Node     string
	Fault    string   `json:",omitempty"` // "" for kill -9
	Acked    int      // records acknowledged before the kill
	Missing  []string // of those, the ones absent after the restart
	QueryErr string
}

// acks remembers, per owner, the keys whose fill the owner acknowledged to
// a client (X-Cache: miss): the owner wrote their record synchronously
// before answering.
type acks struct {
	mu sync.Mutex
	by map[string]map[string]time.Time // owner → key → last acknowledged
}

func (a *acks) add(owner, key string, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.by == nil {
		a.by = map[string]map[string]time.Time{}
	}
	if a.by[owner] == nil {
		a.by[owner] = map[string]time.Time{}
	}
	a.by[owner][key] = at
}

// before returns the keys owner acknowledged before t.
func (a *acks) before(owner string, t time.Time) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for k, at := range a.by[owner] {
		if at.Before(t) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// scenarioRun is one scenario in progress.
type scenarioRun struct {
	sc       scenario
	opts     options
	c        *cluster
	rng      *rand.Rand
	logf     func(string, ...any)
	acks     *acks
	start    time.Time
	events   []*event
	cuts     []cutWindow
	records  []recordCheck
	exits    []string // processes that did not exit 0 on SIGTERM
	harness  []string // harness errors: the scenario could not run as planned
	kinds    []string // the fault kinds this run may use
	maxNodes int
}

func scenarioSeed(seed uint64, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return seed ^ h.Sum64()
}

func (s *scenarioRun) newEvent(kind string, must bool, targets ...*node) *event {
	ev := &event{At: time.Now(), Kind: kind, MustConverge: must}
	for _, n := range targets {
		ev.Targets = append(ev.Targets, n.Name)
	}
	s.events = append(s.events, ev)
	s.logf("  %6.1fs  %-9s %s", ev.At.Sub(s.start).Seconds(), kind, strings.Join(ev.Targets, ","))
	return ev
}

// converge waits until the cluster sees what the model expects and
// records it on ev.
func (s *scenarioRun) converge(ctx context.Context, ev *event, stoppedAlive bool, timeout time.Duration, note string) {
	ev.Converge, ev.Converged = s.c.waitConverged(ctx, ev.At, s.c.expected(stoppedAlive), timeout)
	switch {
	case ev.Converged:
		s.logf("  %6.1fs            converged in %.2fs", time.Since(s.start).Seconds(), ev.Converge.Seconds())
	default:
		ev.Note = note
		s.logf("  %6.1fs            not converged after %.1fs: %s", time.Since(s.start).Seconds(), ev.Converge.Seconds(), note)
	}
}

// pickRunning draws k distinct running nodes.
func (s *scenarioRun) pickRunning(k int) []*node {
	running := s.c.inState(stateRunning)
	s.rng.Shuffle(len(running), func(i, j int) { running[i], running[j] = running[j], running[i] })
	out := running[:min(k, len(running))]
	slices.SortFunc(out, func(a, b *node) int { return a.Idx - b.Idx })
	return out
}

func (s *scenarioRun) sleepUntil(ctx context.Context, t time.Time) {
	if d := time.Until(t); d > 0 {
		sleepCtx(ctx, d)
	}
}

func (s *scenarioRun) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
}

// possible reports whether a fault kind can be injected now: enough nodes
// run for a majority to survive it, and the cluster does not grow without
// bound.
func (s *scenarioRun) possible(kind string) bool {
	running := len(s.c.inState(stateRunning))
	switch kind {
	case faultJoin:
		return len(s.c.nodes()) < s.maxNodes
	case faultLeave:
		return running > 3
	}
	return running >= 3
}

// inject runs one fault to its end: injection, hold, recovery and the
// convergence after each step. An error is a harness failure.
func (s *scenarioRun) inject(ctx context.Context, kind string) error {
	c := s.c
	switch kind {
	case faultKill:
		x := s.pickRunning(1)[0]
		down := s.between(300*time.Millisecond, 3*time.Second)
		ev := s.newEvent("kill -9", false, x)
		if err := x.kill(); err != nil {
			return err
		}
		s.converge(ctx, ev, false, down, "restarted before the others noticed")
		s.sleepUntil(ctx, ev.At.Add(down))
		ev2 := s.newEvent("restart", true, x)
		if err := c.start(ctx, x); err != nil {
			return err
		}
		s.converge(ctx, ev2, false, 20*time.Second, "the restarted node was not taken back in 20 s")
		s.checkRecords(ctx, x, ev.At)
	case faultStop:
		x := s.pickRunning(1)[0]
		hold := s.between(300*time.Millisecond, 4*time.Second)
		ev := s.newEvent("SIGSTOP", false, x)
		if err := x.stop(); err != nil {
			return err
		}
		s.converge(ctx, ev, false, hold, "stall shorter than failure detection")
		s.sleepUntil(ctx, ev.At.Add(hold))
		ev2 := s.newEvent("SIGCONT", true, x)
		if err := x.cont(); err != nil {
			return err
		}
		if err := x.waitReady(ctx, c.hc, 20*time.Second); err != nil {
			return err
		}
		x.setAvailable(true)
		s.converge(ctx, ev2, false, 20*time.Second, "the stalled node was not taken back in 20 s")
	case faultPartOne, faultPartMinor:
		running := c.inState(stateRunning)
		k := 1
		if kind == faultPartMinor {
			k = (len(running) - 1) / 2
		}
		cut := s.pickRunning(k)
		var rest []*node
		for _, n := range running {
			if !slices.Contains(cut, n) {
				rest = append(rest, n)
			}
		}
		hold := s.between(3*time.Second, 6*time.Second)
		ev := s.newEvent("partition", true, cut...)
		c.setSides([][]*node{cut, rest})
		if err := c.nw.Partition(indexes(cut), indexes(rest)); err != nil {
			return err
		}
		s.converge(ctx, ev, false, max(hold, 15*time.Second), "the partition was not detected in 15 s")
		s.sleepUntil(ctx, ev.At.Add(hold))
		ev2 := s.newEvent("heal", true, cut...)
		if err := c.nw.Heal(); err != nil {
			return err
		}
		c.setSides(nil)
		s.converge(ctx, ev2, false, 20*time.Second, "the two sides did not merge in 20 s")
		s.cuts = append(s.cuts, cutWindow{Nodes: ev.Targets, From: ev.At, To: ev2.At.Add(ev2.Converge)})
	case faultJoin:
		n, err := c.newNode()
		if err != nil {
			return err
		}
		ev := s.newEvent("join", true, n)
		if err := c.start(ctx, n); err != nil {
			return err
		}
		s.converge(ctx, ev, false, 20*time.Second, "the new node was not taken in within 20 s")
	case faultLeave:
		x := s.pickRunning(1)[0]
		ev := s.newEvent("leave", true, x)
		if msg := x.terminate(20 * time.Second); msg != "" {
			s.exits = append(s.exits, msg)
		}
		s.converge(ctx, ev, false, 20*time.Second, "the others did not drop the leaving node in 20 s")
	case faultDiskFull:
		return s.diskFull(ctx)
	default:
		return fmt.Errorf("unknown fault %q", kind)
	}
	return nil
}

// checkRecords lists the records of x after its restart and looks for
// every record x acknowledged before it was killed.
func (s *scenarioRun) checkRecords(ctx context.Context, x *node, killedAt time.Time) {
	acked := s.acks.before(x.Name, killedAt)
	rc := recordCheck{Node: x.Name, Acked: len(acked)}
	have, err := x.records(ctx, s.c.hc)
	if err != nil {
		rc.QueryErr = err.Error()
	}
	for _, k := range acked {
		if err == nil && !have[k] {
			rc.Missing = append(rc.Missing, k)
		}
	}
	s.records = append(s.records, rc)
}

func indexes(ns []*node) []int {
	out := make([]int, len(ns))
	for i, n := range ns {
		out[i] = n.Idx
	}
	return out
}

// runFaults injects faults from the scenario's kinds until the duration
// is nearly over, one at a time, each to its recovery.
func (s *scenarioRun) runFaults(ctx context.Context, end time.Time) {
	sleepCtx(ctx, time.Second) // a warm cache before the first fault
	for ctx.Err() == nil && time.Until(end) > 3*time.Second {
		sleepCtx(ctx, s.between(300*time.Millisecond, 1200*time.Millisecond))
		var ok []string
		for _, k := range s.kinds {
			if s.possible(k) {
				ok = append(ok, k)
			}
		}
		if len(ok) == 0 {
			break
		}
		kind := ok[s.rng.IntN(len(ok))]
		if err := s.inject(ctx, kind); err != nil {
			if ctx.Err() == nil {
				s.harness = append(s.harness, fmt.Sprintf("%s: %v", kind, err))
				s.logf("  harness error: %s: %v", kind, err)
			}
			return
		}
	}
	s.sleepUntil(ctx, end)
}
