package main

import (
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var respLine = regexp.MustCompile(`msg="cachenode serving".* resp=(\S+)`)

// TestBinaryRESP: the binary with --resp serves the RESP front (redis-cli
// reads a key of an HTTP origin and invalidates it with the admin token),
// and without it serves none.
func TestBinaryRESP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-cli is not installed (Debian package redis-tools; scripts/test.sh installs it)")
		}
		t.Skip("redis-cli is not installed (apt-get install -y redis-tools)")
	}
	bin := buildBinary(t)
	origin := newE2EOrigin()
	osrv := httptest.NewServer(origin)
	defer osrv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e2eToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcArgs(t, bin, "r1", nodeConfig("r1", osrv.URL, tokenFile, nil), "--resp", "127.0.0.1:0")
	m := respLine.FindStringSubmatch(p.logs())
	if m == nil || m[1] == "" {
		t.Fatalf("no resp address in the serving line:\n%s", p.logs())
	}
	host, port, _ := strings.Cut(m[1], ":")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(cli, append([]string{"-h", host, "-p", port, "--no-auth-warning"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := run("GET", "items?id=7"); got != `{"item":"7","tags":null}` {
		t.Errorf("GET items?id=7: %q", got)
	}
	if got := run("DEL", "items?id=7"); !strings.HasPrefix(got, "NOAUTH") {
		t.Errorf("DEL without AUTH: %q", got)
	}
	if got := run("-a", e2eToken, "DEL", "items?id=7"); got != "1" {
		t.Errorf("DEL with AUTH: %q", got)
	}
	if got := run("GET", "failing?x=1"); !strings.HasPrefix(got, "ERR origin_error origin answered 500") {
		t.Errorf("GET of a failing origin: %q", got)
	}
	// Without --resp: no RESP front.
	q := startProc(t, bin, "r2", nodeConfig("r2", osrv.URL, tokenFile, nil))
	if m := respLine.FindStringSubmatch(q.logs()); m != nil && m[1] != "" && m[1] != `""` {
		t.Errorf("a RESP front without --resp: %q", m[1])
	}
}
