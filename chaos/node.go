package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cachenode/cachenode/node/client"
)

// procState is what the harness did to a node process last.
type procState int

const (
	stateNew     procState = iota
	stateRunning           // started and not faulted
	stateStopped           // SIGSTOP
	stateKilled            // kill -9, may be restarted
	stateLeft              // SIGTERM: gone for good
)

// node is one cachenode process, across its restarts.
type node struct {
	Name  string
	Idx   int
	Addrs nodeAddrs
	dir   string // the node's work directory: config, data, logs
	data  string // the data directory (in dir, or on disk)
	disk  string // the tmpfs holding data (disk-full scenario), or ""

	mu struct {
		sync.Mutex
		state procState
		// available: clients may send reads (running and ready).
		available bool
		cmd       *exec.Cmd
		exited    chan struct{} // closed when the current process exited
		exitErr   error
		logs      []string // one log file per incarnation
		// downs are the intervals during which the harness took the node
		// away from clients; a read overlapping one went to a failed node.
		downs []interval
	}
}

type interval struct{ From, To time.Time } // To zero: still open

func (iv interval) overlaps(a, b time.Time) bool {
	return !b.Before(iv.From) && (iv.To.IsZero() || !a.After(iv.To))
}

func (n *node) URL() string { return "http://" + n.Addrs.HTTP }

func (n *node) state() procState {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.state
}

func (n *node) isAvailable() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.available
}

// setAvailable opens or closes a down interval.
func (n *node) setAvailable(ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ok == n.mu.available {
		return
	}
	n.mu.available = ok
	now := time.Now()
	if ok {
		if k := len(n.mu.downs); k > 0 && n.mu.downs[k-1].To.IsZero() {
			n.mu.downs[k-1].To = now
		}
	} else {
		n.mu.downs = append(n.mu.downs, interval{From: now})
	}
}

// wasDown reports whether the node was taken away from clients at any time
// in [a, b].
func (n *node) wasDown(a, b time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, iv := range n.mu.downs {
		if iv.overlaps(a, b) {
			return true
		}
	}
	return false
}

func (n *node) logFiles() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.mu.logs...)
}

// start runs a new incarnation of the node. The process gets SIGKILL if
// the harness dies, so a crashed harness leaves no node behind.
func (n *node) start(nw network, bin, cfgPath string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.state == stateRunning || n.mu.state == stateStopped {
		return fmt.Errorf("%s is already running", n.Name)
	}
	logPath := filepath.Join(n.dir, fmt.Sprintf("%s.%d.log", n.Name, len(n.mu.logs)))
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := nw.Command(n.Idx, bin, "serve", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	exited := make(chan struct{})
	n.mu.cmd, n.mu.exited, n.mu.exitErr = cmd, exited, nil
	n.mu.logs = append(n.mu.logs, logPath)
	n.mu.state = stateRunning
	go func() {
		err := cmd.Wait()
		f.Close()
		n.mu.Lock()
		n.mu.exitErr = err
		n.mu.Unlock()
		close(exited)
	}()
	return nil
}

// signal sends sig to the current process.
func (n *node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.cmd == nil || n.mu.cmd.Process == nil {
		return fmt.Errorf("%s has no process", n.Name)
	}
	return n.mu.cmd.Process.Signal(sig)
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *node) kill() error {
	n.setAvailable(false)
	n.mu.Lock()
	n.mu.state = stateKilled
	exited := n.mu.exited
	n.mu.Unlock()
	n.signal(syscall.SIGCONT) // a stopped process dies only once it runs
	if err := n.signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s did not die on SIGKILL", n.Name)
	}
}

func (n *node) stop() error {
	n.setAvailable(false)
	n.mu.Lock()
	n.mu.state = stateStopped
	n.mu.Unlock()
	return n.signal(syscall.SIGSTOP)
}

func (n *node) cont() error {
	n.mu.Lock()
	n.mu.state = stateRunning
	n.mu.Unlock()
	return n.signal(syscall.SIGCONT)
}

// terminate sends SIGTERM and waits up to grace for the exit; it returns
// a description of anything but a clean exit 0.
func (n *node) terminate(grace time.Duration) string {
	n.setAvailable(false)
	n.mu.Lock()
	n.mu.state = stateLeft
	exited := n.mu.exited
	n.mu.Unlock()
	if exited == nil {
		return ""
	}
	select {
	case <-exited:
		return n.Name + " had exited before SIGTERM"
	default:
	}
	if err := n.signal(syscall.SIGTERM); err != nil {
		return fmt.Sprintf("%s: SIGTERM: %v", n.Name, err)
	}
	select {
	case <-exited:
	case <-time.After(grace):
		n.signal(syscall.SIGKILL)
		<-exited
		return fmt.Sprintf("%s did not exit within %v of SIGTERM (killed)", n.Name, grace)
	}
	n.mu.Lock()
	err := n.mu.exitErr
	n.mu.Unlock()
	if err != nil {
		return fmt.Sprintf("%s exited with %v on SIGTERM", n.Name, err)
	}
	return ""
}

// forceKill kills the process if it runs, for cleanup.
func (n *node) forceKill() {
	n.mu.Lock()
	cmd, exited := n.mu.cmd, n.mu.exited
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
	}
}

// hasExited reports whether the current process has exited, and how.
func (n *node) hasExited() (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.exited == nil {
		return false, nil
	}
	select {
	case <-n.mu.exited:
		return true, n.mu.exitErr
	default:
		return false, nil
	}
}

// waitReady polls /readyz until it answers 200, the process exits, or the
// timeout passes.
func (n *node) waitReady(ctx context.Context, hc *http.Client, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if gone, err := n.hasExited(); gone {
			return fmt.Errorf("%s exited while starting (%v); see %s", n.Name, err, n.lastLog())
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, n.URL()+"/readyz", nil)
		resp, err := hc.Do(req)
		cancel()
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v; see %s", n.Name, timeout, n.lastLog())
}

func (n *node) lastLog() string {
	l := n.logFiles()
	if len(l) == 0 {
		return "(no log)"
	}
	return l[len(l)-1]
}

// ringMembers returns the members of a node's ring, sorted: the distinct
// owners of its partitions. (A member's state may read "suspect" while it
// is still in the ring and gets requests.)
func ringMembers(v client.RingInfo) []string {
	var out []string
	for _, o := range v.Partitions {
		if !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	slices.Sort(out)
	return out
}

func (n *node) ring(ctx context.Context, hc *http.Client) (client.RingInfo, error) {
	var v client.RingInfo
	err := getJSON(ctx, hc, n.URL()+"/admin/ring", &v)
	return v, err
}

// records lists every created-cache record the node holds.
func (n *node) records(ctx context.Context, hc *http.Client) (map[string]bool, error) {
	keys := map[string]bool{}
	after := ""
	for range 1000 {
		var page struct {
			Records []struct {
				Key string `json:"key"`
			} `json:"records"`
			Next *string `json:"next"`
		}
		u := n.URL() + "/admin/records?limit=1000"
		if after != "" {
			u += "&after=" + url.QueryEscape(after)
		}
		if err := getJSON(ctx, hc, u, &page); err != nil {
			return nil, err
		}
		for _, r := range page.Records {
			keys[r.Key] = true
		}
		if page.Next == nil || *page.Next == "" {
			return keys, nil
		}
		after = *page.Next
	}
	return nil, errors.New("records: too many pages")
}

func getJSON(ctx context.Context, hc *http.Client, url string, into any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, into)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
