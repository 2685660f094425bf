package peer

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// The hello and the proofs are described in the package documentation.
const (
	helloMagic   = "CNP\x01" // "CNP" and protocol version 1
	helloSize    = 44
	proofSize    = sha256.Size
	proofLabel   = "cachenode peer v1"
	modeNone     = 0
	modeHMAC     = 1
	statusOK     = 0
	statusReject = 1
	roleClient   = 'C'
	roleServer   = 'S'
)

type hello struct {
	mode     byte
	maxFrame uint32
	nonce    [32]byte
}

func newHello(ring [][]byte, maxFrame int) (hello, error) {
	h := hello{maxFrame: uint32(maxFrame)}
	if len(ring) > 0 {
		h.mode = modeHMAC
	}
	if _, err := rand.Read(h.nonce[:]); err != nil {
		return h, fmt.Errorf("peer: nonce: %w", err)
	}
	return h, nil
}

func (h hello) encode() []byte {
	b := make([]byte, 0, helloSize)
	b = append(b, helloMagic...)
	b = append(b, h.mode, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, h.maxFrame)
	return append(b, h.nonce[:]...)
}

// readHello reads and checks the peer's hello; it returns its encoding too,
// which the proofs cover.
func readHello(r io.Reader) (hello, []byte, error) {
	b := make([]byte, helloSize)
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.ErrUnexpectedEOF {
			return hello{}, nil, fmt.Errorf("%w: truncated hello", ErrProtocol)
		}
		return hello{}, nil, err
	}
	if string(b[:4]) != helloMagic {
		return hello{}, nil, fmt.Errorf("%w: not a cachenode peer (bad hello magic %q)", ErrProtocol, b[:4])
	}
	h := hello{mode: b[4], maxFrame: binary.BigEndian.Uint32(b[8:12])}
	copy(h.nonce[:], b[12:])
	switch {
	case h.mode != modeNone && h.mode != modeHMAC:
		return hello{}, nil, fmt.Errorf("%w: unknown auth mode %d", ErrProtocol, h.mode)
	case b[5] != 0 || b[6] != 0 || b[7] != 0:
		return hello{}, nil, fmt.Errorf("%w: reserved hello bytes are not zero", ErrProtocol)
	case h.maxFrame == 0:
		return hello{}, nil, fmt.Errorf("%w: maximum frame size 0", ErrProtocol)
	}
	return h, b, nil
}

// proof is the HMAC by which the side playing role shows it knows key.
func proof(key []byte, role byte, helloC, helloS []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(proofLabel))
	m.Write([]byte{role})
	m.Write(helloC)
	m.Write(helloS)
	return m.Sum(nil)
}

// proofMatches reports whether got is the proof of role by one of the keys
// of ring. Every key is tried, each compared in constant time.
func proofMatches(got []byte, ring [][]byte, role byte, helloC, helloS []byte) bool {
	ok := false
	for _, k := range ring {
		if hmac.Equal(got, proof(k, role, helloC, helloS)) {
			ok = true
		}
	}
	return ok
}

// keyring is a key and the further keys accepted with it, primary first;
// nil when there is no key.
func keyring(key []byte, keys [][]byte) [][]byte {
	if key == nil {
		return nil
	}
	return append([][]byte{key}, keys...)
}

func modeMismatch(ours, theirs byte) error {
	if ours == modeHMAC {
		return fmt.Errorf("%w: the peer has no key", ErrAuth)
	}
	return fmt.Errorf("%w: the peer requires a key", ErrAuth)
}

// clientHandshake runs the client side of the hello exchange on nc, whose
// deadline the caller has set. ring is the client's keyring, primary first
// (nil: no key): the server may prove any of its keys, the client proves
// the primary. It returns the server's maximum frame size.
func clientHandshake(nc net.Conn, ring [][]byte, maxFrame int) (int, error) {
	hc, err := newHello(ring, maxFrame)
	if err != nil {
		return 0, err
	}
	helloC := hc.encode()
	if _, err := nc.Write(helloC); err != nil {
		return 0, err
	}
	hs, helloS, err := readHello(nc)
	if err != nil {
		return 0, err
	}
	if hs.mode != hc.mode {
		return 0, modeMismatch(hc.mode, hs.mode)
	}
	if ring == nil {
		return int(hs.maxFrame), nil
	}
	got := make([]byte, proofSize)
	if _, err := io.ReadFull(nc, got); err != nil {
		return 0, fmt.Errorf("%w: reading the server's proof: %w", ErrAuth, err)
	}
	if !proofMatches(got, ring, roleServer, helloC, helloS) {
		return 0, fmt.Errorf("%w: the server's proof does not match our keys", ErrAuth)
	}
	if _, err := nc.Write(proof(ring[0], roleClient, helloC, helloS)); err != nil {
		return 0, err
	}
	var status [1]byte
	if _, err := io.ReadFull(nc, status[:]); err != nil {
		return 0, fmt.Errorf("%w: reading the server's verdict: %w", ErrAuth, err)
	}
	if status[0] != statusOK {
		return 0, fmt.Errorf("%w: the server rejected our proof", ErrAuth)
	}
	return int(hs.maxFrame), nil
}

// serverHandshake runs the server side of the hello exchange on nc, whose
// deadline the caller has set. ring is the server's keyring, primary first
// (nil: no key): the server proves the primary and accepts a client that
// proves any key of the ring. It returns the client's maximum frame size.
// Every failure after a well-formed client hello in which either side uses
// a key wraps ErrAuth.
func serverHandshake(nc net.Conn, ring [][]byte, maxFrame int) (int, error) {
	hc, helloC, err := readHello(nc)
	if err != nil {
		return 0, err
	}
	hs, err := newHello(ring, maxFrame)
	if err != nil {
		return 0, err
	}
	helloS := hs.encode()
	out := helloS
	if ring != nil && hc.mode == modeHMAC {
		out = append(out, proof(ring[0], roleServer, helloC, helloS)...)
	}
	// The hello goes out even on a mode mismatch so that the client can tell
	// an authentication failure from a broken connection.
	if _, err := nc.Write(out); err != nil {
		return 0, err
	}
	if hc.mode != hs.mode {
		return 0, modeMismatch(hs.mode, hc.mode)
	}
	if ring == nil {
		return int(hc.maxFrame), nil
	}
	got := make([]byte, proofSize)
	if _, err := io.ReadFull(nc, got); err != nil {
		return 0, fmt.Errorf("%w: reading the client's proof: %w", ErrAuth, err)
	}
	if !proofMatches(got, ring, roleClient, helloC, helloS) {
		_, _ = nc.Write([]byte{statusReject})
		return 0, fmt.Errorf("%w: the client's proof does not match our keys", ErrAuth)
	}
	if _, err := nc.Write([]byte{statusOK}); err != nil {
		return 0, err
	}
	return int(hc.maxFrame), nil
}
