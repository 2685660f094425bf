package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Limits bound what one command may hold. A client past a limit gets an
// error and its connection is closed: the stream cannot be resynchronised.
type Limits struct {
	// MaxArgs bounds the elements of a command's array (the command name
	// included). Default 1024.
	MaxArgs int
	// MaxBulk bounds one bulk string. Default 1 MiB, as the HTTP body of
	// POST /v1/invalidate.
	MaxBulk int
	// MaxInline bounds an inline command (a line of words, as a person
	// types it) and every protocol line. Default and most 16 KiB, the read
	// buffer: clients send arrays of bulk strings, bounded by MaxBulk.
	MaxInline int
	// MaxCommand bounds the bytes of all a command's bulk strings.
	// Default 2 MiB.
	MaxCommand int
}

func (l Limits) withDefaults() Limits {
	if l.MaxArgs <= 0 {
		l.MaxArgs = 1024
	}
	if l.MaxBulk <= 0 {
		l.MaxBulk = 1 << 20
	}
	if l.MaxInline <= 0 || l.MaxInline > readBuffer-2 {
		l.MaxInline = readBuffer - 2
	}
	if l.MaxCommand <= 0 {
		l.MaxCommand = 2 << 20
	}
	return l
}

// ErrProtocol is wrapped by every error of the request parser. The
// connection that sent the bad input is answered -ERR Protocol error and
// closed.
var ErrProtocol = errors.New("Protocol error")

func protoErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, a...))
}

// readBuffer is the size of a connection's read buffer.
const readBuffer = 16 << 10

// reader reads commands: arrays of bulk strings (what clients send), or
// inline commands (a line of words, what a person types into telnet).
type reader struct {
	r   *bufio.Reader
	lim Limits
}

func newReader(r io.Reader, lim Limits) *reader {
	return &reader{r: bufio.NewReaderSize(r, readBuffer), lim: lim.withDefaults()}
}

// line reads a line ending in \r\n (or \n, for inline commands) without
// its end, at most MaxInline bytes. The slice is valid until the next read.
func (rd *reader) line() ([]byte, error) {
	b, err := rd.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, rd.longLine(len(b))
	}
	if err != nil {
		if err == io.EOF && len(b) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	b = b[:len(b)-1]
	if len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1]
	}
	if len(b) > rd.lim.MaxInline {
		return nil, protoErr("too big inline request (over %d bytes)", rd.lim.MaxInline)
	}
	return b, nil
}

// longLine consumes a line longer than the buffer, up to MaxInline, and
// refuses it: inline commands are never that long in practice, so the
// long one is a protocol error either way.
func (rd *reader) longLine(n int) error {
	for n <= rd.lim.MaxInline+2 {
		b, err := rd.r.ReadSlice('\n')
		n += len(b)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			return err
		}
	}
	return protoErr("too big inline request (over %d bytes)", rd.lim.MaxInline)
}

// command reads the next command. The returned slices are the caller's.
func (rd *reader) command() ([][]byte, error) {
	for {
		ln, err := rd.line()
		if err != nil {
			return nil, err
		}
		if len(ln) == 0 {
			continue // an empty line: Redis ignores it too
		}
		if ln[0] != '*' {
			args, err := rd.inline(ln)
			if args == nil && err == nil {
				continue // only blanks
			}
			return args, err
		}
		n, err := parseLen(ln[1:])
		if err != nil {
			return nil, protoErr("invalid multibulk length")
		}
		if n <= 0 {
			continue // *0 and *-1 are no command
		}
		if n > rd.lim.MaxArgs {
			return nil, protoErr("too many arguments: %d, at most %d", n, rd.lim.MaxArgs)
		}
		args := make([][]byte, 0, min(n, 16))
		total := 0
		for range n {
			ln, err := rd.line()
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return nil, err
			}
			if len(ln) == 0 || ln[0] != '$' {
				return nil, protoErr("expected '$', got '%s'", printable(ln))
			}
			size, err := parseLen(ln[1:])
			if err != nil || size < 0 {
				return nil, protoErr("invalid bulk length")
			}
			if size > rd.lim.MaxBulk {
				return nil, protoErr("bulk length %d is over %d", size, rd.lim.MaxBulk)
			}
			total += size
			if total > rd.lim.MaxCommand {
				return nil, protoErr("the command is over %d bytes", rd.lim.MaxCommand)
			}
			b, err := rd.bulk(size)
			if err != nil {
				return nil, err
			}
			args = append(args, b)
		}
		return args, nil
	}
}

// bulk reads size bytes and their \r\n. The buffer grows as the bytes
// arrive, so that a length a client declares but never sends costs nothing.
func (rd *reader) bulk(size int) ([]byte, error) {
	const chunk = 64 << 10
	b := make([]byte, 0, min(size, chunk))
	for len(b) < size {
		k := min(size-len(b), chunk)
		if cap(b)-len(b) < k {
			nb := make([]byte, len(b), min(size, max(2*cap(b), len(b)+k)))
			copy(nb, b)
			b = nb
		}
		m, err := io.ReadFull(rd.r, b[len(b):len(b)+k])
		b = b[:len(b)+m]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	var crlf [2]byte
	if _, err := io.ReadFull(rd.r, crlf[:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if crlf != [2]byte{'\r', '\n'} {
		return nil, protoErr("a bulk string does not end with CRLF")
	}
	return b, nil
}

// inline splits an inline command into words, with Redis's quoting:
// "double quotes" with \n \r \t \xHH escapes, and 'single quotes'.
func (rd *reader) inline(ln []byte) ([][]byte, error) {
	var args [][]byte
	i := 0
	for {
		for i < len(ln) && (ln[i] == ' ' || ln[i] == '\t') {
			i++
		}
		if i == len(ln) {
			break
		}
		if len(args) == rd.lim.MaxArgs {
			return nil, protoErr("too many arguments, at most %d", rd.lim.MaxArgs)
		}
		var w []byte
		switch ln[i] {
		case '"':
			i++
			for {
				if i >= len(ln) {
					return nil, protoErr("unbalanced quotes in request")
				}
				c := ln[i]
				if c == '"' {
					i++
					break
				}
				if c == '\\' && i+1 < len(ln) {
					i++
					switch ln[i] {
					case 'n':
						c = '\n'
					case 'r':
						c = '\r'
					case 't':
						c = '\t'
					case 'b':
						c = '\b'
					case 'a':
						c = '\a'
					case 'x':
						if i+2 < len(ln) {
							if v, err := strconv.ParseUint(string(ln[i+1:i+3]), 16, 8); err == nil {
								c = byte(v)
								i += 2
								break
							}
						}
						c = 'x'
					default:
						c = ln[i]
					}
				}
				w = append(w, c)
				i++
			}
		case '\'':
			i++
			for {
				if i >= len(ln) {
					return nil, protoErr("unbalanced quotes in request")
				}
				c := ln[i]
				if c == '\'' {
					i++
					break
				}
				if c == '\\' && i+1 < len(ln) && ln[i+1] == '\'' {
					i++
					c = '\''
				}
				w = append(w, c)
				i++
			}
		default:
			j := i
			for j < len(ln) && ln[j] != ' ' && ln[j] != '\t' {
				j++
			}
			w = append([]byte(nil), ln[i:j]...)
			i = j
			args = append(args, w)
			continue
		}
		if i < len(ln) && ln[i] != ' ' && ln[i] != '\t' {
			return nil, protoErr("closing quote must be followed by a space")
		}
		if w == nil {
			w = []byte{}
		}
		args = append(args, w)
	}
	return args, nil // nil for a line of blanks
}

// parseLen reads a decimal length; at most 10 digits, so that it cannot
// overflow.
func parseLen(b []byte) (int, error) {
	neg := false
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	if len(b) == 0 || len(b) > 10 {
		return 0, errors.New("bad length")
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errors.New("bad length")
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		return -n, nil
	}
	return n, nil
}

// printable is b shortened and without control bytes, for an error.
func printable(b []byte) string {
	if len(b) > 32 {
		b = b[:32]
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c >= 0x7f {
			c = '?'
		}
		out[i] = c
	}
	return string(out)
}
