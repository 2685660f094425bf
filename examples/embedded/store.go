package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"
)

// Foo is the model of the original library's README: two attributes that
// the filtered list is keyed by, and a third that no list depends on.
type Foo struct {
	ID    int64    `json:"id" msgpack:"id"`
	Attr1 int64    `json:"attr1" msgpack:"attr1"`
	Attr2 string   `json:"attr2" msgpack:"attr2"`
	Attr3 *float64 `json:"attr3" msgpack:"attr3"`
}

// fields is the record of a Foo as a change event carries it: the values
// the invalidation rules read.
func (f Foo) fields() map[string]any {
	m := map[string]any{"id": f.ID, "attr1": f.Attr1, "attr2": f.Attr2, "attr3": nil}
	if f.Attr3 != nil {
		m["attr3"] = *f.Attr3
	}
	return m
}

// colours are the values of attr2 in the generated data; attr1 is 0-9.
var colours = []string{"red", "green", "blue", "amber"}

// errNotFound is returned for a Foo that does not exist.
var errNotFound = errors.New("foo not found")

// store is the application's database: one SQLite file that every instance
// of the service opens, as the instances of a web service share their
// database. It is safe for concurrent use (database/sql pools connections).
type store struct {
	db *sql.DB
}

// openStore opens (and on first start creates and fills) the database at
// path. Several processes may open the same file: WAL lets readers run
// beside one writer, busy_timeout makes a writer wait for another instead
// of failing, and immediate transactions take the write lock up front so
// that two instances starting together do not both generate the rows.
func openStore(ctx context.Context, path string, rows int) (*store, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	s := &store{db: db}
	if err := s.init(ctx, rows); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	return s, nil
}

func (s *store) init(ctx context.Context, rows int) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS foo (
		id    INTEGER PRIMARY KEY,
		attr1 INTEGER NOT NULL,
		attr2 TEXT NOT NULL,
		attr3 REAL
	)`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `CREATE INDEX IF NOT EXISTS foo_attrs ON foo (attr1, attr2)`); err != nil {
		return err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM foo`).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		// First start: generate the rows, the same ones every time.
		r := rand.New(rand.NewPCG(1, 2))
		ins, err := tx.PrepareContext(ctx, `INSERT INTO foo (attr1, attr2, attr3) VALUES (?, ?, ?)`)
		if err != nil {
			return err
		}
		defer ins.Close()
		for range rows {
			var a3 any
			if r.IntN(4) > 0 {
				a3 = float64(r.IntN(10000)) / 100
			}
			if _, err := ins.ExecContext(ctx, r.Int64N(10), colours[r.IntN(len(colours))], a3); err != nil {
				return err
			}
		}
	}
	return tx.Commit()
}

func (s *store) Close() error { return s.db.Close() }

// All returns every Foo, by id: the getter of all_foos.
func (s *store) All(ctx context.Context) ([]Foo, error) {
	return s.query(ctx, `SELECT id, attr1, attr2, attr3 FROM foo ORDER BY id`)
}

// Filter returns the Foos whose attr1 is one of attr1 and whose attr2 is
// one of attr2; an empty list does not constrain its attribute. It is the
// getter of filtered_foos.
func (s *store) Filter(ctx context.Context, attr1 []int64, attr2 []string) ([]Foo, error) {
	var where []string
	var args []any
	if len(attr1) > 0 {
		where = append(where, "attr1 IN ("+placeholders(len(attr1))+")")
		for _, v := range attr1 {
			args = append(args, v)
		}
	}
	if len(attr2) > 0 {
		where = append(where, "attr2 IN ("+placeholders(len(attr2))+")")
		for _, v := range attr2 {
			args = append(args, v)
		}
	}
	q := `SELECT id, attr1, attr2, attr3 FROM foo`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return s.query(ctx, q+" ORDER BY id", args...)
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

func (s *store) query(ctx context.Context, q string, args ...any) ([]Foo, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	foos := []Foo{}
	for rows.Next() {
		var f Foo
		if err := rows.Scan(&f.ID, &f.Attr1, &f.Attr2, &f.Attr3); err != nil {
			return nil, err
		}
		foos = append(foos, f)
	}
	return foos, rows.Err()
}

// Get returns one Foo.
func (s *store) Get(ctx context.Context, id int64) (Foo, error) {
	return getFoo(ctx, s.db, id)
}

type queryer interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func getFoo(ctx context.Context, q queryer, id int64) (Foo, error) {
	var f Foo
	err := q.QueryRowContext(ctx, `SELECT id, attr1, attr2, attr3 FROM foo WHERE id = ?`, id).Scan(&f.ID, &f.Attr1, &f.Attr2, &f.Attr3)
	if errors.Is(err, sql.ErrNoRows) {
		return f, errNotFound
	}
	return f, err
}

// fooPatch is a change of some fields of a Foo; nil fields are kept.
// Attr3 set to JSON null clears it: ClearAttr3 records that.
type fooPatch struct {
	Attr1      *int64
	Attr2      *string
	Attr3      *float64
	ClearAttr3 bool
}

// Update applies p to the Foo id in one transaction and returns the values
// before and after: the old and new of the change event.
func (s *store) Update(ctx context.Context, id int64, p fooPatch) (old, updated Foo, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return old, updated, err
	}
	defer tx.Rollback()
	old, err = getFoo(ctx, tx, id)
	if err != nil {
		return old, updated, err
	}
	updated = old
	if p.Attr1 != nil {
		updated.Attr1 = *p.Attr1
	}
	if p.Attr2 != nil {
		updated.Attr2 = *p.Attr2
	}
	if p.Attr3 != nil {
		v := *p.Attr3
		updated.Attr3 = &v
	}
	if p.ClearAttr3 {
		updated.Attr3 = nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE foo SET attr1 = ?, attr2 = ?, attr3 = ? WHERE id = ?`,
		updated.Attr1, updated.Attr2, updated.Attr3, id); err != nil {
		return old, updated, err
	}
	return old, updated, tx.Commit()
}

// Create inserts a Foo and returns it with its id.
func (s *store) Create(ctx context.Context, f Foo) (Foo, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO foo (attr1, attr2, attr3) VALUES (?, ?, ?)`, f.Attr1, f.Attr2, f.Attr3)
	if err != nil {
		return f, err
	}
	f.ID, err = res.LastInsertId()
	return f, err
}

// Delete removes the Foo id and returns what it was.
func (s *store) Delete(ctx context.Context, id int64) (Foo, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Foo{}, err
	}
	defer tx.Rollback()
	old, err := getFoo(ctx, tx, id)
	if err != nil {
		return old, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM foo WHERE id = ?`, id); err != nil {
		return old, err
	}
	return old, tx.Commit()
}
