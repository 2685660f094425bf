package resp

import (
	"bufio"
	"io"
	"strconv"
	"sync/atomic"
)

func newBufWriter(w io.Writer) *bufio.Writer { return bufio.NewWriterSize(w, 16<<10) }

// writer encodes replies in a protocol (2 or 3) by appending to buf.
type writer struct {
	buf   []byte
	proto int
	errs  *atomic.Int64 // counts the error replies, when set
}

// reset empties the writer for the next reply; a buffer grown past 256 KiB
// by a large value is let go rather than kept for the connection's life.
func (w *writer) reset(proto int) {
	if cap(w.buf) > 256<<10 {
		w.buf = nil
	}
	w.buf, w.proto = w.buf[:0], proto
}

func (w *writer) raw(s string) { w.buf = append(w.buf, s...) }

func (w *writer) header(c byte, n int) {
	w.buf = append(w.buf, c)
	w.buf = strconv.AppendInt(w.buf, int64(n), 10)
	w.buf = append(w.buf, '\r', '\n')
}

func (w *writer) simple(s string) {
	w.buf = append(w.buf, '+')
	w.buf = append(w.buf, s...)
	w.buf = append(w.buf, '\r', '\n')
}

func (w *writer) ok() { w.raw("+OK\r\n") }

// err writes an error; msg starts with its code word (ERR, NOAUTH, ...).
// Line ends inside become spaces: an error is one line.
func (w *writer) err(msg string) {
	if w.errs != nil {
		w.errs.Add(1)
	}
	w.buf = append(w.buf, '-')
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		w.buf = append(w.buf, c)
	}
	w.buf = append(w.buf, '\r', '\n')
}

func (w *writer) int(n int64) {
	w.buf = append(w.buf, ':')
	w.buf = strconv.AppendInt(w.buf, n, 10)
	w.buf = append(w.buf, '\r', '\n')
}

func (w *writer) bulk(b []byte) {
	w.header('$', len(b))
	w.buf = append(w.buf, b...)
	w.buf = append(w.buf, '\r', '\n')
}

func (w *writer) bulkString(s string) {
	w.header('$', len(s))
	w.buf = append(w.buf, s...)
	w.buf = append(w.buf, '\r', '\n')
}

// verbatim is a RESP3 verbatim string of format txt (INFO, CLIENT INFO);
// a bulk string in RESP2.
func (w *writer) verbatim(s string) {
	if w.proto < 3 {
		w.bulkString(s)
		return
	}
	w.header('=', len(s)+4)
	w.buf = append(w.buf, "txt:"...)
	w.buf = append(w.buf, s...)
	w.buf = append(w.buf, '\r', '\n')
}

func (w *writer) null() {
	if w.proto >= 3 {
		w.raw("_\r\n")
		return
	}
	w.raw("$-1\r\n")
}

// nullArray is a null array in RESP2 (*-1), a null in RESP3.
func (w *writer) nullArray() {
	if w.proto >= 3 {
		w.raw("_\r\n")
		return
	}
	w.raw("*-1\r\n")
}

func (w *writer) array(n int) { w.header('*', n) }

// mapHeader starts a map of n pairs: a flat array of 2n in RESP2.
func (w *writer) mapHeader(n int) {
	if w.proto >= 3 {
		w.header('%', n)
		return
	}
	w.header('*', 2*n)
}

// push starts an out-of-band message of n elements: a push in RESP3, an
// array in RESP2 (a Pub/Sub message).
func (w *writer) push(n int) {
	if w.proto >= 3 {
		w.header('>', n)
		return
	}
	w.header('*', n)
}

func (w *writer) bool(b bool) {
	switch {
	case w.proto >= 3 && b:
		w.raw("#t\r\n")
	case w.proto >= 3:
		w.raw("#f\r\n")
	case b:
		w.int(1)
	default:
		w.int(0)
	}
}

// value writes v: string, []byte, int, int64, bool, nil, []any, []string
// or kv (an ordered map).
func (w *writer) value(v any) {
	switch x := v.(type) {
	case nil:
		w.null()
	case string:
		w.bulkString(x)
	case []byte:
		w.bulk(x)
	case int:
		w.int(int64(x))
	case int64:
		w.int(x)
	case float64:
		if w.proto >= 3 {
			w.buf = append(w.buf, ',')
			w.buf = strconv.AppendFloat(w.buf, x, 'g', -1, 64)
			w.buf = append(w.buf, '\r', '\n')
		} else {
			w.bulkString(strconv.FormatFloat(x, 'g', -1, 64))
		}
	case bool:
		w.bool(x)
	case []any:
		w.array(len(x))
		for _, e := range x {
			w.value(e)
		}
	case []string:
		w.array(len(x))
		for _, e := range x {
			w.bulkString(e)
		}
	case kv:
		w.mapHeader(len(x) / 2)
		for _, e := range x {
			w.value(e)
		}
	default:
		w.err("ERR internal: cannot encode a reply")
	}
}

// kv is an ordered map of alternating keys and values.
type kv []any
