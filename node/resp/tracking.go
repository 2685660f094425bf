package resp

import (
	"container/list"
	"sync"
	"time"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/worker"
)

// DefaultTrackingTableMaxKeys bounds the keys the tracking table holds,
// as Redis's tracking-table-max-keys does; over it, the oldest are
// invalidated (their clients told to forget them) and forgotten.
const DefaultTrackingTableMaxKeys = 1_000_000

// tracker is the server's tracking table: per cached key (the worker's
// key), the connections that read it while tracking, and under which key
// strings (a client's cache is keyed by what it sent: "items?id=1&x=2" and
// "items?x=2&id=1" are one entry here, two in the clients).
type tracker struct {
	s   *Server
	max int

	mu    sync.Mutex
	keys  map[string]*tracked // worker key → entry; guarded by mu
	order *list.List          // of *tracked, oldest first; guarded by mu
	// byConn: connection ID → the entries it reads, so that a closing
	// connection is forgotten without a scan of the table. Guarded by mu.
	byConn map[int64]map[*tracked]struct{}
}

type tracked struct {
	wkey  string
	label string
	args  worker.Args
	owner string // the owner when it was served ("" not known yet)
	// clients: connection ID → the key strings it read this key as.
	clients map[int64]map[string]struct{}
	elem    *list.Element
	timer   *time.Timer // fires when the served value stops being fresh
	until   time.Time
}

func newTracker(s *Server, max int) *tracker {
	return &tracker{s: s, max: max, keys: make(map[string]*tracked), order: list.New(),
		byConn: make(map[int64]map[*tracked]struct{})}
}

// track records that connection id reads key (its worker key wkey) and
// will cache the answer. It is called before the read, so that an
// invalidation during the read is not missed (see conn.track).
func (t *tracker) track(id int64, key, wkey, label string, args worker.Args) {
	var evicted []*tracked
	t.mu.Lock()
	e := t.keys[wkey]
	if e == nil {
		e = &tracked{wkey: wkey, label: label, args: args, clients: make(map[int64]map[string]struct{})}
		t.keys[wkey] = e
		e.elem = t.order.PushBack(e)
		for t.order.Len() > t.max {
			old := t.order.Front().Value.(*tracked)
			t.removeLocked(old)
			evicted = append(evicted, old)
		}
	} else {
		t.order.MoveToBack(e.elem)
	}
	ks := e.clients[id]
	if ks == nil {
		ks = make(map[string]struct{}, 1)
		e.clients[id] = ks
		mine := t.byConn[id]
		if mine == nil {
			mine = make(map[*tracked]struct{})
			t.byConn[id] = mine
		}
		mine[e] = struct{}{}
	}
	ks[key] = struct{}{}
	t.mu.Unlock()
	t.send(evicted)
}

// served records the entry a tracked read answered: its owner (a ring
// change that moves the key invalidates it) and when it stops being fresh
// (it is invalidated then: the next read gets another value).
func (t *tracker) served(wkey string, e *worker.Entry, pol worker.Policy, owner string) {
	until := e.AvailableTo
	if pol.RelevanceInvalidation {
		if r := e.CreatedAt.Add(pol.RelevanceExpires); r.Before(until) {
			until = r
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	te := t.keys[wkey]
	if te == nil {
		return // invalidated meanwhile: the connection was told
	}
	te.owner = owner
	if te.timer != nil && !until.Before(te.until) {
		return // a fresher answer than this one is already timed
	}
	if te.timer != nil {
		te.timer.Stop()
	}
	te.until = until
	d := time.Until(until)
	if d < 0 {
		d = 0
	}
	te.timer = time.AfterFunc(d, func() { t.expire(te) })
}

func (t *tracker) expire(te *tracked) {
	t.mu.Lock()
	if t.keys[te.wkey] != te {
		t.mu.Unlock()
		return
	}
	t.removeLocked(te)
	t.mu.Unlock()
	t.send([]*tracked{te})
}

// removeLocked takes te out of the table; t.mu is held.
func (t *tracker) removeLocked(te *tracked) {
	for id := range te.clients {
		if mine := t.byConn[id]; mine != nil {
			delete(mine, te)
			if len(mine) == 0 {
				delete(t.byConn, id)
			}
		}
	}
	delete(t.keys, te.wkey)
	t.order.Remove(te.elem)
	if te.timer != nil {
		te.timer.Stop()
	}
}

// forget drops connection id from the table (it closed, or turned
// tracking off).
func (t *tracker) forget(id int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for te := range t.byConn[id] {
		delete(te.clients, id)
		if len(te.clients) == 0 {
			t.removeLocked(te)
		}
	}
	delete(t.byConn, id)
}

// len is the number of keys tracked.
func (t *tracker) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.keys)
}

// dropped is the node's OnDropped listener: it finds the tracked keys the
// change covers, takes them out of the table and tells their connections,
// before it returns (so before the node acknowledges the change).
func (t *tracker) dropped(d node.Dropped) {
	if d.All {
		t.mu.Lock()
		var all []*tracked
		for _, te := range t.keys {
			all = append(all, te)
			t.removeLocked(te)
		}
		t.mu.Unlock()
		t.send(all)
		return
	}
	var hit []*tracked
	t.mu.Lock()
	if d.Ring {
		for _, te := range t.keys {
			if te.owner != "" && t.s.node.Owner(te.wkey) != te.owner {
				hit = append(hit, te)
			}
		}
	}
	for _, tg := range d.Targets {
		switch tg.Kind {
		case invalidation.KindKey:
			w, ok := t.s.node.Cache().Worker(tg.Label)
			if !ok {
				continue
			}
			k, err := w.Key(tg.Args)
			if err != nil {
				continue
			}
			if te := t.keys[k]; te != nil {
				hit = append(hit, te)
			}
		case invalidation.KindAll, invalidation.KindMatch:
			for _, te := range t.keys {
				if te.label != tg.Label {
					continue
				}
				if tg.Kind == invalidation.KindMatch {
					mv, err := worker.MatchValues(te.args)
					if err != nil || !invalidation.Matches(mv, tg.Match) {
						continue
					}
				}
				hit = append(hit, te)
			}
		}
	}
	out := hit[:0]
	for _, te := range hit {
		if t.keys[te.wkey] == te { // each once
			t.removeLocked(te)
			out = append(out, te)
		}
	}
	t.mu.Unlock()
	t.send(out)
}

// send tells each connection that read one of tes to forget the key
// strings it read them as.
func (t *tracker) send(tes []*tracked) {
	if len(tes) == 0 {
		return
	}
	byConn := make(map[int64][]string)
	for _, te := range tes {
		for id, ks := range te.clients {
			for k := range ks {
				byConn[id] = append(byConn[id], k)
			}
		}
		t.s.stats.trackingPushes.Add(1)
	}
	// Each connection at once: one that does not read its socket holds
	// the others up for no longer than its own write timeout.
	var wg sync.WaitGroup
	for id, keys := range byConn {
		if c := t.s.conn(id); c != nil {
			wg.Go(func() { c.invalidate(keys) })
		}
	}
	wg.Wait()
}
