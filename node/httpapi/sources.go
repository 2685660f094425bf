package httpapi

import (
	"net/http"
	"strconv"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/prometheus/client_golang/prometheus"
)

// SourceStatus is what the server shows of one change source.
type SourceStatus = invalidation.SourceStatus

// SetSources makes the server report the node's change sources: GET
// /admin/sources answers {"sources": [...]} with each source's state, lag,
// last applied position and consumer, the admin page lists them, and
// /metrics has the cachenode_source_* series. statuses is called on every
// request; call SetSources once, before serving.
func (s *Server) SetSources(statuses func() []SourceStatus) {
	if statuses == nil {
		return
	}
	s.sources.Store(&statuses)
	s.mux.Handle("/admin/sources", s.route("admin_sources", "GET", s.guard(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"self": s.node.Name(), "sources": statuses()})
	})))
	s.metrics.reg.MustRegister(&sourceCollector{statuses: statuses})
}

// sourceStatuses returns the statuses for the admin page, nil without
// sources.
func (s *Server) sourceStatuses() []SourceStatus {
	if f := s.sources.Load(); f != nil {
		return (*f)()
	}
	return nil
}

var (
	srcLabels       = []string{"source"}
	descSrcState    = prometheus.NewDesc("cachenode_source_state", "1 for the state a change source is in on this node (standby, connecting, waiting_slot, streaming, catching_up, backoff, stopped).", []string{"source", "state"}, nil)
	descSrcConsume  = prometheus.NewDesc("cachenode_source_consuming", "1 while this node consumes the source's replication slot.", srcLabels, nil)
	descSrcLagBytes = prometheus.NewDesc("cachenode_source_lag_bytes", "WAL bytes between the server's end of WAL and the slot position confirmed by this consumer.", srcLabels, nil)
	descSrcLagSecs  = prometheus.NewDesc("cachenode_source_lag_seconds", "Seconds between the commit of the last applied transaction and its application on every member (0 when caught up).", srcLabels, nil)
	descSrcLSN      = prometheus.NewDesc("cachenode_source_last_applied_lsn", "Commit position (as a number) of the last transaction this node applied.", srcLabels, nil)
	descSrcTx       = prometheus.NewDesc("cachenode_source_transactions_total", "Transactions turned into events and applied by every member, by this node.", srcLabels, nil)
	descSrcChanges  = prometheus.NewDesc("cachenode_source_changes_total", "Row changes in those transactions.", srcLabels, nil)
	descSrcFull     = prometheus.NewDesc("cachenode_source_full_invalidations_total", "Times the slot was past max_lag and every label of the source's models was refreshed instead of replaying.", srcLabels, nil)
	descSrcErrors   = prometheus.NewDesc("cachenode_source_errors_total", "Disconnections and failed applications of the source on this node.", srcLabels, nil)
)

type sourceCollector struct {
	statuses func() []SourceStatus
}

func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSrcState, descSrcConsume, descSrcLagBytes, descSrcLagSecs, descSrcLSN,
		descSrcTx, descSrcChanges, descSrcFull, descSrcErrors} {
		ch <- d
	}
}

func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.statuses() {
		n := st.Name
		ch <- prometheus.MustNewConstMetric(descSrcState, prometheus.GaugeValue, 1, n, st.State)
		consuming := 0.0
		if st.Consuming {
			consuming = 1
		}
		ch <- prometheus.MustNewConstMetric(descSrcConsume, prometheus.GaugeValue, consuming, n)
		ch <- prometheus.MustNewConstMetric(descSrcLagBytes, prometheus.GaugeValue, float64(st.LagBytes), n)
		ch <- prometheus.MustNewConstMetric(descSrcLagSecs, prometheus.GaugeValue, st.LagSeconds, n)
		ch <- prometheus.MustNewConstMetric(descSrcLSN, prometheus.GaugeValue, float64(st.LastAppliedPosition), n)
		ch <- prometheus.MustNewConstMetric(descSrcTx, prometheus.CounterValue, float64(st.Transactions), n)
		ch <- prometheus.MustNewConstMetric(descSrcChanges, prometheus.CounterValue, float64(st.Changes), n)
		ch <- prometheus.MustNewConstMetric(descSrcFull, prometheus.CounterValue, float64(st.FullInvalidations), n)
		ch <- prometheus.MustNewConstMetric(descSrcErrors, prometheus.CounterValue, float64(st.Errors), n)
	}
}

// lagText is the lag of a source for the admin page.
func lagText(st SourceStatus) string {
	if !st.Consuming {
		return "–"
	}
	return humanBytes(st.LagBytes) + ", " + strconv.FormatFloat(st.LagSeconds, 'f', 2, 64) + " s"
}
