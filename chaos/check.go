package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cachenode/cachenode/ring"
	"github.com/cachenode/cachenode/worker"
)

// ---- ring timelines, from the nodes' own logs ----

// ringPoint is the set of members a node held alive from At on.
type ringPoint struct {
	At  time.Time
	Set string // sorted names, comma-separated
}

// ringChange is one change of one node's ring. Drop marks a node that
// lost its whole cache: it restarted, or dropped everything on a
// membership change (it lost or regained the majority); every key it held
// is as good as moved.
type ringChange struct {
	At            time.Time
	Node          string
	Before, After string
	Drop          bool
}

// logScan is what the harness reads in the nodes' logs.
type logScan struct {
	timeline map[string][]ringPoint // node → its rings, in time order, across restarts
	changes  []ringChange           // every change of every node's ring, by time
	panics   []string               // lines that report a panic, a fatal error or a race
	errors   int                    // level=ERROR lines
	lines    int                    // member lines understood
}

var (
	logTime   = regexp.MustCompile(`^time=(\S+)`)
	logMsg    = regexp.MustCompile(`msg=("(?:[^"\\]|\\.)*"|\S+)`)
	logMember = regexp.MustCompile(` member=("(?:[^"\\]|\\.)*"|\S+)`)
	logPanic  = regexp.MustCompile(`(?i)panic|fatal error|data race`)
)

// scanLogs rebuilds every node's ring from its log: a node logs "member
// alive" when it adds a member to its ring and "member dead" / "member
// left" when it removes one, each time it rebuilds the ring. A restarted
// node starts again from a ring of itself.
func scanLogs(nodes []*node) (*logScan, error) {
	ls := &logScan{timeline: map[string][]ringPoint{}}
	for _, n := range nodes {
		for i, path := range n.logFiles() {
			if err := ls.scanFile(n.Name, path, i > 0); err != nil {
				return nil, err
			}
		}
	}
	sort.SliceStable(ls.changes, func(i, j int) bool { return ls.changes[i].At.Before(ls.changes[j].At) })
	return ls, nil
}

// scanFile reads one incarnation's log. A restarted incarnation starts
// with an empty cache: a drop of every key it held.
func (ls *logScan) scanFile(name, path string, restarted bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	set := map[string]bool{name: true}
	cur := name
	first := true
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if logPanic.MatchString(line) {
			ls.panics = append(ls.panics, fmt.Sprintf("%s: %s", path, line))
		}
		if strings.Contains(line, "level=ERROR") {
			ls.errors++
		}
		tm := logTime.FindStringSubmatch(line)
		if tm == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, tm[1])
		if err != nil {
			continue
		}
		if first {
			ls.timeline[name] = append(ls.timeline[name], ringPoint{At: at, Set: cur})
			if restarted {
				ls.changes = append(ls.changes, ringChange{At: at, Node: name, Before: cur, After: cur, Drop: true})
			}
			first = false
		}
		mm := logMsg.FindStringSubmatch(line)
		if mm == nil {
			continue
		}
		msg := unquote(mm[1])
		var alive bool
		switch {
		case msg == "member alive":
			alive = true
		case msg == "member dead", msg == "member left":
		case strings.Contains(msg, "dropping every cached entry"):
			ls.changes = append(ls.changes, ringChange{At: at, Node: name, Before: cur, After: cur, Drop: true})
			continue
		default:
			continue
		}
		mb := logMember.FindStringSubmatch(line)
		if mb == nil {
			continue
		}
		ls.lines++
		set[unquote(mb[1])] = alive
		next := setString(set)
		if next != cur {
			ls.changes = append(ls.changes, ringChange{At: at, Node: name, Before: cur, After: next})
			ls.timeline[name] = append(ls.timeline[name], ringPoint{At: at, Set: next})
			cur = next
		}
	}
	return sc.Err()
}

func unquote(s string) string {
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return s
}

func setString(set map[string]bool) string {
	var names []string
	for n, in := range set {
		if in {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

// ringAt returns the set a node's ring held at t.
func (ls *logScan) ringAt(node string, t time.Time) string {
	tl := ls.timeline[node]
	i := sort.Search(len(tl), func(i int) bool { return tl[i].At.After(t) })
	if i == 0 {
		return node
	}
	return tl[i-1].Set
}

// owners computes key owners for member sets, with the ring package the
// nodes use and the default ring configuration they run with.
type owners struct {
	rings map[string]*ring.Ring
	keys  map[keyRef]string
}

func newOwners() *owners { return &owners{rings: map[string]*ring.Ring{}, keys: map[keyRef]string{}} }

func (o *owners) cacheKey(k keyRef) string {
	if s, ok := o.keys[k]; ok {
		return s
	}
	s, err := worker.KeyOf(k.Label, worker.Args{argOf[k.Label]: strconv.Itoa(k.Val)})
	if err != nil {
		panic(err) // the harness's own keys are always valid
	}
	o.keys[k] = s
	return s
}

func (o *owners) owner(set string, k keyRef) string {
	r, ok := o.rings[set]
	if !ok {
		var err error
		r, err = ring.New(ring.Config{}, strings.Split(set, ","))
		if err != nil {
			panic(fmt.Sprintf("ring of %q: %v", set, err))
		}
		o.rings[set] = r
	}
	name, _ := r.Owner(o.cacheKey(k))
	return name
}

// ---- the invariants ----

// window is a failure-detection window: from a fault step until the
// cluster converged after it.
type window struct{ From, To time.Time }

func failureWindows(events []*event, end time.Time) []window {
	var out []window
	for i, ev := range events {
		to := ev.At.Add(ev.Converge)
		if !ev.Converged {
			to = end
			if i+1 < len(events) {
				to = events[i+1].At
			}
		}
		out = append(out, window{ev.At, to})
	}
	return out
}

func inWindow(ws []window, a, b time.Time) bool {
	for _, w := range ws {
		if !b.Before(w.From) && !a.After(w.To) {
			return true
		}
	}
	return false
}

// windowStart is the start of the window that holds t, or t.
func windowStart(ws []window, t time.Time) time.Time {
	start := t
	for _, w := range ws {
		if !t.Before(w.From) && !t.After(w.To) && w.From.Before(start) {
			start = w.From
		}
	}
	return start
}

// fillCheck is invariant 1 for one key and version.
type fillCheck struct {
	Key      string `json:"key"`
	Version  int    `json:"version"`
	Fills    int    `json:"fills"`
	Fallback int    `json:"fallback"`
	Allowed  int    `json:"allowed"`
	Moves    int    `json:"moves"`
	Sends    int    `json:"invalidations"`
	Burst    int    `json:"burst"`     // fills by a node within 100 ms of its previous fill of this version
	NotOwner int    `json:"not_owner"` // fills by a node that was not the owner in its own ring, without a fallback answer
	// ReadFirst: the first fill was for a read, before the sync
	// invalidation of this version returned (which rebuilds it again).
	ReadFirst bool   `json:"read_first,omitempty"`
	By        string `json:"by"` // nodes that filled, in order
	// Detail explains each fill and each ring change counted, for the
	// key versions over the limit.
	Detail []string `json:"detail,omitempty"`
}

// checkFills counts the origin's fills per key and version. A fill is a
// fallback when the filling node answered a read of that version that was
// running at the time of the fill as X-Cache: fallback (the contract: an
// unreachable owner makes the asking node compute the value, not keep it).
// Every other fill counts: at most one per version, plus one per
// synchronous invalidation sent for it beyond the first (the writer
// retries), plus one per delayed invalidation, plus one per ring change
// that moved the key while the version was current (or in the failure
// window that was open when it became current).
func checkFills(fills []fill, spans map[string][]verSpan, ops []*writeOp, reads []obs, ls *logScan, own *owners,
	ws []window, cuts []cutWindow, start, sweep, end time.Time) (checks []fillCheck, total, fallbacks, allowedSum int, fallbackOutside []string) {
	byKeyName := map[string]keyRef{}
	for label, ks := range keySpace {
		for v := range ks.size {
			k := keyRef{label, v}
			byKeyName[k.String()] = k
		}
	}
	type kv struct {
		key string
		ver int
	}
	sends, delayed := map[kv]int{}, map[kv]int{}
	syncAck := map[kv]time.Time{} // when the sync invalidation that made a version returned
	for _, op := range ops {
		for k, v := range op.Versions {
			if op.Delayed {
				delayed[kv{k, v}] += op.Attempts
			} else {
				sends[kv{k, v}] += op.Attempts
				if op.Acked {
					syncAck[kv{k, v}] = op.AckAt
				}
			}
		}
	}
	// Reads answered by a fill for them (X-Cache: miss), per version.
	missReads := map[kv][]obs{}
	for _, r := range reads {
		if r.Cache == "miss" && r.ok() {
			missReads[kv{r.Key.String(), r.Version}] = append(missReads[kv{r.Key.String(), r.Version}], r)
		}
	}
	// Fallback answers per node and key.
	type nk struct{ node, key string }
	fb := map[nk][]obs{}
	for _, r := range reads {
		if r.Cache == "fallback" && r.ok() {
			fb[nk{r.Node, r.Key.String()}] = append(fb[nk{r.Node, r.Key.String()}], r)
		}
	}
	groups := map[kv][]fill{}
	for _, f := range fills {
		groups[kv{f.Key, f.Version}] = append(groups[kv{f.Key, f.Version}], f)
	}
	keys := make([]kv, 0, len(groups))
	for g := range groups {
		keys = append(keys, g)
	}
	slices.SortFunc(keys, func(a, b kv) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return a.ver - b.ver
	})
	for _, g := range keys {
		fs := groups[g]
		k, known := byKeyName[g.key]
		if !known {
			continue // refused by the origin, reported elsewhere
		}
		fc := fillCheck{Key: g.key, Version: g.ver, Fills: len(fs), Sends: sends[g] + delayed[g]}
		var by, detail []string
		for _, f := range fs {
			by = append(by, f.Node)
			set := ls.ringAt(f.Node, f.At)
			owner := own.owner(set, k)
			what := "owner"
			if owner != f.Node {
				what = "not owner, no fallback answer"
			}
			// A fallback answer of this node for this version, during
			// the fill, makes it a fallback whatever the ring says at the
			// fill: the ring may have changed while the node waited for
			// the owner it had picked.
			for _, r := range fb[nk{f.Node, g.key}] {
				if r.Version == f.Version && !f.At.Before(r.Start) && !f.At.After(r.End) {
					what = "fallback"
					fc.Fallback++
					// The read decided to ask the owner when it started,
					// and waited its budget before falling back: it is
					// the read that must overlap a window.
					// The final sweep (from sweep on, when set) reads
					// every key on every node at once: an owner slower
					// than the wait budget under that burst is the
					// contract's fallback, not a connection fault.
					if !inWindow(ws, r.Start, r.End) && (sweep.IsZero() || r.Start.Before(sweep)) {
						what = "fallback outside the failure-detection windows"
						fallbackOutside = append(fallbackOutside, fmt.Sprintf("%s v%d by %s (read %.3fs-%.3fs, its ring {%s} owner %s)",
							g.key, f.Version, f.Node, r.Start.Sub(start).Seconds(), r.End.Sub(start).Seconds(), set, owner))
					}
					break
				}
			}
			if what == "not owner, no fallback answer" {
				fc.NotOwner++
			}
			detail = append(detail, fmt.Sprintf("fill %.3fs by %s, its ring {%s} owner %s: %s", f.At.Sub(start).Seconds(), f.Node, set, owner, what))
		}
		fc.By = strings.Join(by, " ")
		fc.Burst = burstFills(fs)
		// The version's life, and the ring changes that may have moved
		// the key during it.
		from, to := start, end
		for _, sp := range spans[g.key] {
			if sp.Version == g.ver {
				if !sp.From.IsZero() {
					from = sp.From
				}
				if !sp.Upto.IsZero() {
					to = sp.Upto
				}
			}
		}
		var moved []string
		// While a partition lasts, each side has its own ring: the changes
		// that split the cluster count for every version made before the
		// sides merged again.
		open := slices.Clone(ws)
		for _, c := range cuts {
			open = append(open, window{c.From, c.To})
		}
		fc.Moves, moved = moves(ls, own, k, ws, windowStart(open, from), to, start)
		// A delayed invalidation is applied a countdown after the change:
		// a read may fill the new version in between, and the refresh at
		// the due time fills it once more.
		fc.Allowed = max(1, sends[g]) + delayed[g] + fc.Moves
		// The same holds for a sync invalidation, for a shorter time: a
		// read between the change and the invalidation reaching the owner
		// fills the new version, and the invalidation rebuilds it. It
		// counts when the first fill of the version was for a read
		// (a miss) and came before the invalidation returned.
		if ack, ok := syncAck[g]; ok && readFilledFirst(fs, missReads[g], ack) {
			fc.Allowed++
			fc.ReadFirst = true
		}
		if fc.Fills-fc.Fallback > fc.Allowed {
			for _, m := range moved {
				detail = append(detail, "counted "+m)
			}
			fc.Detail = detail
		}
		total += fc.Fills
		fallbacks += fc.Fallback
		allowedSum += fc.Allowed
		checks = append(checks, fc)
	}
	return checks, total, fallbacks, allowedSum, fallbackOutside
}

// moves counts the ring changes in [from, to] that gave k another owner,
// and the whole-cache drops of nodes that restarted or lost or regained
// the majority.
// One fault step makes one cluster-wide change that every node observes,
// possibly through different intermediate rings: a (before, after) pair
// counts once per fault step, or as often as a single node went through it
// in that step.
func moves(ls *logScan, own *owners, k keyRef, ws []window, from, to, start time.Time) (int, []string) {
	n := 0
	var what []string
	type stepPair struct {
		step int
		pair string
	}
	perNode := map[stepPair]map[string]int{}
	counted := map[stepPair]int{}
	for _, c := range ls.changes {
		if c.At.Before(from) || c.At.After(to) {
			continue
		}
		if c.Drop {
			n++
			what = append(what, fmt.Sprintf("cache drop %.3fs on %s (it restarted, or lost or regained the majority)", c.At.Sub(start).Seconds(), c.Node))
			continue
		}
		a, b := own.owner(c.Before, k), own.owner(c.After, k)
		if a == b {
			continue
		}
		sp := stepPair{stepOf(ws, c.At), c.Before + ">" + c.After}
		if perNode[sp] == nil {
			perNode[sp] = map[string]int{}
		}
		perNode[sp][c.Node]++
		if perNode[sp][c.Node] <= counted[sp] {
			continue
		}
		counted[sp]++
		n++
		what = append(what, fmt.Sprintf("ring change %.3fs on %s: {%s} → {%s} moved it %s → %s",
			c.At.Sub(start).Seconds(), c.Node, c.Before, c.After, a, b))
	}
	return n, what
}

// stepOf is the index of the last fault step at or before t (-1 before the
// first).
func stepOf(ws []window, t time.Time) int {
	i := -1
	for j, w := range ws {
		if !w.From.After(t) {
			i = j
		}
	}
	return i
}

// staleRead is a read that returned a version older than one whose
// synchronous invalidation had returned before the read started.
type staleRead struct {
	At       float64 `json:"at_s"`
	Node     string  `json:"node"`
	Key      string  `json:"key"`
	Got      int     `json:"got"`
	Want     int     `json:"want"`
	Cache    string  `json:"x_cache"`
	AckedAgo float64 `json:"acked_ago_s"`
	Exempt   bool    `json:"cut_off"` // the node was on the minority side of a partition
	Known    string  `json:"known,omitempty"`
}

// checkStale is invariant 2: once a synchronous invalidation returned 200,
// no read that starts afterwards returns an older version. The only
// exception is a node on the minority side of a partition, until the
// cluster merged again after the heal: from then on it is held to the
// same bar.
func checkStale(reads []obs, ops []*writeOp, cuts []cutWindow, start time.Time, ev *evidence) []staleRead {
	type ack struct {
		at  time.Time
		ver int
	}
	acked := map[string][]ack{}
	for _, op := range ops {
		if op.Delayed || !op.Acked {
			continue
		}
		for k, v := range op.Versions {
			acked[k] = append(acked[k], ack{op.AckAt, v})
		}
	}
	for k := range acked {
		slices.SortFunc(acked[k], func(a, b ack) int { return a.at.Compare(b.at) })
	}
	var out []staleRead
	for _, r := range reads {
		if !r.ok() {
			continue
		}
		want, at := 0, time.Time{}
		for _, a := range acked[r.Key.String()] {
			if !a.at.Before(r.Start) {
				break
			}
			if a.ver > want {
				want, at = a.ver, a.at
			}
		}
		if r.Version >= want {
			continue
		}
		s := staleRead{At: r.Start.Sub(start).Seconds(), Node: r.Node, Key: r.Key.String(), Got: r.Version, Want: want,
			Cache: r.Cache, AckedAgo: r.Start.Sub(at).Seconds()}
		for _, c := range cuts {
			if slices.Contains(c.Nodes, r.Node) && !r.Start.Before(c.From) && !r.Start.After(c.To) {
				s.Exempt = true
			}
		}
		if !s.Exempt {
			s.Known = ev.staleKnown(r.Node, s.Key, r.Version, r.Start)
		}
		out = append(out, s)
	}
	return out
}

// readFilledFirst reports whether the first of fs (in time) was made for one
// of the miss reads and came before ack.
func readFilledFirst(fs []fill, misses []obs, ack time.Time) bool {
	if len(fs) == 0 {
		return false
	}
	first := fs[0]
	for _, f := range fs[1:] {
		if f.At.Before(first.At) {
			first = f
		}
	}
	if !first.At.Before(ack) {
		return false
	}
	for _, r := range misses {
		if !first.At.Before(r.Start) && !first.At.After(r.End) {
			return true
		}
	}
	return false
}
