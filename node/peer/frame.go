package peer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

// headerSize is the size of a frame header; the layout is in the package
// documentation.
const headerSize = 20

// Frame kinds.
const (
	kindRequest  = 1
	kindResponse = 2
	kindError    = 3
	kindCancel   = 4
)

// exactAllocLimit is the largest payload that readFrame allocates at once.
// A larger announced payload is read in chunks into a growing buffer, so a
// peer that announces a large frame and sends nothing costs at most this
// much memory, not the announced length.
const exactAllocLimit = 1 << 20

// frame is one decoded frame.
type frame struct {
	kind    byte
	op      byte
	id      uint64
	budget  uint32 // milliseconds; requests only
	payload []byte
}

// appendFrame appends the encoding of a frame to dst.
func appendFrame(dst []byte, kind, op byte, id uint64, budget uint32, payload []byte) []byte {
	var hdr [headerSize]byte
	putHeader(hdr[:], uint32(len(payload)), kind, op, id, budget)
	dst = append(dst, hdr[:]...)
	return append(dst, payload...)
}

// putHeader writes a frame header into hdr, which has headerSize bytes.
func putHeader(hdr []byte, n uint32, kind, op byte, id uint64, budget uint32) {
	binary.BigEndian.PutUint32(hdr[0:4], n)
	hdr[4], hdr[5], hdr[6], hdr[7] = kind, op, 0, 0
	binary.BigEndian.PutUint64(hdr[8:16], id)
	binary.BigEndian.PutUint32(hdr[16:20], budget)
}

// frameBuffered reports whether br holds a whole frame, which reading
// cannot block on.
func frameBuffered(br *bufio.Reader) bool {
	if br.Buffered() < headerSize {
		return false
	}
	hdr, err := br.Peek(headerSize)
	if err != nil {
		return false
	}
	return uint64(br.Buffered()) >= headerSize+uint64(binary.BigEndian.Uint32(hdr[0:4]))
}

// budgetFor converts the time left until a deadline into a request budget:
// milliseconds rounded up, so the server never stops before the caller does.
// It returns 0 (no deadline) when ok is false.
func budgetFor(deadline time.Time, ok bool) (uint32, bool) {
	if !ok {
		return 0, true
	}
	left := time.Until(deadline)
	if left <= 0 {
		return 0, false
	}
	ms := (left + time.Millisecond - 1) / time.Millisecond
	if ms > math.MaxUint32 {
		ms = math.MaxUint32
	}
	return uint32(ms), true
}

// readFrame reads one frame from r, whose payload may not exceed limit
// bytes. hdr is scratch space. It returns io.EOF if r ended cleanly before
// the frame; a malformed or truncated frame returns an error wrapping
// ErrProtocol (and ErrFrameTooLarge for an oversized one); other errors are
// r's. The payload is freshly allocated (nil when empty) and belongs to the
// caller.
func readFrame(r io.Reader, hdr *[headerSize]byte, limit int) (frame, error) {
	f, n, err := readHeader(r, hdr, limit)
	if err != nil || n == 0 {
		return f, err
	}
	p, err := readPayload(r, n)
	if err != nil {
		return frame{}, payloadError(err)
	}
	f.payload = p
	return f, nil
}

// peekFrame is readFrame from a bufio.Reader without copying a payload
// that fits in br's buffer: f.payload is then br's own memory, valid until
// the next read from br, and peeked is its length, which the caller must
// Discard before that read. A larger payload is read as readFrame does
// (peeked is 0).
func peekFrame(br *bufio.Reader, hdr *[headerSize]byte, limit int) (f frame, peeked int, err error) {
	f, n, err := readHeader(br, hdr, limit)
	if err != nil || n == 0 {
		return f, 0, err
	}
	if n > br.Size() {
		p, err := readPayload(br, n)
		if err != nil {
			return frame{}, 0, payloadError(err)
		}
		f.payload = p
		return f, 0, nil
	}
	p, err := br.Peek(n)
	if err != nil {
		return frame{}, 0, payloadError(err)
	}
	f.payload = p
	return f, n, nil
}

// readHeader reads and checks a frame header (see readFrame) and returns
// the frame without its payload, and the payload's length.
func readHeader(r io.Reader, hdr *[headerSize]byte, limit int) (frame, int, error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return frame{}, 0, fmt.Errorf("%w: truncated frame header: %w", ErrProtocol, err)
		}
		return frame{}, 0, err
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	f := frame{
		kind:   hdr[4],
		op:     hdr[5],
		id:     binary.BigEndian.Uint64(hdr[8:16]),
		budget: binary.BigEndian.Uint32(hdr[16:20]),
	}
	switch {
	case uint64(n) > uint64(limit):
		return frame{}, 0, fmt.Errorf("%w: %w: announced %d bytes, limit %d", ErrProtocol, ErrFrameTooLarge, n, limit)
	case f.kind < kindRequest || f.kind > kindCancel:
		return frame{}, 0, fmt.Errorf("%w: unknown frame kind %d", ErrProtocol, f.kind)
	case hdr[6] != 0 || hdr[7] != 0:
		return frame{}, 0, fmt.Errorf("%w: reserved header bytes are not zero", ErrProtocol)
	case f.id == 0:
		return frame{}, 0, fmt.Errorf("%w: request id 0", ErrProtocol)
	case f.kind != kindRequest && f.budget != 0:
		return frame{}, 0, fmt.Errorf("%w: budget on a frame of kind %d", ErrProtocol, f.kind)
	case f.kind == kindCancel && n != 0:
		return frame{}, 0, fmt.Errorf("%w: cancel frame with a payload", ErrProtocol)
	}
	return f, int(n), nil
}

// payloadError is the error of a payload that could not be read whole.
func payloadError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated frame: %w", ErrProtocol, io.ErrUnexpectedEOF)
	}
	return err
}

// readPayload reads exactly n bytes, allocating in proportion to what
// actually arrives (see exactAllocLimit).
func readPayload(r io.Reader, n int) ([]byte, error) {
	if n <= exactAllocLimit {
		p := make([]byte, n)
		_, err := io.ReadFull(r, p)
		return p, err
	}
	p := make([]byte, 0, exactAllocLimit)
	for len(p) < n {
		if len(p) == cap(p) {
			p = slices.Grow(p, min(cap(p), n-len(p)))
		}
		m, err := io.ReadFull(r, p[len(p):min(cap(p), n)])
		p = p[:len(p)+m]
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}
