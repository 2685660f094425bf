package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/node/peer"
)

// The security end-to-end tests run the real binary: it refuses to open
// its ports without a secret, runs open only when told and says so, and a
// keyed node refuses peers without the key and peer requests that are not
// authorised.

var peerLine = regexp.MustCompile(`msg="cachenode serving".* peer=(\S+)`)

// TestBinaryRefusesOpenGossip: `--gossip 0.0.0.0:0` without a key exits 2
// with one line naming the field and the fix.
func TestBinaryRefusesOpenGossip(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	cmd := exec.Command(bin, "serve", "--name", "open", "--gossip", "0.0.0.0:0", "--peer", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2; stderr %q", err, stderr.String())
	}
	msg := stderr.String()
	if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "cachenode: gossip: 0.0.0.0:0 is not a loopback address") ||
		!strings.Contains(msg, "cachenode keygen FILE") || !strings.Contains(msg, "--gossip-key") || !strings.Contains(msg, "--insecure") {
		t.Fatalf("stderr %q, want one line naming gossip and the fixes", msg)
	}
	// A bare cachenode (defaults: gossip and peer on 0.0.0.0) is refused
	// the same way.
	cmd = exec.Command(bin, "--name", "bare", "--data=")
	cmd.Dir = t.TempDir()
	stderr.Reset()
	cmd.Stderr = &stderr
	if err := cmd.Run(); !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.HasPrefix(stderr.String(), "cachenode: gossip: 0.0.0.0:7946") {
		t.Fatalf("bare cachenode: %v %q", err, stderr.String())
	}
}

// TestBinaryInsecureStartsAndWarns: with --insecure the open node starts,
// warns, and says "insecure" on the admin page and in /metrics.
func TestBinaryInsecureStartsAndWarns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	p := startProcArgs(t, bin, "open", "name: open\ngossip: 127.0.0.1:0\npeer: 127.0.0.1:0\nhttp: 127.0.0.1:0\nmembership: local\n",
		"--gossip", "0.0.0.0:0", "--insecure")
	if !strings.Contains(p.logs(), "level=WARN msg=\"INSECURE: gossip and peer ports are open") {
		t.Errorf("no insecure warning at start:\n%s", p.logs())
	}
	if a := do(t, "GET", p.http+"/metrics", "", nil); a.code != 200 || !regexp.MustCompile(`(?m)^cachenode_insecure 1$`).Match(a.body) {
		t.Errorf("/metrics: %d, no cachenode_insecure 1", a.code)
	}
	if a := do(t, "GET", p.http+"/admin/", "", nil); a.code != 200 || !bytes.Contains(a.body, []byte(">insecure</span>")) {
		t.Errorf("admin page: %d, no insecure mark", a.code)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	// A keyed node on loopback is not marked.
	key := filepath.Join(t.TempDir(), "gossip.key")
	if out, err := exec.Command(bin, "keygen", key).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v %s", err, out)
	}
	k := startProc(t, bin, "keyed", "name: keyed\ngossip: 127.0.0.1:0\npeer: 127.0.0.1:0\nhttp: 127.0.0.1:0\nmembership: local\ngossip_key: "+key+"\n")
	if a := do(t, "GET", k.http+"/metrics", "", nil); !regexp.MustCompile(`(?m)^cachenode_insecure 0$`).Match(a.body) {
		t.Errorf("keyed node: no cachenode_insecure 0")
	}
	if strings.Contains(k.logs(), "INSECURE") {
		t.Errorf("a keyed node warns it is insecure:\n%s", k.logs())
	}
}

// e2eEntry and e2eHandoff are the node's handoff request on the wire
// (node/wire.go: an entry is an array in field order; the times the node
// also sends are left out: the refusals tested come before them), as a
// member sends it.
type e2eEntry struct {
	_msgpack    struct{} `msgpack:",as_array"`
	Label       string
	Key         string
	Args        map[string]any
	Value       []byte
	ContentType string
	Owner       string
	Created     int64
	Relevance   int64
	Available   int64
	FillNanos   int64
	Status      uint8
}

type e2eHandoff struct {
	From    string     `msgpack:"f"`
	Entries []e2eEntry `msgpack:"e"`
}

type e2eEnqueue struct {
	Due     int64  `msgpack:"d"`
	Payload []byte `msgpack:"p"`
}

// TestBinaryKeyedPeerPort: a keyed node refuses peer clients without its
// key, and refuses (and counts) handoffs from a non-member or with another
// owner and handed-over invalidations beyond the bounds, from a client
// that has the key.
func TestBinaryKeyedPeerPort(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "gossip.key")
	if out, err := exec.Command(bin, "keygen", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v %s", err, out)
	}
	keys, err := readKeys(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	p := startProc(t, bin, "k1", "name: k1\ngossip: 127.0.0.1:0\npeer: 127.0.0.1:0\nhttp: 127.0.0.1:0\nmembership: local\ngossip_key: "+keyFile+
		"\nworkers:\n  items:\n    origin: http://127.0.0.1:1/items\n    expires: 1h\n")
	m := peerLine.FindStringSubmatch(p.logs())
	if m == nil {
		t.Fatalf("no peer address in the log:\n%s", p.logs())
	}
	peerAddr := m[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for name, k := range map[string][]byte{"no key": nil, "another key": bytes.Repeat([]byte("x"), 32)} {
		c, err := peer.NewClient(peer.ClientConfig{Key: k})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Call(ctx, peerAddr, 1, []byte{0x80})
		c.Close()
		if !errors.Is(err, peer.ErrAuth) {
			t.Errorf("a peer client with %s: %v, want ErrAuth", name, err)
		}
	}

	// An embedded member with the key joins, so that a handoff can claim
	// a real, alive sender.
	emb, err := node.New(node.Config{Name: "emb", Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", Membership: node.LocalMembership(),
		GossipKey: keys[0], Join: []string{p.gossip}})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	if err := emb.Start(); err != nil {
		t.Fatal(err)
	}
	if err := emb.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "k1 to hold emb alive", func() bool {
		return strings.Contains(string(do(t, "GET", p.http+"/admin/ring", "", nil).body), `"name":"emb"`)
	})

	c, err := peer.NewClient(peer.ClientConfig{Key: keys[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	now := time.Now()
	entry := func(owner string) e2eEntry {
		return e2eEntry{Label: "items", Key: `items@id=s"1"`, Args: map[string]any{"id": "1"}, Value: []byte("<script>x</script>"),
			Owner: owner, Created: now.UnixNano(), Available: now.Add(time.Minute).UnixNano()}
	}
	call := func(op byte, v any) error {
		body, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Call(ctx, peerAddr, op, body)
		return err
	}
	for _, tc := range []struct {
		name string
		op   byte
		req  any
		code string
	}{
		{"a handoff from a non-member", 2, e2eHandoff{From: "ghost", Entries: []e2eEntry{entry("ghost")}}, "not_member"},
		{"a handoff with another owner", 2, e2eHandoff{From: "emb", Entries: []e2eEntry{entry("k1")}}, "wrong_owner"},
		{"an enqueue over 1 MiB", 5, e2eEnqueue{Due: now.Add(time.Minute).UnixNano(), Payload: make([]byte, 1<<20+1)}, "item_too_large"},
		{"an enqueue due in 2200", 5, e2eEnqueue{Due: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(), Payload: []byte{0x80}}, "countdown_too_long"},
	} {
		var re *peer.RemoteError
		if err := call(tc.op, tc.req); !errors.As(err, &re) || re.Code != tc.code {
			t.Errorf("%s: %v, want an error frame %q", tc.name, err, tc.code)
		}
		metric := regexp.MustCompile(`(?m)^cachenode_peer_refusals_total\{code="` + tc.code + `",op="(handoff|enqueue)"\} 1$`)
		if a := do(t, "GET", p.http+"/metrics", "", nil); !metric.Match(a.body) {
			t.Errorf("%s: /metrics does not count it:\n%s", tc.name, grepLines(a.body, "cachenode_peer_refusals_total"))
		}
	}
	if a := do(t, "GET", p.http+"/v1/cache/items?id=1", "", nil); bytes.Contains(a.body, []byte("<script>")) {
		t.Fatalf("the refused handoff's value is served: %d %s", a.code, a.body)
	}
	if a := do(t, "GET", p.http+"/metrics", "", nil); !regexp.MustCompile(`(?m)^cachenode_peer_connections_closed_total\{reason="auth"\} 2$`).Match(a.body) {
		t.Errorf("the two refused clients are not counted:\n%s", grepLines(a.body, "cachenode_peer_connections_closed_total"))
	}
}

func grepLines(b []byte, prefix string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitFor waits until cond holds, failing the test after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
