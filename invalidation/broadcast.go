package invalidation

import (
	"errors"
	"slices"
)

// Broadcast decides the rounds of one invalidation sent to every live
// member, and its result. There are two rounds: the keys each member owns
// first ([worker.ScopeOwned]), then, once every owner answered, the
// near-cache copies. A non-owner that dropped its copy fetches the key
// again from its owner, which by then has rebuilt it: with one round a
// non-owner reached before the owner could fetch the old value and keep
// it (chaos K8).
//
// A Broadcast does no I/O and is not safe for concurrent use: the caller
// sends each [Round] (applying it here too), reports every answer with
// [Broadcast.Answer], and asks for the next round.
type Broadcast struct {
	self    string
	members []string // self first
	lately  []string // declared dead lately
	owners  bool     // the owners' round is the current one
	done    bool
	waiting map[string]bool // members of the current round not answered yet
	failed  map[string]bool
	missed  []string // members that did not acknowledge the second round
	res     Result
	ownErr  error // this node's error in the owners' round
	selfErr error
}

// Round is one round of a broadcast: the members to send it to (this
// node included, applying it locally) and whether it is the owners' round.
type Round struct {
	Owners bool
	To     []string
	// Lately are the members declared dead lately: they get the round
	// too, best effort, and their answers count for nothing. A member can
	// be declared dead while it is alive and serving (a stall just long
	// enough, a suspicion it refuted too late), and until it learns so it
	// must not keep serving what the event invalidates.
	Lately []string
}

// NewBroadcast starts a broadcast from self to the other live members,
// and, best effort, to the members declared dead lately.
func NewBroadcast(self string, others, lately []string) *Broadcast {
	b := &Broadcast{self: self, members: append([]string{self}, others...), lately: slices.Clone(lately), owners: true,
		failed: make(map[string]bool)}
	b.start()
	return b
}

func (b *Broadcast) start() {
	b.waiting = make(map[string]bool, len(b.members))
	for _, m := range b.members {
		b.waiting[m] = true
	}
}

// Round returns the round to send now; ok is false once both are done.
// The second round is returned only after every member answered the
// first.
func (b *Broadcast) Round() (r Round, ok bool) {
	if b.done {
		return Round{}, false
	}
	return Round{Owners: b.owners, To: slices.Clone(b.members), Lately: slices.Clone(b.lately)}, true
}

// Answer records member's answer to the current round: the keys it
// applied and its error (nil: acknowledged). The answer of this node is
// its local application. A member's second answer to a round, or one of
// a member not in To (one of Lately among them), is ignored.
func (b *Broadcast) Answer(member string, keys int, err error) {
	if b.done || !b.waiting[member] {
		return
	}
	delete(b.waiting, member)
	b.res.Keys += keys
	switch {
	case member == b.self && b.owners:
		b.ownErr = err
	case member == b.self:
		b.selfErr = errors.Join(b.ownErr, err)
		if b.selfErr == nil {
			b.res.Nodes++
		}
	case err != nil:
		b.failed[member] = true
		if !b.owners {
			b.missed = append(b.missed, member)
		}
	case !b.owners && !b.failed[member]:
		b.res.Nodes++
	}
	if len(b.waiting) > 0 {
		return
	}
	if b.owners {
		b.owners = false
		b.start()
		return
	}
	b.done = true
}

// Result returns the outcome once both rounds are done: missed are the
// members to redeliver the event to (they did not acknowledge the second
// round), and localErr this node's error applying it. A member that
// missed the owners' round but took the second applied the whole event,
// but maybe after another member let a reader fetch its old value: it is
// in Result.Missing too.
//
// isolated says this node is on the minority side of a partition: the
// members held for dead (dead) may well be alive and serving there, the
// event did not reach them, and the caller must hear it (chaos K5); they
// get the event on push/pull at the heal.
func (b *Broadcast) Result(isolated bool, dead []string) (res Result, missed []string, localErr error) {
	res = b.res
	for name := range b.failed {
		res.Missing = append(res.Missing, name)
	}
	slices.Sort(res.Missing)
	if isolated {
		res.Missing = append(res.Missing, dead...)
	}
	return res, slices.Clone(b.missed), b.selfErr
}
