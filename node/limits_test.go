package node

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/node/peer"
	"github.com/cachenode/cachenode/worker"
)

// TestFetchOverLimitsRefused: a member's fetch obeys the limits of a read:
// a fetch of 3,000 arguments, or of 9 KiB of them, sent over the peer
// transport, is refused with the HTTP API's code before the getter runs
// or anything is kept; Get refuses them alike.
func TestFetchOverLimitsRefused(t *testing.T) {
	g := newCounting(0)
	c := newCluster(t, 2, withWorker(g, worker.Settings{}))
	n1, n2 := c.nodes[0], c.nodes[1]
	wide := worker.Args{"id": "wide"}
	for i := range 3000 {
		wide[fmt.Sprintf("a%d", i)] = fmt.Sprint(i)
	}
	large := worker.Args{"id": "large", "blob": string(make([]byte, 9<<10))}
	to := n1.route.Load().peers["n2"]
	for _, tc := range []struct {
		args worker.Args
		code string
		want error
	}{{wide, codeTooManyArgs, worker.ErrTooManyArgs}, {large, codeArgsTooLarge, worker.ErrArgsTooLarge}} {
		w2, _ := n2.Cache().Worker("w")
		key, err := w2.Key(tc.args)
		if err != nil {
			t.Fatal(err)
		}
		payload, err := msgpack.Marshal(&fetchReq{Label: "w", Key: key, Args: tc.args})
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range []byte{opFetch, opFetchFinal} {
			_, err = n1.call(context.Background(), to, op, payload)
			var re *peer.RemoteError
			if !errors.As(err, &re) || re.Code != tc.code {
				t.Errorf("%s of %v: %v, want a remote error %s", opNames[op], tc.args["id"], err, tc.code)
			}
		}
		if _, ok := n2.Cache().Lookup(key); ok {
			t.Errorf("n2 keeps an entry of the refused fetch %v", tc.args["id"])
		}
		for _, n := range c.nodes {
			if _, _, err := n.Get(context.Background(), "w", tc.args, worker.Settings{}); !errors.Is(err, tc.want) {
				t.Errorf("%s: Get of %v = %v, want %v", n.Name(), tc.args["id"], err, tc.want)
			}
		}
		if got := g.count(fmt.Sprint(tc.args["id"])); got != 0 {
			t.Errorf("the getter ran %d times for %v", got, tc.args["id"])
		}
	}
}

// FuzzFetchLimits: a fetch request as a member sends it, decoded and
// checked as handleFetch does: an error, never a panic, and a request that
// passes is within the bounds.
func FuzzFetchLimits(f *testing.F) {
	for _, args := range []worker.Args{{"a": 1}, {"a": []any{"x", []any{"y"}}}, {"blob": string(make([]byte, 9000))}} {
		b, _ := msgpack.Marshal(&fetchReq{Label: "w", Key: "w@k", Args: args})
		f.Add(b)
	}
	wide := worker.Args{}
	for i := range 100 {
		wide[fmt.Sprint(i)] = i
	}
	b, _ := msgpack.Marshal(&fetchReq{Label: "w", Key: "w@k", Args: wide})
	f.Add(b)
	limits := worker.DefaultLimits()
	f.Fuzz(func(t *testing.T, data []byte) {
		var req fetchReq
		if err := unmarshal(data, &req); err != nil {
			return
		}
		err := limits.Check(req.Args)
		if err == nil && len(req.Args) > limits.MaxArgs {
			t.Fatalf("%d arguments passed", len(req.Args))
		}
		if err != nil && limitCode(err) == codeBadRequest && !errors.Is(err, worker.ErrBadArgs) {
			t.Fatalf("Check failed with %v", err)
		}
	})
}
