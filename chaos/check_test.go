package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func logLine(ms int, msg, member string) string {
	l := "time=" + at(ms).Format(time.RFC3339Nano) + ` level=INFO msg="` + msg + `" node=n1`
	if member != "" {
		l += " member=" + member + " gossip=10.0.0.1:7946"
	}
	return l + "\n"
}

func writeLog(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "n1.log")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestScanLogsFollowsTheRing(t *testing.T) {
	p := writeLog(t,
		logLine(0, "Found 0 WALs", ""),
		logLine(10, "member alive", "n1"),
		logLine(20, "member alive", "n2"),
		logLine(30, "member alive", "n3"),
		logLine(40, "member alive", "n3"), // no change
		logLine(50, "member dead", "n2"),
		logLine(60, "cut off from most members: dropping every cached entry", ""),
		logLine(70, "member left", "n3"),
		"panic: something\n",
	)
	ls := &logScan{timeline: map[string][]ringPoint{}}
	if err := ls.scanFile("n1", p, false); err != nil {
		t.Fatal(err)
	}
	want := []string{"n1", "n1,n2", "n1,n2,n3", "n1,n3", "n1"}
	var got []string
	for _, pt := range ls.timeline["n1"] {
		got = append(got, pt.Set)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("timeline %v, want %v", got, want)
	}
	if s := ls.ringAt("n1", at(55)); s != "n1,n3" {
		t.Errorf("ring at 55 ms = %q", s)
	}
	if s := ls.ringAt("n1", t0.Add(-time.Second)); s != "n1" {
		t.Errorf("ring before the log = %q, want the node alone", s)
	}
	drops := 0
	for _, c := range ls.changes {
		if c.Drop {
			drops++
		}
	}
	if drops != 1 || len(ls.changes) != 5 {
		t.Errorf("changes %+v: want 4 ring changes and 1 drop", ls.changes)
	}
	if len(ls.panics) != 1 {
		t.Errorf("panics %v", ls.panics)
	}

	// A restarted incarnation starts with a drop of its cache.
	ls2 := &logScan{timeline: map[string][]ringPoint{}}
	if err := ls2.scanFile("n1", p, true); err != nil {
		t.Fatal(err)
	}
	if !ls2.changes[0].Drop || !ls2.changes[0].At.Equal(at(0)) {
		t.Errorf("restart: first change %+v, want a drop at the first line", ls2.changes[0])
	}
}

// keyMovedBy finds a key whose owner differs between two member sets.
func keyMovedBy(t *testing.T, own *owners, before, after string) keyRef {
	t.Helper()
	for v := range 200 {
		k := keyRef{"item", v}
		if own.owner(before, k) != own.owner(after, k) {
			return k
		}
	}
	t.Fatalf("no key moves from {%s} to {%s}", before, after)
	return keyRef{}
}

func TestMovesCountsEachFaultStepOnce(t *testing.T) {
	own := newOwners()
	full, less := "n1,n2,n3", "n1,n2"
	k := keyMovedBy(t, own, full, less)
	ws := []window{{at(0), at(1000)}, {at(2000), at(3000)}}
	ls := &logScan{changes: []ringChange{
		// step 0: the same change seen by two nodes counts once
		{At: at(100), Node: "n1", Before: full, After: less},
		{At: at(120), Node: "n2", Before: full, After: less},
		// step 1: back, then away again on one node: two changes
		{At: at(2100), Node: "n1", Before: less, After: full},
		{At: at(2200), Node: "n1", Before: full, After: less},
		// a whole-cache drop counts for every key
		{At: at(2300), Node: "n2", Before: less, After: less, Drop: true},
	}}
	n, what := moves(ls, own, k, ws, at(0), at(5000), t0)
	if n != 4 {
		t.Errorf("moves = %d, want 4: %v", n, what)
	}
	if n, _ := moves(ls, own, k, ws, at(1500), at(5000), t0); n != 3 {
		t.Errorf("moves from 1.5 s = %d, want 3", n)
	}
}

func TestCheckStale(t *testing.T) {
	k := keyRef{"item", 1}
	ops := []*writeOp{{Kind: "key", Keys: []keyRef{k}, Versions: map[string]int{"item/1": 2}, Bumped: at(100), Acked: true, AckAt: at(200)}}
	reads := []obs{
		{Start: at(150), End: at(160), Node: "n1", Key: k, Code: 200, Version: 1}, // before the ack: fine
		{Start: at(250), End: at(260), Node: "n1", Key: k, Code: 200, Version: 2}, // fine
		{Start: at(300), End: at(310), Node: "n2", Key: k, Code: 200, Version: 1}, // stale
		{Start: at(400), End: at(410), Node: "n3", Key: k, Code: 200, Version: 1}, // stale, but cut off
		{Start: at(900), End: at(910), Node: "n3", Key: k, Code: 200, Version: 1}, // stale after the heal
	}
	cuts := []cutWindow{{Nodes: []string{"n3"}, From: at(0), To: at(500)}}
	got := checkStale(reads, ops, cuts, t0, newEvidence(ops, nil, nil, nil))
	if len(got) != 3 {
		t.Fatalf("stale reads %+v, want 3", got)
	}
	if got[0].Node != "n2" || got[0].Exempt || got[1].Node != "n3" || !got[1].Exempt || got[2].Exempt {
		t.Errorf("stale reads %+v", got)
	}
}

// twoNodeItem is the setting of the fill checks: item/3 on a ring of n1
// and n2 that never changes, at version 1 until 1 s, then version 2.
func twoNodeItem() (own *owners, k keyRef, owner string, ls *logScan, spans map[string][]verSpan) {
	own = newOwners()
	k = keyRef{"item", 3}
	owner = own.owner("n1,n2", k)
	ls = &logScan{timeline: map[string][]ringPoint{
		"n1": {{At: at(0), Set: "n1,n2"}},
		"n2": {{At: at(0), Set: "n1,n2"}},
	}}
	spans = map[string][]verSpan{"item/3": {{Version: 1, Upto: at(1000)}, {Version: 2, From: at(1000)}}}
	return own, k, owner, ls, spans
}

func TestCheckFillsAllowance(t *testing.T) {
	own, k, owner, ls, spans := twoNodeItem()
	other := "n1"
	if owner == "n1" {
		other = "n2"
	}
	ops := []*writeOp{{Kind: "key", Versions: map[string]int{"item/3": 2}, Bumped: at(1000), Attempts: 1, Acked: true, AckAt: at(1010)}}
	fills := []fill{
		{At: at(100), Key: "item/3", Version: 1, Node: owner},
		{At: at(1005), Key: "item/3", Version: 2, Node: owner}, // the refresh
		{At: at(1500), Key: "item/3", Version: 2, Node: owner}, // one too many
		{At: at(1600), Key: "item/3", Version: 2, Node: other}, // a fallback
	}
	reads := []obs{{Start: at(1590), End: at(1610), Node: other, Key: k, Code: 200, Cache: "fallback", Version: 2}}
	ws := []window{{at(1550), at(1700)}}
	checks, total, fallbacks, _, outside := checkFills(fills, spans, ops, reads, ls, own, ws, nil, t0, time.Time{}, at(2000))
	if total != 4 || fallbacks != 1 || len(outside) != 0 {
		t.Fatalf("total %d fallbacks %d outside %v", total, fallbacks, outside)
	}
	for _, fc := range checks {
		switch fc.Version {
		case 1:
			if fc.Fills != 1 || fc.Allowed != 1 {
				t.Errorf("v1: %+v", fc)
			}
		case 2:
			if fc.Fills-fc.Fallback != 2 || fc.Allowed != 1 || len(fc.Detail) == 0 {
				t.Errorf("v2: %+v, want 2 counted fills over an allowance of 1, explained", fc)
			}
		}
	}
	// Outside every window, the same fallback is reported.
	_, _, _, _, outside = checkFills(fills, spans, ops, reads, ls, own, nil, nil, t0, time.Time{}, at(2000))
	if len(outside) != 1 {
		t.Errorf("fallback outside the windows not reported: %v", outside)
	}
	// In the final sweep (reads from every node at once), it is not.
	_, _, _, _, outside = checkFills(fills, spans, ops, reads, ls, own, nil, nil, t0, at(1580), at(2000))
	if len(outside) != 0 {
		t.Errorf("fallback in the final sweep reported: %v", outside)
	}
}

// A read between a change and its sync invalidation fills the new version,
// and the invalidation rebuilds it: two fills, both allowed. Two fills for
// no read before the invalidation returned are one too many.
func TestCheckFillsReadBeforeSyncInvalidation(t *testing.T) {
	own, k, owner, ls, spans := twoNodeItem()
	fills := []fill{
		{At: at(1030), Key: "item/3", Version: 2, Node: owner}, // for the read
		{At: at(1400), Key: "item/3", Version: 2, Node: owner}, // the refresh
	}
	for _, c := range []struct {
		name    string
		cache   string    // of the read during the first fill
		ack     time.Time // when the invalidation returned
		allowed int
	}{
		{"a miss read during the first fill", "miss", at(1500), 2},
		{"a hit read only", "hit", at(1500), 1},
		{"the first fill after the invalidation returned", "miss", at(1020), 1},
	} {
		ops := []*writeOp{{Kind: "key", Versions: map[string]int{"item/3": 2}, Bumped: at(1000), Attempts: 1, Acked: true, AckAt: c.ack}}
		reads := []obs{{Start: at(1020), End: at(1040), Node: "n1", Key: k, Code: 200, Cache: c.cache, Version: 2}}
		checks, _, _, _, _ := checkFills(fills, spans, ops, reads, ls, own, nil, nil, t0, time.Time{}, at(2000))
		if len(checks) != 1 || checks[0].Allowed != c.allowed {
			t.Errorf("%s: %+v, want %d allowed", c.name, checks, c.allowed)
		}
	}
}

func TestKnownEvidence(t *testing.T) {
	k := "item/1"
	sync := &writeOp{Kind: "key", Versions: map[string]int{k: 2}, Bumped: at(100), Acked: true, AckAt: at(200), Via: []string{"n1"}}
	events := []*event{{At: at(50), Kind: "SIGSTOP", Targets: []string{"n2"}}, {At: at(250), Kind: "SIGCONT", Targets: []string{"n2"}}}
	ev := newEvidence([]*writeOp{sync}, events, nil, nil)
	if got := ev.staleKnown("n2", k, 1, at(300)); got != "K3" {
		t.Errorf("stopped while the invalidation was applied, read after SIGCONT: got %q, want K3", got)
	}
	if got := ev.staleKnown("n3", k, 1, at(300)); got != "" {
		t.Errorf("a node that was not stopped: got %q, want no explanation", got)
	}
	if got := ev.staleKnown("n2", k, 1, at(240)); got != "" {
		t.Errorf("a read before SIGCONT: got %q, want no explanation", got)
	}
	// K8: the node read the old version from the owner just before the
	// owner's refresh filled the new one.
	key := keyRef{"item", 1}
	reads := []obs{{Start: at(120), End: at(130), Node: "n3", Key: key, Code: 200, Cache: "hit", Owner: "n1", Version: 1}}
	fills := []fill{{At: at(140), Key: k, Version: 2, Node: "n1"}}
	if got := newEvidence([]*writeOp{sync}, nil, reads, fills).staleKnown("n3", k, 1, at(300)); got != "K8" {
		t.Errorf("got %q, want K8", got)
	}
	if got := newEvidence([]*writeOp{sync}, nil, reads, nil).staleKnown("n3", k, 1, at(300)); got != "" {
		t.Errorf("without a refresh fill: got %q, want no explanation", got)
	}
}

func TestBurstFills(t *testing.T) {
	fs := []fill{{At: at(0), Node: "n1"}, {At: at(10), Node: "n1"}, {At: at(20), Node: "n2"}, {At: at(50), Node: "n1"}, {At: at(500), Node: "n1"}}
	if n := burstFills(fs); n != 2 {
		t.Errorf("burst = %d, want 2", n)
	}
}

func TestFailureWindows(t *testing.T) {
	events := []*event{
		{At: at(0), Converge: 100 * time.Millisecond, Converged: true},
		{At: at(1000), Converged: false},
		{At: at(3000), Converge: 200 * time.Millisecond, Converged: true},
	}
	ws := failureWindows(events, at(9000))
	if !ws[1].To.Equal(at(3000)) || !ws[2].To.Equal(at(3200)) {
		t.Errorf("windows %+v", ws)
	}
	if inWindow(ws, at(150), at(900)) || !inWindow(ws, at(900), at(1100)) {
		t.Error("inWindow")
	}
	if s := windowStart(ws, at(2000)); !s.Equal(at(1000)) {
		t.Errorf("windowStart = %v", s)
	}
}
