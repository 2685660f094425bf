// Command ceilings measures both fronts of one dedicated node against the
// bare servers they should match (issue 15): the RESP GET against
// redis-server's GET with redis-benchmark (-c 50, without and with -P 16),
// and the HTTP hit against a bare net/http handler answering 100 bytes
// with wrk (-t2 -c50, a Lua script picking 1,000 ids). Runs alternate
// (bare, cachenode, bare, cachenode, ...) and the rows give each run and
// the ratio of the medians. The node runs in this process, the bare handler
// (this program with -bare ADDR) and redis-server each in their own; with -cpuprofile
// DIR it writes a CPU profile of the node during its RESP and HTTP runs.
//
//	go run ./bench/ceilings -duration 8s -rounds 3 -md /tmp/ceilings.md
//
// It needs redis-server, redis-benchmark and wrk on the PATH (Debian
// redis-server, redis-tools, wrk) and skips what is missing.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/node/httpapi"
	"github.com/cachenode/cachenode/node/resp"
	"github.com/cachenode/cachenode/worker"
)

func main() {
	duration := flag.Duration("duration", 8*time.Second, "length of one run")
	rounds := flag.Int("rounds", 3, "alternating rounds of each pair")
	md := flag.String("md", "", "write the Markdown rows to this file too")
	profDir := flag.String("cpuprofile", "", "write CPU profiles of the node's RESP and HTTP runs to this directory")
	bareAddr := flag.String("bare", "", "serve only the bare net/http handler on this address (the bench starts itself so, in a process of its own)")
	flag.Parse()
	if *bareAddr != "" {
		if err := serveBare(*bareAddr); err != nil {
			fmt.Fprintln(os.Stderr, "ceilings: bare:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*duration, *rounds, *md, *profDir); err != nil {
		fmt.Fprintln(os.Stderr, "ceilings:", err)
		os.Exit(1)
	}
}

var value = bytes.Repeat([]byte("v"), 100)

// serveBare answers every request with the 100 bytes, as the node's hit
// does, and nothing else.
func serveBare(addr string) error {
	return http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(value)
	}))
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// result is one run: requests per second and the p99 in milliseconds.
type result struct {
	rps, p99 float64
}

func run(d time.Duration, rounds int, mdPath, profDir string) error {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := node.New(node.Config{Name: "bench", Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", HTTP: "127.0.0.1:1",
		Membership: node.LocalMembership(), Memory: 256 << 20, Logger: log})
	if err != nil {
		return err
	}
	defer n.Close()
	get := worker.GetterFunc(func(ctx context.Context, args worker.Args) (worker.Value, error) {
		return worker.Value{Data: value, ContentType: "application/octet-stream"}, nil
	})
	if _, err := n.Cache().Register(worker.Config{Label: "bench", Getter: get, Settings: worker.Settings{Expires: time.Hour}}); err != nil {
		return err
	}
	if err := n.Start(); err != nil {
		return err
	}
	if err := n.WaitReady(context.Background()); err != nil {
		return err
	}
	api, err := httpapi.New(httpapi.Config{Node: n, Logger: log})
	if err != nil {
		return err
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := api.HTTPServer("")
	go hs.Serve(httpLn)
	defer hs.Close()
	rs, err := resp.New(resp.Config{Node: n, Logger: log})
	if err != nil {
		return err
	}
	respLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go rs.Serve(respLn)
	defer rs.Close()
	// The bare handler runs in a process of its own, as redis-server does:
	// beside the node in this one it would share its heap and scheduler.
	bareAddr, err := freePort()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bare := exec.Command(self, "-bare", bareAddr)
	bare.Stderr = os.Stderr
	if err := bare.Start(); err != nil {
		return err
	}
	defer func() {
		_ = bare.Process.Kill()
		_ = bare.Wait()
	}()
	if err := waitPort(bareAddr); err != nil {
		return fmt.Errorf("bare handler: %w", err)
	}

	var rows []string
	add := func(s string) {
		fmt.Println(s)
		rows = append(rows, s)
	}
	add(fmt.Sprintf("Runs of %v, %d alternating rounds, client on the same machine (`uptime` at start: %s).", d, rounds, uptime()))
	add("")
	add("| front | command | requests/s (each run) | p99 ms (each run) | ratio of the medians |")
	add("|---|---|---|---|---|")

	profile := func(name string, f func() (result, error)) (result, error) {
		if profDir == "" {
			return f()
		}
		pf, err := os.Create(filepath.Join(profDir, name+".pprof"))
		if err != nil {
			return result{}, err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return result{}, err
		}
		defer pprof.StopCPUProfile()
		return f()
	}

	if rb, err := exec.LookPath("redis-benchmark"); err != nil {
		add("| RESP | (redis-benchmark is not installed) | | | |")
	} else if srvBin, err := exec.LookPath("redis-server"); err != nil {
		add("| RESP | (redis-server is not installed) | | | |")
	} else {
		raddr, err := freePort()
		if err != nil {
			return err
		}
		host, port, _ := net.SplitHostPort(raddr)
		srv := exec.Command(srvBin, "--port", port, "--bind", host, "--save", "", "--appendonly", "no")
		if err := srv.Start(); err != nil {
			return err
		}
		defer func() { srv.Process.Kill(); srv.Wait() }()
		if err := waitPort(raddr); err != nil {
			return err
		}
		// redis-server gets the keys redis-benchmark reads; the node fills
		// them on a first pass.
		if _, err := redisBench(rb, raddr, 2*time.Second, 1, "SET", "bench?id=__rand_int__", string(value)); err != nil {
			return err
		}
		if _, err := redisBench(rb, respLn.Addr().String(), 2*time.Second, 1, "GET", "bench?id=__rand_int__"); err != nil {
			return err
		}
		for _, p := range []int{1, 16} {
			var redis, cn []result
			for range rounds {
				r, err := redisBench(rb, raddr, d, p, "GET", "bench?id=__rand_int__")
				if err != nil {
					return err
				}
				redis = append(redis, r)
				r, err = profile(fmt.Sprintf("resp-P%d", p), func() (result, error) {
					return redisBench(rb, respLn.Addr().String(), d, p, "GET", "bench?id=__rand_int__")
				})
				if err != nil {
					return err
				}
				cn = append(cn, r)
			}
			cmd := fmt.Sprintf("`redis-benchmark -c 50 -r 1000 -P %d GET 'bench?id=__rand_int__'`", p)
			add(fmt.Sprintf("| redis-server 7 | %s | %s | %s | |", cmd, list(redis, false), list(redis, true)))
			add(fmt.Sprintf("| cachenode RESP | %s | %s | %s | %.2f× Redis (p99 %.2f×) |", cmd, list(cn, false), list(cn, true),
				median(cn, false)/median(redis, false), median(cn, true)/median(redis, true)))
		}
	}

	if wrk, err := exec.LookPath("wrk"); err != nil {
		add("| HTTP | (wrk is not installed) | | | |")
	} else {
		dir, err := os.MkdirTemp("", "ceilings")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		script := filepath.Join(dir, "ids.lua")
		if err := os.WriteFile(script, []byte(`request = function() return wrk.format("GET", "/v1/cache/bench?id=" .. math.random(0, 999)) end`+"\n"), 0o644); err != nil {
			return err
		}
		cnURL, bareURL := "http://"+httpLn.Addr().String(), "http://"+bareAddr
		if _, err := wrkRun(wrk, script, cnURL, 2*time.Second); err != nil { // fills the 1,000 keys
			return err
		}
		var bareR, cn []result
		for range rounds {
			r, err := wrkRun(wrk, script, bareURL, d)
			if err != nil {
				return err
			}
			bareR = append(bareR, r)
			r, err = profile("http", func() (result, error) { return wrkRun(wrk, script, cnURL, d) })
			if err != nil {
				return err
			}
			cn = append(cn, r)
		}
		cmd := "`wrk -t2 -c50 --latency -s ids.lua` (ids 0–999)"
		add(fmt.Sprintf("| bare net/http, 100 bytes | %s | %s | %s | |", cmd, list(bareR, false), list(bareR, true)))
		add(fmt.Sprintf("| cachenode HTTP `GET /v1/cache/bench?id=N` | %s | %s | %s | %.2f× bare (p99 %.2f×) |", cmd, list(cn, false), list(cn, true),
			median(cn, false)/median(bareR, false), median(cn, true)/median(bareR, true)))
	}
	add("")
	add(fmt.Sprintf("`uptime` at the end: %s.", uptime()))
	if mdPath != "" {
		return os.WriteFile(mdPath, []byte(strings.Join(rows, "\n")+"\n"), 0o644)
	}
	return nil
}

func uptime() string {
	out, err := exec.Command("uptime").Output()
	if err != nil {
		return "unknown"
	}
	s := strings.TrimSpace(string(out))
	if i := strings.Index(s, "load average"); i >= 0 {
		return s[i:]
	}
	return s
}

func waitPort(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not answer: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// redisBench runs redis-benchmark for about d (it counts requests, so the
// count is estimated from a short first run's rate) and reads its CSV.
func redisBench(bin, addr string, d time.Duration, pipeline int, args ...string) (result, error) {
	host, port, _ := net.SplitHostPort(addr)
	count := 20000 * pipeline * int(d/time.Second)
	base := []string{"-h", host, "-p", port, "-c", "50", "-r", "1000", "-P", strconv.Itoa(pipeline), "--csv"}
	out, err := exec.Command(bin, append(append(base, "-n", strconv.Itoa(count)), args...)...).Output()
	if err != nil {
		return result{}, fmt.Errorf("redis-benchmark: %v", err)
	}
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil || len(recs) < 2 {
		return result{}, fmt.Errorf("redis-benchmark output %q: %v", out, err)
	}
	h, v := recs[0], recs[len(recs)-1]
	var r result
	for i, name := range h {
		f, _ := strconv.ParseFloat(v[i], 64)
		switch name {
		case "rps":
			r.rps = f
		case "p99_latency_ms":
			r.p99 = f
		}
	}
	return r, nil
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP99 = regexp.MustCompile(`\s99%\s+([0-9.]+)(us|ms|s)`)
)

func wrkRun(bin, script, url string, d time.Duration) (result, error) {
	out, err := exec.Command(bin, "-t2", "-c50", "-d", fmt.Sprintf("%ds", int(d/time.Second)), "--latency", "-s", script, url).Output()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %v", err)
	}
	var r result
	if m := wrkRPS.FindSubmatch(out); m != nil {
		r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if m := wrkP99.FindSubmatch(out); m != nil {
		f, _ := strconv.ParseFloat(string(m[1]), 64)
		switch string(m[2]) {
		case "us":
			f /= 1000
		case "s":
			f *= 1000
		}
		r.p99 = f
	}
	if r.rps == 0 {
		return r, fmt.Errorf("wrk output without a rate:\n%s", out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Non-2xx") {
			return r, fmt.Errorf("wrk: %s", strings.TrimSpace(sc.Text()))
		}
	}
	return r, nil
}

func list(rs []result, p99 bool) string {
	var parts []string
	for _, r := range rs {
		if p99 {
			parts = append(parts, fmt.Sprintf("%.2f", r.p99))
		} else {
			parts = append(parts, fmt.Sprintf("%.1fk", r.rps/1000))
		}
	}
	return strings.Join(parts, ", ")
}

func median(rs []result, p99 bool) float64 {
	vs := make([]float64, len(rs))
	for i, r := range rs {
		vs[i] = r.rps
		if p99 {
			vs[i] = r.p99
		}
	}
	slices.Sort(vs)
	return vs[len(vs)/2]
}
