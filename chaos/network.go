package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// network places node processes on addresses and cuts links between them.
// The netns implementation gives every node its own network namespace on a
// private bridge and partitions with iptables; the loopback one runs every
// node on 127.0.0.1 and cannot partition.
type network interface {
	// Mode is "netns" or "loopback".
	Mode() string
	// OriginAddr is the address the harness's origin listens on (port 0).
	OriginAddr() string
	// Node returns the addresses of node i (1-based), creating its
	// namespace on first use; the same i always gets the same addresses.
	Node(i int) (nodeAddrs, error)
	// Command returns the command that runs bin with args as node i.
	Command(i int, bin string, args ...string) *exec.Cmd
	// CanPartition reports whether Partition works.
	CanPartition() bool
	// Partition drops every packet between nodes of different groups.
	// Nodes in no group keep talking to everyone. The harness (clients, the
	// origin) always reaches every node.
	Partition(groups ...[]int) error
	// Heal removes every partition.
	Heal() error
	// Close deletes everything the network created. Safe to call twice.
	Close() error
}

// nodeAddrs are the listen addresses of one node.
type nodeAddrs struct {
	IP     string
	Gossip string
	Peer   string
	HTTP   string
}

// ---- loopback ----

// loopbackNet runs every node on 127.0.0.1 with ports picked free once per
// node index.
type loopbackNet struct {
	mu    sync.Mutex
	nodes map[int]nodeAddrs
}

func newLoopback() *loopbackNet { return &loopbackNet{nodes: map[int]nodeAddrs{}} }

func (l *loopbackNet) Mode() string       { return "loopback" }
func (l *loopbackNet) OriginAddr() string { return "127.0.0.1:0" }
func (l *loopbackNet) CanPartition() bool { return false }
func (l *loopbackNet) Partition(...[]int) error {
	return errors.New("partitions need network namespaces")
}
func (l *loopbackNet) Heal() error  { return nil }
func (l *loopbackNet) Close() error { return nil }

func (l *loopbackNet) Node(i int) (nodeAddrs, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a, ok := l.nodes[i]; ok {
		return a, nil
	}
	var ports [3]int
	for k := range ports {
		p, err := freePort(k == 0)
		if err != nil {
			return nodeAddrs{}, err
		}
		ports[k] = p
	}
	hp := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	a := nodeAddrs{IP: "127.0.0.1", Gossip: hp(ports[0]), Peer: hp(ports[1]), HTTP: hp(ports[2])}
	l.nodes[i] = a
	return a, nil
}

func (l *loopbackNet) Command(i int, bin string, args ...string) *exec.Cmd {
	return exec.Command(bin, args...)
}

// freePort returns a port free on 127.0.0.1 for TCP (and UDP when udp is
// set: memberlist binds both).
func freePort(udp bool) (int, error) {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := ln.Addr().(*net.TCPAddr).Port
		if udp {
			pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				ln.Close()
				continue
			}
			pc.Close()
		}
		ln.Close()
		return p, nil
	}
	return 0, errors.New("no free port on 127.0.0.1")
}

// ---- network namespaces ----

// Names: every object carries the harness's pid, so parallel runs do not
// clash and a later run can remove what a killed run left behind.
const nsPrefix = "cnchaos"

// netnsNet is a hub namespace holding a bridge, a veth from the root
// namespace into it (the harness's address, .1), and one namespace per
// node with a veth into the bridge. The bridge lives in the hub so that
// the root namespace's firewall (Docker's FORWARD policy, br_netfilter)
// never sees the nodes' traffic; deleting the hub removes the bridge and
// every veth.
type netnsNet struct {
	pid    int
	subnet string // "10.213.X"
	hub    string
	host   string // root-side veth

	mu     sync.Mutex
	nodes  map[int]nodeAddrs
	cut    map[int]bool // namespaces that hold DROP rules
	closed bool
}

// netnsUnavailable explains why namespaces cannot be used, or is "" when
// they can. It tries the real thing: a namespace created and deleted.
func netnsUnavailable() string {
	if os.Geteuid() != 0 {
		return "not running as root"
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed (Debian: apt-get install iproute2 iptables)"
		}
	}
	name := fmt.Sprintf("%s%d-probe", nsPrefix, os.Getpid())
	if out, err := run("ip", "netns", "add", name); err != nil {
		return "ip netns add failed: " + out
	}
	defer run("ip", "netns", "del", name)
	if out, err := run("ip", "netns", "exec", name, "iptables", "-w", "-L", "INPUT", "-n"); err != nil {
		return "iptables does not work inside a namespace: " + out
	}
	return ""
}

// newNetns builds the hub, the bridge and the harness's link into it.
func newNetns() (_ *netnsNet, err error) {
	removeStale()
	n := &netnsNet{pid: os.Getpid(), nodes: map[int]nodeAddrs{}, cut: map[int]bool{}}
	n.hub = fmt.Sprintf("%s%d-hub", nsPrefix, n.pid)
	n.host = fmt.Sprintf("cnc%dh", n.pid)
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	unlock, err := lockFile("/run/" + nsPrefix + ".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	n.subnet, err = freeSubnet(n.pid)
	if err != nil {
		return nil, err
	}
	steps := [][]string{
		{"ip", "netns", "add", n.hub},
		{"ip", "-n", n.hub, "link", "set", "lo", "up"},
		{"ip", "-n", n.hub, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", n.hub, "link", "set", "br0", "up"},
		{"ip", "link", "add", n.host, "type", "veth", "peer", "name", "host", "netns", n.hub},
		{"ip", "-n", n.hub, "link", "set", "host", "master", "br0", "up"},
		{"ip", "addr", "add", n.subnet + ".1/24", "dev", n.host},
		{"ip", "link", "set", n.host, "up"},
	}
	for _, s := range steps {
		if out, err := run(s[0], s[1:]...); err != nil {
			return nil, fmt.Errorf("%s: %s", strings.Join(s, " "), out)
		}
	}
	return n, nil
}

func (n *netnsNet) Mode() string       { return "netns" }
func (n *netnsNet) CanPartition() bool { return true }
func (n *netnsNet) OriginAddr() string { return n.subnet + ".1:0" }

func (n *netnsNet) nsName(i int) string { return fmt.Sprintf("%s%d-n%d", nsPrefix, n.pid, i) }

func (n *netnsNet) Node(i int) (nodeAddrs, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if a, ok := n.nodes[i]; ok {
		return a, nil
	}
	if n.closed {
		return nodeAddrs{}, errors.New("network closed")
	}
	if i < 1 || i > 200 {
		return nodeAddrs{}, fmt.Errorf("node index %d out of range", i)
	}
	ns, ip := n.nsName(i), fmt.Sprintf("%s.%d", n.subnet, 10+i)
	veth := fmt.Sprintf("v%d", i)
	steps := [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", n.hub, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "-n", n.hub, "link", "set", veth, "master", "br0", "up"},
		{"ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if out, err := run(s[0], s[1:]...); err != nil {
			run("ip", "netns", "del", ns)
			return nodeAddrs{}, fmt.Errorf("%s: %s", strings.Join(s, " "), out)
		}
	}
	a := nodeAddrs{IP: ip, Gossip: ip + ":7946", Peer: ip + ":7947", HTTP: ip + ":8080"}
	n.nodes[i] = a
	return a, nil
}

func (n *netnsNet) Command(i int, bin string, args ...string) *exec.Cmd {
	// ip netns exec execs the program: the child's pid is cachenode's, so
	// signals reach it directly.
	return exec.Command("ip", append([]string{"netns", "exec", n.nsName(i), bin}, args...)...)
}

func (n *netnsNet) Partition(groups ...[]int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	group := map[int]int{}
	for g, members := range groups {
		for _, i := range members {
			group[i] = g + 1
		}
	}
	for i, gi := range group {
		ns := n.nsName(i)
		for j, gj := range group {
			if gi == gj {
				continue
			}
			// INPUT only, on both sides: packets leave and vanish, as on
			// a real network. A DROP in OUTPUT would fail the sender's
			// sendto at once with EPERM, which no real partition does.
			if out, err := run("ip", "netns", "exec", ns, "iptables", "-w", "-A", "INPUT", "-s", n.nodes[j].IP, "-j", "DROP"); err != nil {
				return fmt.Errorf("iptables in %s: %s", ns, out)
			}
		}
		n.cut[i] = true
	}
	return nil
}

func (n *netnsNet) Heal() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	for i := range n.cut {
		if out, err := run("ip", "netns", "exec", n.nsName(i), "iptables", "-w", "-F", "INPUT"); err != nil {
			errs = append(errs, fmt.Errorf("iptables -F in %s: %s", n.nsName(i), out))
		}
		delete(n.cut, i)
	}
	return errors.Join(errs...)
}

// Close deletes the node namespaces (their veths go with them), then the
// hub (the bridge and the harness's veth go with it). Processes must have
// been stopped first: a namespace lives on while a process is in it.
func (n *netnsNet) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	var errs []error
	for i := range n.nodes {
		if out, err := run("ip", "netns", "del", n.nsName(i)); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %s", n.nsName(i), out))
		}
	}
	if out, err := run("ip", "netns", "del", n.hub); err != nil && !strings.Contains(out, "No such file") {
		errs = append(errs, fmt.Errorf("ip netns del %s: %s", n.hub, out))
	}
	// The root-side veth disappears with its peer; remove it in case the
	// hub was never fully built.
	if _, err := net.InterfaceByName(n.host); err == nil {
		run("ip", "link", "del", n.host)
	}
	return errors.Join(errs...)
}

// freeSubnet picks 10.213.X.0/24 with X not used by any address of the
// root namespace. The caller holds the lock file, so two runs starting at
// once do not pick the same X.
func freeSubnet(pid int) (string, error) {
	out, err := run("ip", "-4", "-o", "addr", "show")
	if err != nil {
		return "", fmt.Errorf("ip addr: %s", out)
	}
	start := 7 + pid%200
	for k := range 240 {
		x := 7 + (start-7+k)%240
		s := fmt.Sprintf("10.213.%d", x)
		if !strings.Contains(out, " "+s+".") {
			return s, nil
		}
	}
	return "", errors.New("no free 10.213.X.0/24 subnet")
}

var staleNS = regexp.MustCompile(`^` + nsPrefix + `(\d+)-`)

// removeStale deletes the namespaces of harness runs whose process is gone
// (a run killed with SIGKILL cannot clean up after itself).
func removeStale() {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		m := staleNS.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		if out, err := run("ip", "netns", "pids", e.Name()); err == nil {
			for _, f := range strings.Fields(out) {
				if p, err := strconv.Atoi(f); err == nil {
					syscall.Kill(p, syscall.SIGKILL)
				}
			}
		}
		run("ip", "netns", "del", e.Name())
		fmt.Fprintf(os.Stderr, "chaos: removed namespace %s left by an earlier run (pid %d)\n", e.Name(), pid)
	}
}

// lockFile takes an exclusive flock on path, waiting at most 10 s.
func lockFile(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %v", path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// run runs a command with a 10 s bound and returns its combined output.
func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err.Error(), err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return strings.TrimSpace(out.String()), err
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		return "timed out: " + strings.TrimSpace(out.String()), errors.New("timed out")
	}
}
