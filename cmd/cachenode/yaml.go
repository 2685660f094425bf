package main

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decodeYAML decodes a config document into v strictly: an unknown or
// repeated field is an error, and every error is one line naming the line
// and the field's path (workers.all_foos.expires).
func decodeYAML(r io.Reader, v any) error {
	var doc yaml.Node
	if err := yaml.NewDecoder(r).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file is an empty config
		}
		return errors.New(oneLine(err))
	}
	return decodeNode(&doc, reflect.ValueOf(v).Elem(), "")
}

// scalarSetter is implemented by config types that read a scalar their own
// way (durations, sizes, presets).
type scalarSetter interface {
	setScalar(s string) error
}

func decodeNode(n *yaml.Node, v reflect.Value, path string) error {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return decodeNode(n.Content[0], v, path)
	case yaml.AliasNode:
		return decodeNode(n.Alias, v, path)
	}
	where := func(err error) error {
		p := path
		if p == "" {
			p = "(top level)"
		}
		return fmt.Errorf("line %d: %s: %v", n.Line, p, err)
	}
	if v.Kind() == reflect.Pointer {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return decodeNode(n, v.Elem(), path)
	}
	if ss, ok := v.Addr().Interface().(scalarSetter); ok && n.Kind == yaml.ScalarNode {
		if err := ss.setScalar(n.Value); err != nil {
			return where(err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return where(errors.New("want a mapping of fields"))
		}
		fields, names := structFields(v)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			name := k.Value
			f, ok := fields[name]
			if !ok {
				return fmt.Errorf("line %d: %s: unknown field (known: %s)", k.Line, joinPath(path, name), strings.Join(names, ", "))
			}
			if seen[name] {
				return fmt.Errorf("line %d: %s: given twice", k.Line, joinPath(path, name))
			}
			seen[name] = true
			if err := decodeNode(val, f, joinPath(path, name)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return where(errors.New("want a mapping"))
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if v.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				return fmt.Errorf("line %d: %s: given twice", k.Line, joinPath(path, k.Value))
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			if err := decodeNode(val, elem, joinPath(path, k.Value)); err != nil {
				return err
			}
			v.SetMapIndex(reflect.ValueOf(k.Value), elem)
		}
		return nil
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		return where(errors.New(stripLine(oneLine(err))))
	}
	return nil
}

// structFields maps the yaml names of v's fields (those of ",inline"
// fields included) to the fields.
func structFields(v reflect.Value) (map[string]reflect.Value, []string) {
	fields := map[string]reflect.Value{}
	var names []string
	t := v.Type()
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("yaml")
		name, opt, _ := strings.Cut(tag, ",")
		if opt == "inline" {
			sub, subNames := structFields(v.Field(i))
			for k, f := range sub {
				fields[k] = f
			}
			names = append(names, subNames...)
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		fields[name] = v.Field(i)
		names = append(names, name)
	}
	slices.Sort(names)
	return fields, names
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
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

// stripLine drops yaml's "line N: " prefix, as the caller adds its own.
func stripLine(s string) string {
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		if _, after, ok := strings.Cut(rest, ": "); ok {
			return after
		}
	}
	return s
}

// Duration is a config duration: a Go duration ("100ms", "1h") or plain
// seconds (30, 0.5).
type Duration time.Duration

func (d *Duration) setScalar(s string) error {
	p, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(p)
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != f || f > 1e9 || f < -1e9 {
			return 0, fmt.Errorf("bad duration %q (want a Go duration such as 100ms or 1h, or seconds)", s)
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return d, nil
}

// Size is a config size in bytes: a plain number of bytes or a number with
// one of the units B, KiB, MiB, GiB, TiB ("256MiB", "1.5 GiB").
type Size int64

func (z *Size) setScalar(s string) error {
	p, err := parseSize(s)
	if err != nil {
		return err
	}
	*z = Size(p)
	return nil
}

func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := 1.0
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f != f || f < 0 || f*mult > 1<<62 {
		return 0, fmt.Errorf("bad size %q (want bytes, or a number with KiB, MiB or GiB, e.g. 256MiB)", s)
	}
	return int64(f * mult), nil
}

// addrList is a list of addresses, written as a YAML list or as one
// comma-separated string.
type addrList []string

func (a *addrList) setScalar(s string) error {
	*a = splitList(s)
	return nil
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
