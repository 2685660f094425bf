package main

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemo runs `cachenode demo` as a newcomer would and follows its
// printed instructions: a cached read through two nodes, a change in the
// origin that refreshes the cluster, and a clean stop on SIGINT.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	cmd := exec.Command(bin, "demo", "--port", "0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	defer func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("demo stderr:\n%s", stderr.String())
		}
	}()
	nodeLine := regexp.MustCompile(`^\s+node (n\d)\s+(http://\S+)`)
	originLine := regexp.MustCompile(`^\s+origin\s+(http://\S+)`)
	var nodes []string
	var origin string
	timeout := time.After(30 * time.Second)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the demo ended before printing its instructions: %s", stderr.String())
			}
			if m := nodeLine.FindStringSubmatch(l); m != nil {
				nodes = append(nodes, m[2])
			}
			if m := originLine.FindStringSubmatch(l); m != nil {
				origin = m[1]
			}
			done = strings.HasPrefix(l, "Try:")
		case <-timeout:
			t.Fatal("the demo printed no instructions within 30s")
		}
	}
	if len(nodes) != 3 || origin == "" {
		t.Fatalf("nodes %v origin %q", nodes, origin)
	}
	a := do(t, "GET", nodes[0]+"/v1/cache/filtered_foos?attr1=red&attr2=small", "", nil)
	b := do(t, "GET", nodes[2]+"/v1/cache/filtered_foos?attr1=red&attr2=small", "", nil)
	if a.code != 200 || b.code != 200 || a.header.Get("X-Cache") != "miss" || b.header.Get("X-Cache") != "hit" ||
		a.header.Get("X-Cache-Key") != b.header.Get("X-Cache-Key") || string(a.body) != string(b.body) {
		t.Fatalf("cached read: %d %v %s / %d %v %s", a.code, a.header, a.body, b.code, b.header, b.body)
	}
	u := do(t, "POST", origin+"/foos/1?attr1=blue", "", nil)
	var res struct {
		Invalidation struct{ Keys, Nodes int }
	}
	if u.code != 200 || json.Unmarshal(u.body, &res) != nil || res.Invalidation.Nodes != 3 {
		t.Fatalf("origin update: %d %s", u.code, u.body)
	}
	c := do(t, "GET", nodes[1]+"/v1/cache/filtered_foos?attr1=red&attr2=small", "", nil)
	if c.code != 200 || strings.Contains(string(c.body), `"anchor"`) {
		t.Errorf("after foo 1 turned blue, red/small still lists it: %s", c.body)
	}
	if r := do(t, "GET", nodes[0]+"/admin/", "", nil); r.code != 200 || !strings.Contains(string(r.body), "<svg") {
		t.Errorf("admin page: %d", r.code)
	}
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("demo exit after SIGINT: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the demo did not stop within 20s of SIGINT")
	}
}
