//go:build linux

package deploy_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The helper environment: when DEPLOYTEST_HOSTS names a file, the test
// binary was started in a mount namespace of its own (see withHosts); it
// bind-mounts that file over /etc/hosts, which only this process and its
// children see, and becomes the program named by DEPLOYTEST_EXEC.
const (
	envHosts = "DEPLOYTEST_HOSTS"
	envExec  = "DEPLOYTEST_EXEC"
)

func execWithHosts() {
	hosts := os.Getenv(envHosts)
	if hosts == "" {
		return
	}
	prog := os.Getenv(envExec)
	if err := syscall.Mount(hosts, "/etc/hosts", "", syscall.MS_BIND, ""); err != nil {
		os.Stderr.WriteString("deploy test helper: bind mount of /etc/hosts: " + err.Error() + "\n")
		os.Exit(97)
	}
	if prog == "" { // the probe of hostsNamespaceWorks
		os.Exit(0)
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, envHosts+"=") && !strings.HasPrefix(e, envExec+"=") {
			env = append(env, e)
		}
	}
	err := syscall.Exec(prog, append([]string{prog}, os.Args[1:]...), env)
	os.Stderr.WriteString("deploy test helper: exec " + prog + ": " + err.Error() + "\n")
	os.Exit(98)
}

// withHosts returns a command that runs bin with args in a mount namespace
// of its own where /etc/hosts is the file hosts. The machine's /etc/hosts
// is not touched.
func withHosts(hosts string) func(bin string, args []string) *exec.Cmd {
	return func(bin string, args []string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), envHosts+"="+hosts, envExec+"="+bin)
		// Go makes the new namespace's mounts private before the exec, so
		// the bind mount does not propagate to the machine.
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		return cmd
	}
}

// hostsNamespaceWorks reports why a private /etc/hosts cannot be had here,
// or "" when it can: it needs the right to create a mount namespace (root,
// or CAP_SYS_ADMIN).
func hostsNamespaceWorks(hosts string) string {
	cmd := withHosts(hosts)("", nil)
	cmd.Env = append(os.Environ(), envHosts+"="+hosts)
	if out, err := cmd.CombinedOutput(); err != nil {
		return strings.TrimSpace(err.Error() + " " + string(out))
	}
	return ""
}

// TestJoinByNameSeveralAddresses joins nodes through a name that resolves
// to several addresses, as the pods of the StatefulSet join through the
// headless service cachenode-peers (which resolves to every pod). Three
// nodes bind the same gossip port on 127.0.0.3, 127.0.0.2 and 127.0.0.1,
// started in that order, and each runs with --join cachenode-peers:PORT
// under an /etc/hosts where that name resolves to 127.0.0.1, 127.0.0.2 and
// 127.0.0.3, in that order. The first node answers only at the name's last
// address and must become ready alone, as the first pod does; the second
// must reach it there although the first address refuses; the third joins
// both. After each start, every node sees every node started so far.
func TestJoinByNameSeveralAddresses(t *testing.T) {
	dir := binaries(t)
	tmp := t.TempDir()
	hosts := filepath.Join(tmp, "hosts")
	writeFile(t, hosts, "127.0.0.1 localhost\n127.0.0.1 cachenode-peers\n127.0.0.2 cachenode-peers\n127.0.0.3 cachenode-peers\n")
	if why := hostsNamespaceWorks(hosts); why != "" {
		t.Skipf("cannot give a process a private /etc/hosts here (needs root or CAP_SYS_ADMIN): %s", why)
	}
	addrs := []string{"127.0.0.3", "127.0.0.2", "127.0.0.1"}
	for _, a := range addrs[:2] {
		ln, err := net.Listen("tcp", a+":0")
		if err != nil {
			t.Skipf("cannot bind %s (loopback addresses beyond 127.0.0.1 are not routed here): %v", a, err)
		}
		ln.Close()
	}
	cfg := filepath.Join(tmp, "c.yaml")
	writeFile(t, cfg, "membership: local\n")
	g := strconv.Itoa(freePort(t, addrs...))
	var nodes []*proc
	for i, a := range addrs {
		httpAddr := net.JoinHostPort(a, strconv.Itoa(freePort(t, a)))
		n := startNode(t, dir, withHosts(hosts), httpAddr, "serve", "--config", cfg, "--name", "cachenode-"+strconv.Itoa(i),
			"--gossip", net.JoinHostPort(a, g), "--peer", a+":0", "--http", httpAddr, "--data=",
			"--join", "cachenode-peers:"+g)
		waitStatus(t, n, "/readyz", 200)
		nodes = append(nodes, n)
		for _, n := range nodes {
			waitAlive(t, n, len(nodes))
		}
	}
}
