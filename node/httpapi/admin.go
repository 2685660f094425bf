package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cachenode/cachenode/node/client"
	"github.com/cachenode/cachenode/persist"
	"github.com/cachenode/cachenode/worker"
)

// recordsInfo reads the state of the node's records.
func (s *Server) recordsInfo() client.RecordsInfo {
	h := s.node.Records()
	ri := client.RecordsInfo{State: "ok", Unwritten: s.node.UnwrittenRecords(), MovedAside: h.MovedAside}
	if h.Degraded {
		since := h.Since
		ri.State, ri.Since, ri.Cause, ri.ReopenAttempts = "degraded", &since, h.Cause, h.ReopenAttempts
	}
	return ri
}

// ringInfo reads the node's view of the ring.
func (s *Server) ringInfo() client.RingInfo {
	n := s.node
	info := client.RingInfo{Self: n.Name(), Ready: n.Ready(), Members: []client.MemberInfo{}, Partitions: []string{}, Records: s.recordsInfo()}
	r := n.Ring()
	if r != nil {
		c := r.Config()
		info.Version, info.PartitionCount = r.Version(), r.PartitionCount()
		info.Ring = client.RingConfig{PartitionCount: c.PartitionCount, ReplicationFactor: c.ReplicationFactor, Load: c.Load}
		info.Partitions = r.Partitions()
	}
	for _, m := range n.Members() {
		mi := client.MemberInfo{Name: m.Name, Gossip: m.Gossip, Peer: m.Peer, HTTP: m.HTTP, State: string(m.State), Since: m.Since}
		if r != nil {
			mi.Partitions = len(r.PartitionsOf(m.Name))
		}
		if m.Name == n.Name() {
			k := s.ownedKeys()
			mi.Keys = &k
		}
		info.Members = append(info.Members, mi)
	}
	return info
}

// ownedKeys counts the entries in memory that this node filled as owner
// (near-cache copies of other owners' keys are not counted).
func (s *Server) ownedKeys() int {
	self, k := s.node.Name(), 0
	for e := range s.node.Cache().EntriesWithoutArgs() {
		if e.Owner == self {
			k++
		}
	}
	return k
}

func (s *Server) handleRing(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.ringInfo())
}

// WorkerInfo is one worker in the answer of GET /admin/workers.
type WorkerInfo struct {
	Label  string       `json:"label"`
	Config WorkerConfig `json:"config"`
	Stats  worker.Stats `json:"stats"`
	// OriginLimit is the state of the limiter of the worker's origin
	// requests (shared by the workers of one origin host); absent when
	// they are not bounded.
	OriginLimit *worker.LimiterStats `json:"origin_limit,omitempty"`
}

// WorkerConfig is the configuration in force of a worker, durations in Go
// form ("100ms").
type WorkerConfig struct {
	Origin                string  `json:"origin,omitempty"`
	Expires               string  `json:"expires"`
	Tick                  string  `json:"tick"`
	TickAmount            int     `json:"tick_amount"`
	IsConcurrent          bool    `json:"is_concurrent"`
	RelevanceInvalidation bool    `json:"relevance_invalidation"`
	RelevanceExpires      string  `json:"relevance_expires"`
	DelayInvalidation     bool    `json:"delay_invalidation"`
	DelayCountdown        string  `json:"delay_countdown"`
	DelayLogging          bool    `json:"delay_logging"`
	CachedEntity          bool    `json:"cached_entity"`
	Action                string  `json:"action"`
	Sweep                 bool    `json:"sweep"`
	SweepInterval         string  `json:"sweep_interval,omitempty"`
	EarlyRefresh          float64 `json:"early_refresh,omitempty"`
	FillTimeout           string  `json:"fill_timeout,omitempty"`
	// MaxExpires bounds the _expires of a read; Overrides is "admin" or
	// "open" (who may send _is_concurrent=false and _delay_*).
	MaxExpires string `json:"max_expires"`
	Overrides  string `json:"overrides"`
}

// Originer is implemented by getters that fill from an HTTP origin; the
// admin endpoints show the origin.
type Originer interface {
	Origin() string
}

func workerInfo(w *worker.Worker) WorkerInfo {
	p, c := w.Policy(), w.Config()
	wc := WorkerConfig{
		Expires: p.Expires.String(), Tick: p.Tick.String(), TickAmount: p.TickAmount, IsConcurrent: p.IsConcurrent,
		RelevanceInvalidation: p.RelevanceInvalidation, RelevanceExpires: p.RelevanceExpires.String(),
		DelayInvalidation: p.DelayInvalidation, DelayCountdown: p.DelayCountdown.String(),
		DelayLogging: p.DelayLogging, CachedEntity: p.CachedEntity, Action: c.Action.String(),
		Sweep: c.Sweep, EarlyRefresh: c.EarlyRefresh,
	}
	if c.Sweep && c.SweepInterval > 0 {
		wc.SweepInterval = c.SweepInterval.String()
	}
	if c.FillTimeout > 0 {
		wc.FillTimeout = c.FillTimeout.String()
	}
	wc.MaxExpires, wc.Overrides = p.Expires.String(), "admin"
	if c.MaxExpires > 0 {
		wc.MaxExpires = c.MaxExpires.String()
	}
	if c.OpenOverrides {
		wc.Overrides = "open"
	}
	if o, ok := c.Getter.(Originer); ok {
		wc.Origin = o.Origin()
	}
	wi := WorkerInfo{Label: w.Label(), Config: wc, Stats: w.Stats()}
	if l := w.Limiter(); l != nil {
		ls := l.Stats()
		wi.OriginLimit = &ls
	}
	return wi
}

func (s *Server) handleWorkers(w http.ResponseWriter, r *http.Request) {
	out := []WorkerInfo{}
	for _, wk := range s.node.Cache().Workers() {
		out = append(out, workerInfo(wk))
	}
	writeJSON(w, http.StatusOK, map[string]any{"workers": out})
}

// Record is one created-cache record in the answer of GET /admin/records.
type Record struct {
	Label       string         `json:"label"`
	Key         string         `json:"key"`
	Args        map[string]any `json:"args"`
	Owner       string         `json:"owner"`
	CreatedAt   time.Time      `json:"created_at"`
	RelevanceTo *time.Time     `json:"relevance_to"`
	AvailableTo *time.Time     `json:"available_to"`
	FillMS      float64        `json:"fill_ms"`
	Size        int64          `json:"size"`
}

func recordOf(r persist.Record) Record {
	out := Record{Label: r.Label, Key: r.Key, Args: r.Args, Owner: r.Owner, CreatedAt: r.CreatedAt,
		FillMS: float64(r.FillDuration) / float64(time.Millisecond), Size: r.Size}
	if !r.RelevanceTo.IsZero() {
		t := r.RelevanceTo
		out.RelevanceTo = &t
	}
	if !r.AvailableTo.IsZero() {
		t := r.AvailableTo
		out.AvailableTo = &t
	}
	if out.Args == nil {
		out.Args = map[string]any{}
	}
	return out
}

// Records bounds.
const (
	defaultRecordsLimit = 100
	maxRecordsLimit     = 1000
)

// handleRecords answers GET /admin/records?label=L&limit=N&after=KEY: the
// records this node owns, ordered by label then key. Without label, the
// pages go through every label in turn; next is the key to pass as after.
func (s *Server) handleRecords(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for name := range q {
		switch name {
		case "label", "limit", "after":
		default:
			writeError(w, http.StatusBadRequest, "bad_request", "unknown parameter "+strconv.Quote(name)+" (known: label, limit, after)")
			return
		}
	}
	limit := defaultRecordsLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxRecordsLimit {
			writeError(w, http.StatusBadRequest, "bad_request", "limit must be an integer from 1 to "+strconv.Itoa(maxRecordsLimit))
			return
		}
		limit = n
	}
	label, after := q.Get("label"), q.Get("after")
	if label != "" {
		if err := worker.ValidLabel(label); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "label: "+err.Error())
			return
		}
		if _, ok := s.node.Cache().Worker(label); !ok {
			writeError(w, http.StatusNotFound, "unknown_worker", "no worker "+strconv.Quote(label))
			return
		}
	}
	if after != "" && label != "" && !strings.HasPrefix(after, label+"@") {
		writeError(w, http.StatusBadRequest, "bad_request", "after must be a key of label "+strconv.Quote(label))
		return
	}
	recs, next, err := s.listRecords(label, after, limit)
	if err != nil {
		code, word := StatusOf(err)
		writeError(w, code, word, err.Error())
		return
	}
	out := map[string]any{"records": recs, "next": nil}
	if next != "" {
		out["next"] = next
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) listRecords(label, after string, limit int) ([]Record, string, error) {
	store := s.node.Store()
	out := []Record{}
	var labels []string
	if label != "" {
		labels = []string{label}
	} else {
		all, err := store.Labels()
		if err != nil {
			return nil, "", err
		}
		labels = all
		if after != "" {
			// Keys are label@…: the cursor names the label to resume in.
			from, _, _ := strings.Cut(after, "@")
			for i, l := range all {
				if l >= from {
					labels = all[i:]
					break
				}
				labels = nil
			}
			if len(labels) > 0 && labels[0] != from {
				after = ""
			}
		}
	}
	for i, l := range labels {
		page, next, err := store.List(l, after, limit-len(out))
		if err != nil {
			return nil, "", err
		}
		after = ""
		for _, rec := range page {
			out = append(out, recordOf(rec))
		}
		if next != "" {
			return out, next, nil
		}
		if len(out) == limit {
			if i+1 < len(labels) || next != "" {
				// The page is full at the end of a label: resume at the
				// start of the next one.
				return out, out[len(out)-1].Key, nil
			}
			return out, "", nil
		}
	}
	return out, "", nil
}
