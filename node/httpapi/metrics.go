package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/worker"
)

// Metrics holds the Prometheus registry of one node and the short lists of
// recent fills and invalidations that the admin page shows. Create it before
// the node, so that the node's OnPeerCall and the workers' getters can
// report to it (ObservePeerCall, WrapGetter), and pass it to New.
//
// Each Metrics has its own registry: nothing is registered in Prometheus's
// process-wide default registry.
type Metrics struct {
	reg *prometheus.Registry

	fillSeconds *prometheus.HistogramVec
	peerSeconds *prometheus.HistogramVec
	httpSeconds *prometheus.HistogramVec
	httpTotal   *prometheus.CounterVec
	invTotal    *prometheus.CounterVec
	shed        prometheus.Counter

	securityOnce sync.Once
	attachOnce   sync.Once

	mu struct {
		sync.Mutex
		fills []recentFill         // ring buffer, newest last; guarded by mu
		invs  []recentInvalidation // ring buffer, newest last; guarded by mu
	}
}

// recentCap is how many fills and invalidations the admin page lists.
const recentCap = 20

// recentFill is one line of the admin page's list of fills.
type recentFill struct {
	At       time.Time
	Label    string
	Key      string
	Duration time.Duration
	Size     int64
	Err      string
}

// NewMetrics returns metrics with a new registry holding the Go runtime and
// process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.fillSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cachenode_fill_duration_seconds",
		Help:    "Duration of the getter runs (origin requests) of this node, by worker and result.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"worker", "result"})
	m.peerSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cachenode_peer_call_duration_seconds",
		Help:    "Duration of the peer-transport calls this node made, by operation, peer and result.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"op", "peer", "result"})
	m.httpSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cachenode_http_request_duration_seconds",
		Help:    "Duration of the HTTP requests served, by route.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	}, []string{"route"})
	m.httpTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cachenode_http_requests_total",
		Help: "HTTP requests served, by route and status code.",
	}, []string{"route", "code"})
	m.invTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cachenode_invalidation_requests_total",
		Help: "Invalidation requests received over HTTP, by result (applied, queued, incomplete, error).",
	}, []string{"result"})
	m.shed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cachenode_http_shed_total",
		Help: "Requests answered 503 overloaded at once because the node's cap on concurrent requests was reached.",
	})
	m.reg.MustRegister(m.fillSeconds, m.peerSeconds, m.httpSeconds, m.httpTotal, m.invTotal, m.shed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry, to register more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// attach registers the collector of the node's state; only the first node
// attached is collected.
func (m *Metrics) attach(n *node.Node) {
	m.attachOnce.Do(func() { m.reg.MustRegister(&nodeCollector{n: n}) })
}

// attachSecurity registers the collector of the server's exposure and its
// node's peer refusals; only the first server attached is collected.
func (m *Metrics) attachSecurity(s *Server) {
	m.securityOnce.Do(func() { m.reg.MustRegister(&securityCollector{s: s}) })
}

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// ObservePeerCall records one peer-transport call; it has the signature of
// node.Config.OnPeerCall.
func (m *Metrics) ObservePeerCall(op, peer string, d time.Duration, err error) {
	m.peerSeconds.WithLabelValues(op, peer, result(err)).Observe(d.Seconds())
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// WrapGetter returns g timed: each run is observed in the fill histogram
// and listed among the admin page's recent fills. A getter that is an
// Originer stays one.
func (m *Metrics) WrapGetter(label string, g worker.Getter) worker.Getter {
	tg := &timedGetter{m: m, label: label, g: g}
	if o, ok := g.(Originer); ok {
		return &timedOrigin{timedGetter: tg, o: o}
	}
	return tg
}

type timedGetter struct {
	m     *Metrics
	label string
	g     worker.Getter
}

type timedOrigin struct {
	*timedGetter
	o Originer
}

func (t *timedOrigin) Origin() string { return t.o.Origin() }

func (t *timedGetter) Get(ctx context.Context, args worker.Args) (worker.Value, error) {
	start := time.Now()
	v, err := t.g.Get(ctx, args)
	d := time.Since(start)
	t.m.fillSeconds.WithLabelValues(t.label, result(err)).Observe(d.Seconds())
	key, _ := worker.KeyOf(t.label, args)
	f := recentFill{At: start, Label: t.label, Key: key, Duration: d, Size: int64(len(v.Data))}
	if err != nil {
		f.Err = err.Error()
	}
	t.m.mu.Lock()
	t.m.mu.fills = pushRecent(t.m.mu.fills, f)
	t.m.mu.Unlock()
	return v, err
}

func pushRecent[T any](s []T, v T) []T {
	if len(s) == recentCap {
		copy(s, s[1:])
		s = s[:len(s)-1]
	}
	return append(s, v)
}

func (m *Metrics) observeRequest(route string, code int, d time.Duration) {
	m.httpTotal.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.httpSeconds.WithLabelValues(route).Observe(d.Seconds())
}

func (m *Metrics) recordInvalidation(req invalidation.Request, res invalidation.Result, err error) {
	ri := recentInvalidation{At: time.Now(), What: describeRequest(req)}
	switch {
	case err != nil:
		ri.Err = err.Error()
		m.invTotal.WithLabelValues("error").Inc()
	case res.Queued != 0:
		ri.Result = "queued as " + strconv.FormatUint(res.Queued, 10)
		m.invTotal.WithLabelValues("queued").Inc()
	case len(res.Missing) > 0:
		ri.Result = plural(res.Keys, "key") + " on " + plural(res.Nodes, "node") + "; missing " + strconv.Itoa(len(res.Missing))
		m.invTotal.WithLabelValues("incomplete").Inc()
	default:
		ri.Result = plural(res.Keys, "key") + " on " + plural(res.Nodes, "node")
		m.invTotal.WithLabelValues("applied").Inc()
	}
	m.mu.Lock()
	m.mu.invs = pushRecent(m.mu.invs, ri)
	m.mu.Unlock()
}

// recent returns copies of the recent fills and invalidations, newest first.
func (m *Metrics) recent() ([]recentFill, []recentInvalidation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fills := make([]recentFill, len(m.mu.fills))
	for i, f := range m.mu.fills {
		fills[len(fills)-1-i] = f
	}
	invs := make([]recentInvalidation, len(m.mu.invs))
	for i, v := range m.mu.invs {
		invs[len(invs)-1-i] = v
	}
	return fills, invs
}

// nodeCollector reads the node's counters and gauges at scrape time.
type nodeCollector struct{ n *node.Node }

var (
	workerCounters = []struct {
		name, help string
		get        func(worker.Stats) int64
	}{
		{"cachenode_worker_hits_total", "Reads answered from a fresh entry.", func(s worker.Stats) int64 { return s.Hits }},
		{"cachenode_worker_misses_total", "Reads that found no entry.", func(s worker.Stats) int64 { return s.Misses }},
		{"cachenode_worker_stale_total", "Reads that found an entry past its relevance deadline.", func(s worker.Stats) int64 { return s.StaleHits }},
		{"cachenode_worker_fills_total", "Successful getter runs on this node.", func(s worker.Stats) int64 { return s.Fills }},
		{"cachenode_worker_fill_errors_total", "Failed getter runs and owner fill errors.", func(s worker.Stats) int64 { return s.FillErrors }},
		{"cachenode_worker_fallbacks_total", "Values computed here because the owner could not be reached.", func(s worker.Stats) int64 { return s.Fallbacks }},
		{"cachenode_worker_peer_fetches_total", "Values asked from their owner.", func(s worker.Stats) int64 { return s.PeerFetches }},
		{"cachenode_worker_waits_total", "Reads that waited for a computation already running.", func(s worker.Stats) int64 { return s.Waits }},
		{"cachenode_worker_wait_timeouts_total", "Waits whose budget ran out.", func(s worker.Stats) int64 { return s.WaitTimeouts }},
		{"cachenode_worker_refreshes_total", "Early (XFetch) refreshes started.", func(s worker.Stats) int64 { return s.Refreshes }},
		{"cachenode_worker_invalidations_total", "Keys invalidated.", func(s worker.Stats) int64 { return s.Invalidations }},
		{"cachenode_worker_discarded_total", "Fills not kept because an invalidation came while they ran.", func(s worker.Stats) int64 { return s.Discarded }},
		{"cachenode_worker_invalidation_refreshed_total", "Owned entries an invalidation rebuilt (read recently).", func(s worker.Stats) int64 { return s.InvalidationRefreshed }},
		{"cachenode_worker_invalidation_dropped_total", "Owned entries an invalidation dropped (not read recently).", func(s worker.Stats) int64 { return s.InvalidationDropped }},
		{"cachenode_worker_origin_busy_total", "Fills answered origin_busy without reaching the origin (queue wait past the budget, or queue full).", func(s worker.Stats) int64 { return s.OriginBusy }},
		{"cachenode_worker_origin_back_pressure_total", "Origin answers asking to slow down (429, 503), honoured and never cached.", func(s worker.Stats) int64 { return s.BackPressure }},
	}
	workerDescs = func() []*prometheus.Desc {
		ds := make([]*prometheus.Desc, len(workerCounters))
		for i, c := range workerCounters {
			ds[i] = prometheus.NewDesc(c.name, c.help, []string{"worker"}, nil)
		}
		return ds
	}()
	descMembers    = prometheus.NewDesc("cachenode_members", "Members this node knows, by state.", []string{"state"}, nil)
	descRingSize   = prometheus.NewDesc("cachenode_ring_members", "Members in this node's ring.", nil, nil)
	descPartitions = prometheus.NewDesc("cachenode_ring_partitions_owned", "Partitions this node owns.", nil, nil)
	descRingVer    = prometheus.NewDesc("cachenode_ring_version_info", "The ring version this node uses, as a label.", []string{"version"}, nil)
	descReady      = prometheus.NewDesc("cachenode_ready", "1 when the node has joined and its ring is ready.", nil, nil)
	descEntries    = prometheus.NewDesc("cachenode_cache_entries", "Entries held in memory (owned and near-cache copies).", nil, nil)
	descBytes      = prometheus.NewDesc("cachenode_cache_bytes", "Weight of the entries held in memory, in bytes.", nil, nil)
	descRecords    = prometheus.NewDesc("cachenode_records_written_total", "Created-cache records written, by mode.", []string{"mode"}, nil)
	descRecDropped = prometheus.NewDesc("cachenode_records_dropped_total", "Background record writes dropped (queue full) or lost (errors).", nil, nil)
	descRecExpired = prometheus.NewDesc("cachenode_records_expired_total", "Records removed because their key expired.", nil, nil)
	descRecDegr    = prometheus.NewDesc("cachenode_records_degraded", "1 while a storage fault keeps the records closed (the node serves from memory and reopens them with backoff).", nil, nil)
	descRecUnkept  = prometheus.NewDesc("cachenode_entries_unrecorded_dropped_total", "Entries not kept because their record could not be queued (the records writer behind, or in-memory records over their budget): an entry without a record would escape invalidations by rule.", nil, nil)
	descRecUnwrit  = prometheus.NewDesc("cachenode_records_unwritten_total", "Fills of workers without delay_logging answered while the records were degraded, without the record promised before the answer.", nil, nil)
	descMemory     = prometheus.NewDesc("cachenode_memory_bytes", "Heap held by the node's cached state, by part (entries, records, pebble, tracked_keys), as the --memory bound counts it.", []string{"part"}, nil)
	descRecFaults  = prometheus.NewDesc("cachenode_records_faults_total", "Storage faults that degraded the records.", nil, nil)

	originLabels     = []string{"origin"}
	descOriginLimit  = prometheus.NewDesc("cachenode_origin_limit", "Origin requests allowed in flight, per origin limiter.", originLabels, nil)
	descOriginFlight = prometheus.NewDesc("cachenode_origin_in_flight", "Origin requests in flight now.", originLabels, nil)
	descOriginPeak   = prometheus.NewDesc("cachenode_origin_in_flight_peak", "The most origin requests ever in flight at once.", originLabels, nil)
	descOriginQueued = prometheus.NewDesc("cachenode_origin_queued", "Fills waiting for an origin slot, by priority (read, refresh).", []string{"origin", "priority"}, nil)
	descOriginBusy   = prometheus.NewDesc("cachenode_origin_busy_total", "Fills turned away by the origin's limiter (origin_busy).", originLabels, nil)
	descOriginBP     = prometheus.NewDesc("cachenode_origin_back_pressure_total", "Origin answers asking to slow down (429, 503).", originLabels, nil)
)

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range workerDescs {
		ch <- d
	}
	for _, d := range []*prometheus.Desc{descMembers, descRingSize, descPartitions, descRingVer, descReady,
		descEntries, descBytes, descRecords, descRecDropped, descRecExpired, descRecDegr, descRecUnwrit, descRecUnkept, descRecFaults, descMemory,
		descOriginLimit, descOriginFlight, descOriginPeak, descOriginQueued, descOriginBusy, descOriginBP} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	seen := make(map[*worker.Limiter]bool)
	for _, w := range n.Cache().Workers() {
		st := w.Stats()
		for i, wc := range workerCounters {
			ch <- prometheus.MustNewConstMetric(workerDescs[i], prometheus.CounterValue, float64(wc.get(st)), w.Label())
		}
		// A limiter shared by the workers of one origin is reported once.
		if l := w.Limiter(); l != nil && !seen[l] {
			seen[l] = true
			collectLimiter(ch, l.Stats())
		}
	}
	states := map[string]int{string(node.StateAlive): 0, string(node.StateDead): 0, string(node.StateLeft): 0}
	for _, m := range n.Members() {
		states[string(m.State)]++
	}
	for st, k := range states {
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(k), st)
	}
	if r := n.Ring(); r != nil {
		ch <- prometheus.MustNewConstMetric(descRingSize, prometheus.GaugeValue, float64(r.Len()))
		ch <- prometheus.MustNewConstMetric(descPartitions, prometheus.GaugeValue, float64(len(r.PartitionsOf(n.Name()))))
		ch <- prometheus.MustNewConstMetric(descRingVer, prometheus.GaugeValue, 1, strconv.FormatUint(r.Version(), 10))
	}
	ready := 0.0
	if n.Ready() {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
	ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(n.Cache().Len()))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(n.Cache().Bytes()))
	ss := n.Store().Stats()
	ch <- prometheus.MustNewConstMetric(descRecords, prometheus.CounterValue, float64(ss.WrittenSync), "sync")
	ch <- prometheus.MustNewConstMetric(descRecords, prometheus.CounterValue, float64(ss.WrittenAsync), "async")
	ch <- prometheus.MustNewConstMetric(descRecDropped, prometheus.CounterValue, float64(ss.Dropped+ss.AsyncErrors))
	ch <- prometheus.MustNewConstMetric(descRecExpired, prometheus.CounterValue, float64(ss.Expired))
	h := n.Records()
	degraded := 0.0
	if h.Degraded {
		degraded = 1
	}
	ch <- prometheus.MustNewConstMetric(descRecDegr, prometheus.GaugeValue, degraded)
	ch <- prometheus.MustNewConstMetric(descRecUnwrit, prometheus.CounterValue, float64(n.UnwrittenRecords()))
	ch <- prometheus.MustNewConstMetric(descRecUnkept, prometheus.CounterValue, float64(n.UnrecordedDrops()))
	ch <- prometheus.MustNewConstMetric(descRecFaults, prometheus.CounterValue, float64(h.Faults))
	for part, b := range n.MemoryBytes() {
		ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, float64(b), part)
	}
}

func collectLimiter(ch chan<- prometheus.Metric, s worker.LimiterStats) {
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), append([]string{s.Name}, labels...)...)
	}
	gauge(descOriginLimit, s.Limit)
	gauge(descOriginFlight, s.InFlight)
	gauge(descOriginPeak, s.Peak)
	gauge(descOriginQueued, s.QueuedReads, "read")
	gauge(descOriginQueued, s.QueuedRefreshes, "refresh")
	ch <- prometheus.MustNewConstMetric(descOriginBusy, prometheus.CounterValue, float64(s.Busy), s.Name)
	ch <- prometheus.MustNewConstMetric(descOriginBP, prometheus.CounterValue, float64(s.BackPressure), s.Name)
}

var _ prometheus.Collector = (*nodeCollector)(nil)

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}
