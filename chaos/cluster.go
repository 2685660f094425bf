package main

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cachenode/cachenode/node/client"
)

// cluster is the set of node processes of one scenario, the network they
// live on and the origin they fill from.
type cluster struct {
	nw     network
	bin    string
	dir    string
	origin *origin
	hc     *http.Client // admin calls of the harness
	logf   func(format string, args ...any)
	level  string // the nodes' log level
	// disk, when set, is the size of a tmpfs mounted for each node's data
	// directory (the disk-full scenario); set before the first node.
	disk string
	sec  secrets

	mu struct {
		sync.Mutex
		nodes []*node // every node ever started, by index (nodes[0] is n1)
		// side is the partition group of each node; empty when whole.
		side map[string]int
	}
}

func newCluster(nw network, bin, dir string, o *origin, level string, logf func(string, ...any)) (*cluster, error) {
	sec, err := newSecrets(bin, dir)
	if err != nil {
		return nil, err
	}
	c := &cluster{nw: nw, bin: bin, dir: dir, origin: o, logf: logf, level: level, sec: sec}
	c.hc = c.adminClient(&http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}, 0)
	c.mu.side = map[string]int{}
	return c, nil
}

// secrets are the gossip key and the admin token of every node of a
// cluster: the nodes of the netns network listen on addresses that are not
// loopback, where a node refuses to start without them.
type secrets struct {
	keyFile, tokenFile, token string
}

// newSecrets makes a key with the binary's own keygen, and a random token,
// in dir.
func newSecrets(bin, dir string) (secrets, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return secrets{}, err
	}
	s := secrets{keyFile: filepath.Join(dir, "gossip.key"), tokenFile: filepath.Join(dir, "admin.token")}
	if out, err := exec.Command(bin, "keygen", s.keyFile).CombinedOutput(); err != nil {
		return secrets{}, fmt.Errorf("cachenode keygen: %v: %s", err, out)
	}
	b := make([]byte, 16)
	if _, err := crand.Read(b); err != nil {
		return secrets{}, err
	}
	s.token = hex.EncodeToString(b)
	return s, os.WriteFile(s.tokenFile, []byte(s.token+"\n"), 0o600)
}

// adminClient is an HTTP client that sends the cluster's admin token with
// every request (admin endpoints and invalidations need it).
func (c *cluster) adminClient(rt http.RoundTripper, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: bearer{token: c.sec.token, rt: rt}}
}

// bearer adds an Authorization: Bearer header to the requests it sends.
type bearer struct {
	token string
	rt    http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}

// nodes returns every node ever created.
func (c *cluster) nodes() []*node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.mu.nodes)
}

// inState returns the nodes whose process is in one of the given states.
func (c *cluster) inState(states ...procState) []*node {
	var out []*node
	for _, n := range c.nodes() {
		if slices.Contains(states, n.state()) {
			out = append(out, n)
		}
	}
	return out
}

func (c *cluster) byName(name string) *node {
	for _, n := range c.nodes() {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// pick returns home when clients may use it, else a random available node,
// or nil when none is.
func (c *cluster) pick(rng *rand.Rand, home *node) *node {
	if home != nil && home.isAvailable() {
		return home
	}
	var avail []*node
	for _, n := range c.nodes() {
		if n.isAvailable() {
			avail = append(avail, n)
		}
	}
	if len(avail) == 0 {
		return nil
	}
	return avail[rng.IntN(len(avail))]
}

// newNode creates the next node (n1, n2, ...) without starting it.
func (c *cluster) newNode() (*node, error) {
	c.mu.Lock()
	idx := len(c.mu.nodes) + 1
	c.mu.Unlock()
	addrs, err := c.nw.Node(idx)
	if err != nil {
		return nil, err
	}
	n := &node{Name: fmt.Sprintf("n%d", idx), Idx: idx, Addrs: addrs, dir: filepath.Join(c.dir, fmt.Sprintf("n%d", idx))}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return nil, err
	}
	n.data = filepath.Join(n.dir, "data")
	if c.disk != "" {
		if err := c.mountDisk(n); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	c.mu.nodes = append(c.mu.nodes, n)
	c.mu.Unlock()
	return n, nil
}

// start starts (or restarts, with the same data directory) n, joining the
// nodes that run now, and waits until it is ready.
func (c *cluster) start(ctx context.Context, n *node) error {
	var join []string
	for _, o := range c.inState(stateRunning, stateStopped) {
		if o != n {
			join = append(join, o.Addrs.Gossip)
		}
	}
	cfg := filepath.Join(n.dir, "cachenode.yaml")
	if err := os.WriteFile(cfg, []byte(nodeConfig(n, join, c.origin.URL(), c.level, c.sec)), 0o644); err != nil {
		return err
	}
	if err := n.start(c.nw, c.bin, cfg); err != nil {
		return err
	}
	if err := n.waitReady(ctx, c.hc, 20*time.Second); err != nil {
		return err
	}
	n.setAvailable(true)
	return nil
}

// nodeConfig is the YAML config of a node: the cluster's secrets, the fast
// failure-detection preset, four workers filling from the counting origin,
// and the rules of two models.
func nodeConfig(n *node, join []string, originURL, level string, sec secrets) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\ngossip: %s\npeer: %s\nhttp: %s\n", n.Name, n.Addrs.Gossip, n.Addrs.Peer, n.Addrs.HTTP)
	fmt.Fprintf(&b, "gossip_key: %s\nadmin_token_file: %s\n", sec.keyFile, sec.tokenFile)
	fmt.Fprintf(&b, "data: %s\nmemory: 64MiB\nmembership: local\nlog_level: %s\n", n.data, level)
	if len(join) > 0 {
		fmt.Fprintf(&b, "join: [%s]\n", strings.Join(join, ", "))
	}
	b.WriteString("defaults:\n  expires: 1h\nworkers:\n")
	for _, label := range []string{"all", "group", "item", "tag"} {
		fmt.Fprintf(&b, "  %s:\n    origin: %s/%s\n", label, originURL, label)
	}
	b.WriteString(`invalidation:
  Item:
    item: {args: [id]}
    group: {args: [g]}
    all: {is_empty: true}
  Tag:
    tag: {args: [t]}
`)
	return b.String()
}

// setSides records the partition groups the harness made.
func (c *cluster) setSides(groups [][]*node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.side = map[string]int{}
	for g, ns := range groups {
		for _, n := range ns {
			c.mu.side[n.Name] = g + 1
		}
	}
}

func (c *cluster) sideOf(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.side[name]
}

// expected returns, for every running node, the members its ring should
// hold once the cluster has converged: the running nodes of its side, plus
// the stopped ones unless they should have been detected.
func (c *cluster) expected(stoppedAlive bool) map[string][]string {
	live := c.inState(stateRunning)
	if stoppedAlive {
		live = append(live, c.inState(stateStopped)...)
	}
	out := map[string][]string{}
	for _, y := range c.inState(stateRunning) {
		var want []string
		for _, z := range live {
			if c.sideOf(z.Name) == c.sideOf(y.Name) {
				want = append(want, z.Name)
			}
		}
		slices.Sort(want)
		out[y.Name] = want
	}
	return out
}

// waitConverged polls /admin/ring of every running node until the ring of
// each holds exactly the members of want and the nodes of one side share a
// ring version, or timeout passes. It returns how long after since that
// was first seen.
func (c *cluster) waitConverged(ctx context.Context, since time.Time, want map[string][]string, timeout time.Duration) (time.Duration, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if c.converged(ctx, want) {
			return time.Since(since), true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Since(since), false
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

func (c *cluster) converged(ctx context.Context, want map[string][]string) bool {
	type answer struct {
		name string
		v    client.RingInfo
		err  error
	}
	answers := make(chan answer, len(want))
	for name := range want {
		n := c.byName(name)
		go func() {
			v, err := n.ring(ctx, c.hc)
			answers <- answer{name, v, err}
		}()
	}
	ok := true
	versions := map[int]uint64{}
	for range len(want) {
		a := <-answers
		if a.err != nil {
			ok = false
			continue
		}
		if !slices.Equal(ringMembers(a.v), want[a.name]) || !a.v.Ready {
			ok = false
			continue
		}
		side := c.sideOf(a.name)
		if v, seen := versions[side]; seen && v != a.v.Version {
			ok = false
		}
		versions[side] = a.v.Version
	}
	return ok
}

// shutdown terminates every node that runs, all at once, and returns the
// processes that did not exit 0.
func (c *cluster) shutdown(grace time.Duration) []string {
	for _, n := range c.inState(stateStopped) {
		n.cont()
	}
	var mu sync.Mutex
	var bad []string
	var wg sync.WaitGroup
	for _, n := range c.inState(stateRunning) {
		wg.Go(func() {
			if msg := n.terminate(grace); msg != "" {
				mu.Lock()
				bad = append(bad, msg)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(bad)
	return bad
}

// killAll kills whatever still runs: the cleanup path.
func (c *cluster) killAll() {
	for _, n := range c.nodes() {
		n.forceKill()
	}
}
