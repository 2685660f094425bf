package scenario

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/worker"
)

// Environment of a victim child process (see VictimMain).
const (
	envVictim    = "CACHENODE_BENCH_VICTIM" // the victim node's name
	envJoin      = "CACHENODE_BENCH_JOIN"   // gossip address to join
	envValueSize = "CACHENODE_BENCH_VALUE_SIZE"
)

// IsVictim reports whether this process was started as a victim node by
// Reroute. A program that runs Reroute calls VictimMain first thing in main
// when it is.
func IsVictim() bool { return os.Getenv(envVictim) != "" }

// VictimMain runs the victim node: it joins the cluster named by its
// environment, writes "ready" on stdout once it is in the ring, and runs
// until its stdin closes (the parent ended) or it is killed, which is what
// the parent does. It returns the process exit code.
func VictimMain() int {
	name := os.Getenv(envVictim)
	size, _ := strconv.Atoi(os.Getenv(envValueSize))
	if size <= 0 {
		size = 100
	}
	n, err := node.New(node.Config{
		Name:       name,
		Gossip:     "127.0.0.1:0",
		Peer:       "127.0.0.1:0",
		Join:       []string{os.Getenv(envJoin)},
		Membership: node.LocalMembership(),
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "victim:", err)
		return 1
	}
	defer n.Close()
	if err := RegisterBench(n, size, 0, nil); err != nil {
		fmt.Fprintln(os.Stderr, "victim:", err)
		return 1
	}
	if err := n.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "victim:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "victim:", err)
		return 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) // until the parent closes it or dies
	return 0
}

// Reroute measures how long the keys of a node that dies without leaving
// (kill -9 of its process) take to be served by their new owners. The
// surviving nodes run in this process with the fast membership preset and
// no near cache (so that reads go to the owner instead of a copy); the
// victim is a child process running this same program (see VictimMain).
type Reroute struct {
	opts  Options
	c     *Cluster
	round int
}

// NewReroute starts opts.Nodes-1 nodes in this process (at least 2).
func NewReroute(ctx context.Context, opts Options) (*Reroute, error) {
	opts = opts.withDefaults()
	c, err := StartCluster(ctx, ClusterConfig{
		Size:        max(2, opts.Nodes-1),
		Membership:  node.LocalMembership(),
		NoNearCache: func(int) bool { return true },
		ValueSize:   opts.ValueSize,
		Logger:      opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &Reroute{opts: opts, c: c}, nil
}

// RerouteRound is what one kill measured.
type RerouteRound struct {
	// RingUpdated: from the kill until every surviving node's ring lost
	// the victim.
	RingUpdated time.Duration
	// Served: from the kill until a pass in which every surviving node
	// read every one of the victim's keys from a live owner (no fallback,
	// no error) ended.
	Served time.Duration
	// Fallbacks and Errors count the reads of the passes before that one.
	Fallbacks, Errors int
}

// Round starts a victim, fills keys keys that it owns, kills it with
// SIGKILL and reads those keys on every surviving node, pass after pass,
// until all are served by their new owners.
func (rr *Reroute) Round(ctx context.Context, keys int) (RerouteRound, error) {
	rr.round++
	name := fmt.Sprintf("victim%d", rr.round)
	exe, err := os.Executable()
	if err != nil {
		return RerouteRound{}, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envVictim+"="+name, envJoin+"="+rr.c.Nodes[0].GossipAddr(),
		envValueSize+"="+strconv.Itoa(rr.opts.ValueSize))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return RerouteRound{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return RerouteRound{}, err
	}
	var stderr strings.Builder // read only after Wait returned
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return RerouteRound{}, err
	}
	waited := false
	wait := func() {
		if !waited {
			waited = true
			cmd.Process.Kill()
			stdin.Close()
			cmd.Wait()
		}
	}
	defer wait()
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("victim said %q", line)
		}
		ready <- err
		io.Copy(io.Discard, stdout)
	}()
	select {
	case err := <-ready:
		if err != nil {
			wait()
			return RerouteRound{}, fmt.Errorf("scenario: victim: %v: %s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		return RerouteRound{}, errors.New("scenario: victim not ready after 15s")
	}
	if err := rr.c.WaitConverged(ctx, []string{name}); err != nil {
		return RerouteRound{}, err
	}
	args, err := KeysOwnedBy(rr.c.Nodes[0], name+"-", keys, func(owner string) bool { return owner == name })
	if err != nil {
		return RerouteRound{}, err
	}
	for _, a := range args {
		e, st, err := rr.c.Nodes[0].Get(ctx, Label, a, worker.Settings{})
		if err != nil || st == worker.Fallback || e.Owner != name {
			return RerouteRound{}, fmt.Errorf("scenario: fill on the victim: status %v, err %v", st, err)
		}
	}

	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no leave, no handoff
		return RerouteRound{}, err
	}
	t0 := time.Now()
	var out RerouteRound
	for ctx.Err() == nil {
		if out.RingUpdated == 0 && rr.ringLost(name) {
			out.RingUpdated = time.Since(t0)
		}
		ok := true
		for _, n := range rr.c.Nodes {
			for _, a := range args {
				rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				e, st, err := n.Get(rctx, Label, a, worker.Settings{})
				cancel()
				switch {
				case err != nil:
					out.Errors++
					ok = false
				case st == worker.Fallback || e.Owner == name:
					out.Fallbacks++
					ok = false
				}
			}
		}
		if ok {
			out.Served = time.Since(t0)
			break
		}
		if time.Since(t0) > 30*time.Second {
			return out, errors.New("scenario: keys not served by a new owner 30s after the kill")
		}
	}
	if out.RingUpdated == 0 {
		for !rr.ringLost(name) && time.Since(t0) < 30*time.Second {
			time.Sleep(time.Millisecond)
		}
		out.RingUpdated = time.Since(t0)
	}
	return out, ctx.Err()
}

// ringLost reports whether no surviving node has name in its ring.
func (rr *Reroute) ringLost(name string) bool {
	for _, n := range rr.c.Nodes {
		if r := n.Ring(); r == nil || r.Has(name) {
			return false
		}
	}
	return true
}

// Run runs rounds kills and summarises them: the operations are the rounds,
// their latency the time until the keys were served again; the figures give
// the ring update times and the reads that fell back or failed meanwhile.
func (rr *Reroute) Run(ctx context.Context, rounds, keys int) (*load.Result, error) {
	served, ring := load.NewRecorder(), load.NewRecorder()
	var fallbacks, errs int
	start := time.Now()
	for range rounds {
		out, err := rr.Round(ctx, keys)
		if err != nil {
			return nil, err
		}
		served.Record(out.Served)
		ring.Record(out.RingUpdated)
		fallbacks += out.Fallbacks
		errs += out.Errors
		if rr.opts.Progress != nil {
			fmt.Fprintf(rr.opts.Progress, "reroute round: ring updated after %v, keys served again after %v (%d fallbacks, %d errors before)\n",
				out.RingUpdated.Round(time.Millisecond), out.Served.Round(time.Millisecond), out.Fallbacks, out.Errors)
		}
	}
	r := load.NewResult(served.Histogram(), int64(rounds), time.Since(start))
	r.Scenario, r.System, r.Nodes, r.Callers = "reroute-after-kill", "cachenode", len(rr.c.Nodes)+1, 1
	r.Keys = int64(keys)
	rp := load.PercentilesOf(ring.Histogram())
	r.Figure("ring_updated_p50_ms", rp.P50/1e3).Figure("ring_updated_max_ms", rp.Max/1e3)
	r.Figure("fallback_reads", float64(fallbacks)).Figure("failed_reads", float64(errs))
	return r, nil
}

// Close stops the surviving nodes.
func (rr *Reroute) Close() error { return rr.c.Close() }
