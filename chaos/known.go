package main

import "time"

// knownIssue is a defect of another component that this harness found,
// that is not fixed yet, and that the harness recognizes from evidence in
// what it observed. A violation explained by a known issue is still
// reported, counted and printed; only the verdict differs (KNOWN FAILURE
// instead of FAIL), and the CI test logs it instead of failing. A
// violation without such evidence always fails. Remove an entry once its
// fix is in: its evidence then no longer matches anything.
type knownIssue struct {
	ID        string `json:"id"`
	Component string `json:"component"`
	Title     string `json:"title"`
	Evidence  string `json:"evidence"`
}

var knownIssues = []knownIssue{}

// fixedIssues are the issues this harness found that are fixed: their
// probes run in every test run as regression tests.
var fixedIssues = map[string]string{
	"K1": "2aa8355 (worker: a peer asking for a key while an invalidation rebuilds it gets the rebuilt value); the rest is K8",
	"K2": "221a12b (node: a leave that is not confirmed is a warning, not an exit error)",
	"K5": "c91fdcf (node: fixes for chaos K5, K6, K7)",
	"K6": "c91fdcf",
	"K7": "c91fdcf",
	"K3": "0ebb8f9 (node: a node back from a pause checks before answering a read; the pause limit is the floor of the suspicion timeout)",
	"K4": "5df1b5d (node: events missed during a partition are applied together, each key rebuilt once)",
	"K8": "5df1b5d (node: an invalidation is applied to the owners first, then near-cache copies are dropped)",
	"K9": "400c976 (node: a fetch for a key the receiver's ring gives to another member is forwarded once to that member instead of filled there)",
}

func issueOpen(id string) bool {
	for _, k := range knownIssues {
		if k.ID == id {
			return true
		}
	}
	return false
}

// violation is one broken invariant in a scenario: a class of failures
// with its count and an example.
type violation struct {
	Invariant string `json:"invariant"` // fills, stale, final, availability, records, logs, exit, convergence, invalidation, values, origin
	Count     int    `json:"count"`
	Text      string `json:"text"`
	// Known is the ID of the known issue whose evidence every instance
	// carries; "" when the harness has no explanation.
	Known string `json:"known,omitempty"`
}

// evidence indexes what a scenario observed, to explain violations.
type evidence struct {
	ops       map[string][]*writeOp // key → changes covering it
	stops     map[string][]interval // node → SIGSTOP..SIGCONT
	byNodeKey map[string][]obs      // node + " " + key → reads
	fills     map[string][]fill     // key → the origin's fills
}

func newEvidence(ops []*writeOp, events []*event, reads []obs, fills []fill) *evidence {
	ev := &evidence{ops: map[string][]*writeOp{}, stops: map[string][]interval{}, byNodeKey: map[string][]obs{}, fills: map[string][]fill{}}
	for _, r := range reads {
		k := r.Node + " " + r.Key.String()
		ev.byNodeKey[k] = append(ev.byNodeKey[k], r)
	}
	for _, f := range fills {
		ev.fills[f.Key] = append(ev.fills[f.Key], f)
	}
	for _, op := range ops {
		for k := range op.Versions {
			ev.ops[k] = append(ev.ops[k], op)
		}
	}
	open := map[string]time.Time{}
	for _, e := range events {
		for _, t := range e.Targets {
			switch e.Kind {
			case "SIGSTOP":
				open[t] = e.At
			case "SIGCONT":
				ev.stops[t] = append(ev.stops[t], interval{From: open[t], To: e.At})
			}
		}
	}
	return ev
}

// made returns the change that made version v of key current.
func (ev *evidence) made(key string, v int) *writeOp {
	for _, op := range ev.ops[key] {
		if op.Versions[key] == v {
			return op
		}
	}
	return nil
}

// applied is when a change's invalidation was being applied: from the
// change (or its due time) until it was acknowledged (or a bound).
func applied(op *writeOp) (time.Time, time.Time) {
	from := op.Bumped
	if op.Delayed {
		from = op.Due
		return from, from.Add(time.Second)
	}
	if !op.Acked {
		return from, from.Add(20 * time.Second)
	}
	return from, op.AckAt
}

// staleKnown explains why node served version got of key at t although a
// newer one had been invalidated for, or returns "". (The evidence of the
// fixed issues K5, K6 and K7 is gone with them: a recurrence fails.)
func (ev *evidence) staleKnown(node string, key string, got int, at time.Time) string {
	op := ev.made(key, got+1)
	if op == nil {
		return ""
	}
	from, to := applied(op)
	for _, st := range ev.stops[node] {
		if !st.From.After(to) && !st.To.Before(from) && at.After(st.To) {
			return "K3"
		}
	}
	// K8: while the invalidation was applied, the node read the old
	// version from the owner, and the owner's refresh filled a newer one
	// after that read started (the refresh fill marks when the owner
	// applied the invalidation; for a delayed one applied late it is the
	// only mark).
	for _, f := range ev.fills[key] {
		if f.Version <= got || (!op.Delayed && (f.At.Before(from) || f.At.After(to))) {
			continue
		}
		for _, r := range ev.byNodeKey[node+" "+key] {
			if r.ok() && r.Version == got && r.Cache != "fallback" && r.Owner != node &&
				!r.End.Before(f.At.Add(-200*time.Millisecond)) && !r.Start.After(f.At.Add(100*time.Millisecond)) {
				return "K8"
			}
		}
	}
	return ""
}

// burstFills counts the fills of one key version that the same node made
// within 100 ms of its previous fill of it.
func burstFills(fs []fill) int {
	last := map[string]time.Time{}
	n := 0
	for _, f := range fs {
		if t, ok := last[f.Node]; ok && f.At.Sub(t) < 100*time.Millisecond {
			n++
		}
		last[f.Node] = f.At
	}
	return n
}
