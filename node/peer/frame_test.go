package peer

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	frames := []frame{
		{kind: kindRequest, op: 7, id: 1, budget: 250, payload: []byte("payload")},
		{kind: kindResponse, op: 7, id: 1<<64 - 1},
		{kind: kindError, op: 0, id: 3, payload: encodeRemoteError(&RemoteError{Code: "c", Message: "m"})},
		{kind: kindCancel, op: 1, id: 4},
		{kind: kindResponse, op: 2, id: 5, payload: bytes.Repeat([]byte{1}, 3*exactAllocLimit+17)},
	}
	var wire []byte
	for _, f := range frames {
		wire = appendFrame(wire, f.kind, f.op, f.id, f.budget, f.payload)
	}
	r := bufio.NewReader(bytes.NewReader(wire))
	var hdr [headerSize]byte
	for i, want := range frames {
		got, err := readFrame(r, &hdr, DefaultMaxFrameSize)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got.kind != want.kind || got.op != want.op || got.id != want.id || got.budget != want.budget || !bytes.Equal(got.payload, want.payload) {
			t.Fatalf("frame %d: got %+v, want %+v", i, got, want)
		}
	}
	if _, err := readFrame(r, &hdr, DefaultMaxFrameSize); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestBudget(t *testing.T) {
	if b, ok := budgetFor(time.Time{}, false); b != 0 || !ok {
		t.Errorf("no deadline: %d, %v", b, ok)
	}
	if _, ok := budgetFor(time.Now().Add(-time.Second), true); ok {
		t.Error("a past deadline has a budget")
	}
	if b, _ := budgetFor(time.Now().Add(100*time.Microsecond), true); b != 1 {
		t.Errorf("100µs rounds to %d ms, want 1", b)
	}
	if b, _ := budgetFor(time.Now().Add(10000*time.Hour), true); b != 1<<32-1 {
		t.Errorf("a far deadline: %d, want the maximum", b)
	}
}

// FuzzReadFrame feeds arbitrary bytes to the frame decoder: it must return
// a frame or an error, never panic, and never allocate more than the input
// could fill (readPayload grows with the bytes that actually arrive).
func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, kindRequest, 1, 1, 10, []byte("hello")))
	f.Add(appendFrame(nil, kindResponse, 1, 2, 0, nil))
	f.Add(appendFrame(nil, kindCancel, 1, 3, 0, nil))
	f.Add(header(1<<31, kindRequest, 1, 1, 0))
	f.Add(header(2*exactAllocLimit, kindRequest, 1, 1, 0))
	f.Add([]byte("garbage"))
	const limit = 4 * exactAllocLimit
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var hdr [headerSize]byte
		for {
			fr, err := readFrame(r, &hdr, limit)
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrProtocol) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			if len(fr.payload) > limit || cap(fr.payload) > max(len(data), exactAllocLimit)*2 {
				t.Fatalf("payload len %d cap %d from %d input bytes", len(fr.payload), cap(fr.payload), len(data))
			}
			if fr.kind < kindRequest || fr.kind > kindCancel || fr.id == 0 {
				t.Fatalf("invalid frame accepted: %+v", fr)
			}
			// A decoded frame encodes back to the bytes it came from.
			enc := appendFrame(nil, fr.kind, fr.op, fr.id, fr.budget, fr.payload)
			consumed := len(data) - r.Len()
			if !bytes.Equal(enc, data[consumed-len(enc):consumed]) {
				t.Fatalf("re-encoding differs")
			}
		}
	})
}
