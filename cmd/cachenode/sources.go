package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/invalidation/pgsource"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/node/httpapi"
	"github.com/cachenode/cachenode/worker"
)

// sourceConfig is one entry of sources: a PostgreSQL database whose
// committed row changes of the mapped tables become change events.
type sourceConfig struct {
	// Postgres is the connection URL. A password in it works, but is
	// better kept out of the file: password_file or password_env.
	Postgres string `yaml:"postgres"`
	// PasswordFile holds the password (trailing white space trimmed).
	PasswordFile string `yaml:"password_file"`
	// PasswordEnv names a CACHENODE_* environment variable holding it.
	PasswordEnv string `yaml:"password_env"`
	Slot        string `yaml:"slot"`
	Publication string `yaml:"publication"`
	// Tables maps schema.table to a model of invalidation:.
	Tables map[string]string `yaml:"tables"`
	// MaxLag: past this much WAL behind, refresh every label of the
	// source's models instead of replaying. Default 0: always replay.
	MaxLag worker.ConfigSize `yaml:"max_lag"`
}

// resolveSources validates the sources: block and turns it into the
// sources' configs (without their node wiring, done by startSources).
func resolveSources(fc fileConfig, getenv func(string) string) ([]pgsource.Config, error) {
	var out []pgsource.Config
	slots := map[string]string{}
	for _, name := range sortedKeys(fc.Sources) {
		sc := fc.Sources[name]
		path := "sources." + name
		if !identOK(name) {
			return nil, usagef("%s: a source name is letters, digits, _ and -", path)
		}
		if sc.Postgres == "" {
			return nil, usagef("%s.postgres: a connection URL is required (postgres://user@host:5432/db)", path)
		}
		c := pgsource.Config{Name: name, URL: sc.Postgres, Slot: sc.Slot, Publication: sc.Publication,
			Tables: sc.Tables, MaxLag: int64(sc.MaxLag), Labels: map[string][]string{}}
		switch {
		case sc.PasswordFile != "" && sc.PasswordEnv != "":
			return nil, usagef("%s: give password_file or password_env, not both", path)
		case sc.PasswordFile != "":
			b, err := os.ReadFile(sc.PasswordFile)
			if err != nil {
				return nil, usagef("%s.password_file: %v", path, err)
			}
			c.Password = strings.TrimRight(string(b), " \t\r\n")
			if c.Password == "" {
				return nil, usagef("%s.password_file: %s is empty", path, sc.PasswordFile)
			}
		case sc.PasswordEnv != "":
			if !strings.HasPrefix(sc.PasswordEnv, "CACHENODE_") {
				return nil, usagef("%s.password_env: %q must start with CACHENODE_", path, sc.PasswordEnv)
			}
			c.Password = getenv(sc.PasswordEnv)
			if c.Password == "" {
				return nil, usagef("%s.password_env: %s is not set", path, sc.PasswordEnv)
			}
		}
		for _, table := range sortedKeys(sc.Tables) {
			model := sc.Tables[table]
			rules, ok := fc.Invalidation[model]
			if !ok {
				return nil, usagef("%s.tables.%s: model %q has no rules in invalidation:", path, table, model)
			}
			labels := sortedKeys(rules)
			c.Labels[model] = labels
		}
		c.Apply = func(context.Context, string, []invalidation.Request) (invalidation.Result, error) {
			return invalidation.Result{}, errors.New("not wired") // set by startSources
		}
		if err := c.Validate(); err != nil {
			msg := strings.TrimPrefix(err.Error(), pgsource.ErrConfig.Error()+": ")
			return nil, usagef("%s.%s", path, msg)
		}
		c.Apply = nil
		if other, dup := slots[c.Slot]; dup {
			return nil, usagef("%s.slot: slot %q is already used by sources.%s (one consumer per slot)", path, c.Slot, other)
		}
		slots[c.Slot] = name
		out = append(out, c)
	}
	return out, nil
}

func identOK(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// electionKey is the ring key whose owner consumes a source.
func electionKey(name string) string { return "source/" + name }

// sources are the running sources of a node.
type sources struct {
	list   []*pgsource.Source
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startSources builds the sources of rc on n and runs them: on every
// node, each source consumes while this node owns the source's name in
// the ring (and is ready), and stands by otherwise.
func startSources(cfgs []pgsource.Config, n *node.Node, log *slog.Logger) (*sources, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sources{cancel: cancel}
	for _, c := range cfgs {
		key := electionKey(c.Name)
		c.Apply = n.InvalidateEvent
		c.Active = func() bool { return n.Ready() && n.Owner(key) == n.Name() }
		c.Consumer = func() string { return n.Owner(key) }
		c.Self = n.Name()
		c.Logger = log
		src, err := pgsource.New(c)
		if err != nil {
			cancel()
			return nil, usagef("sources.%s: %v", c.Name, err)
		}
		s.list = append(s.list, src)
	}
	for _, src := range s.list {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = src.Run(ctx)
		}()
	}
	return s, nil
}

// statuses returns the status of every source, by name, for the HTTP API.
func (s *sources) statuses() []httpapi.SourceStatus {
	out := make([]httpapi.SourceStatus, 0, len(s.list))
	for _, src := range s.list {
		out = append(out, httpapi.SourceStatus(src.Status()))
	}
	slices.SortFunc(out, func(a, b httpapi.SourceStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// stop ends the sources and waits for them: the slots are released, for
// the next owner to take over.
func (s *sources) stop() {
	if s == nil {
		return
	}
	s.cancel()
	s.wg.Wait()
}
