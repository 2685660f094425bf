package httpapi

import (
	"github.com/prometheus/client_golang/prometheus"
)

// insecure reports whether the node runs open to the network: its gossip
// or peer port without key or TLS (node.Node.Insecure), or its HTTP port
// without a token (Config.Insecure). The admin page says so, and /metrics
// as cachenode_insecure 1.
func (s *Server) insecure() bool { return s.cfg.Insecure || s.node.Insecure() }

var (
	descInsecure = prometheus.NewDesc("cachenode_insecure",
		"1 when the node runs open to the network (insecure: true): a non-loopback gossip or peer port without key or TLS, or a non-loopback HTTP port without admin token.", nil, nil)
	descPeerRefusals = prometheus.NewDesc("cachenode_peer_refusals_total",
		"Peer requests refused although authenticated: handoffs and handed-over invalidations that are not authorised or over the limits, by operation and code.", []string{"op", "code"}, nil)
	descPeerConns = prometheus.NewDesc("cachenode_peer_connections_closed_total",
		"Peer connections closed by this node, by reason: refused (connection limits), auth (key handshake failed), protocol (malformed hello or frame), idle.", []string{"reason"}, nil)
)

// securityCollector reads the node's exposure and the refusals of its
// peer port at scrape time.
type securityCollector struct{ s *Server }

func (c *securityCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descInsecure
	ch <- descPeerRefusals
	ch <- descPeerConns
}

func (c *securityCollector) Collect(ch chan<- prometheus.Metric) {
	v := 0.0
	if c.s.insecure() {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(descInsecure, prometheus.GaugeValue, v)
	for _, r := range c.s.node.PeerRefusals() {
		ch <- prometheus.MustNewConstMetric(descPeerRefusals, prometheus.CounterValue, float64(r.Count), r.Op, r.Code)
	}
	st := c.s.node.PeerServerStats()
	for reason, k := range map[string]uint64{"refused": st.Refused, "auth": st.AuthFailures, "protocol": st.ProtocolErrors, "idle": st.IdleClosed} {
		ch <- prometheus.MustNewConstMetric(descPeerConns, prometheus.CounterValue, float64(k), reason)
	}
}

var _ prometheus.Collector = (*securityCollector)(nil)
