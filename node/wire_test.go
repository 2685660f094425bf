package node

import (
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/worker"
)

func TestWireRoundTrip(t *testing.T) {
	ta := 3
	in := fetchReq{Label: "w", Key: "w@a=i1", Args: worker.Args{"a": int64(1), "l": []any{"x", true}},
		Ov: wireSettings{Expires: time.Minute, TickAmount: &ta}}
	b, err := msgpack.Marshal(&in)
	if err != nil {
		t.Fatal(err)
	}
	var out fetchReq
	if err := msgpack.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	k1, _ := worker.KeyOf("w", in.Args)
	k2, _ := worker.KeyOf("w", out.Args)
	if out.Label != in.Label || out.Key != in.Key || k1 != k2 || out.Ov.Expires != time.Minute || *out.Ov.TickAmount != 3 {
		t.Fatalf("%+v", out)
	}
	e := wireEntry{Label: "w", Key: "k", Value: []byte("v"), ContentType: "text/plain", Owner: "n1",
		Created: 1, Relevance: 2, Available: 3, FillNanos: 4, Status: uint8(worker.Stale)}
	b, _ = msgpack.Marshal(&e)
	var e2 wireEntry
	if err := msgpack.Unmarshal(b, &e2); err != nil || !reflect.DeepEqual(e, e2) {
		t.Fatalf("%+v %v", e2, err)
	}
}

// FuzzWireDecode feeds garbage to the decoders of the Get path: an error,
// never a panic.
func FuzzWireDecode(f *testing.F) {
	e := wireEntry{Label: "w", Key: "k", Value: []byte("v")}
	b, _ := msgpack.Marshal(&e)
	f.Add(b)
	r, _ := msgpack.Marshal(&fetchReq{Label: "w", Key: "k", Args: worker.Args{"a": 1}})
	f.Add(r)
	f.Fuzz(func(t *testing.T, data []byte) {
		var we wireEntry
		_ = unmarshal(data, &we)
		var fr fetchReq
		_ = unmarshal(data, &fr)
		_ = decodeAnswer(data, "w", "k", "n1", &we)
		_, _, _ = fetchKey(data)
	})
}

// TestFastPathCodecs checks the pooled codecs of the remote hit against the
// reflection-free encoders: the answer decoded in place, the key read
// without the arguments.
func TestFastPathCodecs(t *testing.T) {
	e := wireEntry{Label: "w", Key: "w@a=i1", Value: []byte("value"), ContentType: "text/plain", Owner: "n1",
		Created: 1, Relevance: 2, Available: 3, FillNanos: 4, Status: uint8(worker.Hit)}
	b, err := appendEntry([]byte("prefix"), &e)
	if err != nil {
		t.Fatal(err)
	}
	b = b[len("prefix"):]
	for _, owner := range []string{"n1", "n2"} {
		var got wireEntry
		if err := decodeAnswer(b, "w", "w@a=i1", owner, &got); err != nil || !reflect.DeepEqual(got, e) {
			t.Fatalf("asking as if the owner were %s: %+v %v", owner, got, err)
		}
	}
	for i := range len(b) {
		var got wireEntry
		if err := decodeAnswer(b[:i], "w", "k", "n1", &got); err == nil {
			t.Fatalf("an answer cut at %d bytes decoded", i)
		}
	}

	r, err := appendFetchReq(nil, &fetchReq{Label: "w", Key: "w@a=i1", Args: worker.Args{"a": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if l, k, ok := fetchKey(r); !ok || l != "w" || k != "w@a=i1" {
		t.Fatalf("fetchKey: %q %q %v", l, k, ok)
	}
	ta := 2
	r, _ = appendFetchReq(nil, &fetchReq{Label: "w", Key: "w@", Ov: wireSettings{TickAmount: &ta}})
	if _, _, ok := fetchKey(r); ok {
		t.Fatal("fetchKey accepted a fetch with overrides")
	}
}

func TestCheckMsgpackRefusesLiesAndDepth(t *testing.T) {
	good, _ := msgpack.Marshal(&wireEntry{Label: "w", Key: "k", Args: worker.Args{"a": []any{1, "x", nil, 1.5, true}}, Value: make([]byte, 300)})
	if err := checkMsgpack(good); err != nil {
		t.Fatalf("a good message refused: %v", err)
	}
	bad := map[string][]byte{
		"bin32 of 4 GiB":      {0xc6, 0xff, 0xff, 0xff, 0xff, 0x00},
		"map32 of 2^32 pairs": {0xdf, 0xff, 0xff, 0xff, 0xff},
		"str16 past the end":  {0xda, 0x00, 0x10, 'a'},
		"truncated array":     {0x93, 0x01},
		"reserved code":       {0xc1},
		"trailing bytes":      {0x01, 0x02},
		"empty":               {},
	}
	deep := make([]byte, 0, 200)
	for range 100 {
		deep = append(deep, 0x91)
	}
	bad["nested 100 deep"] = append(deep, 0x01)
	for name, b := range bad {
		if err := checkMsgpack(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
