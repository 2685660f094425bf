package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/ring"
	"github.com/cachenode/cachenode/worker"
)

// fileConfig is the YAML config file. Every field can be left out.
type fileConfig struct {
	Name          string    `yaml:"name"`
	Gossip        string    `yaml:"gossip"`
	Advertise     string    `yaml:"advertise"`
	Peer          string    `yaml:"peer"`
	PeerAdvertise string    `yaml:"peer_advertise"`
	HTTP          string    `yaml:"http"`
	HTTPAdvertise string    `yaml:"http_advertise"`
	Join          addrList  `yaml:"join"`
	Data          optString `yaml:"data"`
	Memory        Size      `yaml:"memory"`
	// NearCache keeps copies of values fetched from their owners. Default true.
	NearCache  *bool  `yaml:"near_cache"`
	GossipKey  string `yaml:"gossip_key"`
	AdminToken string `yaml:"admin_token_file"`
	LogLevel   string `yaml:"log_level"`
	// Membership is a preset name (lan, local) or a mapping that tunes one.
	Membership membershipConfig        `yaml:"membership"`
	Ring       ringConfig              `yaml:"ring"`
	TLS        tlsConfig               `yaml:"tls"`
	Defaults   policyConfig            `yaml:"defaults"`
	Workers    map[string]workerConfig `yaml:"workers"`
	// Invalidation holds the automatic rules: model → worker label → rule.
	Invalidation map[string]map[string]ruleConfig `yaml:"invalidation"`
	// OriginLimits bound the requests to each origin host (issue 21).
	OriginLimits originLimitsConfig `yaml:"origin_limits"`
	// MaxConcurrentRequests caps the HTTP reads and invalidations handled
	// at once; past it they are answered 503 overloaded. Default 4096.
	MaxConcurrentRequests int `yaml:"max_concurrent_requests"`
}

// originLimitsConfig is the limit per origin host: every worker whose
// origin is on one host (scheme, host and port) shares one limiter.
type originLimitsConfig struct {
	originLimit `yaml:",inline"`
	// Hosts override the limit for some hosts, by HOST:PORT.
	Hosts map[string]originLimit `yaml:"hosts"`
}

type originLimit struct {
	// MaxConcurrentFills bounds the origin requests in flight. Default 64.
	MaxConcurrentFills int `yaml:"max_concurrent_fills"`
	// MaxQueuedFills bounds the reads waiting for a slot. Default 4096.
	MaxQueuedFills int `yaml:"max_queued_fills"`
	// RefreshSpread spreads the rebuilds of an invalidation or a sweep
	// over this long per 1,000 keys. Default 1s.
	RefreshSpread *Duration `yaml:"refresh_spread"`
}

// over returns o with the fields that h sets replaced.
func (o originLimit) over(h originLimit) originLimit {
	if h.MaxConcurrentFills != 0 {
		o.MaxConcurrentFills = h.MaxConcurrentFills
	}
	if h.MaxQueuedFills != 0 {
		o.MaxQueuedFills = h.MaxQueuedFills
	}
	if h.RefreshSpread != nil {
		o.RefreshSpread = h.RefreshSpread
	}
	return o
}

func (o originLimit) limiterConfig(name string) worker.LimiterConfig {
	c := worker.LimiterConfig{Name: name, MaxConcurrent: o.MaxConcurrentFills, MaxQueue: o.MaxQueuedFills}
	if o.RefreshSpread != nil {
		c.RefreshSpread = time.Duration(*o.RefreshSpread)
		if c.RefreshSpread == 0 {
			c.RefreshSpread = -1 // 0s in the file: no spreading
		}
	}
	return c
}

// originHost is the HOST:PORT of an origin URL, the port made explicit,
// which names its limiter.
func originHost(origin string) (string, error) {
	u, err := url.Parse(origin)
	if err != nil {
		return "", err
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// limiters builds one limiter per origin host of the workers.
func (o originLimitsConfig) limiters(workers map[string]workerConfig) (map[string]*worker.Limiter, error) {
	out := make(map[string]*worker.Limiter)
	for _, label := range sortedKeys(workers) {
		host, err := originHost(workers[label].origin())
		if err != nil {
			return nil, fmt.Errorf("workers.%s.origin: %v", label, err)
		}
		if out[host] != nil {
			continue
		}
		l, err := worker.NewLimiter(o.originLimit.over(o.Hosts[host]).limiterConfig(host))
		if err != nil {
			return nil, fmt.Errorf("origin_limits (%s): %v", host, err)
		}
		out[host] = l
	}
	return out, nil
}

// optString is a string that remembers whether it was given (data: "" means
// "in memory", an absent data means the default directory).
type optString struct {
	Set   bool
	Value string
}

func (o *optString) setScalar(s string) error {
	*o = optString{Set: true, Value: s}
	return nil
}

type membershipConfig struct {
	Preset           string    `yaml:"preset"`
	ProbeInterval    *Duration `yaml:"probe_interval"`
	ProbeTimeout     *Duration `yaml:"probe_timeout"`
	SuspicionMult    *int      `yaml:"suspicion_mult"`
	SuspicionMaxMult *int      `yaml:"suspicion_max_timeout_mult"`
	GossipInterval   *Duration `yaml:"gossip_interval"`
	PushPullInterval *Duration `yaml:"push_pull_interval"`
	LeaveTimeout     *Duration `yaml:"leave_timeout"`
}

func (m *membershipConfig) setScalar(s string) error {
	m.Preset = s
	return nil
}

func (m membershipConfig) build() (node.Membership, error) {
	var out node.Membership
	switch m.Preset {
	case "", "lan":
		out = node.LANMembership()
	case "local":
		out = node.LocalMembership()
	default:
		return out, fmt.Errorf("membership: unknown preset %q (want lan or local)", m.Preset)
	}
	setDur(&out.ProbeInterval, m.ProbeInterval)
	setDur(&out.ProbeTimeout, m.ProbeTimeout)
	setDur(&out.GossipInterval, m.GossipInterval)
	setDur(&out.PushPullInterval, m.PushPullInterval)
	setDur(&out.LeaveTimeout, m.LeaveTimeout)
	if m.SuspicionMult != nil {
		out.SuspicionMult = *m.SuspicionMult
	}
	if m.SuspicionMaxMult != nil {
		out.SuspicionMaxTimeoutMult = *m.SuspicionMaxMult
	}
	return out, nil
}

func setDur(dst *time.Duration, d *Duration) {
	if d != nil {
		*dst = time.Duration(*d)
	}
}

type ringConfig struct {
	PartitionCount    int     `yaml:"partition_count"`
	ReplicationFactor int     `yaml:"replication_factor"`
	Load              float64 `yaml:"load"`
}

type tlsConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CA, with Peer, is the PEM bundle that peer certificates must chain
	// to; default: the system roots.
	CA string `yaml:"ca"`
	// Peer also wraps the peer transport in mutual TLS with cert and key.
	Peer bool `yaml:"peer"`
}

// peerTLS loads the mutual-TLS configuration of the peer transport.
func (t tlsConfig) peerTLS() (*tls.Config, error) {
	if !t.Peer {
		return nil, nil
	}
	if t.Cert == "" {
		return nil, errors.New("tls.peer needs tls.cert and tls.key")
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: %v", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || t.CA != "" {
		pool = x509.NewCertPool()
	}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("tls.ca: %v", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca: no certificate in %s", t.CA)
		}
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, nil
}

// policyConfig holds the worker fields of the original library; unset
// fields inherit.
type policyConfig struct {
	Expires               *Duration `yaml:"expires"`
	Tick                  *Duration `yaml:"tick"`
	TickAmount            *int      `yaml:"tick_amount"`
	IsConcurrent          *bool     `yaml:"is_concurrent"`
	RelevanceInvalidation *bool     `yaml:"relevance_invalidation"`
	RelevanceExpires      *Duration `yaml:"relevance_expires"`
	DelayInvalidation     *bool     `yaml:"delay_invalidation"`
	DelayCountdown        *Duration `yaml:"delay_countdown"`
	DelayLogging          *bool     `yaml:"delay_logging"`
	CachedEntity          *bool     `yaml:"cached_entity"`
}

func (p policyConfig) settings() worker.Settings {
	var s worker.Settings
	if p.Expires != nil {
		s.Expires = time.Duration(*p.Expires)
	}
	if p.Tick != nil {
		s.Tick = time.Duration(*p.Tick)
	}
	if p.RelevanceExpires != nil {
		s.RelevanceExpires = time.Duration(*p.RelevanceExpires)
	}
	if p.DelayCountdown != nil {
		d := time.Duration(*p.DelayCountdown)
		s.DelayCountdown = &d
	}
	s.TickAmount, s.IsConcurrent, s.RelevanceInvalidation = p.TickAmount, p.IsConcurrent, p.RelevanceInvalidation
	s.DelayInvalidation, s.DelayLogging, s.CachedEntity = p.DelayInvalidation, p.DelayLogging, p.CachedEntity
	return s
}

// check rejects zero durations that the worker would read as "inherit".
func (p policyConfig) check(path string) error {
	for name, d := range map[string]*Duration{"expires": p.Expires, "tick": p.Tick, "relevance_expires": p.RelevanceExpires} {
		if d != nil && *d <= 0 {
			return fmt.Errorf("%s.%s: must be > 0", path, name)
		}
	}
	if p.TickAmount != nil && *p.TickAmount < 1 {
		return fmt.Errorf("%s.tick_amount: must be >= 1", path)
	}
	return nil
}

type workerConfig struct {
	policyConfig `yaml:",inline"`
	// Origin is the URL the worker fills from: GET origin?arg=value...
	Origin string `yaml:"origin"`
	// StructureGetter is the original library's name of the getter; here
	// an alias of origin.
	StructureGetter string `yaml:"structure_getter"`
	// Label, when given, must equal the worker's key in the workers map.
	Label string `yaml:"label"`
	// KeyGen names the key encoding; only "canonical" exists for workers
	// declared in the config file.
	KeyGen        string    `yaml:"key_gen"`
	Action        string    `yaml:"action"`
	Sweep         bool      `yaml:"sweep"`
	SweepInterval *Duration `yaml:"sweep_interval"`
	EarlyRefresh  float64   `yaml:"early_refresh"`
	// FillTimeout bounds one origin request. Default: the wait budget,
	// tick × tick_amount.
	FillTimeout *Duration `yaml:"fill_timeout"`
	// MaxSize bounds the origin's body. Default 16 MiB.
	MaxSize Size `yaml:"max_size"`
	// RefreshIfReadWithin: an invalidation rebuilds the entries read within
	// this window (and since their last rebuild) and drops the others.
	// Default 5m.
	RefreshIfReadWithin *Duration `yaml:"refresh_if_read_within"`
	// RefreshUnread rebuilds every entry on invalidation, read or not.
	// Default false.
	RefreshUnread bool `yaml:"refresh_unread"`
}

type ruleConfig struct {
	IsEmpty bool     `yaml:"is_empty"`
	Args    []string `yaml:"args"`
}

// runConfig is the resolved configuration of one node.
type runConfig struct {
	Node          node.Config
	HTTP          string
	HTTPAdvertise string
	TokenFile     string
	Token         string
	TLS           tlsConfig
	Level         slog.Level
	Workers       map[string]workerConfig
	Rules         map[string]map[string]ruleConfig
	// Limiters are the limiters of the origin hosts, by HOST:PORT.
	Limiters map[string]*worker.Limiter
	// MaxConcurrentRequests is the HTTP server's cap (0: its default).
	MaxConcurrentRequests int
}

// flagNames are the flags of serve, in the contract's order.
var flagNames = []string{"config", "name", "gossip", "advertise", "peer", "http", "join", "memory", "data", "gossip-key", "admin-token-file", "log-level"}

// usageError is a bad flag or config: the command exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// loadConfig resolves the config of serve from its flags, the CACHENODE_*
// environment variables and the config file, in that order of precedence.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (*runConfig, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	vals := map[string]*string{}
	help := map[string]string{
		"config": "YAML config `FILE`", "name": "node name, unique in the cluster (default: host name)",
		"gossip": "memberlist bind `HOST:PORT` (default 0.0.0.0:7946)", "advertise": "gossip `HOST:PORT` others should use (default: bind address)",
		"peer": "peer RPC `HOST:PORT` (default 0.0.0.0:7947)", "http": "client API, admin and metrics `HOST:PORT` (default 127.0.0.1:8080)",
		"join": "gossip addresses of members to join, `ADDR,...`", "memory": "bound on cached bytes, e.g. 256MiB (default 256MiB)",
		"data": "Pebble `DIR` (default ./cachenode-data/NAME; empty: in memory)", "gossip-key": "`FILE` with a 16, 24 or 32-byte key that encrypts gossip",
		"admin-token-file": "`FILE` with the bearer token of /admin/* and POST /v1/invalidate", "log-level": "debug, info, warn or error (default info)",
	}
	for _, name := range flagNames {
		vals[name] = fs.String(name, "", help[name])
	}
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cachenode [serve] [flags]\n\nflags (each also a config key and a CACHENODE_* variable; flags win):")
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.Usage()
			return nil, err
		}
		return nil, usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	// Sources, lowest precedence first: file, environment, flags.
	set := map[string]string{}
	for _, name := range flagNames {
		if v := getenv(envName(name)); v != "" {
			set[name] = v
		}
	}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = f.Value.String() })

	var fc fileConfig
	if path, ok := set["config"]; ok {
		f, err := os.Open(path)
		if err != nil {
			return nil, usagef("config: %v", err)
		}
		err = decodeYAML(f, &fc)
		f.Close()
		if err != nil {
			return nil, usagef("config %s: %v", path, err)
		}
	}
	return resolve(fc, set)
}

func envName(flagName string) string {
	return "CACHENODE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// resolve merges the file's config with the values of flags and
// environment (by flag name) and validates the result. Errors name the
// field: a flag's name when it came from a flag, the config key otherwise.
func resolve(fc fileConfig, set map[string]string) (*runConfig, error) {
	str := func(name string, file string) string {
		if v, ok := set[name]; ok {
			return v
		}
		return file
	}
	rc := &runConfig{Workers: fc.Workers, Rules: fc.Invalidation, TLS: fc.TLS}
	nc := &rc.Node
	nc.Name = str("name", fc.Name)
	if nc.Name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, usagef("name: no name given and no host name")
		}
		nc.Name = h
	}
	nc.Gossip = str("gossip", fc.Gossip)
	if nc.Gossip == "" {
		nc.Gossip = "0.0.0.0:7946"
	}
	nc.Advertise = str("advertise", fc.Advertise)
	nc.Peer = str("peer", fc.Peer)
	if nc.Peer == "" {
		nc.Peer = "0.0.0.0:7947"
	}
	nc.PeerAdvertise = fc.PeerAdvertise
	rc.HTTP = str("http", fc.HTTP)
	if rc.HTTP == "" {
		rc.HTTP = "127.0.0.1:8080"
	}
	rc.HTTPAdvertise = fc.HTTPAdvertise
	for field, addr := range map[string]string{"gossip": nc.Gossip, "advertise": nc.Advertise, "peer": nc.Peer,
		"peer_advertise": nc.PeerAdvertise, "http": rc.HTTP, "http_advertise": rc.HTTPAdvertise} {
		if addr == "" {
			continue
		}
		if err := checkHostPort(addr); err != nil {
			return nil, usagef("%s: %v", field, err)
		}
	}
	nc.Join = fc.Join
	if v, ok := set["join"]; ok {
		nc.Join = splitList(v)
	}
	for _, j := range nc.Join {
		if err := checkHostPort(j); err != nil {
			return nil, usagef("join: %v", err)
		}
	}
	nc.Memory = int64(fc.Memory)
	if v, ok := set["memory"]; ok {
		m, err := parseSize(v)
		if err != nil {
			return nil, usagef("memory: %v", err)
		}
		nc.Memory = m
	}
	if nc.Memory == 0 {
		nc.Memory = 256 << 20
	}
	if nc.Memory < 1<<20 {
		return nil, usagef("memory: %d bytes is too small (at least 1MiB)", nc.Memory)
	}
	switch v, ok := set["data"]; {
	case ok:
		nc.Data = v
	case fc.Data.Set:
		nc.Data = fc.Data.Value
	default:
		nc.Data = filepath.Join("cachenode-data", nc.Name)
	}
	if keyFile := str("gossip-key", fc.GossipKey); keyFile != "" {
		k, err := readKey(keyFile)
		if err != nil {
			return nil, usagef("gossip-key: %v", err)
		}
		nc.GossipKey = k
	}
	rc.TokenFile = str("admin-token-file", fc.AdminToken)
	if rc.TokenFile != "" {
		b, err := os.ReadFile(rc.TokenFile)
		if err != nil {
			return nil, usagef("admin-token-file: %v", err)
		}
		rc.Token = strings.TrimSpace(string(b))
		if rc.Token == "" {
			return nil, usagef("admin-token-file: %s is empty", rc.TokenFile)
		}
	}
	lvl := str("log-level", fc.LogLevel)
	if lvl == "" {
		lvl = "info"
	}
	if err := rc.Level.UnmarshalText([]byte(lvl)); err != nil || !slices.Contains([]string{"debug", "info", "warn", "error"}, strings.ToLower(lvl)) {
		return nil, usagef("log-level: %q is not one of debug, info, warn, error", lvl)
	}
	m, err := fc.Membership.build()
	if err != nil {
		return nil, usagef("%v", err)
	}
	nc.Membership = m
	nc.NoNearCache = fc.NearCache != nil && !*fc.NearCache
	nc.Ring = ring.Config{PartitionCount: fc.Ring.PartitionCount, ReplicationFactor: fc.Ring.ReplicationFactor, Load: fc.Ring.Load}
	if _, err := ring.New(nc.Ring, nil); err != nil {
		return nil, usagef("ring: %v", err)
	}
	if (rc.TLS.Cert == "") != (rc.TLS.Key == "") {
		return nil, usagef("tls: give both cert and key")
	}
	if nc.PeerTLS, err = rc.TLS.peerTLS(); err != nil {
		return nil, usagef("%v", err)
	}
	if err := fc.Defaults.check("defaults"); err != nil {
		return nil, usageError{err.Error()}
	}
	nc.Defaults = worker.DefaultPolicy().With(fc.Defaults.settings())
	if err := nc.Defaults.Validate(); err != nil {
		return nil, usagef("defaults: %v", err)
	}
	for _, label := range sortedKeys(fc.Workers) {
		if err := checkWorker(label, fc.Workers[label], nc.Defaults); err != nil {
			return nil, usageError{err.Error()}
		}
	}
	if rc.Limiters, err = fc.OriginLimits.limiters(fc.Workers); err != nil {
		return nil, usagef("%v", err)
	}
	for host := range fc.OriginLimits.Hosts {
		if _, ok := rc.Limiters[host]; !ok {
			return nil, usagef("origin_limits.hosts.%s: no worker's origin is on this host (want HOST:PORT)", host)
		}
	}
	if fc.MaxConcurrentRequests < 0 {
		return nil, usagef("max_concurrent_requests: must be > 0")
	}
	rc.MaxConcurrentRequests = fc.MaxConcurrentRequests
	for _, model := range sortedKeys(fc.Invalidation) {
		for label, r := range fc.Invalidation[model] {
			if _, ok := fc.Workers[label]; !ok {
				return nil, usagef("invalidation.%s.%s: no worker %q is declared", model, label, label)
			}
			if r.IsEmpty && len(r.Args) > 0 {
				return nil, usagef("invalidation.%s.%s: give is_empty or args, not both", model, label)
			}
		}
	}
	return rc, nil
}

func checkWorker(label string, w workerConfig, defaults worker.Policy) error {
	path := "workers." + label
	if err := worker.ValidLabel(label); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	if w.Label != "" && w.Label != label {
		return fmt.Errorf("%s.label: %q differs from the worker's name %q", path, w.Label, label)
	}
	origin := w.origin()
	if origin == "" {
		return fmt.Errorf("%s.origin: required (the URL the worker fills from)", path)
	}
	if w.Origin != "" && w.StructureGetter != "" && w.Origin != w.StructureGetter {
		return fmt.Errorf("%s: origin and structure_getter differ; give one", path)
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
		return fmt.Errorf("%s.origin: %q is not an http(s) URL", path, origin)
	}
	switch w.KeyGen {
	case "", "canonical", "default":
	default:
		return fmt.Errorf("%s.key_gen: %q: workers of the config file use the canonical key (key_gen: canonical); custom key generators are Go code", path, w.KeyGen)
	}
	switch w.Action {
	case "", "refresh", "drop":
	default:
		return fmt.Errorf("%s.action: %q is not refresh or drop", path, w.Action)
	}
	if err := w.policyConfig.check(path); err != nil {
		return err
	}
	if err := defaults.With(w.settings()).Validate(); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	if w.EarlyRefresh < 0 {
		return fmt.Errorf("%s.early_refresh: must be >= 0", path)
	}
	if w.MaxSize < 0 {
		return fmt.Errorf("%s.max_size: must be > 0", path)
	}
	if w.RefreshUnread && w.RefreshIfReadWithin != nil {
		return fmt.Errorf("%s: give refresh_if_read_within or refresh_unread, not both", path)
	}
	return nil
}

func (w workerConfig) origin() string {
	if w.Origin != "" {
		return w.Origin
	}
	return w.StructureGetter
}

// workerDef builds the worker.Config of a declared worker around getter,
// whose origin requests go through lim.
func (w workerConfig) workerDef(label string, defaults worker.Policy, getter worker.Getter, lim *worker.Limiter) worker.Config {
	s := w.settings()
	fill := defaults.With(s).Budget()
	if w.FillTimeout != nil && *w.FillTimeout > 0 {
		fill = time.Duration(*w.FillTimeout)
	}
	c := worker.Config{Label: label, Getter: getter, Settings: s, Sweep: w.Sweep, EarlyRefresh: w.EarlyRefresh, FillTimeout: fill,
		Limiter: lim}
	switch {
	case w.RefreshUnread:
		c.RefreshIfReadWithin = -1
	case w.RefreshIfReadWithin != nil:
		c.RefreshIfReadWithin = time.Duration(*w.RefreshIfReadWithin)
	}
	if w.Action == "drop" {
		c.Action = worker.Drop
	}
	if w.SweepInterval != nil {
		c.SweepInterval = time.Duration(*w.SweepInterval)
	}
	return c
}

// rules converts the invalidation block of one model.
func rulesOf(rs map[string]ruleConfig) map[string]invalidation.Rule {
	out := make(map[string]invalidation.Rule, len(rs))
	for label, r := range rs {
		out[label] = invalidation.Rule{IsEmpty: r.IsEmpty, Args: slices.Clone(r.Args)}
	}
	return out
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT", addr)
	}
	_ = host
	if port == "" {
		return fmt.Errorf("%q has no port", addr)
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return fmt.Errorf("%q: port %q is not a number", addr, port)
		}
	}
	return nil
}

// readKey reads a gossip key: a file of exactly 16, 24 or 32 bytes, or the
// key in base64 or hex on one line.
func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	okLen := func(n int) bool { return n == 16 || n == 24 || n == 32 }
	if okLen(len(b)) {
		return b, nil
	}
	t := strings.TrimSpace(string(b))
	if k, err := hex.DecodeString(t); err == nil && okLen(len(k)) {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(t); err == nil && okLen(len(k)) {
		return k, nil
	}
	if okLen(len(t)) {
		return []byte(t), nil
	}
	return nil, fmt.Errorf("%s: want a key of 16, 24 or 32 bytes (raw, hex or base64), got %d bytes", path, len(b))
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
