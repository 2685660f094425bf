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
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.yaml.in/yaml/v3"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/invalidation/pgsource"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/ring"
	"github.com/cachenode/cachenode/worker"
)

// fileConfig is the YAML config file. Every field can be left out.
type fileConfig struct {
	Name          string `yaml:"name"`
	Gossip        string `yaml:"gossip"`
	Advertise     string `yaml:"advertise"`
	Peer          string `yaml:"peer"`
	PeerAdvertise string `yaml:"peer_advertise"`
	HTTP          string `yaml:"http"`
	HTTPAdvertise string `yaml:"http_advertise"`
	// RESP is the address of the RESP (Redis protocol) front; "": off.
	RESP string    `yaml:"resp"`
	Join addrList  `yaml:"join"`
	Data optString `yaml:"data"`
	// DataOnCorruption: move-aside (default) or fail; DataKeepCorrupt: how
	// many moved-aside directories are kept (default 1, negative none).
	DataOnCorruption string            `yaml:"data_on_corruption"`
	DataKeepCorrupt  int               `yaml:"data_keep_corrupt"`
	Memory           worker.ConfigSize `yaml:"memory"`
	// NearCache keeps copies of values fetched from their owners. Default true.
	NearCache  *bool  `yaml:"near_cache"`
	GossipKey  string `yaml:"gossip_key"`
	AdminToken string `yaml:"admin_token_file"`
	LogLevel   string `yaml:"log_level"`
	// Insecure lets the node listen beyond loopback without gossip key,
	// peer TLS or admin token. Default false.
	Insecure bool `yaml:"insecure"`
	// PeerLimits bound the peer port and the delayed invalidations that
	// members may hand over.
	PeerLimits peerLimitsConfig `yaml:"peer_limits"`
	// Membership is a preset name (lan, local) or a mapping that tunes one.
	Membership membershipConfig        `yaml:"membership"`
	Ring       ringConfig              `yaml:"ring"`
	TLS        tlsConfig               `yaml:"tls"`
	Defaults   policyConfig            `yaml:"defaults"`
	Workers    map[string]workerConfig `yaml:"workers"`
	// Invalidation holds the automatic rules: model → worker label → rule.
	Invalidation map[string]map[string]ruleConfig `yaml:"invalidation"`
	// Limits bound the arguments of every read (HTTP and peers' fetches).
	Limits limitsConfig `yaml:"limits"`
	// OriginLimits bound the requests to each origin host (issue 21).
	OriginLimits originLimitsConfig `yaml:"origin_limits"`
	// MaxConcurrentRequests caps the HTTP reads and invalidations handled
	// at once; past it they are answered 503 overloaded. Default 4096.
	MaxConcurrentRequests int `yaml:"max_concurrent_requests"`
	// Sources are the databases whose committed changes become change
	// events (sources.go).
	Sources map[string]sourceConfig `yaml:"sources"`
	// Tracing sends OpenTelemetry spans of reads, peer fetches and origin
	// requests to an OTLP collector; off without otlp.
	Tracing tracingConfig `yaml:"tracing"`
}

// tracingConfig is the tracing block.
type tracingConfig struct {
	// OTLP is the URL of an OTLP/HTTP traces endpoint, such as
	// http://collector:4318/v1/traces; "": no tracing.
	OTLP string `yaml:"otlp"`
}

// limitsConfig is the limits block: node.Config.Limits.
type limitsConfig struct {
	// MaxArgs bounds the arguments of one read. Default 64.
	MaxArgs *int `yaml:"max_args"`
	// MaxArgBytes bounds their bytes (names and values). Default 8KiB.
	MaxArgBytes *worker.ConfigSize `yaml:"max_arg_bytes"`
}

// build returns the limits given (node.Config.EnsureDefaults fills the
// others); a bound given as 0 is refused, as worker.Limits would read it
// as "the default".
func (l limitsConfig) build() (worker.Limits, error) {
	var out worker.Limits
	if l.MaxArgs != nil {
		if *l.MaxArgs < 1 {
			return out, fmt.Errorf("limits.max_args: must be >= 1, got %d", *l.MaxArgs)
		}
		out.MaxArgs = *l.MaxArgs
	}
	if l.MaxArgBytes != nil {
		if *l.MaxArgBytes < 1 || *l.MaxArgBytes > 1<<30 {
			return out, fmt.Errorf("limits.max_arg_bytes: must be between 1 and 1GiB, got %d", *l.MaxArgBytes)
		}
		out.MaxArgBytes = int(*l.MaxArgBytes)
	}
	return out, nil
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
	RefreshSpread *worker.ConfigDuration `yaml:"refresh_spread"`
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

// UnmarshalYAML reads a scalar.
func (o *optString) UnmarshalYAML(n *yaml.Node) error {
	if err := n.Decode(&o.Value); err != nil {
		return err
	}
	o.Set = true
	return nil
}

// readNulls reads data: with nothing after it as data: "" (in memory), as
// the config file always has.
func (fc *fileConfig) readNulls(root *yaml.Node) {
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k, v := root.Content[i], root.Content[i+1]; k.Value == "data" && v.ShortTag() == "!!null" {
			fc.Data = optString{Set: true}
		}
	}
}

type membershipConfig struct {
	Preset           string                 `yaml:"preset"`
	ProbeInterval    *worker.ConfigDuration `yaml:"probe_interval"`
	ProbeTimeout     *worker.ConfigDuration `yaml:"probe_timeout"`
	SuspicionMult    *int                   `yaml:"suspicion_mult"`
	SuspicionMaxMult *int                   `yaml:"suspicion_max_timeout_mult"`
	GossipInterval   *worker.ConfigDuration `yaml:"gossip_interval"`
	PushPullInterval *worker.ConfigDuration `yaml:"push_pull_interval"`
	LeaveTimeout     *worker.ConfigDuration `yaml:"leave_timeout"`
}

// UnmarshalYAML reads a preset's name (membership: local) or a mapping of
// the fields.
func (m *membershipConfig) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		m.Preset = n.Value
		return nil
	case yaml.MappingNode:
		// Node.Decode does not check the fields as the file's decoder does.
		if err := strictMapping(n, reflect.TypeFor[membershipConfig]()); err != nil {
			return err
		}
	default:
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a preset (lan or local) or a mapping of fields", n.Line)}}
	}
	type fields membershipConfig // without this method
	return n.Decode((*fields)(m))
}

// build returns the fields given; node.Config.EnsureDefaults fills the
// others from the preset.
func (m membershipConfig) build() node.Membership {
	out := node.Membership{Preset: m.Preset}
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
	return out
}

func setDur(dst *time.Duration, d *worker.ConfigDuration) {
	if d != nil {
		*dst = time.Duration(*d)
	}
}

// peerLimitsConfig is node.PeerLimits in the config file; absent fields
// keep their defaults.
type peerLimitsConfig struct {
	MaxConns            int                    `yaml:"max_conns"`
	MaxConnsPerIP       int                    `yaml:"max_conns_per_ip"`
	IdleTimeout         *worker.ConfigDuration `yaml:"idle_timeout"`
	MaxEnqueueItem      worker.ConfigSize      `yaml:"max_enqueue_item"`
	MaxEnqueueBytes     worker.ConfigSize      `yaml:"max_enqueue_bytes"`
	MaxEnqueueCountdown *worker.ConfigDuration `yaml:"max_enqueue_countdown"`
}

// build returns the limits given; a duration given as 0 is refused, as
// node.PeerLimits would read it as "the default".
func (p peerLimitsConfig) build() (node.PeerLimits, error) {
	l := node.PeerLimits{MaxConns: p.MaxConns, MaxConnsPerIP: p.MaxConnsPerIP,
		MaxEnqueueItem: int(p.MaxEnqueueItem), MaxEnqueueBytes: int64(p.MaxEnqueueBytes)}
	for name, d := range map[string]*worker.ConfigDuration{"idle_timeout": p.IdleTimeout, "max_enqueue_countdown": p.MaxEnqueueCountdown} {
		if d != nil && *d <= 0 {
			return l, fmt.Errorf("peer_limits.%s: must be > 0", name)
		}
	}
	setDur(&l.IdleTimeout, p.IdleTimeout)
	setDur(&l.MaxEnqueueCountdown, p.MaxEnqueueCountdown)
	return l, nil
}

type ringConfig struct {
	PartitionCount    int     `yaml:"partition_count"`
	ReplicationFactor int     `yaml:"replication_factor"`
	Load              float64 `yaml:"load"`
}

type tlsConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CA, required with Peer, is the PEM bundle that the members'
	// certificates must chain to; it alone is trusted for them, not the
	// system roots (any publicly issued client certificate would be a
	// member otherwise).
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
	if t.CA == "" {
		return nil, errors.New("tls.ca: required with tls.peer: the CA bundle that signs the members' certificates, the only one trusted for them (not the system roots)")
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: %v", err)
	}
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, fmt.Errorf("tls.ca: %v", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls.ca: no certificate in %s", t.CA)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, nil
}

// policyConfig holds the worker fields of the original library; unset
// fields inherit.
type policyConfig struct {
	Expires               *worker.ConfigDuration `yaml:"expires"`
	Tick                  *worker.ConfigDuration `yaml:"tick"`
	TickAmount            *int                   `yaml:"tick_amount"`
	IsConcurrent          *bool                  `yaml:"is_concurrent"`
	RelevanceInvalidation *bool                  `yaml:"relevance_invalidation"`
	RelevanceExpires      *worker.ConfigDuration `yaml:"relevance_expires"`
	DelayInvalidation     *bool                  `yaml:"delay_invalidation"`
	DelayCountdown        *worker.ConfigDuration `yaml:"delay_countdown"`
	DelayLogging          *bool                  `yaml:"delay_logging"`
	CachedEntity          *bool                  `yaml:"cached_entity"`
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
	for name, d := range map[string]*worker.ConfigDuration{"expires": p.Expires, "tick": p.Tick, "relevance_expires": p.RelevanceExpires} {
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
	KeyGen        string                 `yaml:"key_gen"`
	Action        string                 `yaml:"action"`
	Sweep         bool                   `yaml:"sweep"`
	SweepInterval *worker.ConfigDuration `yaml:"sweep_interval"`
	EarlyRefresh  float64                `yaml:"early_refresh"`
	// FillTimeout bounds one origin request. Default: the wait budget,
	// tick × tick_amount.
	FillTimeout *worker.ConfigDuration `yaml:"fill_timeout"`
	// MaxSize bounds the origin's body. Default 16 MiB.
	MaxSize worker.ConfigSize `yaml:"max_size"`
	// MaxExpires bounds the _expires of an HTTP read. Default: the
	// worker's expires.
	MaxExpires *worker.ConfigDuration `yaml:"max_expires"`
	// Overrides is "admin" (the default: _is_concurrent=false and _delay_*
	// need the admin token) or "open" (any client may send them).
	Overrides string `yaml:"overrides"`
	// RefreshIfReadWithin: an invalidation rebuilds the entries read within
	// this window (and since their last rebuild) and drops the others.
	// Default 5m.
	RefreshIfReadWithin *worker.ConfigDuration `yaml:"refresh_if_read_within"`
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
	// RESP is the RESP front's address: resp, --resp or CACHENODE_RESP;
	// "" (the default): no RESP front.
	RESP      string
	TokenFile string
	Token     string
	TLS       tlsConfig
	// Insecure: insecure: true, --insecure or CACHENODE_INSECURE.
	Insecure bool
	// OpenHTTP: the HTTP port listens beyond loopback without admin token
	// (allowed by Insecure).
	OpenHTTP bool
	// OpenRESP: the RESP port listens beyond loopback without admin token
	// (allowed by Insecure).
	OpenRESP bool
	Level    slog.Level
	Workers  map[string]workerConfig
	Rules    map[string]map[string]ruleConfig
	// Limiters are the limiters of the origin hosts, by HOST:PORT.
	Limiters map[string]*worker.Limiter
	// MaxConcurrentRequests is the HTTP server's cap (0: its default).
	MaxConcurrentRequests int
	// Sources are the change sources (sources.go), not yet wired to a node.
	Sources []pgsource.Config
	// TracingOTLP is tracing.otlp: the OTLP/HTTP traces endpoint; "": off.
	TracingOTLP string
	// Tracer, when set, replaces the OTLP exporter (tests record spans in
	// memory with it).
	Tracer trace.TracerProvider
}

// flagNames are the flags of serve, in the contract's order.
var flagNames = []string{"config", "name", "gossip", "advertise", "peer", "http", "join", "memory", "data", "gossip-key", "admin-token-file", "log-level",
	"data-on-corruption", "resp"}

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
		"data":             "Pebble `DIR` (default ./cachenode-data/NAME; empty: in memory)",
		"gossip-key":       "`FILE` with the gossip key: hex or base64 of 16, 24 or 32 bytes (cachenode keygen FILE makes one); several lines are a keyring, primary first",
		"admin-token-file": "`FILE` with the bearer token of /admin/* and POST /v1/invalidate", "log-level": "debug, info, warn or error (default info)",
		"resp":               "RESP (Redis protocol) front `HOST:PORT`: GET, MGET, DEL, CLIENT TRACKING (default: off)",
		"data-on-corruption": "a corrupt data directory at start: move-aside (to DIR.corrupt-TIME, start empty; the default) or fail",
	}
	for _, name := range flagNames {
		vals[name] = fs.String(name, "", help[name])
	}
	fs.Bool("insecure", false, "let gossip, peer, HTTP or RESP listen beyond loopback without gossip key, peer TLS or admin token (warned at every start)")
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
	for _, name := range append(slices.Clone(flagNames), "insecure") {
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
	rc, err := resolve(fc, set)
	if err != nil {
		return nil, err
	}
	if rc.Sources, err = resolveSources(fc, getenv); err != nil {
		return nil, err
	}
	return rc, nil
}

func envName(flagName string) string {
	return "CACHENODE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// resolve merges the file's config with the values of flags and
// environment (by flag name), fills the defaults and validates the result
// with node.Config's EnsureDefaults and Validate. What resolve checks
// itself is what node.Config does not hold (the HTTP listener, the token,
// the workers) or cannot tell (a bound given as 0 in the file, which
// node.Config reads as "the default"). Errors name the field: a flag's
// name when it came from a flag, the config key otherwise.
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
	nc.Advertise = str("advertise", fc.Advertise)
	nc.Peer = str("peer", fc.Peer)
	nc.PeerAdvertise = fc.PeerAdvertise
	// The HTTP listener is this program's, not the node's.
	rc.HTTP = str("http", fc.HTTP)
	if rc.HTTP == "" {
		rc.HTTP = "127.0.0.1:8080"
	}
	rc.HTTPAdvertise = fc.HTTPAdvertise
	rc.RESP = str("resp", fc.RESP)
	if fc.Tracing.OTLP != "" {
		u, err := url.Parse(fc.Tracing.OTLP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usagef("tracing.otlp: want an http:// or https:// URL of an OTLP/HTTP endpoint, got %q", fc.Tracing.OTLP)
		}
		rc.TracingOTLP = fc.Tracing.OTLP
	}
	for field, addr := range map[string]string{"http": rc.HTTP, "http_advertise": rc.HTTPAdvertise, "resp": rc.RESP} {
		if _, _, err := net.SplitHostPort(addr); addr != "" && err != nil {
			return nil, usagef("%s: %q is not HOST:PORT", field, addr)
		}
	}
	nc.Join = fc.Join
	if v, ok := set["join"]; ok {
		nc.Join = splitList(v)
	}
	nc.Memory = int64(fc.Memory)
	if v, ok := set["memory"]; ok {
		m, err := worker.ParseSize(v)
		if err != nil {
			return nil, usagef("memory: %v", err)
		}
		nc.Memory = m
	}
	switch v, ok := set["data"]; {
	case ok:
		nc.Data = v
	case fc.Data.Set:
		nc.Data = fc.Data.Value
	default:
		nc.Data = filepath.Join("cachenode-data", nc.Name)
	}
	nc.DataOnCorruption = str("data-on-corruption", fc.DataOnCorruption)
	nc.DataKeepCorrupt = fc.DataKeepCorrupt
	if keyFile := str("gossip-key", fc.GossipKey); keyFile != "" {
		keys, err := readKeys(keyFile)
		if err != nil {
			return nil, usagef("gossip-key: %v", err)
		}
		nc.GossipKey, nc.GossipKeys = keys[0], keys[1:]
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
	nc.Membership = fc.Membership.build()
	nc.NoNearCache = fc.NearCache != nil && !*fc.NearCache
	nc.Ring = ring.Config{PartitionCount: fc.Ring.PartitionCount, ReplicationFactor: fc.Ring.ReplicationFactor, Load: fc.Ring.Load}
	if (rc.TLS.Cert == "") != (rc.TLS.Key == "") {
		return nil, usagef("tls: give both cert and key")
	}
	var err error
	if nc.PeerTLS, err = rc.TLS.peerTLS(); err != nil {
		return nil, usagef("%v", err)
	}
	if nc.Limits, err = fc.Limits.build(); err != nil {
		return nil, usageError{err.Error()}
	}
	if nc.PeerLimits, err = fc.PeerLimits.build(); err != nil {
		return nil, usagef("%v", err)
	}
	rc.Insecure = fc.Insecure
	if v, ok := set["insecure"]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, usagef("insecure: %q is not true or false", v)
		}
		rc.Insecure = b
	}
	nc.Insecure = rc.Insecure
	if err := fc.Defaults.check("defaults"); err != nil {
		return nil, usageError{err.Error()}
	}
	nc.Defaults = worker.DefaultPolicy().With(fc.Defaults.settings())

	nc.EnsureDefaults()
	if err := nc.Validate(); err != nil {
		return nil, nodeConfigError(err, set, nc)
	}
	if err := checkOpenHTTP(rc); err != nil {
		return nil, err
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

// nodeConfigError words an error of node.Config.Validate as a usage error
// naming the flag when the value came from one (--data-on-corruption, not
// data_on_corruption), and an open gossip or peer port with the flags
// that close it.
func nodeConfigError(err error, set map[string]string, nc *node.Config) error {
	var ce *node.ConfigError
	if !errors.As(err, &ce) {
		return usagef("%v", err)
	}
	field := ce.Field
	if flag := strings.ReplaceAll(field, "_", "-"); slices.Contains(flagNames, flag) && set[flag] != "" {
		field = flag
	}
	if errors.Is(err, node.ErrInsecure) {
		addr := nc.Gossip
		if ce.Field == "peer" {
			addr = nc.Peer
		}
		return usagef("%s: %s is not a loopback address and there is no gossip_key or tls.peer, so anyone who reaches it could join the cluster and read, plant or wipe values: make a key with `cachenode keygen FILE` and give --gossip-key FILE (gossip_key: FILE), or bind --%s to 127.0.0.1, or pass --insecure (insecure: true) to run open",
			ce.Field, addr, ce.Field)
	}
	return usagef("%s: %s", field, ce.Problem)
}

// checkOpenHTTP refuses an HTTP or RESP port beyond loopback without an
// admin token (their invalidations, and HTTP's admin pages, would be open
// to anyone who reaches them), unless insecure says so. The gossip and peer ports are
// node.Config.Validate's (see nodeConfigError).
func checkOpenHTTP(rc *runConfig) error {
	rc.OpenHTTP = !node.IsLoopback(rc.HTTP) && rc.Token == ""
	rc.OpenRESP = rc.RESP != "" && !node.IsLoopback(rc.RESP) && rc.Token == ""
	if rc.OpenHTTP && !rc.Insecure {
		return usagef("http: %s is not a loopback address and there is no admin_token_file, so anyone who reaches it could invalidate every value and use the admin pages: give --admin-token-file FILE (admin_token_file: FILE), or bind --http to 127.0.0.1, or pass --insecure (insecure: true) to run open",
			rc.HTTP)
	}
	if rc.OpenRESP && !rc.Insecure {
		return usagef("resp: %s is not a loopback address and there is no admin_token_file, so anyone who reaches it could invalidate every value (DEL, CN.INVALIDATE): give --admin-token-file FILE (admin_token_file: FILE), or bind --resp to 127.0.0.1, or pass --insecure (insecure: true) to run open",
			rc.RESP)
	}
	return nil
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
		// The URL is not repeated: it may hold a password or an api key,
		// and this line goes to logs.
		return fmt.Errorf("%s.origin: not an http(s) URL with a host and no fragment", path)
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
	if w.MaxExpires != nil && *w.MaxExpires <= 0 {
		return fmt.Errorf("%s.max_expires: must be > 0", path)
	}
	switch w.Overrides {
	case "", "admin", "open":
	default:
		return fmt.Errorf("%s.overrides: %q is not admin or open", path, w.Overrides)
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
	if w.MaxExpires != nil {
		c.MaxExpires = time.Duration(*w.MaxExpires)
	}
	c.OpenOverrides = w.Overrides == "open"
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

// readKeys reads a gossip keyring: one key per line, the primary first
// (blank lines and lines starting with # are skipped), each the hex or
// base64 encoding of 16, 24 or 32 bytes. Raw text is refused: a typed
// password is a weak key, and its length alone says nothing of that. A
// file of exactly 16, 24 or 32 bytes is refused too (see below).
func readKeys(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if n := len(b); n == 16 || n == 24 || n == 32 {
		// Earlier versions took such a file as the raw key. Read as hex or
		// base64 now, it would be another key without a word, and split a
		// cluster during a rolling upgrade. (No key file of the new format
		// has these sizes, except an encoded key without its newline.)
		return nil, fmt.Errorf("%s: %d bytes, which earlier versions read as a raw key: convert a raw key with `base64 -w0 %s > NEW` (the same key), or end the line with a newline if it is hex or base64", path, n, path)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		k, ok := decodeKey(t)
		if !ok {
			// The line is a secret or a part of one: it is not echoed.
			return nil, fmt.Errorf("%s line %d: not a key: want hex or base64 of 16, 24 or 32 bytes (raw text is refused; make a key with `cachenode keygen FILE`)", path, i+1)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no key in the file (make one with `cachenode keygen FILE`)", path)
	}
	return keys, nil
}

// decodeKey decodes one key: hex or base64 (padded or not) of 16, 24 or
// 32 bytes.
func decodeKey(t string) ([]byte, bool) {
	okLen := func(n int) bool { return n == 16 || n == 24 || n == 32 }
	if k, err := hex.DecodeString(t); err == nil && okLen(len(k)) {
		return k, true
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(t); err == nil && okLen(len(k)) {
			return k, true
		}
	}
	return nil, false
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
