package persist

// The queue of PutAsync records and the waiters of Flush: the writer
// (writer.go) takes its batches from it.

import (
	"time"
)

// pending is one async record waiting in the queue.
type pending struct {
	rec  Record
	at   time.Time // when it entered the queue
	dead bool      // superseded by a synchronous Put or Delete
}

// asyncQueue is the bounded FIFO of PutAsync records, with at most one
// pending record per key. It is not safe for concurrent use: Store.mu
// guards it.
type asyncQueue struct {
	items  []*pending // FIFO from head; dead entries are skipped
	head   int
	byKey  map[string]*pending
	live   int    // entries that are not dead
	pushed uint64 // positions ever pushed
	popped uint64 // positions ever popped (dead or not)
	// committed is the last position whose batch was committed (or, for a
	// dead entry, discarded); Flush waits for it.
	committed uint64
}

func (q *asyncQueue) slots() int { return len(q.items) - q.head }

func (q *asyncQueue) pushLocked(p *pending) {
	q.items = append(q.items, p)
	q.byKey[p.rec.Key] = p
	q.live++
	q.pushed++
}

// removeLocked marks the pending record of key dead, if there is one.
func (q *asyncQueue) removeLocked(key string) bool {
	p, ok := q.byKey[key]
	if !ok {
		return false
	}
	p.dead = true
	delete(q.byKey, key)
	q.live--
	q.trimLocked()
	return true
}

// trimLocked drops dead entries at the head and compacts the slice.
func (q *asyncQueue) trimLocked() {
	for q.head < len(q.items) && q.items[q.head].dead {
		q.items[q.head] = nil
		q.head++
		q.popped++
	}
	if q.head == len(q.items) {
		q.items = q.items[:0]
		q.head = 0
	} else if q.head >= 1024 && q.head*2 >= len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
}

// oldestLocked is the time the oldest live entry was queued.
func (q *asyncQueue) oldestLocked() time.Time {
	return q.items[q.head].at // trimLocked keeps a live entry at the head
}

// popLocked removes up to n live records from the head.
func (q *asyncQueue) popLocked(n int) []Record {
	out := make([]Record, 0, min(n, q.live))
	for len(out) < n && q.head < len(q.items) {
		p := q.items[q.head]
		q.items[q.head] = nil
		q.head++
		q.popped++
		if p.dead {
			continue
		}
		delete(q.byKey, p.rec.Key)
		q.live--
		out = append(out, p.rec)
	}
	q.trimLocked()
	return out
}

type flushWaiter struct {
	target uint64 // queue position that must be committed
	done   chan error
}
