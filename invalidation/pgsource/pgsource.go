// Package pgsource follows a PostgreSQL database's logical replication
// (the pgoutput plugin, decoded with github.com/jackc/pglogrepl) and turns
// every committed transaction that changed rows of the mapped tables into
// one invalidation event: one change per row, with its old and new values,
// grouped by the model each table maps to, applied through the models'
// rules.
//
// Delivery is at least once, in commit order: the slot's confirmed
// position advances past a transaction only after its event was applied by
// every live member (the apply function returned success), so a consumer
// that crashes leaves the transaction to the next one, which replays it;
// each event's ID is derived from the commit's position, so a member that
// already applied it does not refresh its keys again.
//
// One Source runs on every node that declares it; Active (the cluster's
// election: the node owning the source's name in the ring) says which one
// consumes. Postgres allows one consumer per slot, so a node that takes
// over waits until the slot is free. A consumer reconnects with backoff
// after errors and restarts of Postgres, resuming from the confirmed
// position. When the slot is more than MaxLag bytes behind, the source
// refreshes every label of its models instead of replaying, and moves the
// slot to the current end of the WAL.
package pgsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/cachenode/cachenode/invalidation"
)

// ApplyFunc applies the requests of one transaction as one event with the
// given ID and returns when every live member applied it
// (node.Node.InvalidateEvent).
type ApplyFunc func(ctx context.Context, id string, reqs []invalidation.Request) (invalidation.Result, error)

// Config configures a Source.
type Config struct {
	// Name names the source (the key of sources: in the config file). Required.
	Name string
	// URL is the PostgreSQL connection string (postgres://user@host/db).
	// Required. It is never logged.
	URL string
	// Password, when not empty, replaces the URL's password. Never logged.
	Password string
	// Slot is the logical replication slot; created (pgoutput) when
	// missing. Default "cachenode".
	Slot string
	// Publication is the publication of the tables; created for them when
	// missing. Default "cachenode".
	Publication string
	// Tables maps tables (schema.table; a bare name is in public) to the
	// models of the invalidation rules. At least one.
	Tables map[string]string
	// Labels gives, per model, the worker labels its rules name: the
	// labels refreshed whole on TRUNCATE and past MaxLag.
	Labels map[string][]string
	// MaxLag, when > 0, is how far (in WAL bytes) the slot may be behind
	// when a consumer starts: beyond it, the source refreshes every label
	// of its models and skips the backlog instead of replaying it.
	MaxLag int64
	// Apply applies one transaction's event. Required.
	Apply ApplyFunc
	// Active reports whether this node is the one that should consume
	// (it is polled). Nil: always.
	Active func() bool
	// Consumer names the node that should consume now, for the status.
	// Nil: this node while active.
	Consumer func() string
	// Self is this node's name, for the status.
	Self string
	// Logger receives the source's events. Default: discarded.
	Logger *slog.Logger
	// StatusInterval is how often the consumer reports its position to
	// Postgres. Default 1s.
	StatusInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnections.
	// Defaults 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
}

// ErrConfig wraps every error of a bad Config.
var ErrConfig = errors.New("pgsource: bad config")

var (
	slotName  = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
	identName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]{0,62}$`)
)

// Validate checks c and fills in the defaults.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if c.Name == "" {
		return bad("name is required")
	}
	if c.URL == "" {
		return bad("postgres: a connection URL is required")
	}
	if _, err := c.connConfig(); err != nil {
		return bad("postgres: %v", err)
	}
	if c.Slot == "" {
		c.Slot = "cachenode"
	}
	if !slotName.MatchString(c.Slot) {
		return bad("slot: %q: a slot name is 1 to 63 of a-z, 0-9 and _", c.Slot)
	}
	if c.Publication == "" {
		c.Publication = "cachenode"
	}
	if !identName.MatchString(c.Publication) {
		return bad("publication: %q is not a plain identifier (letters, digits, _)", c.Publication)
	}
	if len(c.Tables) == 0 {
		return bad("tables: at least one table → model is required")
	}
	norm := make(map[string]string, len(c.Tables))
	for t, m := range c.Tables {
		q, err := qualify(t)
		if err != nil {
			return bad("tables.%s: %v", t, err)
		}
		if m == "" {
			return bad("tables.%s: a model is required", t)
		}
		if _, dup := norm[q]; dup {
			return bad("tables.%s: %s is given twice", t, q)
		}
		norm[q] = m
	}
	c.Tables = norm
	if c.MaxLag < 0 {
		return bad("max_lag: must be >= 0")
	}
	if c.Apply == nil {
		return bad("apply function is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(5*time.Second, c.MinBackoff)
	}
	return nil
}

// qualify returns schema.table for a table name, public when no schema is
// given; both parts must be plain identifiers, in lower case as Postgres
// folds unquoted names.
func qualify(t string) (string, error) {
	schema, table, ok := strings.Cut(t, ".")
	if !ok {
		schema, table = "public", t
	}
	for _, p := range []string{schema, table} {
		if !identName.MatchString(p) || strings.ToLower(p) != p {
			return "", fmt.Errorf("%q is not schema.table of lower-case plain identifiers", t)
		}
	}
	return schema + "." + table, nil
}

func (c *Config) connConfig() (*pgconn.Config, error) {
	pc, err := pgconn.ParseConfig(c.URL)
	if err != nil {
		// The parse error may quote the URL; say what is wrong without it.
		var pe *pgconn.ParseConfigError
		if errors.As(err, &pe) && pe.Unwrap() != nil {
			return nil, fmt.Errorf("not a valid connection URL: %v", pe.Unwrap())
		}
		return nil, errors.New("not a valid connection URL")
	}
	if c.Password != "" {
		pc.Password = c.Password
	}
	pc.RuntimeParams["replication"] = "database"
	pc.RuntimeParams["application_name"] = "cachenode"
	return pc, nil
}

// States of a source.
const (
	StateStandby     = "standby"      // another node consumes
	StateConnecting  = "connecting"   // connecting, checking publication and slot
	StateWaitingSlot = "waiting_slot" // the slot is still in use by another consumer
	StateStreaming   = "streaming"    // consuming
	StateCatchingUp  = "catching_up"  // past max_lag: refreshing whole labels
	StateBackoff     = "backoff"      // an error: reconnecting after a wait
	StateStopped     = "stopped"
)

// Status is what a source reports (the type is invalidation's, so that
// the HTTP API shows it without depending on the database driver).
type Status = invalidation.SourceStatus

// state is a source's status with the positions it is computed from.
type state struct {
	Status
	lastApplied, confirmed, server pglogrepl.LSN
}

// Source is one PostgreSQL source. Run consumes while Active says so.
type Source struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex
	st state // guarded by mu
}

// New validates cfg and returns its source.
func New(cfg Config) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg}
	pc, _ := cfg.connConfig()
	s.log = cfg.Logger.With("source", cfg.Name, "host", pc.Host, "database", pc.Database, "slot", cfg.Slot)
	s.st.Status = Status{Name: cfg.Name, State: StateStandby, Slot: cfg.Slot, Publication: cfg.Publication, Tables: cfg.Tables}
	return s, nil
}

// Name returns the source's name.
func (s *Source) Name() string { return s.cfg.Name }

// Status returns the source's state now.
func (s *Source) Status() Status {
	s.mu.Lock()
	st := s.st
	st.Tables = s.cfg.Tables
	st.Warnings = slices.Clone(s.st.Warnings)
	s.mu.Unlock()
	if !st.Consuming {
		if s.cfg.Consumer != nil {
			st.Consumer = s.cfg.Consumer()
		}
	} else {
		st.Consumer = s.cfg.Self
	}
	if st.lastApplied != 0 {
		st.LastAppliedLSN = st.lastApplied.String()
		st.LastAppliedPosition = uint64(st.lastApplied)
	}
	if st.confirmed != 0 {
		st.ConfirmedLSN = st.confirmed.String()
	}
	if st.server != 0 {
		st.ServerLSN = st.server.String()
	}
	if st.Consuming && st.server > st.confirmed && st.confirmed != 0 {
		st.LagBytes = int64(st.server - st.confirmed)
	}
	return st.Status
}

func (s *Source) update(f func(st *state)) {
	s.mu.Lock()
	f(&s.st)
	s.mu.Unlock()
}

func (s *Source) setState(name string) {
	s.update(func(st *state) {
		st.State = name
		st.Consuming = name == StateStreaming || name == StateCatchingUp
	})
}

func (s *Source) active() bool { return s.cfg.Active == nil || s.cfg.Active() }

// pollEvery is how often a standby asks whether it should consume, and
// the longest a consumer waits for a message before checking again.
const pollEvery = 100 * time.Millisecond

// Run consumes the source while this node is the active one, until ctx
// ends; it returns ctx's error.
func (s *Source) Run(ctx context.Context) error {
	defer s.setState(StateStopped)
	backoff := s.cfg.MinBackoff
	t := time.NewTimer(0)
	defer t.Stop()
	wait := func(d time.Duration) bool {
		t.Reset(d)
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		if !s.active() {
			s.setState(StateStandby)
			if !wait(pollEvery) {
				break
			}
			continue
		}
		progressed, err := s.consume(ctx)
		if ctx.Err() != nil {
			break
		}
		if progressed {
			backoff = s.cfg.MinBackoff
		}
		switch {
		case errors.Is(err, errNotActive):
			s.log.Info("source: another node consumes now", "consumer", s.consumerName())
			continue
		case errors.Is(err, errLagging):
			continue // the next start catches up
		case errors.Is(err, errSlotBusy):
			s.setState(StateWaitingSlot)
			s.log.Info("source: the slot is still in use by another consumer; waiting for it")
			if !wait(min(backoff, time.Second)) {
				return ctx.Err()
			}
			continue
		}
		s.update(func(st *state) { st.Errors++; st.LastError = err.Error() })
		s.setState(StateBackoff)
		s.log.Warn("source: disconnected; reconnecting", "err", err, "in", backoff)
		if !wait(backoff) {
			break
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
	return ctx.Err()
}

func (s *Source) consumerName() string {
	if s.cfg.Consumer != nil {
		return s.cfg.Consumer()
	}
	return ""
}

var (
	errNotActive = errors.New("pgsource: this node is no longer the consumer")
	errSlotBusy  = errors.New("pgsource: the slot is in use")
	errLagging   = errors.New("pgsource: past max_lag")
)

// connect opens a connection with pc, within 10 s.
func connect(ctx context.Context, pc *pgconn.Config) (*pgconn.PgConn, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// closeConn closes conn, waiting at most a second for the server.
func closeConn(conn *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// consume connects, prepares the publication and the slot, and streams
// until an error, the end of ctx, or another node becoming the consumer.
// progressed says that it applied something (the backoff starts again).
func (s *Source) consume(ctx context.Context) (progressed bool, err error) {
	s.setState(StateConnecting)
	pc, err := s.cfg.connConfig()
	if err != nil {
		return false, err
	}
	conn, err := connect(ctx, pc)
	if err != nil {
		return false, err
	}
	defer closeConn(conn)
	start, err := s.prepare(ctx, conn)
	if err != nil {
		return false, err
	}
	if !s.active() {
		return false, errNotActive
	}
	err = pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + s.cfg.Publication + "'"}})
	if err != nil {
		if isInUse(err) {
			return false, errSlotBusy
		}
		return false, fmt.Errorf("start replication: %w", err)
	}
	// A second, ordinary connection: logical decoding may send a commit
	// before the transaction is visible to other sessions, and a refresh
	// that reads the database then would cache the old rows as fresh.
	qc := pc.Copy()
	delete(qc.RuntimeParams, "replication")
	vis, err := connect(ctx, qc)
	if err != nil {
		return false, err
	}
	defer closeConn(vis)
	s.update(func(st *state) { st.confirmed = start; st.LastError = "" })
	s.setState(StateStreaming)
	s.log.Info("source: consuming", "from", start.String())
	st := &stream{s: s, conn: conn, vis: vis, confirmed: start, relations: map[uint32]*relation{}}
	err = st.run(ctx)
	return st.applied > 0, err
}

// isInUse reports a slot held by another connection (SQLSTATE 55006).
func isInUse(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55006"
}

// lit quotes s as an SQL string literal.
func lit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// query runs one simple-protocol statement and returns its rows as text.
func query(ctx context.Context, conn *pgconn.PgConn, sql string) ([][]string, error) {
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for _, r := range res {
		if r.Err != nil {
			return nil, r.Err
		}
		for _, row := range r.Rows {
			out := make([]string, len(row))
			for i, v := range row {
				out[i] = string(v)
			}
			rows = append(rows, out)
		}
	}
	return rows, nil
}

// prepare checks the tables, creates the publication and the slot when
// missing, warns about tables without REPLICA IDENTITY FULL, catches up
// past max_lag, and returns the position to stream from.
func (s *Source) prepare(ctx context.Context, conn *pgconn.PgConn) (pglogrepl.LSN, error) {
	tables := make([]string, 0, len(s.cfg.Tables))
	for t := range s.cfg.Tables {
		tables = append(tables, t)
	}
	slices.Sort(tables)
	var warnings []string
	for _, t := range tables {
		rows, err := query(ctx, conn, "SELECT c.relreplident FROM pg_class c WHERE c.oid = to_regclass("+lit(t)+")")
		if err != nil {
			return 0, fmt.Errorf("table %s: %w", t, err)
		}
		if len(rows) == 0 {
			return 0, fmt.Errorf("table %s does not exist", t)
		}
		if rows[0][0] != "f" {
			w := fmt.Sprintf("table %s has REPLICA IDENTITY %s, not FULL: updates and deletes carry only its key columns as old values, so rules on other columns refresh every variant of their labels (ALTER TABLE %s REPLICA IDENTITY FULL)",
				t, identityName(rows[0][0]), t)
			warnings = append(warnings, w)
		}
	}
	rows, err := query(ctx, conn, "SELECT 1 FROM pg_publication WHERE pubname = "+lit(s.cfg.Publication))
	if err != nil {
		return 0, fmt.Errorf("publication: %w", err)
	}
	if len(rows) == 0 {
		if _, err := query(ctx, conn, "CREATE PUBLICATION "+s.cfg.Publication+" FOR TABLE "+strings.Join(tables, ", ")); err != nil {
			if !isDuplicate(err) { // another node made it meanwhile
				return 0, fmt.Errorf("create publication %s (needs CREATE on the database and ownership of the tables): %w", s.cfg.Publication, err)
			}
		} else {
			s.log.Info("source: created the publication", "publication", s.cfg.Publication, "tables", strings.Join(tables, ","))
		}
	}
	rows, err = query(ctx, conn, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = "+lit(s.cfg.Publication))
	if err != nil {
		return 0, fmt.Errorf("publication tables: %w", err)
	}
	in := map[string]bool{}
	for _, r := range rows {
		in[r[0]] = true
	}
	for _, t := range tables {
		if !in[t] {
			warnings = append(warnings, fmt.Sprintf("table %s is not in publication %s: its changes are not seen (ALTER PUBLICATION %s ADD TABLE %s)",
				t, s.cfg.Publication, s.cfg.Publication, t))
		}
	}
	s.update(func(st *state) {
		if !slices.Equal(st.Warnings, warnings) {
			for _, w := range warnings {
				s.log.Warn("source: " + w)
			}
		}
		st.Warnings = warnings
	})

	rows, err = query(ctx, conn, "SELECT plugin, coalesce(confirmed_flush_lsn::text, ''), active::text, pg_current_wal_lsn()::text FROM pg_replication_slots WHERE slot_name = "+lit(s.cfg.Slot))
	if err != nil {
		return 0, fmt.Errorf("slot: %w", err)
	}
	if len(rows) == 0 {
		res, err := pglogrepl.CreateReplicationSlot(ctx, conn, s.cfg.Slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
		if err != nil {
			if isDuplicate(err) {
				return 0, errSlotBusy // another node made it and may hold it
			}
			return 0, fmt.Errorf("create replication slot %s (needs the REPLICATION attribute): %w", s.cfg.Slot, err)
		}
		s.log.Info("source: created the replication slot", "at", res.ConsistentPoint)
		at, err := pglogrepl.ParseLSN(res.ConsistentPoint)
		if err != nil {
			return 0, fmt.Errorf("slot %s: consistent point %q: %w", s.cfg.Slot, res.ConsistentPoint, err)
		}
		// Nothing followed the changes before the slot existed (a first
		// start, or a slot dropped after Postgres invalidated it): what
		// is cached may predate them.
		if err := s.applyRetrying(ctx, fmt.Sprintf("pg:%s:new:%s", s.cfg.Name, at), s.allLabels(), nil); err != nil {
			return 0, err
		}
		s.update(func(st *state) { st.FullInvalidations++ })
		return at, nil
	}
	plugin, confirmedS, activeS, currentS := rows[0][0], rows[0][1], rows[0][2], rows[0][3]
	if plugin != "pgoutput" {
		return 0, fmt.Errorf("slot %s uses the plugin %q, not pgoutput", s.cfg.Slot, plugin)
	}
	if activeS == "true" {
		return 0, errSlotBusy
	}
	confirmed, err := pglogrepl.ParseLSN(confirmedS)
	if err != nil {
		return 0, fmt.Errorf("slot %s: confirmed position %q: %w", s.cfg.Slot, confirmedS, err)
	}
	current, err := pglogrepl.ParseLSN(currentS)
	if err != nil {
		return 0, fmt.Errorf("current WAL position %q: %w", currentS, err)
	}
	s.update(func(st *state) { st.confirmed, st.server = confirmed, current })
	if s.cfg.MaxLag > 0 && current > confirmed && int64(current-confirmed) > s.cfg.MaxLag {
		if err := s.catchUp(ctx, conn, confirmed, current); err != nil {
			return 0, err
		}
		return current, nil
	}
	return confirmed, nil
}

func identityName(c string) string {
	switch c {
	case "d":
		return "DEFAULT"
	case "n":
		return "NOTHING"
	case "i":
		return "USING INDEX"
	}
	return c
}

func isDuplicate(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42710"
}

// catchUp refreshes every label of the source's models, then moves the
// slot to current: the position taken before the refresh, so a change
// committed during it is replayed as well.
func (s *Source) catchUp(ctx context.Context, conn *pgconn.PgConn, confirmed, current pglogrepl.LSN) error {
	s.setState(StateCatchingUp)
	s.log.Warn("source: the slot is past max_lag; refreshing every label of its models instead of replaying",
		"behind_bytes", int64(current-confirmed), "max_lag", s.cfg.MaxLag)
	if err := s.applyRetrying(ctx, fmt.Sprintf("pg:%s:all:%s", s.cfg.Name, current), s.allLabels(), nil); err != nil {
		return err
	}
	if _, err := query(ctx, conn, "SELECT pg_replication_slot_advance("+lit(s.cfg.Slot)+", "+lit(current.String())+"::pg_lsn)"); err != nil {
		if isInUse(err) {
			return errSlotBusy
		}
		return fmt.Errorf("advance slot: %w", err)
	}
	s.update(func(st *state) { st.FullInvalidations++; st.confirmed = current; st.lastApplied = current })
	return nil
}

// allLabels returns a whole-label request per label of the source's
// models.
func (s *Source) allLabels() []invalidation.Request {
	var reqs []invalidation.Request
	seen := map[string]bool{}
	for _, m := range sortedModels(s.cfg.Tables) {
		for _, l := range s.cfg.Labels[m] {
			if !seen[l] {
				seen[l] = true
				reqs = append(reqs, invalidation.Request{Label: l})
			}
		}
	}
	return reqs
}

// applyRetrying applies reqs until every live member acknowledged, with
// backoff; keepalive runs between attempts (the stream must not time
// out). It gives up when ctx ends or this node stops being the consumer,
// leaving the transaction to the next consumer.
func (s *Source) applyRetrying(ctx context.Context, id string, reqs []invalidation.Request, keepalive func() error) error {
	if len(reqs) == 0 {
		return nil
	}
	backoff := s.cfg.MinBackoff
	for {
		res, err := s.cfg.Apply(ctx, id, reqs)
		if err == nil && len(res.Missing) == 0 {
			return nil
		}
		if err != nil && (errors.Is(err, invalidation.ErrBadRequest) || errors.Is(err, invalidation.ErrUnknownModel) || errors.Is(err, invalidation.ErrUnknownLabel)) {
			// It can never apply as it is: refresh the whole labels of
			// its models rather than lose it or stop the stream.
			s.log.Error("source: a transaction's event is refused; refreshing its models' labels whole", "err", err)
			s.update(func(st *state) { st.Errors++; st.LastError = err.Error() })
			whole := s.wholeLabels(reqs)
			if len(whole) == 0 || slices.EqualFunc(whole, reqs, func(a, b invalidation.Request) bool { return a.Label == b.Label && b.Model == "" }) {
				return nil // nothing wider to do
			}
			reqs = whole
			continue
		}
		if err == nil {
			err = fmt.Errorf("not acknowledged by %s", strings.Join(res.Missing, ", "))
		}
		s.update(func(st *state) { st.Errors++; st.LastError = "apply: " + err.Error() })
		s.log.Warn("source: event not applied by every member; retrying", "event", id, "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		if !s.active() {
			return errNotActive
		}
		if keepalive != nil {
			if err := keepalive(); err != nil {
				return err
			}
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// wholeLabels turns requests into whole-label requests of the labels of
// their models.
func (s *Source) wholeLabels(reqs []invalidation.Request) []invalidation.Request {
	var out []invalidation.Request
	seen := map[string]bool{}
	for _, r := range reqs {
		labels := s.cfg.Labels[r.Model]
		if r.Model == "" {
			labels = []string{r.Label}
		}
		for _, l := range labels {
			if !seen[l] {
				seen[l] = true
				out = append(out, invalidation.Request{Label: l})
			}
		}
	}
	return out
}

// stream is one replication session.
type stream struct {
	s          *Source
	conn       *pgconn.PgConn
	vis        *pgconn.PgConn // ordinary connection: visibility of commits
	confirmed  pglogrepl.LSN
	server     pglogrepl.LSN
	relations  map[uint32]*relation
	tx         *txn
	lastStatus time.Time
	applied    int
}

func (st *stream) sendStatus(ctx context.Context) error {
	st.lastStatus = time.Now()
	return pglogrepl.SendStandbyStatusUpdate(ctx, st.conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: st.confirmed})
}

func (st *stream) run(ctx context.Context) error {
	s := st.s
	for {
		if !s.active() {
			_ = st.sendStatus(ctx)
			return errNotActive
		}
		if time.Since(st.lastStatus) >= s.cfg.StatusInterval {
			if err := st.sendStatus(ctx); err != nil {
				return fmt.Errorf("status update: %w", err)
			}
		}
		rctx, cancel := context.WithTimeout(ctx, pollEvery)
		msg, err := st.conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyData:
			if err := st.handle(ctx, m.Data); err != nil {
				return err
			}
		}
	}
}

func (st *stream) handle(ctx context.Context, data []byte) error {
	s := st.s
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("keepalive: %w", err)
		}
		st.server = max(st.server, pkm.ServerWALEnd)
		if st.tx == nil && pkm.ServerWALEnd > st.confirmed {
			// Every commit before this position was sent, and applied:
			// nothing of interest lies before it.
			st.confirmed = pkm.ServerWALEnd
		}
		st.publish(0, false)
		if pkm.ReplyRequested {
			return st.sendStatus(ctx)
		}
		return nil
	case pglogrepl.XLogDataByteID:
	default:
		return nil
	}
	xld, err := pglogrepl.ParseXLogData(data[1:])
	if err != nil {
		return fmt.Errorf("xlog data: %w", err)
	}
	st.server = max(st.server, xld.ServerWALEnd)
	lm, err := pglogrepl.Parse(xld.WALData)
	if err != nil {
		return fmt.Errorf("pgoutput: %w", err)
	}
	switch m := lm.(type) {
	case *pglogrepl.RelationMessage:
		st.relations[m.RelationID] = relationOf(m, s.cfg.Tables)
	case *pglogrepl.BeginMessage:
		st.tx = newTxn(m)
	case *pglogrepl.InsertMessage:
		return st.row(m.RelationID, m)
	case *pglogrepl.UpdateMessage:
		return st.row(m.RelationID, m)
	case *pglogrepl.DeleteMessage:
		return st.row(m.RelationID, m)
	case *pglogrepl.TruncateMessage:
		if st.tx == nil {
			return errors.New("pgoutput: truncate outside a transaction")
		}
		for _, id := range m.RelationIDs {
			if r := st.relations[id]; r != nil && r.model != "" {
				st.tx.truncate(r.model)
			}
		}
	case *pglogrepl.CommitMessage:
		if st.tx == nil {
			return errors.New("pgoutput: commit outside a transaction")
		}
		tx := st.tx
		reqs := tx.requests(s.cfg.Labels)
		if len(reqs) > 0 {
			if err := st.waitVisible(ctx, tx.xid); err != nil {
				return err
			}
		}
		id := fmt.Sprintf("pg:%s:%s:%d", s.cfg.Name, m.CommitLSN, tx.xid)
		if err := s.applyRetrying(ctx, id, reqs, func() error { return st.sendStatus(ctx) }); err != nil {
			return err
		}
		st.tx = nil
		st.confirmed = max(st.confirmed, m.TransactionEndLSN)
		if len(reqs) > 0 {
			st.applied++
			s.update(func(ss *state) {
				ss.Transactions++
				ss.Changes += uint64(tx.rows)
				ss.lastApplied = m.CommitLSN
				ss.LastApplied = time.Now()
			})
		}
		st.publish(time.Since(tx.commitTime).Seconds(), true)
		if err := st.sendStatus(ctx); err != nil {
			return fmt.Errorf("status update: %w", err)
		}
		if s.cfg.MaxLag > 0 && st.server > st.confirmed && int64(st.server-st.confirmed) > s.cfg.MaxLag {
			return errLagging
		}
	}
	return nil
}

// waitVisible returns once transaction xid is visible to new snapshots:
// Postgres writes the commit record (which decoding sends at once) before
// it takes the transaction out of the running set.
func (st *stream) waitVisible(ctx context.Context, xid uint32) error {
	// The 32-bit xid gets the epoch of the snapshot's xmax (the one
	// before when that puts it past xmax); visible means completed before
	// the snapshot: below xmax and not among the running ones.
	q := fmt.Sprintf(`SELECT pg_visible_in_snapshot((CASE WHEN f > xm THEN f - 4294967296 ELSE f END)::text::xid8, s)::text
FROM (SELECT s, xm, ((xm >> 32) << 32) | %d AS f
      FROM (SELECT s, pg_snapshot_xmax(s)::text::bigint AS xm FROM (SELECT pg_current_snapshot() AS s) a) b) c`, xid)
	for {
		rows, err := query(ctx, st.vis, q)
		if err != nil {
			return fmt.Errorf("visibility of transaction %d: %w", xid, err)
		}
		if len(rows) == 1 && rows[0][0] == "true" {
			return nil
		}
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// publish copies the stream's positions into the status.
func (st *stream) publish(lagSeconds float64, commit bool) {
	st.s.update(func(ss *state) {
		ss.confirmed, ss.server = st.confirmed, max(ss.server, st.server)
		if commit {
			ss.LagSeconds = lagSeconds
		} else if st.tx == nil && st.confirmed >= st.server {
			ss.LagSeconds = 0
		}
	})
}

func (st *stream) row(relID uint32, msg pglogrepl.Message) error {
	r := st.relations[relID]
	if r == nil {
		return fmt.Errorf("pgoutput: row of unknown relation %d", relID)
	}
	if r.model == "" {
		return nil
	}
	if st.tx == nil {
		return errors.New("pgoutput: row change outside a transaction")
	}
	c, err := r.change(msg)
	if err != nil {
		return err
	}
	st.tx.add(r.model, c)
	return nil
}
