package invalidation

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/cachenode/cachenode/worker"
)

// TestTracker runs the scenarios of testdata/*.txt against a Tracker and
// a Broadcast, in the manner of etcd-io/raft's interaction tests: each
// step is one command, and below it the decisions it led to. Run with
// -rewrite to regenerate the expected output after a deliberate change
// (and read the diff).
//
// Commands (events are named by their ID; event e has one target, the
// key of worker "foos" with args id=e):
//
//	limits seen=N log=N age=D bytes=N redeliver=D   a new Tracker with these limits
//	tick d=D                                      advance the logical clock
//	claim ev=E [owners]                           a delivery of E (owners: the first round of a broadcast)
//	finish token=T                                the delivery T has applied its scope
//	offer                                         what a push/pull exchange offers now
//	queue ev=E,F                                  events arrive by gossip or push/pull
//	batch                                         the background applier takes what is queued
//	redeliver ev=E to=M,N                         a broadcast's second round missed M and N
//	round ev=E alive=M,N                          a redelivery period passed; M and N are in the ring
//	ack ev=E member=M                             M acknowledged a redelivery of E
//	broadcast self=S others=M,N [lately=D]        start a broadcast (D: declared dead lately)
//	answer member=M [keys=K] [err]                M answered the current round
//	result [isolated] [dead=M,N]                  the broadcast's outcome
func TestTracker(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		s := &scenario{tr: NewTracker(Limits{}), now: time.Unix(1_000_000, 0)}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return s.step(t, d)
		})
	})
}

type scenario struct {
	tr  *Tracker
	now time.Time
	b   *Broadcast
}

func event(id string) Event {
	return Event{ID: id, Origin: "o", Targets: []Target{{Label: "foos", Kind: KindKey, Args: worker.Args{"id": id}}}}
}

func targets(ts []Target) string {
	var out []string
	for _, t := range ts {
		out = append(out, fmt.Sprintf("%s/%v", t.Label, t.Args["id"]))
	}
	return strings.Join(out, ",")
}

func list(d *datadriven.TestData, key string) []string {
	a, ok := d.Arg(key)
	if !ok {
		return nil
	}
	var out []string
	for _, v := range a.Vals {
		out = append(out, strings.Split(v, ",")...)
	}
	return out
}

func (s *scenario) step(t *testing.T, d *datadriven.TestData) string {
	var out strings.Builder
	switch d.Cmd {
	case "limits":
		var l Limits
		var age, redo string
		d.MaybeScanArgs(t, "seen", &l.Seen)
		d.MaybeScanArgs(t, "log", &l.Log)
		d.MaybeScanArgs(t, "bytes", &l.LogBytes)
		if d.MaybeScanArgs(t, "age", &age) {
			l.LogAge = mustDuration(t, age)
		}
		if d.MaybeScanArgs(t, "redeliver", &redo) {
			l.RedeliverFor = mustDuration(t, redo)
		}
		s.tr = NewTracker(l)
		return "ok"
	case "tick":
		var dur string
		d.ScanArgs(t, "d", &dur)
		s.now = s.now.Add(mustDuration(t, dur))
		return "ok"
	case "claim":
		var id string
		d.ScanArgs(t, "ev", &id)
		ev := event(id)
		c := s.tr.Claim(&ev, []byte(id), d.HasArg("owners"), s.now)
		if c.Token == 0 {
			out.WriteString("nothing to apply")
		} else {
			fmt.Fprintf(&out, "apply %s scope=%s token=%d", id, scopeName(c.Scope), c.Token)
		}
		if c.Wait != 0 {
			fmt.Fprintf(&out, "; wait for %d", c.Wait)
		}
		if c.First {
			out.WriteString("; first delivery")
		}
		return out.String()
	case "finish":
		var tok int
		d.ScanArgs(t, "token", &tok)
		s.tr.Finish(Token(tok))
		return "ok"
	case "offer":
		var ids []string
		for _, e := range s.tr.Offer(s.now) {
			ids = append(ids, e.ID)
		}
		if len(ids) == 0 {
			return "offer nothing"
		}
		return "offer " + strings.Join(ids, ",")
	case "queue":
		var evs []Queued
		for _, id := range list(d, "ev") {
			evs = append(evs, Queued{Event: event(id), Payload: []byte(id)})
		}
		if s.tr.Queue(evs) {
			return "start the applier"
		}
		return "no applier to start"
	case "batch":
		b, ok := s.tr.NextBatch(s.now)
		if !ok {
			return "queue empty: the applier stops"
		}
		fmt.Fprintf(&out, "took %d events\n", b.Events)
		if len(b.All.Targets) > 0 {
			fmt.Fprintf(&out, "apply all: %s\n", targets(b.All.Targets))
		}
		if len(b.Near.Targets) > 0 {
			fmt.Fprintf(&out, "apply near: %s\n", targets(b.Near.Targets))
		}
		if len(b.Waits) > 0 {
			fmt.Fprintf(&out, "wait for %v\n", b.Waits)
		}
		fmt.Fprintf(&out, "then finish %v", b.Tokens)
		return out.String()
	case "redeliver":
		var id string
		d.ScanArgs(t, "ev", &id)
		if s.tr.Redeliver(id, []byte(id), list(d, "to"), s.now) {
			return "start redelivering " + id
		}
		return "the redelivery of " + id + " takes them"
	case "round":
		var id string
		d.ScanArgs(t, "ev", &id)
		alive := list(d, "alive")
		to, payload, ok := s.tr.RedeliveryRound(id, s.now, func(m string) bool {
			for _, a := range alive {
				if a == m {
					return true
				}
			}
			return false
		})
		if !ok {
			return "forget " + id
		}
		return fmt.Sprintf("send %s to %s", payload, strings.Join(to, ","))
	case "ack":
		var id, m string
		d.ScanArgs(t, "ev", &id)
		d.ScanArgs(t, "member", &m)
		s.tr.Redelivered(id, m)
		return "ok"
	case "broadcast":
		var self string
		d.ScanArgs(t, "self", &self)
		s.b = NewBroadcast(self, list(d, "others"), list(d, "lately"))
		return s.roundOf()
	case "answer":
		var m string
		keys := 0
		d.ScanArgs(t, "member", &m)
		d.MaybeScanArgs(t, "keys", &keys)
		var err error
		if d.HasArg("err") {
			err = errors.New("timeout")
		}
		before, _ := s.b.Round()
		s.b.Answer(m, keys, err)
		after, ok := s.b.Round()
		if ok && after.Owners == before.Owners {
			return "wait for the others"
		}
		return s.roundOf()
	case "result":
		res, missed, localErr := s.b.Result(d.HasArg("isolated"), list(d, "dead"))
		fmt.Fprintf(&out, "keys=%d nodes=%d missing=%v redeliver to %v", res.Keys, res.Nodes, res.Missing, missed)
		if localErr != nil {
			fmt.Fprintf(&out, "; failed here: %v", localErr)
		}
		return out.String()
	}
	d.Fatalf(t, "unknown command %q", d.Cmd)
	return ""
}

func (s *scenario) roundOf() string {
	r, ok := s.b.Round()
	var out string
	switch {
	case !ok:
		return "broadcast done"
	case r.Owners:
		out = "send the owners' round to " + strings.Join(r.To, ",")
	default:
		out = "send the near-copy round to " + strings.Join(r.To, ",")
	}
	if len(r.Lately) > 0 {
		out += "; best effort to " + strings.Join(r.Lately, ",")
	}
	return out
}

func scopeName(s worker.Scope) string {
	switch s {
	case worker.ScopeOwned:
		return "owned"
	case worker.ScopeNear:
		return "near"
	case worker.ScopeAll:
		return "all"
	}
	return fmt.Sprintf("scope(%d)", s)
}

func mustDuration(t *testing.T, s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
