package pgsource

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/cachenode/cachenode/invalidation"
)

// relation is what a Relation message said of a table, with the model
// its rows are records of ("" for a table the config does not map).
type relation struct {
	table    string // schema.table
	model    string
	identity byte // 'd' default, 'f' full, 'i' index, 'n' nothing
	cols     []column
}

type column struct {
	name string
	oid  uint32
	key  bool
}

func relationOf(m *pglogrepl.RelationMessage, tables map[string]string) *relation {
	r := &relation{table: m.Namespace + "." + m.RelationName, identity: m.ReplicaIdentity}
	r.model = tables[r.table]
	for _, c := range m.Columns {
		r.cols = append(r.cols, column{name: c.Name, oid: c.DataType, key: c.Flags&1 != 0})
	}
	return r
}

// txn collects the changes of one transaction, per model in the order
// each model was first touched and, within a model, in commit order.
type txn struct {
	xid        uint32
	commitTime time.Time
	models     []string
	changes    map[string][]invalidation.Change
	truncated  map[string]bool // models truncated, or past maxTxChanges: every label
	rows       int
}

func newTxn(b *pglogrepl.BeginMessage) *txn {
	return &txn{xid: b.Xid, commitTime: b.CommitTime, changes: map[string][]invalidation.Change{}, truncated: map[string]bool{}}
}

func (t *txn) touch(model string) {
	if _, ok := t.changes[model]; !ok && !t.truncated[model] {
		t.models = append(t.models, model)
	}
}

// maxTxChanges bounds the row changes of one model kept for one
// transaction: past it the transaction refreshes every label of the model
// (as TRUNCATE does), so that a huge transaction neither holds every row in
// memory nor becomes an event too large to send.
const maxTxChanges = 50_000

func (t *txn) add(model string, c invalidation.Change) {
	t.touch(model)
	t.rows++
	if t.truncated[model] {
		return
	}
	if len(t.changes[model]) >= maxTxChanges {
		t.changes[model] = nil
		t.truncated[model] = true
		return
	}
	t.changes[model] = append(t.changes[model], c)
}

func (t *txn) truncate(model string) {
	t.touch(model)
	if _, ok := t.changes[model]; !ok {
		t.changes[model] = nil
	}
	t.truncated[model] = true
	t.rows++
}

// requests is the transaction as invalidation requests: one per model
// with every row change of it, and one whole-label request per label of a
// truncated model (labels gives the labels of a model's rules).
func (t *txn) requests(labels map[string][]string) []invalidation.Request {
	var out []invalidation.Request
	for _, m := range t.models {
		if t.truncated[m] {
			for _, l := range labels[m] {
				out = append(out, invalidation.Request{Label: l})
			}
			continue
		}
		if len(t.changes[m]) > 0 {
			out = append(out, invalidation.Request{Model: m, Changes: t.changes[m]})
		}
	}
	return out
}

// record decodes a tuple into a record: column name → value. Columns sent
// as "unchanged TOAST" take their value from fallback (the old row, when
// the table's identity sent it) or are left out; with keysOnly, only the
// key columns are kept (a 'K' old tuple carries NULL in every other one).
// A column left out of a record constrains no variant: a rule that names
// it affects every variant of its label for that attribute, never fewer.
func (r *relation) record(tup *pglogrepl.TupleData, fallback map[string]any, keysOnly bool) (map[string]any, error) {
	if tup == nil {
		return nil, nil
	}
	if len(tup.Columns) != len(r.cols) {
		return nil, fmt.Errorf("pgsource: %s: tuple has %d columns, relation %d", r.table, len(tup.Columns), len(r.cols))
	}
	rec := make(map[string]any, len(r.cols))
	for i, c := range tup.Columns {
		col := r.cols[i]
		if keysOnly && !col.key {
			continue
		}
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			rec[col.name] = nil
		case pglogrepl.TupleDataTypeToast:
			if v, ok := fallback[col.name]; ok {
				rec[col.name] = v
			}
		case pglogrepl.TupleDataTypeText:
			rec[col.name] = textValue(col.oid, c.Data)
		default: // binary: not asked for
			rec[col.name] = string(c.Data)
		}
	}
	return rec, nil
}

// keys returns the key columns of rec.
func (r *relation) keys(rec map[string]any) map[string]any {
	out := map[string]any{}
	for _, c := range r.cols {
		if v, ok := rec[c.name]; ok && c.key {
			out[c.name] = v
		}
	}
	return out
}

// Type OIDs of the built-in types decoded to Go values.
const (
	oidBool    = 16
	oidInt8    = 20
	oidInt2    = 21
	oidInt4    = 23
	oidOID     = 26
	oidFloat4  = 700
	oidFloat8  = 701
	oidNumeric = 1700
)

// textValue turns a column's text form into the value a record field has
// in a change event: booleans and numbers as such (so that the match
// tokens are those of the same values given as worker arguments), every
// other type as its text.
func textValue(oid uint32, b []byte) any {
	s := string(b)
	switch oid {
	case oidBool:
		return s == "t"
	case oidInt2, oidInt4, oidInt8, oidOID:
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			return v
		}
	case oidFloat4, oidFloat8, oidNumeric:
		if v, err := strconv.ParseFloat(s, 64); err == nil {
			return v
		}
	}
	return s
}

// change decodes one row message of a mapped table.
func (r *relation) change(msg pglogrepl.Message) (invalidation.Change, error) {
	switch m := msg.(type) {
	case *pglogrepl.InsertMessage:
		rec, err := r.record(m.Tuple, nil, false)
		return invalidation.Change{Op: invalidation.OpCreate, New: rec}, err
	case *pglogrepl.UpdateMessage:
		old, err := r.record(m.OldTuple, nil, m.OldTupleType == pglogrepl.UpdateMessageTupleTypeKey)
		if err != nil {
			return invalidation.Change{}, err
		}
		nw, err := r.record(m.NewTuple, old, false)
		if err != nil {
			return invalidation.Change{}, err
		}
		if old == nil {
			// Default identity and the key did not change: Postgres sent
			// no old row. The old record is its key, so a rule on other
			// columns refreshes every variant (it cannot know which the
			// row left).
			old = r.keys(nw)
		}
		return invalidation.Change{Op: invalidation.OpUpdate, Old: old, New: nw}, nil
	case *pglogrepl.DeleteMessage:
		old, err := r.record(m.OldTuple, nil, m.OldTupleType == pglogrepl.DeleteMessageTupleTypeKey)
		if old == nil {
			old = map[string]any{}
		}
		return invalidation.Change{Op: invalidation.OpDelete, Old: old}, err
	}
	return invalidation.Change{}, fmt.Errorf("pgsource: unexpected message %T", msg)
}

// sortedModels returns the distinct models of tables, sorted.
func sortedModels(tables map[string]string) []string {
	var out []string
	for _, m := range tables {
		out = append(out, m)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
