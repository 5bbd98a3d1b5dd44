package config

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The file is read into a YAML node tree first and then walked against
// Config's yaml tags, so that every problem in it is found in one pass,
// each with its line, its key and what was expected in words: an unknown
// key (with the closest known one), a value of the wrong kind, a key given
// twice. A key in error keeps its default, and the walk goes on.

// fileDecoder walks one file's nodes into a Config.
type fileDecoder struct {
	file  string
	errs  []error
	lines map[string]int // key path → line of the key in the file
}

// decodeFile decodes data (the contents of file) into cfg and returns
// every problem found, and the line of every key it set.
func decodeFile(file string, data []byte, cfg *Config) (map[string]int, []error) {
	d := &fileDecoder{file: file, lines: map[string]int{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return d.lines, []error{d.syntaxError(err)}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return d.lines, nil // an empty file: the defaults
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return d.lines, nil
	}
	d.value(root, reflect.ValueOf(cfg).Elem(), "")
	return d.lines, d.errs
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError rewords the YAML parser's error with the file and line.
func (d *fileDecoder) syntaxError(err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s:%s: not valid YAML: %s", d.file, m[1], m[2])
	}
	return fmt.Errorf("%s: not valid YAML: %s", d.file, strings.TrimPrefix(msg, "yaml: "))
}

// fail records a problem with key path at line.
func (d *fileDecoder) fail(line int, path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path == "" {
		d.errs = append(d.errs, fmt.Errorf("%s:%d: %s", d.file, line, msg))
		return
	}
	d.errs = append(d.errs, fmt.Errorf("%s:%d: %s: %s", d.file, line, path, msg))
}

// value decodes node n into v, the field at path.
func (d *fileDecoder) value(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		// As yaml does: an empty value clears a list, a map or a pointer,
		// and leaves anything else at its default.
		switch v.Kind() {
		case reflect.Pointer, reflect.Map, reflect.Slice:
			v.Set(reflect.Zero(v.Type()))
		}
		return
	}
	switch v.Type() {
	case durationType, byteSizeType:
		if n.Kind != yaml.ScalarNode {
			d.fail(n.Line, path, "expected %s, got %s", expectation(v.Type()), kindWords(n))
			return
		}
		if err := setValue(v, n.Value); err != nil {
			d.fail(n.Line, path, "%v", err)
		}
		return
	case stringList:
		d.stringList(n, v, path)
		return
	case durationsType:
		d.durations(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.section(n, v, path)
	case reflect.Map:
		d.mapping(n, v, path)
	default:
		d.scalar(n, v, path)
	}
}

// section decodes a mapping into a struct, key by key.
func (d *fileDecoder) section(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n.Line, path, "expected a section of keys (key: value on the lines below, indented), got %s", kindWords(n))
		return
	}
	fields := yamlFields(v.Type())
	seen := map[string]int{}
	for _, kv := range d.pairs(n) {
		key, val := kv[0], kv[1]
		name := key.Value
		p := joinPath(path, name)
		i, ok := fields[name]
		if !ok {
			d.fail(key.Line, p, "unknown key%s", suggest(name, path, v.Type()))
			continue
		}
		if line, dup := seen[name]; dup {
			d.fail(key.Line, p, "given twice (first on line %d); the later one counts", line)
		}
		seen[name] = key.Line
		d.lines[p] = key.Line
		d.value(val, v.Field(i), p)
	}
}

// mapping decodes a mapping into a map with string keys (delivery.routes).
func (d *fileDecoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n.Line, path, "expected a section of entries (name: settings), got %s", kindWords(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		d.fail(n.Line, path, "cannot be set in the file")
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	seen := map[string]int{}
	for _, kv := range d.pairs(n) {
		key, val := kv[0], kv[1]
		p := joinPath(path, key.Value)
		if line, dup := seen[key.Value]; dup {
			d.fail(key.Line, p, "given twice (first on line %d); the later one counts", line)
		}
		seen[key.Value] = key.Line
		d.lines[p] = key.Line
		elem := reflect.New(v.Type().Elem()).Elem()
		if old := v.MapIndex(reflect.ValueOf(key.Value)); old.IsValid() {
			elem.Set(old)
		}
		d.value(val, elem, p)
		v.SetMapIndex(reflect.ValueOf(key.Value), elem)
	}
}

// pairs returns a mapping's key and value nodes, the keys of merged
// mappings (<<: *anchor) first so that the mapping's own keys win.
func (d *fileDecoder) pairs(n *yaml.Node) [][2]*yaml.Node {
	var merged, own [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		if key.Kind == yaml.ScalarNode && key.Value == "<<" && (key.Tag == "" || key.ShortTag() == "!!merge") {
			srcs := []*yaml.Node{val}
			if val.Kind == yaml.SequenceNode {
				srcs = val.Content
			}
			for _, s := range srcs {
				for s.Kind == yaml.AliasNode && s.Alias != nil {
					s = s.Alias
				}
				if s.Kind != yaml.MappingNode {
					d.fail(s.Line, "", "<< merges a mapping, got %s", kindWords(s))
					continue
				}
				merged = append(merged, d.pairs(s)...)
			}
			continue
		}
		if key.Kind != yaml.ScalarNode {
			d.fail(key.Line, "", "a key must be a plain name, got %s", kindWords(key))
			continue
		}
		own = append(own, [2]*yaml.Node{key, val})
	}
	return append(merged, own...)
}

// scalar decodes a single value: a string, a number, a boolean.
func (d *fileDecoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n.Line, path, "expected %s, got %s", expectation(v.Type()), kindWords(n))
		return
	}
	p := reflect.New(v.Type())
	if err := n.Decode(p.Interface()); err != nil {
		d.fail(n.Line, path, "%s is not %s", quoteValue(n.Value), expectation(v.Type()))
		return
	}
	v.Set(p.Elem())
}

// stringList takes a list, or one comma-separated string.
func (d *fileDecoder) stringList(n *yaml.Node, v reflect.Value, path string) {
	switch n.Kind {
	case yaml.ScalarNode:
		v.Set(reflect.ValueOf(ParseStringList(n.Value)))
	case yaml.SequenceNode:
		var out StringList
		for _, item := range n.Content {
			for item.Kind == yaml.AliasNode && item.Alias != nil {
				item = item.Alias
			}
			if item.Kind != yaml.ScalarNode {
				d.fail(item.Line, path, "a list item must be a single value, got %s", kindWords(item))
				continue
			}
			out = append(out, item.Value)
		}
		v.Set(reflect.ValueOf(out))
	default:
		d.fail(n.Line, path, "expected a list ([a, b] or one item per line with \"- \"), got %s", kindWords(n))
	}
}

// durations takes a list of durations, or one comma-separated string.
func (d *fileDecoder) durations(n *yaml.Node, v reflect.Value, path string) {
	var items []*yaml.Node
	switch n.Kind {
	case yaml.ScalarNode:
		for _, s := range ParseStringList(n.Value) {
			items = append(items, &yaml.Node{Kind: yaml.ScalarNode, Value: s, Line: n.Line})
		}
	case yaml.SequenceNode:
		items = n.Content
	default:
		d.fail(n.Line, path, "expected a list of durations such as [1m, 5m, 1h], got %s", kindWords(n))
		return
	}
	var out []Duration
	ok := true
	for _, item := range items {
		for item.Kind == yaml.AliasNode && item.Alias != nil {
			item = item.Alias
		}
		if item.Kind != yaml.ScalarNode {
			d.fail(item.Line, path, "a list item must be a duration such as 5m, got %s", kindWords(item))
			ok = false
			continue
		}
		du, err := parseDurationWords(item.Value)
		if err != nil {
			d.fail(item.Line, path, "%v", err)
			ok = false
			continue
		}
		out = append(out, du)
	}
	if ok {
		v.Set(reflect.ValueOf(out))
	}
}

// yamlFields maps a struct's yaml key names to field indexes.
func yamlFields(t reflect.Type) map[string]int {
	out := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag != "" && tag != "-" {
			out[tag] = i
		}
	}
	return out
}

func joinPath(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// kindWords names what a node is, for "expected X, got Y".
func kindWords(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a section of keys"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "the single value " + quoteValue(n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

// expectation says in words what a value of type t looks like.
func expectation(t reflect.Type) string {
	switch t {
	case durationType:
		return "a duration such as 30s, 5m, 2h or 5d"
	case byteSizeType:
		return "a size such as 26214400 or 25MiB"
	case stringList:
		return "a list"
	case durationsType:
		return "a list of durations such as [1m, 5m, 1h]"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "a whole number such as 100"
	case reflect.Float64, reflect.Float32:
		return "a number such as 0.1"
	case reflect.Bool:
		return "true or false"
	case reflect.Pointer:
		return expectation(t.Elem())
	case reflect.String:
		return "a single value (text)"
	case reflect.Struct, reflect.Map:
		return "a section of keys"
	}
	return "a value of type " + t.String()
}

func quoteValue(s string) string {
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return "`" + s + "`"
}

// suggest finds the known key closest to an unknown one: in the same
// section when the spelling is close, or the same name in another
// section ("smarthost" at the top: delivery.smarthost).
func suggest(name, section string, t reflect.Type) string {
	best, bestD := "", 1<<30
	for k := range yamlFields(t) {
		if d := levenshtein(strings.ToLower(name), k); d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	limit := max(2, len(name)/3)
	if best != "" && bestD <= limit {
		return fmt.Sprintf("; did you mean `%s`?", best)
	}
	var elsewhere []string
	for _, k := range Keys() {
		parts := strings.Split(k, ".")
		for i, p := range parts {
			if p == name && strings.Join(parts[:i], ".") != section {
				elsewhere = append(elsewhere, strings.Join(parts[:i+1], "."))
				break
			}
		}
	}
	sort.Strings(elsewhere)
	elsewhere = compactStrings(elsewhere)
	if len(elsewhere) > 0 && len(elsewhere) <= 3 {
		return fmt.Sprintf("; did you mean `%s`?", strings.Join(elsewhere, "` or `"))
	}
	where := "at the top level"
	if section != "" {
		where = "in " + section
	}
	keys := make([]string, 0)
	for k := range yamlFields(t) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) <= 12 {
		return fmt.Sprintf(" (the keys %s are: %s)", where, strings.Join(keys, ", "))
	}
	return fmt.Sprintf(" %s (`jetrelay config check` prints every key with its value)", where)
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// levenshtein is the edit distance between a and b.
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// parseDurationWords is ParseDuration with an error in words.
func parseDurationWords(s string) (Duration, error) {
	d, err := ParseDuration(s)
	switch {
	case err != nil && strings.HasPrefix(strings.TrimSpace(s), "-"):
		return 0, fmt.Errorf("%s is negative: expected %s", quoteValue(s), expectation(durationType))
	case err != nil:
		return 0, fmt.Errorf("%s is not %s", quoteValue(s), expectation(durationType))
	}
	return d, nil
}

// parseIntWords reads a whole number, with an error in words.
func parseIntWords(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s is not %s", quoteValue(s), expectation(reflect.TypeOf(0)))
	}
	return n, nil
}
