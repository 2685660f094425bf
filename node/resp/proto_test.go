package resp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

func parseAll(in string, lim Limits) ([][][]byte, error) {
	rd := newReader(strings.NewReader(in), lim)
	var out [][][]byte
	for {
		args, err := rd.command()
		if err != nil {
			if err == io.EOF {
				return out, nil
			}
			return out, err
		}
		out = append(out, args)
	}
}

func TestParser(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string // commands, args joined by "|"
		err  string   // a substring of the error
	}{
		{in: "*2\r\n$3\r\nGET\r\n$10\r\nitems?id=1\r\n", want: []string{"GET|items?id=1"}},
		{in: "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", want: []string{"PING", "ECHO|"}},
		{in: "PING\r\nGET items?id=1\n", want: []string{"PING", "GET|items?id=1"}},
		{in: `SET "a b" 'c d' "\x41\n"` + "\r\n", want: []string{"SET|a b|c d|A\n"}},
		{in: "\r\n   \r\n*0\r\nPING\r\n", want: []string{"PING"}},
		{in: "*2\r\n$3\r\nGET\r\n$2147483648\r\n", err: "bulk length 2147483648 is over"},
		{in: "*2\r\n$3\r\nGET\r\n$99999999999\r\n", err: "invalid bulk length"},
		{in: "*3\r\n$3\r\nGET\r\n", err: io.ErrUnexpectedEOF.Error()},
		{in: "*2\r\n$3\r\nGET\r\n$5\r\nab", err: io.ErrUnexpectedEOF.Error()},
		{in: "*1\r\n$3\r\nGETxx", err: "does not end with CRLF"},
		{in: "*100000\r\n", err: "too many arguments"},
		{in: "*x\r\n", err: "invalid multibulk length"},
		{in: "*1\r\n:3\r\n", err: "expected '$'"},
		{in: `GET "unterminated` + "\r\n", err: "unbalanced quotes"},
		{in: strings.Repeat("A", 17<<10) + "\r\n", err: "too big inline request"},
	} {
		got, err := parseAll(c.in, Limits{})
		var gs []string
		for _, args := range got {
			var parts []string
			for _, a := range args {
				parts = append(parts, string(a))
			}
			gs = append(gs, strings.Join(parts, "|"))
		}
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err %v, want one with %q", c.in[:min(len(c.in), 40)], err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(gs, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("%q: %q, %v; want %q", c.in, gs, err, c.want)
		}
	}
}

// TestBadInputClosesTheConnection sends what a broken or hostile client
// sends and checks that the server answers an error and closes, without
// allocating what the input declares.
func TestBadInputClosesTheConnection(t *testing.T) {
	o := newOrigin()
	m := startCluster(t, 1, "", o)[0]
	for _, in := range []string{
		"\x00\x01garbage\xff\r\n*\r\n",
		"*2\r\n$3\r\nGET\r\n$2147483647\r\nxx",
		"*1048576\r\n",
		"*3\r\n$3\r\nGET\r\n*5\r\n",
	} {
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		nc, err := net.Dial("tcp", m.addr)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write([]byte(in)); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(nc)
		var replies []string
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("%q: the server did not close the connection: %v", in, err)
				}
				break
			}
			replies = append(replies, l)
		}
		nc.Close()
		if len(replies) == 0 || !strings.HasPrefix(replies[len(replies)-1], "-ERR Protocol error") {
			t.Errorf("%q: replies %q, want a protocol error last", in, replies)
		}
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if grown := int64(after.TotalAlloc) - int64(before.TotalAlloc); grown > 64<<20 {
			t.Errorf("%q: %d bytes allocated", in, grown)
		}
	}
	// An unterminated array the client never completes: the server waits
	// (the idle timeout closes it), serving the others meanwhile.
	nc, err := net.Dial("tcp", m.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write([]byte("*3\r\n$3\r\nGET\r\n"))
	if got := cli0(t, m.addr, "*1\r\n$4\r\nPING\r\n"); got != "+PONG\r\n" {
		t.Errorf("another client's PING: %q", got)
	}
}

// cli0 sends raw bytes on a new connection and returns the first reply line.
func cli0(t *testing.T, addr, raw string) string {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	nc.Write([]byte(raw))
	l, err := bufio.NewReader(nc).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// FuzzParser feeds the command parser arbitrary bytes: it returns
// commands or an error, never panics, and never holds more than the limits
// allow.
func FuzzParser(f *testing.F) {
	for _, s := range []string{
		"*2\r\n$3\r\nGET\r\n$10\r\nitems?id=1\r\n", "PING\r\n", `SET "a\x41" 'b'` + "\n", "*1\r\n$2147483648\r\n",
		"*-1\r\n", "*3\r\n$3\r\nGET\r\n", "$5\r\nhello\r\n", "*1\r\n$0\r\n\r\n", "\"\\",
	} {
		f.Add([]byte(s))
	}
	lim := Limits{MaxArgs: 8, MaxBulk: 64, MaxInline: 128, MaxCommand: 256}
	f.Fuzz(func(t *testing.T, in []byte) {
		rd := newReader(bytes.NewReader(in), lim)
		for range 1000 {
			args, err := rd.command()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrProtocol) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(args) == 0 || len(args) > lim.MaxArgs {
				t.Fatalf("%d arguments", len(args))
			}
			total := 0
			for _, a := range args {
				if len(a) > max(lim.MaxBulk, lim.MaxInline) {
					t.Fatalf("an argument of %d bytes", len(a))
				}
				total += len(a)
			}
			if total > max(lim.MaxCommand, lim.MaxInline) {
				t.Fatalf("a command of %d bytes", total)
			}
		}
	})
}
