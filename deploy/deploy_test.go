// Package deploy_test checks the deployment files with what runs without a
// Docker engine or a Kubernetes cluster: the Dockerfile's shape, the
// manifests and the compose file parsed as YAML with the fields they must
// have, the static binary built as the Dockerfile builds it and started
// with the config files they ship, and joining a cluster by a DNS name, as
// the StatefulSet's pods do through the headless service.
package deploy_test

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// When the test binary is started as the helper that runs a process
	// under a private /etc/hosts (hosts_linux_test.go), it never returns.
	execWithHosts()
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// built holds the binaries, built once for the tests of this package.
var built struct {
	once sync.Once
	dir  string
	err  error
}

// binaries builds cachenode and the health probe as deploy/Dockerfile and
// examples/dedicated/run.sh do (CGO_ENABLED=0, -trimpath), so that the
// three share the build cache, and returns their directory.
func binaries(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			if goTool, err = exec.LookPath("go"); err != nil {
				built.err = fmt.Errorf("no go tool: %v", err)
				return
			}
		}
		if built.dir, built.err = os.MkdirTemp("", "cachenode-deploy-"); built.err != nil {
			return
		}
		for name, pkg := range map[string]string{"cachenode": "./cmd/cachenode", "healthcheck": "./deploy/healthcheck"} {
			cmd := exec.Command(goTool, "build", "-trimpath", "-o", filepath.Join(built.dir, name), pkg)
			cmd.Dir = ".."
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				built.err = fmt.Errorf("CGO_ENABLED=0 go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

// TestStaticBinary builds cachenode with CGO_ENABLED=0, checks that it is
// statically linked (it runs on distroless/static or scratch), and starts
// it with the Kubernetes ConfigMap's config file, a gossip key and an admin
// token, as a pod does; the health probe of the image then passes, and
// SIGTERM stops it with exit code 0.
func TestStaticBinary(t *testing.T) {
	dir := binaries(t)
	for _, name := range []string{"cachenode", "healthcheck"} {
		f, err := elf.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has an ELF interpreter: not a static binary", name)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s needs shared libraries %v", name, libs)
		}
		f.Close()
	}
	out, err := exec.Command(filepath.Join(dir, "cachenode"), "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "cachenode ") {
		t.Fatalf("cachenode version: %q, %v", out, err)
	}

	tmp := t.TempDir()
	cfg := filepath.Join(tmp, "cachenode.yaml")
	writeFile(t, cfg, configMapFile(t))
	// The key as the manifests' instructions make it.
	if out, err := exec.Command(filepath.Join(dir, "cachenode"), "keygen", filepath.Join(tmp, "gossip.key")).CombinedOutput(); err != nil {
		t.Fatalf("cachenode keygen: %v %s", err, out)
	}
	writeFile(t, filepath.Join(tmp, "admin.token"), "deploy-test-token\n")
	httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "127.0.0.1")))
	n := startNode(t, dir, nil, httpAddr, "serve", "--config", cfg, "--name", "cachenode-0",
		"--gossip", "127.0.0.1:0", "--peer", "127.0.0.1:0", "--http", httpAddr, "--data", filepath.Join(tmp, "data"),
		"--gossip-key", filepath.Join(tmp, "gossip.key"), "--admin-token-file", filepath.Join(tmp, "admin.token"))
	waitStatus(t, n, "/readyz", 200)

	probe := filepath.Join(dir, "healthcheck")
	if out, err := exec.Command(probe, "http://"+httpAddr+"/healthz").CombinedOutput(); err != nil {
		t.Errorf("healthcheck /healthz: %v %s", err, out)
	}
	err = exec.Command(probe, "http://"+httpAddr+"/admin/ring").Run() // 401 without the token
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("healthcheck of a 401: %v, want exit code 1", err)
	}
	var workers struct {
		Workers []struct{ Label string } `json:"workers"`
	}
	getJSON(t, n, "/admin/workers", "deploy-test-token", &workers)
	if len(workers.Workers) != 2 {
		t.Errorf("the ConfigMap's config declares %d workers, want all_foos and filtered_foos", len(workers.Workers))
	}
	n.stop(t)
}

// TestConfigFiles starts the binary with every config file the deployment
// and the dedicated example ship (addresses overridden by flags), so that
// a typo in one of them fails here rather than in a cluster.
func TestConfigFiles(t *testing.T) {
	dir := binaries(t)
	files := map[string]string{"deploy/compose/cachenode.yaml": readFile(t, "compose/cachenode.yaml")}
	for _, n := range []string{"n1", "n2", "n3"} {
		files["examples/dedicated/"+n+".yaml"] = readFile(t, "../examples/dedicated/"+n+".yaml")
	}
	for name, content := range files {
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "c.yaml")
			writeFile(t, cfg, content)
			httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "127.0.0.1")))
			n := startNode(t, dir, nil, httpAddr, "serve", "--config", cfg, "--name", "t", "--join", "",
				"--gossip", "127.0.0.1:0", "--peer", "127.0.0.1:0", "--http", httpAddr, "--data=")
			waitStatus(t, n, "/readyz", 200)
			n.stop(t)
		})
	}
}

// TestJoinByName joins a node through a host name, as the pods join
// through the headless service: "localhost" resolves to this node's own
// address first (the first pod of a StatefulSet resolves the service to
// itself alone, and must become ready), then a second node joins the
// first through the same name.
func TestJoinByName(t *testing.T) {
	dir := binaries(t)
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, cfg, "membership: local\n")
	g := freePort(t, "127.0.0.1")
	join := "localhost:" + strconv.Itoa(g)
	var nodes []*proc
	for i, gossip := range []string{"127.0.0.1:" + strconv.Itoa(g), "127.0.0.1:0"} {
		httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, "127.0.0.1")))
		n := startNode(t, dir, nil, httpAddr, "serve", "--config", cfg, "--name", "n"+strconv.Itoa(i+1),
			"--gossip", gossip, "--peer", "127.0.0.1:0", "--http", httpAddr, "--data=", "--join", join)
		waitStatus(t, n, "/readyz", 200)
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		waitAlive(t, n, 2)
	}
}

// proc is a cachenode process started by a test.
type proc struct {
	cmd  *exec.Cmd
	base string // http://HOST:PORT
	log  *bytes.Buffer
	mu   *sync.Mutex
	done chan error
}

// startNode starts the binary (through wrap, when given, which returns
// the command to run instead) and waits until /healthz answers.
func startNode(t *testing.T, dir string, wrap func(bin string, args []string) *exec.Cmd, httpAddr string, args ...string) *proc {
	t.Helper()
	bin := filepath.Join(dir, "cachenode")
	var cmd *exec.Cmd
	if wrap != nil {
		cmd = wrap(bin, args)
	} else {
		cmd = exec.Command(bin, args...)
	}
	p := &proc{cmd: cmd, base: "http://" + httpAddr, log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	w := &lockedWriter{w: p.log, mu: p.mu}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("log of %v:\n%s", args, p.log.String())
			p.mu.Unlock()
		}
	})
	waitStatus(t, p, "/healthz", 200)
	return p
}

// stop sends SIGTERM and wants exit code 0 within 30 s.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("no exit within 30 s of SIGTERM")
		p.cmd.Process.Kill()
		<-p.done
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}

// waitStatus waits until path answers want, for at most 20 s.
func waitStatus(t *testing.T, p *proc, path string, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("the node exited (%v) before %s answered %d", err, path, want)
		default:
		}
		resp, err := httpClient.Get(p.base + path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s%s did not answer %d within 20 s (last: %s)", p.base, path, want, last)
}

// waitAlive waits until the node's /admin/ring lists n alive members.
func waitAlive(t *testing.T, p *proc, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	got := 0
	for time.Now().Before(deadline) {
		var ring struct {
			Members []struct{ Name, State string } `json:"members"`
		}
		getJSON(t, p, "/admin/ring", "", &ring)
		got = 0
		for _, m := range ring.Members {
			if m.State == "alive" {
				got++
			}
		}
		if got == n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s sees %d alive members, want %d", p.base, got, n)
}

func getJSON(t *testing.T, p *proc, path, token string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// freePort returns a port that is free for TCP and UDP on every host.
func freePort(t *testing.T, hosts ...string) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		free := true
		for _, h := range hosts {
			addr := net.JoinHostPort(h, strconv.Itoa(port))
			l, err := net.Listen("tcp", addr)
			if err != nil {
				free = false
				break
			}
			u, err := net.ListenPacket("udp", addr)
			l.Close()
			if err != nil {
				free = false
				break
			}
			u.Close()
		}
		if free {
			return port
		}
	}
	t.Fatalf("no port free on %v", hosts)
	return 0
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDockerfile checks the shape of deploy/Dockerfile: a Go build stage
// with CGO_ENABLED=0 and -trimpath (the flags this package builds with), a
// final stage on a static base with no shell, a non-root user, the
// HEALTHCHECK on /healthz through the probe built in the build stage, and
// cachenode as the entry point; and that every package it builds exists.
func TestDockerfile(t *testing.T) {
	type stage struct {
		from, name string
		lines      []string
	}
	var stages []*stage
	sc := bufio.NewScanner(strings.NewReader(strings.ReplaceAll(readFile(t, "Dockerfile"), "\\\n", " ")))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if strings.EqualFold(f[0], "FROM") {
			s := &stage{from: f[1]}
			if len(f) == 4 && strings.EqualFold(f[2], "AS") {
				s.name = f[3]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", len(stages))
	}
	has := func(s *stage, prefix, substr string) bool {
		return slices.ContainsFunc(s.lines, func(l string) bool {
			return strings.HasPrefix(strings.ToUpper(l), prefix) && strings.Contains(l, substr)
		})
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.from, "golang:") {
		t.Errorf("build stage FROM %s, want golang:", build.from)
	}
	if !has(build, "ENV", "CGO_ENABLED=0") || !has(build, "ENV", "-trimpath") {
		t.Errorf("the build stage does not set CGO_ENABLED=0 and -trimpath")
	}
	for _, pkg := range []string{"./cmd/cachenode", "./deploy/healthcheck", "./examples/dedicated/origin"} {
		if !has(build, "RUN", "go build") || !has(build, "RUN", pkg) {
			t.Errorf("the build stage does not build %s", pkg)
		}
		if _, err := os.Stat(filepath.Join("..", pkg)); err != nil {
			t.Errorf("the Dockerfile builds %s: %v", pkg, err)
		}
	}
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") && final.from != "scratch" {
		t.Errorf("final stage FROM %s, want distroless/static or scratch", final.from)
	}
	var user string
	for _, l := range final.lines {
		if f := strings.Fields(l); strings.EqualFold(f[0], "USER") {
			user = f[1]
		}
	}
	if uid := strings.Split(user, ":")[0]; user == "" || uid == "root" || uid == "0" {
		t.Errorf("final stage USER %q, want a non-root user", user)
	}
	if !has(final, "HEALTHCHECK", "/usr/local/bin/healthcheck") || !has(final, "HEALTHCHECK", "/healthz") {
		t.Errorf("final stage has no HEALTHCHECK on /healthz through the probe")
	}
	if !has(final, "COPY", "/out/healthcheck") || !has(final, "ENTRYPOINT", "/usr/local/bin/cachenode") {
		t.Errorf("final stage does not copy the probe or does not run cachenode")
	}
	if _, err := os.Stat("Dockerfile.dockerignore"); err != nil {
		t.Errorf("no Dockerfile.dockerignore: %v", err)
	}
}
