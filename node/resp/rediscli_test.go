package resp

import (
	"os/exec"
	"strings"
	"testing"
)

// cli runs redis-cli against addr with args and returns its output.
func cli(t *testing.T, bin, addr string, args ...string) string {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command(bin, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
	}
	return strings.TrimRight(string(out), "\n")
}

func TestRedisCLI(t *testing.T) {
	bin := needTool(t, "redis-cli", "redis-tools")
	o := newOrigin()
	ms := startCluster(t, 2, "s3cret", o)
	a := ms[0]
	remoteKey, id := keyOwnedBy(t, a, "n2")
	t.Run("ping", func(t *testing.T) {
		if got := cli(t, bin, a.addr, "PING"); got != "PONG" {
			t.Errorf("PING: %q", got)
		}
		if got := cli(t, bin, a.addr, "ECHO", "hi there"); got != "hi there" {
			t.Errorf("ECHO: %q", got)
		}
	})
	t.Run("get", func(t *testing.T) {
		if got := cli(t, bin, a.addr, "GET", remoteKey); got != o.value(id) {
			t.Errorf("GET %s: %q, want %q", remoteKey, got, o.value(id))
		}
		// RESP3 too.
		if got := cli(t, bin, a.addr, "-3", "GET", remoteKey); got != o.value(id) {
			t.Errorf("GET (RESP3) %s: %q", remoteKey, got)
		}
	})
	t.Run("mget", func(t *testing.T) {
		// redis-cli ends an error inside an array with an empty line.
		got := strings.ReplaceAll(cli(t, bin, a.addr, "MGET", "items?id=1", "items?id=2", "nope?id=1", "items?id=3"), "\n\n", "\n")
		want := strings.Join([]string{o.value("1"), o.value("2"), `ERR unknown_worker no worker "nope"`, o.value("3")}, "\n")
		if got != want {
			t.Errorf("MGET:\n%s\nwant\n%s", got, want)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"GET", "nope?id=1"}, `ERR unknown_worker no worker "nope"`},
			{[]string{"GET", "items?id=1&_expires=100h"}, "ERR override_not_allowed _expires: 100h0m0s is over the worker's max_expires of 1h0m0s"},
			{[]string{"GET", "items?_bogus=1"}, "ERR bad_request _bogus: unknown override"},
			{[]string{"GET", "items?id=1&fail=1"}, "ERR origin_error the database is down"},
			{[]string{"SET", "items?id=1", "x"}, "ERR cachenode keys are filled by their workers"},
			{[]string{"FROB"}, "ERR unknown command 'FROB'"},
			{[]string{"SELECT", "1"}, "ERR DB index is out of range"},
		} {
			got := cli(t, bin, a.addr, c.args...)
			if !strings.HasPrefix(got, c.want) {
				t.Errorf("%v: %q, want %q…", c.args, got, c.want)
			}
		}
	})
	t.Run("del", func(t *testing.T) {
		if got := cli(t, bin, a.addr, "DEL", remoteKey); !strings.HasPrefix(got, "NOAUTH") {
			t.Errorf("DEL without AUTH: %q", got)
		}
		if got := cli(t, bin, a.addr, "--no-auth-warning", "-a", "wrong", "DEL", remoteKey); !strings.Contains(got, "WRONGPASS") && !strings.Contains(got, "NOAUTH") {
			t.Errorf("DEL with a wrong token: %q", got)
		}
		o.bump(id)
		if got := cli(t, bin, a.addr, "--no-auth-warning", "-a", "s3cret", "DEL", remoteKey, "items?id=999999"); got != "1" {
			t.Errorf("DEL with AUTH: %q, want 1 (one key held)", got)
		}
		if got := cli(t, bin, a.addr, "GET", remoteKey); got != o.value(id) {
			t.Errorf("GET after DEL: %q, want %q", got, o.value(id))
		}
		got := cli(t, bin, a.addr, "--no-auth-warning", "-a", "s3cret", "CN.INVALIDATE", `{"model":"Item","changes":[{"op":"update","old":{"id":"`+id+`"},"new":{"id":"`+id+`"}}]}`)
		if !strings.HasPrefix(got, "keys\n") || !strings.Contains(got, "nodes\n2") {
			t.Errorf("CN.INVALIDATE: %q", got)
		}
	})
	t.Run("info", func(t *testing.T) {
		got := cli(t, bin, a.addr, "INFO")
		for _, want := range []string{"# Server", "redis_version:", "cachenode_node:n1", "# Clients", "connected_clients:1", "# Stats", "keyspace_hits:", "# Keyspace", "db0:keys="} {
			if !strings.Contains(got, want) {
				t.Errorf("INFO has no %q:\n%s", want, got)
			}
		}
		if got := cli(t, bin, a.addr, "CLIENT", "SETNAME", "x y"); !strings.HasPrefix(got, "ERR") {
			t.Errorf("CLIENT SETNAME with a space: %q", got)
		}
	})
}
