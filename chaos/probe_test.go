package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The probes reproduce the issues this harness found (see knownIssues and
// fixedIssues) one at a time, deterministically, on a small cluster of real
// processes. Each asserts the contract: it fails while its issue is open
// and passes once the component at fault is fixed. The probes of fixed
// issues are regression tests that run with CACHENODE_CHAOS=1, beside
// TestChaos (scripts/test.sh runs both); those of open issues only with
// CHAOS_PROBES=1 (they fail):
//
//	CHAOS_PROBES=1 go test -run Probe -v ./chaos
//
// CHAOS_BIN names a cachenode binary to use instead of building one.

type probe struct {
	t   *testing.T
	ctx context.Context
	nw  network
	o   *origin
	c   *cluster
	rd  *reader
	own *owners
	hc  *http.Client
}

func startProbe(t *testing.T, issue string, nodes int, partitions bool) *probe {
	t.Helper()
	switch probes := os.Getenv("CHAOS_PROBES") != ""; {
	case issueOpen(issue) && !probes:
		t.Skipf("%s is open (see knownIssues): set CHAOS_PROBES=1 to reproduce it", issue)
	case !probes && os.Getenv("CACHENODE_CHAOS") != "1":
		// Real clusters, run on their own like TestChaos (see there).
		t.Skip("set CACHENODE_CHAOS=1 to run the regression probes (scripts/test.sh does)")
	case testing.Short():
		t.Skip("starts real clusters; skipped with -short")
	}
	bin := testBinary(t)
	var nw network
	if reason := netnsUnavailable(); reason == "" {
		n, err := newNetns()
		if err != nil {
			t.Fatal(err)
		}
		nw = n
	} else if partitions {
		t.Skip("needs network namespaces: " + reason)
	} else {
		nw = newLoopback()
	}
	t.Cleanup(func() { nw.Close() })
	o, err := newOrigin(nw.OriginAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	c, err := newCluster(nw, bin, filepath.Join(t.TempDir(), "probe"), o, "info", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.killAll)
	for range nodes {
		n, err := c.newNode()
		if err == nil {
			err = c.start(ctx, n)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	p := &probe{t: t, ctx: ctx, nw: nw, o: o, c: c, rd: newReader(), own: newOwners(), hc: c.adminClient(http.DefaultTransport, 10*time.Second)}
	p.converge()
	return p
}

func (p *probe) node(name string) *node { return p.c.byName(name) }

func (p *probe) converge() {
	p.t.Helper()
	if _, ok := p.c.waitConverged(p.ctx, time.Now(), p.c.expected(false), 20*time.Second); !ok {
		p.t.Fatal("the cluster did not converge in 20 s")
	}
}

// itemOwnedBy returns an item key that name owns in the ring of members.
func (p *probe) itemOwnedBy(name, members string) keyRef {
	for v := range keySpace["item"].size {
		if k := (keyRef{"item", v}); p.own.owner(members, k) == name {
			return k
		}
	}
	p.t.Fatalf("no item owned by %s in {%s}", name, members)
	return keyRef{}
}

func (p *probe) read(n *node, k keyRef) obs {
	p.t.Helper()
	r := p.rd.read(p.ctx, n, k)
	if !r.ok() {
		p.t.Fatalf("read %s from %s: %d %s", k, n.Name, r.Code, r.Err)
	}
	return r
}

// invalidate POSTs an invalidation of one item to n and returns the status.
func (p *probe) invalidate(n *node, k keyRef, extra map[string]any) int {
	p.t.Helper()
	body := map[string]any{"label": k.Label, "args": map[string]any{argOf[k.Label]: strconv.Itoa(k.Val)}}
	for name, v := range extra {
		body[name] = v
	}
	b, _ := json.Marshal(body)
	resp, err := p.hc.Post(n.URL()+"/v1/invalidate", "application/json", bytes.NewReader(b))
	if err != nil {
		p.t.Fatalf("POST /v1/invalidate to %s: %v", n.Name, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// change makes a new version of k current at the origin.
func (p *probe) change(k keyRef) int { return p.o.bump([]keyRef{k})[k.String()] }

// TestProbeK1 reproduces K1: a non-owner drops its near-cache copy when the
// invalidation reaches it and reads the key again from the owner while the
// owner's refresh runs; the owner answers with the entry it is refreshing,
// and the copy keeps the old value after the invalidation returned 200.
func TestProbeK1(t *testing.T) {
	p := startProbe(t, "K1", 3, false)
	k := p.itemOwnedBy("n1", "n1,n2,n3")
	n2, n3 := p.node("n2"), p.node("n3")
	p.read(n2, k) // a near-cache copy on n2
	p.o.slowDown(k, 500*time.Millisecond)
	v := p.change(k)
	code := make(chan int, 1)
	go func() { code <- p.invalidate(n3, k, nil) }()
	reads := 0
	for done := false; !done; {
		select {
		case c := <-code:
			if c != http.StatusOK {
				t.Fatalf("invalidation answered %d", c)
			}
			done = true
		case <-time.After(20 * time.Millisecond):
			p.read(n2, k) // a client reading n2 while the owner refreshes
			reads++
		}
	}
	p.o.slowDown(k, 0)
	if r := p.read(n2, k); r.Version < v {
		t.Errorf("K1: after POST /v1/invalidate returned 200, n2 serves %s v%d (X-Cache %s); v%d is current (%d reads of n2 during the owner's refresh)",
			k, r.Version, r.Cache, v, reads)
	}
}

// TestProbeK3 reproduces K3: a node stalled by SIGSTOP past failure
// detection misses an invalidation; after SIGCONT it serves the old value.
func TestProbeK3(t *testing.T) {
	p := startProbe(t, "K3", 5, false)
	k := p.itemOwnedBy("n1", "n1,n2,n3,n4,n5")
	n1, n4 := p.node("n1"), p.node("n4")
	p.read(n4, k)
	stoppedAt := time.Now()
	if err := n4.stop(); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.c.waitConverged(p.ctx, time.Now(), p.c.expected(false), 20*time.Second); !ok {
		t.Fatal("the others did not drop the stopped node")
	}
	v := p.change(k)
	if c := p.invalidate(n1, k, nil); c != http.StatusOK {
		t.Fatalf("invalidation answered %d", c)
	}
	if err := n4.cont(); err != nil {
		t.Fatal(err)
	}
	n4.setAvailable(true)
	stoppedFor := time.Since(stoppedAt)
	first := p.read(n4, k)
	time.Sleep(300 * time.Millisecond)
	later := p.read(n4, k)
	if first.Version < v || later.Version < v {
		t.Errorf("K3: n4 was stopped for %v; right after SIGCONT it serves %s v%d, and 300 ms later v%d; v%d was invalidated with 200 while it was stopped",
			stoppedFor.Round(time.Millisecond), k, first.Version, later.Version, v)
	}
}

// TestProbeK4 reproduces K4: a node cut off while a key it holds is
// invalidated several times applies every missed event at once when the
// partition heals, and fills the key's current version once per event.
func TestProbeK4(t *testing.T) {
	p := startProbe(t, "K4", 5, true)
	k := p.itemOwnedBy("n1", "n1,n2,n3,n4,n5")
	n1, n2 := p.node("n1"), p.node("n2")
	p.read(n1, k)
	rest := []*node{n2, p.node("n3"), p.node("n4"), p.node("n5")}
	p.c.setSides([][]*node{{n1}, rest})
	if err := p.nw.Partition([]int{1}, indexes(rest)); err != nil {
		t.Fatal(err)
	}
	p.converge()
	const events = 4
	v := 0
	for range events {
		v = p.change(k)
		if c := p.invalidate(n2, k, nil); c != http.StatusOK {
			t.Fatalf("invalidation on the majority answered %d", c)
		}
	}
	p.read(n1, k) // n1, alone, fills the current version for itself
	healAt := time.Now()
	if err := p.nw.Heal(); err != nil {
		t.Fatal(err)
	}
	p.c.setSides(nil)
	p.converge()
	time.Sleep(time.Second)
	fills, _, _ := p.o.snapshot()
	var at []string
	for _, f := range fills {
		if f.Key == k.String() && f.Version == v && f.Node == "n1" && f.At.After(healAt) {
			at = append(at, fmt.Sprintf("%.3fs", f.At.Sub(healAt).Seconds()))
		}
	}
	if len(at) > 1 {
		t.Errorf("K4: after the heal n1 filled %s v%d %d times (at %v after the heal), once per invalidation it missed", k, v, len(at), at)
	}
}

// TestProbeK5 reproduces K5: a node cut off from the majority acknowledges
// a synchronous invalidation with 200; the majority never applied it.
func TestProbeK5(t *testing.T) {
	p := startProbe(t, "K5", 5, true)
	k := p.itemOwnedBy("n2", "n1,n2,n3,n4,n5")
	n1 := p.node("n1")
	rest := []*node{p.node("n2"), p.node("n3"), p.node("n4"), p.node("n5")}
	for _, n := range rest {
		p.read(n, k)
	}
	p.c.setSides([][]*node{{n1}, rest})
	if err := p.nw.Partition([]int{1}, indexes(rest)); err != nil {
		t.Fatal(err)
	}
	defer p.nw.Heal()
	p.converge()
	v := p.change(k)
	if c := p.invalidate(n1, k, nil); c != http.StatusOK {
		t.Logf("the cut-off node answered %d: it does not acknowledge what it could not deliver", c)
		return
	}
	for _, n := range rest {
		if r := p.read(n, k); r.Version < v {
			t.Errorf("K5: n1, cut off from the majority, answered 200 to the invalidation of %s, and %s serves v%d; v%d is current", k, n.Name, r.Version, v)
		}
	}
}

// TestProbeK6 reproduces K6: a delayed invalidation accepted by a node
// that leaves gracefully before its countdown is never applied.
func TestProbeK6(t *testing.T) {
	p := startProbe(t, "K6", 3, false)
	k := p.itemOwnedBy("n1", "n1,n2,n3")
	n1, n2, n3 := p.node("n1"), p.node("n2"), p.node("n3")
	p.read(n1, k)
	p.read(n2, k)
	v := p.change(k)
	if c := p.invalidate(n3, k, map[string]any{"delay": true, "countdown": "2s"}); c != http.StatusAccepted {
		t.Fatalf("delayed invalidation answered %d, want 202", c)
	}
	if msg := n3.terminate(20 * time.Second); msg != "" {
		t.Fatal(msg)
	}
	deadline := time.Now().Add(6 * time.Second)
	for {
		r1, r2 := p.read(n1, k), p.read(n2, k)
		if r1.Version >= v && r2.Version >= v {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("K6: 6 s after n3 accepted a delayed invalidation of %s (countdown 2s) and left, n1 serves v%d and n2 v%d; v%d is current",
				k, r1.Version, r2.Version, v)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestProbeK7 reproduces K7: the owner of a key leaves gracefully while
// the key's refresh runs; it hands its entries, the old value among them,
// to their next owners, which had applied the invalidation already.
func TestProbeK7(t *testing.T) {
	p := startProbe(t, "K7", 3, false)
	k := p.itemOwnedBy("n3", "n1,n2,n3")
	next := p.own.owner("n1,n2", k)
	n1, n3 := p.node("n1"), p.node("n3")
	p.read(n3, k)
	p.o.slowDown(k, 800*time.Millisecond)
	v := p.change(k)
	code := make(chan int, 1)
	go func() { code <- p.invalidate(n1, k, nil) }()
	// n3 leaves once its refresh is running: the origin has its request.
	for deadline := time.Now().Add(10 * time.Second); !p.o.filled(k, v, "n3"); {
		if time.Now().After(deadline) {
			t.Fatalf("n3 did not start the refresh of %s v%d in 10 s", k, v)
		}
		time.Sleep(5 * time.Millisecond)
	}
	left := make(chan string, 1)
	go func() { left <- n3.terminate(20 * time.Second) }()
	// 200, or 504 when n3 left before it acknowledged: delivery then goes
	// on in the background, and the value must become current all the same.
	c := <-code
	if msg := <-left; msg != "" {
		t.Fatal(msg)
	}
	p.o.slowDown(k, 0)
	p.converge()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := p.read(p.node(next), k)
		if r.Version >= v {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("K7: the invalidation of %s answered %d; n3 left during its refresh, and 5 s later its next owner %s serves v%d (X-Cache %s, owner %s); v%d is current",
				k, c, next, r.Version, r.Cache, r.Owner, v)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestProbeK8 reproduces K8: the invalidation reaches a non-owner before
// the owner (here the link between the node that broadcasts it and the
// owner drops packets for 400 ms, so TCP delivers it late); a read on the
// non-owner fetches the old value from the owner meanwhile and keeps it.
func TestProbeK8(t *testing.T) {
	p := startProbe(t, "K8", 3, true)
	k := p.itemOwnedBy("n1", "n1,n2,n3")
	n2, n3 := p.node("n2"), p.node("n3")
	p.read(n2, k)
	v := p.change(k)
	if err := p.nw.Partition([]int{1}, []int{3}); err != nil { // n1 and n3 only; n2 talks to both
		t.Fatal(err)
	}
	code := make(chan int, 1)
	go func() { code <- p.invalidate(n3, k, nil) }()
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		p.read(n2, k)
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if err := p.nw.Heal(); err != nil {
		t.Fatal(err)
	}
	c := <-code
	if r := p.read(n2, k); r.Version < v {
		t.Errorf("K8: the invalidation of %s answered %d after the owner got it late, and n2 serves v%d (X-Cache %s); v%d is current",
			k, c, r.Version, r.Cache, v)
	}
}
