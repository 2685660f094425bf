// Package pgtest runs a throwaway PostgreSQL cluster for tests: initdb in
// a temporary directory, wal_level=logical, listening on 127.0.0.1 on a
// free port, trust authentication for the superuser "postgres". As root
// (initdb refuses to run as root) the server runs as the postgres user,
// with the directory handed to it.
//
// Start skips the test when no PostgreSQL is installed (Debian's
// postgresql package: /usr/lib/postgresql/*/bin), unless CI is set, where
// a missing server fails the test.
package pgtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is one running test cluster.
type Server struct {
	t    testing.TB
	bin  string // directory of initdb, pg_ctl, psql
	dir  string
	data string
	// Port is the TCP port on 127.0.0.1.
	Port int
	// URL connects as the superuser to the database postgres.
	URL string
	as  []string // the command prefix that runs as the postgres user
}

// Start initialises and starts a cluster, stopped and removed when the
// test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			bins = append(bins, p)
		}
	}
	if len(bins) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("PostgreSQL is not installed (apt-get install -y postgresql): CI must run this test")
		}
		t.Skip("PostgreSQL is not installed (apt-get install -y postgresql, or scripts/test.sh as root): skipping the tests against a real database")
	}
	slices.Sort(bins)
	s := &Server{t: t, bin: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", "cachenode-pg-")
	if err != nil {
		t.Fatal(err)
	}
	s.dir, s.data = dir, filepath.Join(dir, "data")
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, and there is no postgres user to run the server as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		s.as = []string{"runuser", "-u", "postgres", "--"}
	}
	s.Port = freePort(t)
	s.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
	if out, err := s.run("initdb", "-D", s.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s.StartServer()
	t.Cleanup(func() { s.run("pg_ctl", "-D", s.data, "-m", "immediate", "-w", "stop") })
	return s
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *Server) run(tool string, args ...string) ([]byte, error) {
	argv := append(append(slices.Clone(s.as), filepath.Join(s.bin, tool)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = s.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// StartServer starts the (stopped) server and waits until it accepts
// connections.
func (s *Server) StartServer() {
	s.t.Helper()
	opts := fmt.Sprintf("-c wal_level=logical -c port=%d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c max_wal_senders=10 -c max_replication_slots=10 -c fsync=off -c wal_sender_timeout=10s",
		s.Port, s.dir)
	if out, err := s.run("pg_ctl", "-D", s.data, "-o", opts, "-l", filepath.Join(s.dir, "log"), "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		s.t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// Stop stops the server: mode is smart, fast or immediate (a crash).
func (s *Server) Stop(mode string) {
	s.t.Helper()
	if out, err := s.run("pg_ctl", "-D", s.data, "-m", mode, "-w", "stop"); err != nil {
		s.t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

// Psql runs sql with the psql command-line client, as a person would.
func (s *Server) Psql(sql string) (string, error) {
	cmd := exec.Command(filepath.Join(s.bin, "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-q", "-d", s.URL, "-c", sql)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Conn opens a connection, closed when the test ends.
func (s *Server) Conn() *pgx.Conn {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.URL)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Exec runs statements on a new connection.
func (s *Server) Exec(sql string, args ...any) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.URL)
	if err != nil {
		s.t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
}

// Log returns the server's log.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "log"))
	return string(b)
}
