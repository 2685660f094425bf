package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if testBin.dir != "" {
		os.RemoveAll(testBin.dir)
	}
	os.Exit(code)
}

// testBin is the cachenode binary of the tests, built once: with the race
// detector when the tests run with it, so that the race-built packages
// already in the build cache are reused (a cold build without it takes
// minutes on a small machine). CHAOS_BIN names a binary to use instead.
var testBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func testBinary(t *testing.T) string {
	t.Helper()
	testBin.once.Do(func() {
		if testBin.path = os.Getenv("CHAOS_BIN"); testBin.path != "" {
			return
		}
		if testBin.dir, testBin.err = os.MkdirTemp("", "chaos-test-bin-"); testBin.err != nil {
			return
		}
		testBin.path, testBin.err = buildCachenode(context.Background(), testBin.dir, raceEnabled)
	})
	if testBin.err != nil {
		t.Fatal(testBin.err)
	}
	if _, err := os.Stat(testBin.path); err != nil {
		t.Fatalf("cachenode binary: %v", err)
	}
	return filepath.Clean(testBin.path)
}

// TestChaos is the short version of `go run ./chaos` that CI runs: every
// scenario for a few seconds against real cachenode processes, in network
// namespaces when the test runs as root (CI does), on loopback without
// the partition scenarios otherwise. It fails on any violation that no
// known issue explains (see knownIssues), and logs the explained ones.
//
// CHAOS_SEED replays a run; CHAOS_DURATION sets the time per scenario;
// CHAOS_SCENARIOS (comma-separated) runs only those scenarios; CHAOS_BIN
// names a cachenode binary to use instead of building one.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos runs real clusters for about two minutes; skipped with -short")
	}
	if os.Getenv("CACHENODE_CHAOS") != "1" {
		// Not inside `go test -race ./...`: run beside the other packages'
		// race-built tests on two cores, the nodes miss their wait budgets
		// and fall back, which the fill invariant counts as violations.
		// scripts/test.sh runs it on its own instead (see there).
		t.Skip("set CACHENODE_CHAOS=1 to run the chaos scenarios (scripts/test.sh runs them as a separate step)")
	}
	cfg := config{Nodes: 5, Duration: 8 * time.Second, Seed: uint64(time.Now().UnixNano() % 1e9), Scenarios: scenarioNames(),
		Net: "auto", Clients: 4, Pause: 20 * time.Millisecond, LogLevel: "info", Bin: testBinary(t)}
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED: %v", err)
		}
		cfg.Seed = seed
	}
	if s := os.Getenv("CHAOS_SCENARIOS"); s != "" {
		cfg.Scenarios = strings.Split(s, ",")
		for _, name := range cfg.Scenarios {
			if !slices.Contains(scenarioNames(), name) {
				t.Fatalf("CHAOS_SCENARIOS: no scenario %q (have %v)", name, scenarioNames())
			}
		}
	}
	if s := os.Getenv("CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CHAOS_DURATION: %v", err)
		}
		cfg.Duration = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	t.Logf("seed %d (CHAOS_SEED=%d replays it), %v per scenario", cfg.Seed, cfg.Seed, cfg.Duration)
	rep, err := runAll(ctx, cfg, t.Logf)
	if rep != nil {
		var b bytes.Buffer
		rep.writeText(&b)
		rep.writeVerdict(&b)
		t.Log("\n" + b.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "netns" {
		t.Logf("PARTITION SCENARIOS SKIPPED: %s", rep.ModeReason)
	}
	for _, s := range rep.Scenarios {
		switch s.Verdict {
		case "fail":
			for _, h := range s.Harness {
				t.Errorf("%s: harness error: %s", s.Name, h)
			}
			for _, v := range s.Violations {
				if v.Known == "" {
					t.Errorf("%s: %s: %s", s.Name, v.Invariant, v.Text)
				}
			}
		case "known":
			t.Logf("%s: KNOWN FAILURE: violations explained by known issues %v (open in other components)", s.Name, s.knownIDs())
		}
	}
}
