package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decodeYAML decodes a config document into v with yaml.v3's strict mode
// (KnownFields): an unknown or repeated field is an error. The durations
// and sizes read themselves (worker.ConfigDuration, worker.ConfigSize), as
// do the fields written either as a scalar or as a mapping or list
// (membership, join). The first error is returned as one line naming the
// line and the field's path: "line 4: workers.all_foos.expires: bad
// duration ...".
func decodeYAML(r io.Reader, v any) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return errors.New(oneLine(err))
	}
	if len(doc.Content) == 0 {
		return nil // an empty file is an empty config
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) || len(te.Errors) == 0 {
			return errors.New(oneLine(err))
		}
		return errors.New(explain(te.Errors[0], index(doc.Content[0], nil), reflect.TypeOf(v).Elem()))
	}
	if n, ok := v.(nullReader); ok {
		n.readNulls(doc.Content[0])
	}
	return nil
}

// nullReader is a config type with a field whose null (a key with nothing
// after it) means something: yaml.v3 calls no unmarshaler for a null, and
// leaves the field as if it were absent.
type nullReader interface {
	readNulls(root *yaml.Node)
}

// entry is a key of the document: its path (and the path's parts), its
// node and its value's.
type entry struct {
	path       string
	parts      []string
	key, value *yaml.Node
}

// index lists the keys of the mappings under n, in document order.
func index(n *yaml.Node, parts []string) []entry {
	var out []entry
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := append(slices.Clip(parts), k.Value)
			out = append(out, entry{strings.Join(p, "."), p, k, v})
			out = append(out, index(v, p)...)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			out = append(out, index(c, parts)...)
		}
	}
	return out
}

var (
	lineRE    = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownRE = regexp.MustCompile(`^field (\S+) not found in type `)
	twiceRE   = regexp.MustCompile(`^mapping key "(.*)" already defined at line (\d+)$`)
	typeRE    = regexp.MustCompile("^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (\\S+)$")
)

// explain rewrites one of yaml.v3's errors ("line 4: field expirse not
// found in type main.workerConfig") as one naming the field's path and,
// for an unknown field, the known ones: "line 4: workers.w.expirse:
// unknown field (known: ...)". root is the type decoded into.
func explain(msg string, keys []entry, root reflect.Type) string {
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	line, what := m[1], m[2]
	at := func(match func(entry) bool) entry {
		for _, e := range keys {
			if fmt.Sprint(e.key.Line) == line && match(e) {
				return e
			}
		}
		for _, e := range keys { // a value on its own line: a list's, a block scalar's
			if fmt.Sprint(e.value.Line) == line && match(e) {
				return e
			}
		}
		return entry{}
	}
	var e entry
	switch {
	case unknownRE.MatchString(what):
		name := unknownRE.FindStringSubmatch(what)[1]
		e = at(func(e entry) bool { return e.key.Value == name })
		what = "unknown field"
		if e.parts == nil {
			break
		}
		if known := fieldsAt(root, e.parts[:len(e.parts)-1]); len(known) > 0 {
			what += " (known: " + strings.Join(known, ", ") + ")"
		}
	case twiceRE.MatchString(what):
		t := twiceRE.FindStringSubmatch(what)
		e = at(func(e entry) bool { return e.key.Value == t[1] })
		what = "given twice (first at line " + t[2] + ")"
	default:
		// A value the field's type refuses: find it by its text.
		value := ""
		if t := typeRE.FindStringSubmatch(what); t != nil {
			value = t[2]
			what = wantType(t[1], t[2], t[3])
		}
		e = at(func(e entry) bool {
			return e.value.Kind == yaml.ScalarNode && (value == "" && strings.Contains(what, fmt.Sprintf("%q", e.value.Value)) ||
				value != "" && e.value.Value == value)
		})
		if e.parts == nil {
			e = at(func(entry) bool { return true })
		}
	}
	if e.parts == nil {
		e.path = "(top level)"
	}
	return "line " + line + ": " + e.path + ": " + what
}

// wantType words yaml.v3's "cannot unmarshal !!str `x` into T" without
// the Go types of this program.
func wantType(tag, value, into string) string {
	got := fmt.Sprintf("%s `%s`", tag, value)
	switch tag {
	case "!!map":
		got = "a mapping"
	case "!!seq":
		got = "a list"
	}
	switch {
	case strings.HasPrefix(into, "map["):
		return "want a mapping, got " + got
	case strings.HasPrefix(into, "[]"):
		return "want a list, got " + got
	case strings.HasPrefix(into, "main."):
		return "want a mapping of fields, got " + got
	}
	return "cannot unmarshal " + got + " into " + into
}

// fieldsAt lists the YAML names of the fields of the struct at path (map
// keys included) under t, for the error of an unknown field.
func fieldsAt(t reflect.Type, path []string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if len(path) > 0 {
		switch t.Kind() {
		case reflect.Map:
			return fieldsAt(t.Elem(), path[1:])
		case reflect.Struct:
			for i := range t.NumField() {
				f := t.Field(i)
				name, opt, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if opt == "inline" {
					if names := fieldsAt(f.Type, []string{}); slices.Contains(names, path[0]) {
						return fieldsAt(f.Type, path)
					}
				} else if name == path[0] {
					return fieldsAt(f.Type, path[1:])
				}
			}
		}
		return nil
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var names []string
	for i := range t.NumField() {
		name, opt, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		switch {
		case opt == "inline":
			names = append(names, fieldsAt(t.Field(i).Type, nil)...)
		case name != "" && name != "-":
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// strictMapping reports the keys of mapping n that are not fields of the
// struct type t, as yaml.v3's strict mode words them, for the types whose
// UnmarshalYAML decodes a mapping themselves (Node.Decode is not strict).
func strictMapping(n *yaml.Node, t reflect.Type) error {
	known := fieldsAt(t, nil)
	var errs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; !slices.Contains(known, k.Value) {
			errs = append(errs, fmt.Sprintf("line %d: field %s not found in type %s", k.Line, k.Value, t))
		}
	}
	if errs != nil {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

// oneLine flattens yaml's multi-line errors.
func oneLine(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return te.Errors[0]
	}
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	return strings.Join(strings.Fields(s), " ")
}

// addrList is a list of addresses, written as a YAML list or as one
// comma-separated string.
type addrList []string

// UnmarshalYAML reads a list, or a scalar split at commas.
func (a *addrList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*a = splitList(n.Value)
		return nil
	}
	return n.Decode((*[]string)(a))
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
