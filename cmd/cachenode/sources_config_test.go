package main

import (
	"bytes"
	"strings"
	"testing"
)

const sourcesBase = `name: n1
insecure: true
workers:
  foos:
    origin: http://127.0.0.1:9000/foos
  bars:
    origin: http://127.0.0.1:9000/bars
invalidation:
  Foo:
    foos: {args: [attr1]}
  Bar:
    bars: {is_empty: true}
`

func TestSourcesConfig(t *testing.T) {
	pw := writeFile(t, "pw", "s3cret-file\n")
	path := writeFile(t, "c.yaml", sourcesBase+`sources:
  main:
    postgres: postgres://cachenode@127.0.0.1:5432/app
    password_file: `+pw+`
    slot: cache_slot
    publication: cache_pub
    tables: {public.foo: Foo, bar: Bar}
    max_lag: 64MiB
  other:
    postgres: postgres://cachenode@127.0.0.1:5432/other
    password_env: CACHENODE_PG_PASSWORD
    tables: {app.foo: Foo}
`)
	env := map[string]string{"CACHENODE_PG_PASSWORD": "s3cret-env"}
	rc, err := loadConfig([]string{"--config", path}, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.Sources) != 2 {
		t.Fatalf("sources %+v", rc.Sources)
	}
	m, o := rc.Sources[0], rc.Sources[1]
	if m.Name != "main" || m.Password != "s3cret-file" || m.Slot != "cache_slot" || m.Publication != "cache_pub" ||
		m.Tables["public.foo"] != "Foo" || m.Tables["public.bar"] != "Bar" || m.MaxLag != 64<<20 ||
		len(m.Labels["Foo"]) != 1 || m.Labels["Foo"][0] != "foos" || m.Labels["Bar"][0] != "bars" {
		t.Errorf("main: %+v", m)
	}
	if o.Name != "other" || o.Password != "s3cret-env" || o.Slot != "cachenode" || o.Publication != "cachenode" || o.Tables["app.foo"] != "Foo" {
		t.Errorf("other: %+v", o)
	}
}

func TestBadSourcesConfig(t *testing.T) {
	pw := writeFile(t, "pw", "hunter2")
	empty := writeFile(t, "empty", "\n")
	for _, tc := range []struct{ src, want string }{
		{"  s:\n    tables: {foo: Foo}\n", "sources.s.postgres: a connection URL is required"},
		{"  s:\n    postgres: postgres://u:hunter2@h/db\n    tables: {foo: Nope}\n", `sources.s.tables.foo: model "Nope" has no rules`},
		{"  s:\n    postgres: postgres://u@h/db\n", "sources.s.tables: at least one table"},
		{"  s:\n    postgres: postgres://u@h/db\n    tables: {Foo: Foo}\n", "sources.s.tables.Foo"},
		{"  s:\n    postgres: postgres://u@h/db\n    tables: {a.b.c: Foo}\n", "sources.s.tables.a.b.c"},
		{"  s:\n    postgres: postgres://u@h/db\n    slot: Bad-Slot\n    tables: {foo: Foo}\n", `sources.s.slot: "Bad-Slot"`},
		{"  s:\n    postgres: postgres://u@h/db\n    publication: \"x;drop\"\n    tables: {foo: Foo}\n", "sources.s.publication"},
		{"  s:\n    postgres: \"postgres://u:hunter2@h:port/db\"\n    tables: {foo: Foo}\n", "sources.s.postgres: not a valid connection URL"},
		{"  s:\n    postgres: postgres://u@h/db\n    tables: {foo: Foo}\n    password_env: PGPASSWORD\n", "must start with CACHENODE_"},
		{"  s:\n    postgres: postgres://u@h/db\n    tables: {foo: Foo}\n    password_env: CACHENODE_UNSET\n", "CACHENODE_UNSET is not set"},
		{"  s:\n    postgres: postgres://u@h/db\n    tables: {foo: Foo}\n    password_file: /nonexistent/pw\n", "sources.s.password_file"},
		{"  s:\n    postgres: postgres://u@h/db\n    tables: {foo: Foo}\n    password_file: " + empty + "\n", "is empty"},
		{"  s:\n    postgres: postgres://u@h/db\n    tables: {foo: Foo}\n    password_file: " + pw + "\n    password_env: CACHENODE_X\n", "not both"},
		{"  s:\n    postgres: postgres://u@h/db\n    tables: {foo: Foo}\n    slto: x\n", "sources.s.slto: unknown field"},
		{"  s:\n    postgres: postgres://u@h/db\n    tables: {foo: Foo}\n    max_lag: lots\n", "sources.s.max_lag"},
		{"  a:\n    postgres: postgres://u@h/db\n    tables: {foo: Foo}\n  b:\n    postgres: postgres://u@h/db2\n    tables: {bar: Bar}\n", `sources.b.slot: slot "cachenode" is already used by sources.a`},
	} {
		path := writeFile(t, "c.yaml", sourcesBase+"sources:\n"+tc.src)
		_, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the error shows the password: %v", tc.src, err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: not one line: %q", tc.src, err)
		}
	}
}
