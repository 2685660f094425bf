package persist

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// crashChildEnv names the directory the crash test's child writes into.
const crashChildEnv = "PERSIST_CRASH_CHILD_DIR"

// crashRecord is the record the child writes for key number i of writer g;
// the parent rebuilds it to check what it reads back.
func crashRecord(round, g, i int) Record {
	key := fmt.Sprintf("crash@r=%d&g=%d&i=%d", round, g, i)
	return Record{
		Label:       "crash",
		Key:         key,
		Args:        map[string]any{"round": round, "g": g, "i": i},
		Match:       map[string][]string{"g": {strconv.Itoa(g)}, "i": {strconv.Itoa(i % 7)}},
		Owner:       "child",
		CreatedAt:   t0,
		RelevanceTo: t0.Add(time.Duration(i) * time.Second),
		AvailableTo: t0.Add(time.Hour),
		Size:        int64(i),
	}
}

// TestCrashChild is the child process of TestCrash: it writes records with
// Put from a few goroutines and prints "ack KEY" after each Put returned,
// until it is killed. It also keeps the async writer busy, whose records
// may be lost.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("the child process of TestCrash")
	}
	round, _ := strconv.Atoi(os.Getenv(crashChildEnv + "_ROUND"))
	s, err := Open(Config{Dir: dir, SweepInterval: -1, FlushInterval: time.Millisecond})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				r := crashRecord(round, g, i)
				if err := s.Put(r); err != nil {
					fmt.Println("put:", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "ack %s\n", r.Key) // one write(2) per line
				mu.Unlock()
				async := crashRecord(round, g+100, i)
				_ = s.PutAsync(async)
			}
		}()
	}
	wg.Wait()
}

func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	for round := range 2 {
		acked := runCrashChild(t, dir, round, 150)
		if len(acked) < 150 {
			t.Fatalf("round %d: the child acknowledged only %d records", round, len(acked))
		}
		s, err := Open(Config{Dir: dir, SweepInterval: -1})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		for _, key := range acked {
			var r, g, i int
			if _, err := fmt.Sscanf(key, "crash@r=%d&g=%d&i=%d", &r, &g, &i); err != nil {
				t.Fatalf("bad ack line %q", key)
			}
			got, err := s.Get(key)
			if err != nil {
				t.Errorf("round %d: acknowledged record %q lost: %v", round, key, err)
				continue
			}
			if want := crashRecord(r, g, i); got.Size != want.Size || !got.RelevanceTo.Equal(want.RelevanceTo) {
				t.Errorf("round %d: record %q = %+v, want %+v", round, key, got, want)
			}
		}
		m, err := s.Match("crash", map[string][]string{"g": {"0"}, "i": {"3"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range m {
			if r.Match["g"][0] != "0" || r.Match["i"][0] != "3" {
				t.Errorf("Match returned %+v", r.Match)
			}
		}
		checkIndexes(t, s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d acknowledged records survived SIGKILL", round, len(acked))
	}
}

// runCrashChild starts the child, kills it with SIGKILL once it has
// acknowledged at least n records, and returns every key it acknowledged
// (complete lines only: a line cut by the kill was never acknowledged).
func runCrashChild(t *testing.T, dir string, round, n int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, fmt.Sprintf("%s_ROUND=%d", crashChildEnv, round))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []string
	killed := false
	timeout := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	defer timeout.Stop()
	br := bufio.NewReader(out)
	for {
		line, err := br.ReadString('\n')
		if err == io.EOF {
			break // a partial last line is dropped with the EOF
		}
		if err != nil {
			t.Fatal(err)
		}
		key, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "ack ")
		if !ok {
			t.Logf("child: %s", line)
			continue
		}
		acked = append(acked, key)
		if len(acked) >= n && !killed {
			killed = true
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child exited before it was killed: %v", err)
	}
	return acked
}
