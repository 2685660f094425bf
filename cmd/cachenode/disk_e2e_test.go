package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The storage-fault tests run the binary on a data directory that fills
// up (a small tmpfs, as root) or that is corrupted between two runs.

// mountTmpfs mounts a tmpfs of size on a new directory, unmounted at the
// end of the test; it skips the test when not root.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs as the data directory (mount -t tmpfs -o size=" + size + ")")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes a file in dir until the filesystem is full.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{'x'}, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			t.Fatal(err)
		}
	}
	// Whatever the page size leaves: fill it byte by byte.
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			break
		}
	}
	return path
}

// metric returns the value of a metric without labels in /metrics.
func metric(t *testing.T, p *proc, name string) string {
	t.Helper()
	for _, line := range strings.Split(string(do(t, "GET", p.http+"/metrics", e2eToken, nil).body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

func waitMetric(t *testing.T, p *proc, name, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for metric(t, p, name) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s %s = %q after %v, want %q", p.name, name, metric(t, p, name), limit, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDiskFullKeepsServing: a node whose data directory is on a 3 MB tmpfs
// that is filled to 100% stays up and serves every read, new keys
// included; its records are degraded (metrics, /admin/ring, /readyz 200);
// freeing space brings them back, with the records of the keys filled
// meanwhile.
func TestDiskFullKeepsServing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	mnt := mountTmpfs(t, "3m")
	bin := buildBinary(t)
	origin := httptest.NewServer(newE2EOrigin())
	defer origin.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(e2eToken), 0o600)
	data := filepath.Join(mnt, "data")
	p := startProcArgs(t, bin, "d1", nodeConfig("d1", origin.URL, tokenFile, nil), "--data", data)
	read := func(i int) {
		t.Helper()
		a := do(t, "GET", fmt.Sprintf("%s/v1/cache/items?id=%d", p.http, i), "", nil)
		if a.code != 200 {
			t.Fatalf("read %d: %d %s", i, a.code, a.body)
		}
	}
	for i := range 10 {
		read(i)
	}
	filler := fillDisk(t, mnt)
	// Pebble may still have room in the WAL file it preallocated: read new
	// keys until a record write hits the full disk.
	next := 10
	deadline := time.Now().Add(60 * time.Second)
	for metric(t, p, "cachenode_records_degraded") != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("records not degraded after %d reads on a full disk", next)
		}
		for range 50 {
			read(next)
			next++
		}
	}
	filledWhileFull := next
	for i := range next + 20 { // every key, old and new, is served
		read(i)
	}
	next += 20
	select {
	case <-p.exited:
		t.Fatalf("the node exited on a full disk with %d:\n%s", p.code, p.logs())
	default:
	}
	if a := do(t, "GET", p.http+"/readyz", "", nil); a.code != 200 || !strings.Contains(string(a.body), `"degraded"`) {
		t.Errorf("/readyz on a full disk = %d %s, want 200 and degraded records", a.code, a.body)
	}
	if strings.Count(p.logs(), "records degraded") != 1 {
		t.Errorf("want one \"records degraded\" log line, got:\n%s", p.logs())
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, p, "cachenode_records_degraded", "0", 60*time.Second)
	// The records of keys filled on the full disk were kept in memory and
	// are written now.
	want := fmt.Sprintf(`"id":"%d"`, filledWhileFull)
	deadline = time.Now().Add(30 * time.Second)
	for {
		a := do(t, "GET", p.http+"/admin/records?label=items&limit=1000", e2eToken, nil)
		if a.code == 200 && strings.Contains(string(a.body), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record of items?id=%d after the disk was freed: %d %.300s", filledWhileFull, a.code, a.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	read(next)
}

// TestCorruptManifestMovedAside: a node stopped cleanly whose MANIFEST is
// then overwritten starts again, with no records, the directory moved to
// DATA.corrupt-<time>, one log line and /admin/ring saying so; with
// --data-on-corruption=fail it exits 1 instead.
func TestCorruptManifestMovedAside(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	origin := httptest.NewServer(newE2EOrigin())
	defer origin.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(e2eToken), 0o600)
	parent := t.TempDir()
	data := filepath.Join(parent, "data")
	cfg := nodeConfig("c1", origin.URL, tokenFile, nil)
	stop := func(p *proc) {
		t.Helper()
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not stop", p.name)
		}
		if p.code != 0 {
			t.Fatalf("%s exited %d:\n%s", p.name, p.code, p.logs())
		}
	}
	p := startProcArgs(t, bin, "c1", cfg, "--data", data)
	for i := range 5 {
		if a := do(t, "GET", fmt.Sprintf("%s/v1/cache/items?id=%d", p.http, i), "", nil); a.code != 200 {
			t.Fatalf("read: %d %s", a.code, a.body)
		}
	}
	stop(p)
	manifests, _ := filepath.Glob(filepath.Join(data, "MANIFEST-*"))
	if len(manifests) == 0 {
		t.Fatal("no MANIFEST in the data directory")
	}
	slices.Sort(manifests)
	f, err := os.OpenFile(manifests[len(manifests)-1], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{0xa5}, 64), 0)
	f.Close()

	// --data-on-corruption=fail: today's behaviour, exit 1.
	failing := exec.Command(bin, "serve", "--config", writeConfig(t, cfg), "--data", data, "--data-on-corruption=fail")
	out, err := failing.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "corrupt") && !strings.Contains(string(out), "malformed") {
		t.Fatalf("--data-on-corruption=fail on a corrupt MANIFEST: %v\n%s", err, out)
	}

	p = startProcArgs(t, bin, "c1", cfg, "--data", data)
	if n := strings.Count(p.logs(), "records database is corrupt"); n != 1 {
		t.Errorf("%d log lines about the corrupt database, want 1:\n%s", n, p.logs())
	}
	aside, _ := filepath.Glob(data + ".corrupt-*")
	if len(aside) != 1 {
		t.Errorf("moved-aside directories %v, want 1", aside)
	}
	var ring struct {
		Records struct {
			MovedAside []string `json:"moved_aside"`
		} `json:"records"`
	}
	if err := json.Unmarshal(do(t, "GET", p.http+"/admin/ring", e2eToken, nil).body, &ring); err != nil || len(ring.Records.MovedAside) != 1 {
		t.Errorf("/admin/ring records.moved_aside = %v (%v), want the moved directory", ring.Records.MovedAside, err)
	}
	if a := do(t, "GET", p.http+"/admin/records?label=items", e2eToken, nil); a.code != 200 || strings.Contains(string(a.body), `"key"`) {
		t.Errorf("records after the move = %d %s, want none", a.code, a.body)
	}
	if a := do(t, "GET", p.http+"/v1/cache/items?id=1", "", nil); a.code != 200 {
		t.Errorf("read after the move: %d %s", a.code, a.body)
	}
}

func writeConfig(t *testing.T, cfg string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
