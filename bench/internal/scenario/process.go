package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/node/client"
)

// BuildCachenode builds the cachenode command into dir and returns the
// binary's path. It runs the go tool, so it needs the module's source: run
// the bench from inside the repository.
func BuildCachenode(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "cachenode")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/cachenode/cachenode/cmd/cachenode")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scenario: build cachenode: %w", err)
	}
	return bin, nil
}

// Processes is a cluster of cachenode processes on loopback, started by the
// bench with the fast membership preset and the worker "bench" filled from
// an origin that the bench serves (values of opts.ValueSize bytes).
type Processes struct {
	opts      Options
	bin, dir  string
	nearCache bool
	origin    *http.Server
	originURL string
	Fills     *FillCounter
	procs     []*proc
	client    *http.Client
}

type proc struct {
	name, gossip, http string
	cmd                *exec.Cmd
	done               chan struct{} // closed when the process exited
}

// StartProcesses starts opts.Nodes cachenode processes from bin.
func StartProcesses(ctx context.Context, opts Options, bin string, nearCache bool) (*Processes, error) {
	opts = opts.withDefaults()
	dir, err := os.MkdirTemp("", "cachenode-bench-*")
	if err != nil {
		return nil, err
	}
	p := &Processes{opts: opts, bin: bin, dir: dir, nearCache: nearCache, Fills: NewFillCounter(),
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p.originURL = "http://" + ln.Addr().String() + "/value"
	p.origin = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		p.Fills.Add(id)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(Value(id, opts.ValueSize))
	})}
	go p.origin.Serve(ln)
	for i := range opts.Nodes {
		if _, err := p.start(ctx, fmt.Sprintf("p%d", i+1)); err != nil {
			p.Close()
			return nil, err
		}
	}
	if err := p.waitConverged(ctx); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// start starts one process that joins the first one and waits until its
// /readyz answers 200.
func (p *Processes) start(ctx context.Context, name string) (*proc, error) {
	var addrs [3]string
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	pr := &proc{name: name, gossip: addrs[0], http: addrs[2], done: make(chan struct{})}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "name: %s\ngossip: %s\npeer: %s\nhttp: %s\ndata: \"\"\nmembership: local\nlog_level: error\nnear_cache: %v\n",
		name, addrs[0], addrs[1], addrs[2], p.nearCache)
	if len(p.procs) > 0 {
		fmt.Fprintf(&cfg, "join: [%s]\n", p.procs[0].gossip)
	}
	fmt.Fprintf(&cfg, "workers:\n  %s:\n    origin: %s\n    expires: 1h\n", Label, p.originURL)
	path := filepath.Join(p.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		return nil, err
	}
	pr.cmd = exec.Command(p.bin, "serve", "--config", path)
	pr.cmd.Stderr = os.Stderr
	// The process dies with the bench, whatever way the bench ends.
	pr.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := pr.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { pr.cmd.Wait(); close(pr.done) }()
	p.procs = append(p.procs, pr)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := p.client.Get("http://" + pr.http + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return pr, nil
			}
		}
		select {
		case <-pr.done:
			return nil, fmt.Errorf("scenario: cachenode %s exited: %v", name, pr.cmd.ProcessState)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("scenario: cachenode %s not ready after 15s", name)
		}
	}
}

// live returns the processes that have not exited.
func (p *Processes) live() []*proc {
	var out []*proc
	for _, pr := range p.procs {
		select {
		case <-pr.done:
		default:
			out = append(out, pr)
		}
	}
	return out
}

// ring reads a process's /admin/ring.
func (p *Processes) ring(pr *proc) (client.RingInfo, error) {
	var ri client.RingInfo
	resp, err := p.client.Get("http://" + pr.http + "/admin/ring")
	if err != nil {
		return ri, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ri, fmt.Errorf("/admin/ring: %s", resp.Status)
	}
	return ri, json.NewDecoder(resp.Body).Decode(&ri)
}

// converged reports whether every live process's ring has exactly the live
// processes as alive members, with one version.
func (p *Processes) converged() bool {
	live := p.live()
	var names []string
	for _, pr := range live {
		names = append(names, pr.name)
	}
	slices.Sort(names)
	var version uint64
	for i, pr := range live {
		ri, err := p.ring(pr)
		if err != nil {
			return false
		}
		var alive []string
		for _, m := range ri.Members {
			if m.State == "alive" {
				alive = append(alive, m.Name)
			}
		}
		slices.Sort(alive)
		if !slices.Equal(alive, names) || (i > 0 && ri.Version != version) {
			return false
		}
		version = ri.Version
	}
	return true
}

func (p *Processes) waitConverged(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for !p.converged() {
		if time.Now().After(deadline) {
			return errors.New("scenario: cachenode processes not converged after 15s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// HTTPAddrs returns the HTTP addresses of the live processes.
func (p *Processes) HTTPAddrs() []string {
	var out []string
	for _, pr := range p.live() {
		out = append(out, pr.http)
	}
	return out
}

// read GETs id on a process and returns the answer's X-Cache and
// X-Cache-Owner.
func (p *Processes) read(ctx context.Context, pr *proc, id string) (xcache, owner string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pr.http+"/v1/cache/"+Label+"?id="+url.QueryEscape(id), nil)
	if err != nil {
		return "", "", err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return "", "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("GET %s on %s: %s", id, pr.name, resp.Status)
	}
	return resp.Header.Get("X-Cache"), resp.Header.Get("X-Cache-Owner"), nil
}

// Reroute kills the last process with SIGKILL, rounds times (starting a new
// victim each round), and reads keys of the victim's keys through every
// survivor, pass after pass, until all are answered by a live owner
// (X-Cache not fallback, X-Cache-Owner not the victim). Start the processes
// without near cache so that reads go to the owner.
func (p *Processes) Reroute(ctx context.Context, rounds, keys int) (*load.Result, error) {
	served := load.NewRecorder()
	var fallbacks, failed int
	start := time.Now()
	for r := range rounds {
		if r > 0 {
			if _, err := p.start(ctx, fmt.Sprintf("victim%d", r)); err != nil {
				return nil, err
			}
			if err := p.waitConverged(ctx); err != nil {
				return nil, err
			}
		}
		live := p.live()
		victim, survivors := live[len(live)-1], live[:len(live)-1]
		var ids []string
		for i := 0; len(ids) < keys; i++ {
			if i > 100*keys {
				return nil, fmt.Errorf("scenario: no keys owned by %s", victim.name)
			}
			id := fmt.Sprintf("%s-%d", victim.name, i)
			_, owner, err := p.read(ctx, survivors[0], id)
			if err != nil {
				return nil, err
			}
			if owner == victim.name {
				ids = append(ids, id)
			}
		}
		if err := victim.cmd.Process.Kill(); err != nil { // SIGKILL
			return nil, err
		}
		t0 := time.Now()
		var took time.Duration
		for took == 0 {
			ok := true
			for _, s := range survivors {
				for _, id := range ids {
					rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
					xc, owner, err := p.read(rctx, s, id)
					cancel()
					switch {
					case err != nil:
						failed++
						ok = false
					case xc == "fallback" || owner == victim.name:
						fallbacks++
						ok = false
					}
				}
			}
			if ok {
				took = time.Since(t0)
			} else if time.Since(t0) > 30*time.Second {
				return nil, errors.New("scenario: keys not served by a new owner 30s after the kill")
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
		<-victim.done
		served.Record(took)
		if p.opts.Progress != nil {
			fmt.Fprintf(p.opts.Progress, "reroute (processes) round %d: keys served again after %v\n", r+1, took.Round(time.Millisecond))
		}
	}
	res := load.NewResult(served.Histogram(), int64(rounds), time.Since(start))
	res.Scenario, res.System, res.Nodes, res.Callers, res.Keys = "reroute-after-kill", "cachenode-processes", p.opts.Nodes, 1, int64(keys)
	res.Figure("fallback_reads", float64(fallbacks)).Figure("failed_reads", float64(failed))
	return res, nil
}

// Close stops every process (SIGTERM, then SIGKILL after 5 s), the origin,
// and removes the configs. The processes are stopped one after the other,
// the last started first: stopped all at once, each would wait for the
// others to acknowledge its leave and time out.
func (p *Processes) Close() error {
	for _, pr := range slices.Backward(p.procs) {
		pr.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-pr.done:
		case <-time.After(5 * time.Second):
			pr.cmd.Process.Kill()
			<-pr.done
		}
	}
	p.client.CloseIdleConnections()
	err := p.origin.Close()
	os.RemoveAll(p.dir)
	return err
}
