package scenario

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/worker"
)

// The memory scenario (issue 14) measures, each system in a process of its
// own so that one's heap is not another's:
//
//   - the heap per entry of N entries of a given value size, and its
//     overhead over the key and value bytes: cachenode's owner entries and
//     near-cache copies (records on disk and in memory), raw otter with the
//     same keys and values, and redis-server (used_memory, plain SET and
//     SET PX, started by the bench when it is on the PATH);
//   - the heap over time of a node filled with 10× what its Memory holds,
//     against the bound 1.1 × Memory + 32 MiB, for 100 B and 64 KiB values,
//     records on disk and in memory.

// envMemoryJob makes the bench binary run one memory job (JSON) and print
// its result (JSON) on stdout instead of the bench.
const envMemoryJob = "CACHENODE_BENCH_MEMORY_JOB"

// MemoryJob is one measurement of the memory scenario, run in a child
// process.
type MemoryJob struct {
	System string `json:"system"` // "cachenode", "otter"
	Kind   string `json:"kind"`   // "entries", "bound"
	N      int    `json:"n"`      // entries filled (entries)
	Size   int    `json:"size"`   // value bytes
	Disk   bool   `json:"disk"`   // records on disk (else in memory)
	Dir    string `json:"dir"`    // the records' parent directory
	Memory int64  `json:"memory"` // the node's --memory (bound)
	Fill   int    `json:"fill"`   // bound: fill this many times what the bound holds
}

// MemoryOutcome is what a job measured.
type MemoryOutcome struct {
	// entries: heap added per entry by the fill (with cachenode's
	// records), and over key and value; for cachenode, what dropping the
	// owner entries and the near-cache copies freed, per entry, over key
	// and value: the entries' own cost.
	PerEntry, Overhead          float64
	EntryOverhead, NearOverhead float64
	KeyValue                    float64 // mean key + value bytes
	// bound: the heap after GC sampled through the fill.
	Samples        []HeapSample
	MaxHeap        uint64
	Entries, Fills int
	Weight         uint64
	Parts          map[string]int64
	// Records written and dropped (the async queue full) by the filled
	// node.
	Written, Dropped uint64
}

// HeapSample is the heap in use after a GC at a point of a fill.
type HeapSample struct {
	Seconds float64 `json:"s"`
	Fills   int     `json:"fills"`
	HeapMiB float64 `json:"heap_mib"`
}

// IsMemoryJob reports whether this process was started to run one job of
// the memory scenario; MemoryJobMain then runs it.
func IsMemoryJob() bool { return os.Getenv(envMemoryJob) != "" }

// MemoryJobMain runs the job of the environment and prints its outcome on
// stdout. It returns the exit code.
func MemoryJobMain() int {
	var job MemoryJob
	if err := json.Unmarshal([]byte(os.Getenv(envMemoryJob)), &job); err != nil {
		fmt.Fprintln(os.Stderr, "memory job:", err)
		return 2
	}
	var out MemoryOutcome
	var err error
	switch {
	case job.System == "otter":
		out, err = otterEntries(job)
	case job.Kind == "bound":
		out, err = nodeBound(job)
	default:
		out, err = nodeEntries(job)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "memory job:", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 1
	}
	return 0
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// memKey is the key cachenode gives id under the bench's worker; the other
// systems store the same strings.
func memKey(i int) (string, worker.Args) {
	a := worker.Args{"id": fmt.Sprintf("k%08d", i)}
	k, _ := worker.KeyOf(Label, a)
	return k, a
}

func otterEntries(job MemoryJob) (MemoryOutcome, error) {
	c, err := otter.New(&otter.Options[string, []byte]{MaximumSize: job.N * 2, ExpiryCalculator: otter.ExpiryWriting[string, []byte](time.Hour)})
	if err != nil {
		return MemoryOutcome{}, err
	}
	defer c.StopAllGoroutines()
	base := heapAfterGC()
	kv := 0
	for i := range job.N {
		k, a := memKey(i)
		v := Value(a["id"].(string), job.Size)
		c.Set(k, v)
		kv += len(k) + len(v)
	}
	per := float64(heapAfterGC()-base) / float64(job.N)
	runtime.KeepAlive(c)
	return MemoryOutcome{PerEntry: per, Overhead: per - float64(kv)/float64(job.N), KeyValue: float64(kv) / float64(job.N)}, nil
}

// memoryNode starts a node of the memory scenario, joining join if given.
func memoryNode(name string, job MemoryJob, memory int64, join string) (*node.Node, error) {
	// LAN timings: a fill of the whole machine (and its GCs) must not look
	// like a pause of the process, which drops the cache (node/pause.go).
	cfg := node.Config{Name: name, Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", Membership: node.LANMembership(),
		Memory: memory, Logger: slog.New(slog.DiscardHandler)} // records dropped by a full queue are counted, not logged
	if join != "" {
		cfg.Join = []string{join}
	}
	if job.Disk {
		dir, err := os.MkdirTemp(job.Dir, "cachenode-memory-*")
		if err != nil {
			return nil, err
		}
		cfg.Data = dir
	}
	n, err := node.New(cfg)
	if err != nil {
		return nil, err
	}
	size := job.Size
	if _, err := n.Cache().Register(worker.Config{Label: Label, Settings: worker.Settings{Expires: time.Hour, DelayLogging: worker.Bool(true)},
		Getter: worker.GetterFunc(func(ctx context.Context, a worker.Args) (worker.Value, error) {
			id, _ := a["id"].(string)
			return worker.Value{Data: Value(id, size), ContentType: "application/octet-stream"}, nil
		})}); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.Start(); err != nil {
		n.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// nodeEntries fills job.N keys owned by one node of two through their
// owner (owner entries), then reads them through the other (near-cache
// copies), and measures the heap each step added.
func nodeEntries(job MemoryJob) (MemoryOutcome, error) {
	// No eviction, of entries nor of in-memory records (their quarter of
	// the bound holds the N records; an entry whose record the bound
	// removes is dropped with it), and no more room for the records
	// store's caches than such a node would have.
	memory := int64(job.N) * int64(job.Size+300) * 6
	owner, err := memoryNode("m1", job, memory, "")
	if err != nil {
		return MemoryOutcome{}, err
	}
	defer owner.Close()
	asker, err := memoryNode("m2", job, memory, owner.GossipAddr())
	if err != nil {
		return MemoryOutcome{}, err
	}
	defer asker.Close()
	deadline := time.Now().Add(20 * time.Second)
	for owner.Ring().Len() != 2 || asker.Ring().Len() != 2 {
		if time.Now().After(deadline) {
			return MemoryOutcome{}, errors.New("ring of two not converged in 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var args []worker.Args
	kv := 0
	for i := 0; len(args) < job.N; i++ {
		k, a := memKey(i)
		if owner.Owner(k) == owner.Name() {
			args = append(args, a)
			kv += len(k) + job.Size
		}
	}
	ctx := context.Background()
	fill := func(n *node.Node) error {
		var wg sync.WaitGroup
		var next atomic.Int64
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < len(args); i = int(next.Add(1) - 1) {
					if _, _, err := n.Get(ctx, Label, args[i], worker.Settings{}); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	base := heapAfterGC()
	if err := fill(owner); err != nil {
		return MemoryOutcome{}, err
	}
	if err := owner.Store().Flush(); err != nil {
		return MemoryOutcome{}, err
	}
	mid := heapAfterGC()
	if err := fill(asker); err != nil {
		return MemoryOutcome{}, err
	}
	if owner.Cache().Len() < job.N || asker.Cache().Len() < job.N {
		return MemoryOutcome{}, fmt.Errorf("entries evicted: %d owned, %d near copies of %d", owner.Cache().Len(), asker.Cache().Len(), job.N)
	}
	drop := func(n *node.Node) error {
		n.Cache().DropIf(func(*worker.Entry) bool { return true })
		for deadline := time.Now().Add(20 * time.Second); n.Cache().Len() > 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				return errors.New("entries not dropped in 20s")
			}
		}
		return nil
	}
	withNear := heapAfterGC()
	if err := drop(asker); err != nil {
		return MemoryOutcome{}, err
	}
	withOwned := heapAfterGC()
	if err := drop(owner); err != nil {
		return MemoryOutcome{}, err
	}
	none := heapAfterGC()
	st := owner.Store().Stats()
	n := float64(job.N)
	per := (float64(mid) - float64(base)) / n
	mkv := float64(kv) / n
	return MemoryOutcome{PerEntry: per, Overhead: per - mkv, KeyValue: mkv,
		EntryOverhead: (float64(withOwned)-float64(none))/n - mkv, NearOverhead: (float64(withNear)-float64(withOwned))/n - mkv,
		Written: st.WrittenAsync + st.WrittenSync, Dropped: st.Dropped}, nil
}

// nodeBound fills one node with job.Fill times the entries its Memory
// holds and samples the heap after GC 50 times on the way.
func nodeBound(job MemoryJob) (MemoryOutcome, error) {
	n, err := memoryNode("b1", job, job.Memory, "")
	if err != nil {
		return MemoryOutcome{}, err
	}
	defer n.Close()
	fills := int(int64(job.Fill) * job.Memory / int64(job.Size+230))
	step := max(fills/50, 1)
	start := time.Now()
	var out MemoryOutcome
	sample := func(done int) {
		h := heapAfterGC()
		out.MaxHeap = max(out.MaxHeap, h)
		out.Samples = append(out.Samples, HeapSample{Seconds: time.Since(start).Seconds(), Fills: done, HeapMiB: float64(h) / (1 << 20)})
	}
	sample(0)
	ctx := context.Background()
	for done := 0; done < fills; {
		end := min(done+step, fills)
		var wg sync.WaitGroup
		var next atomic.Int64
		next.Store(int64(done))
		var failed atomic.Pointer[error]
		for range 4 {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < end; i = int(next.Add(1) - 1) {
					_, a := memKey(i)
					if _, _, err := n.Get(ctx, Label, a, worker.Settings{}); err != nil {
						failed.Store(&err)
						return
					}
				}
			})
		}
		wg.Wait()
		if e := failed.Load(); e != nil {
			return out, *e
		}
		done = end
		sample(done)
	}
	out.Entries, out.Fills, out.Weight, out.Parts = n.Cache().Len(), fills, n.Cache().Bytes(), n.MemoryBytes()
	st := n.Store().Stats()
	out.Written, out.Dropped = st.WrittenAsync+st.WrittenSync, st.Dropped
	return out, nil
}

// runMemoryJob runs job in a child process of this binary.
func runMemoryJob(ctx context.Context, job MemoryJob) (MemoryOutcome, error) {
	b, _ := json.Marshal(job)
	self, err := os.Executable()
	if err != nil {
		return MemoryOutcome{}, err
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), envMemoryJob+"="+string(b))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.Output()
	if err != nil {
		return MemoryOutcome{}, fmt.Errorf("memory job %s: %w", b, err)
	}
	var out MemoryOutcome
	if err := json.Unmarshal(stdout, &out); err != nil {
		return MemoryOutcome{}, fmt.Errorf("memory job %s: %w", b, err)
	}
	return out, nil
}

// MemoryConfig configures the memory scenario.
type MemoryConfig struct {
	N      int    // entries of the per-entry runs
	Size   int    // their value size
	Memory int64  // the bound of the 10× fills
	Dir    string // parent of the records directories
	// Samples, when set, receives the heap samples of the bound runs by
	// run name (for the plot of bench/compare -memory-plot).
	Samples string
}

// Memory runs the memory scenario.
func Memory(ctx context.Context, cfg MemoryConfig) ([]*load.Result, error) {
	var out []*load.Result
	redisOver := map[string]float64{}
	if path, err := exec.LookPath("redis-server"); err != nil {
		r := &load.Result{Scenario: "memory-entries", System: "redis", Notes: []string{"skipped: redis-server is not on the PATH"}}
		out = append(out, r)
	} else {
		for _, px := range []bool{false, true} {
			r, err := redisEntries(ctx, path, cfg, px)
			if err != nil {
				return out, err
			}
			out = append(out, r)
			redisOver[r.System] = r.Figures["overhead_bytes"]
		}
	}
	runs := []struct {
		name string
		job  MemoryJob
	}{
		{"otter", MemoryJob{System: "otter", Kind: "entries", N: cfg.N, Size: cfg.Size}},
		{"cachenode records-on-disk", MemoryJob{System: "cachenode", Kind: "entries", N: cfg.N, Size: cfg.Size, Disk: true, Dir: cfg.Dir}},
		{"cachenode records-in-memory", MemoryJob{System: "cachenode", Kind: "entries", N: cfg.N, Size: cfg.Size}},
	}
	for _, run := range runs {
		o, err := runMemoryJob(ctx, run.job)
		if err != nil {
			return out, err
		}
		r := &load.Result{Scenario: "memory-entries", System: run.name, Keys: int64(cfg.N)}
		r.Figure("value_bytes", float64(cfg.Size)).Figure("key_value_bytes", o.KeyValue).
			Figure("per_entry_bytes", o.PerEntry).Figure("overhead_bytes", o.Overhead)
		if run.job.System == "cachenode" {
			r.Figure("records_written", float64(o.Written)).Figure("records_dropped", float64(o.Dropped))
			r.Figure("entry_overhead_bytes", o.EntryOverhead).Figure("near_overhead_bytes", o.NearOverhead)
			for _, name := range []string{"redis SET", "redis SET PX"} {
				if v, ok := redisOver[name]; ok {
					r.Notes = append(r.Notes, fmt.Sprintf("vs %s (%.0f B): fill %s, owner entry %s, near copy %s", name, v,
						cmpWord(o.Overhead, v), cmpWord(o.EntryOverhead, v), cmpWord(o.NearOverhead, v)))
				}
			}
		}
		out = append(out, r)
	}
	samples := map[string][]HeapSample{}
	for _, size := range []int{100, 64 << 10} {
		for _, disk := range []bool{true, false} {
			name := fmt.Sprintf("%s values, records %s", sizeName(size), map[bool]string{true: "on disk", false: "in memory"}[disk])
			o, err := runMemoryJob(ctx, MemoryJob{System: "cachenode", Kind: "bound", Size: size, Disk: disk, Dir: cfg.Dir, Memory: cfg.Memory, Fill: 10})
			if err != nil {
				return out, err
			}
			limit := 1.1*float64(cfg.Memory) + 32<<20
			r := &load.Result{Scenario: "memory-bound", System: "cachenode " + name, Keys: int64(o.Fills)}
			r.Figure("memory_mib", float64(cfg.Memory)/(1<<20)).Figure("limit_mib", limit/(1<<20)).
				Figure("max_heap_mib", float64(o.MaxHeap)/(1<<20)).Figure("entries", float64(o.Entries)).
				Figure("entries_weight_mib", float64(o.Weight)/(1<<20)).
				Figure("records_written", float64(o.Written)).Figure("records_dropped", float64(o.Dropped))
			for part, b := range o.Parts {
				r.Figure("part_"+part+"_mib", float64(b)/(1<<20))
			}
			r.Notes = append(r.Notes, fmt.Sprintf("%d fills (10× the bound): max heap after GC %.1f MiB, %s the limit %.1f MiB",
				o.Fills, float64(o.MaxHeap)/(1<<20), map[bool]string{true: "within", false: "OVER"}[float64(o.MaxHeap) <= limit], limit/(1<<20)))
			out = append(out, r)
			samples[name] = o.Samples
		}
	}
	if cfg.Samples != "" {
		b, _ := json.MarshalIndent(map[string]any{"memory_mib": cfg.Memory >> 20, "runs": samples}, "", " ")
		if err := os.WriteFile(cfg.Samples, b, 0o644); err != nil {
			return out, err
		}
	}
	return out, nil
}

func cmpWord(a, b float64) string {
	if a <= b {
		return "≤"
	}
	return "OVER"
}

func sizeName(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// redisEntries starts redis-server on a free port and measures its
// used_memory per entry for cfg.N keys and values like cachenode's, with
// plain SET or SET PX (an expiry, as every cachenode entry has).
func redisEntries(ctx context.Context, path string, cfg MemoryConfig, px bool) (*load.Result, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.CommandContext(ctx, path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var conn net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("redis-server not answering on %d: %w", port, err)
		}
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	wr := bufio.NewWriter(conn)
	send := func(args ...string) {
		fmt.Fprintf(wr, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(wr, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	reply := func() (string, error) {
		line, err := rd.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		switch line[0] {
		case '+', ':':
			return line[1:], nil
		case '-':
			return "", errors.New(line[1:])
		case '$':
			n, _ := strconv.Atoi(line[1:])
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(rd, buf); err != nil {
				return "", err
			}
			return string(buf[:n]), nil
		}
		return "", fmt.Errorf("unexpected reply %q", line)
	}
	usedMemory := func() (float64, string, error) {
		send("INFO", "memory")
		send("INFO", "server")
		if err := wr.Flush(); err != nil {
			return 0, "", err
		}
		mem, err := reply()
		if err != nil {
			return 0, "", err
		}
		srv, err := reply()
		if err != nil {
			return 0, "", err
		}
		field := func(s, name string) string {
			for _, l := range strings.Split(s, "\r\n") {
				if v, ok := strings.CutPrefix(l, name+":"); ok {
					return v
				}
			}
			return ""
		}
		v, err := strconv.ParseFloat(field(mem, "used_memory"), 64)
		return v, field(srv, "redis_version"), err
	}
	before, version, err := usedMemory()
	if err != nil {
		return nil, err
	}
	kv := 0
	for i := range cfg.N {
		k, a := memKey(i)
		v := Value(a["id"].(string), cfg.Size)
		kv += len(k) + len(v)
		if px {
			send("SET", k, string(v), "PX", "3600000")
		} else {
			send("SET", k, string(v))
		}
		if i%1000 == 999 || i == cfg.N-1 {
			if err := wr.Flush(); err != nil {
				return nil, err
			}
			for j := i - i%1000; j <= i; j++ {
				if _, err := reply(); err != nil {
					return nil, err
				}
			}
		}
	}
	after, _, err := usedMemory()
	if err != nil {
		return nil, err
	}
	name := "redis SET"
	if px {
		name = "redis SET PX"
	}
	n := float64(cfg.N)
	per := (after - before) / n
	r := &load.Result{Scenario: "memory-entries", System: name, Keys: int64(cfg.N)}
	r.Figure("value_bytes", float64(cfg.Size)).Figure("key_value_bytes", float64(kv)/n).
		Figure("per_entry_bytes", per).Figure("overhead_bytes", per-float64(kv)/n)
	r.Notes = append(r.Notes, "redis-server "+version+", used_memory")
	return r, nil
}
