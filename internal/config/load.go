package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment override: JETRELAY_<SECTION>_<KEY>,
// e.g. JETRELAY_INGRESS_LISTEN, JETRELAY_DELIVERY_RETRY_MAX_AGE,
// JETRELAY_HOSTNAME.
const EnvPrefix = "JETRELAY_"

// Source says where the configuration came from, for `config check`.
type Source struct {
	File  string   // "" when no file was given
	Env   []string // variables that overrode a key
	Flags []string // keys set by flags
	// Warnings are settings that work but are probably not what was
	// meant (a host name without a domain, a route weaker than the smart
	// host); every command logs them, `config check` prints them.
	Warnings []string
	// Notes say how a setting is read where that is not obvious (a smart
	// host without a port: port 25); `config check` prints them.
	Notes []string

	origin map[string]string // key path → where its value came from
}

// Where says where key's value came from: "jetrelay.yaml:12",
// "environment variable JETRELAY_…", "--set", or "" for a default. A key
// inside a section that was set as a whole reports the section's line.
func (s *Source) Where(key string) string {
	if s == nil {
		return ""
	}
	for k := key; k != ""; {
		if w, ok := s.origin[k]; ok {
			return w
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return ""
}

// Locate prefixes every problem of a joined validation error ("key:
// what is wrong") with where the key's value came from, so that a
// problem in the file names its line.
func (s *Source) Locate(err error) error {
	if err == nil || s == nil {
		return err
	}
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		key, _, ok := strings.Cut(e.Error(), ": ")
		if w := s.Where(key); ok && w != "" && !strings.ContainsAny(key, " \t") {
			e = fmt.Errorf("%s: %w", w, e)
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// Load builds the configuration: defaults, then the YAML file at path (if
// path is not empty), then environment variables from environ (os.Environ()
// form), then overrides, a map from key path ("ingress.listen") to value as
// a flag would give it.
//
// It reports every problem of every layer at once, joined, each in words
// and with its place (file:line, the variable, the flag); a key in error
// keeps its default and the rest is still read, so the Config it returns
// alongside the error can be validated for the remaining problems (as
// `config check` does). Callers that run something must stop at an error.
func Load(path string, environ []string, overrides map[string]string) (*Config, *Source, error) {
	cfg := Default()
	src := &Source{File: path, origin: map[string]string{}}
	var errs []error
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, src, fmt.Errorf("config: %w", err)
		}
		lines, ferrs := decodeFile(path, data, cfg)
		for k, l := range lines {
			src.origin[k] = fmt.Sprintf("%s:%d", path, l)
		}
		errs = append(errs, ferrs...)
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			env[k] = v
		}
	}
	used := map[string]bool{}
	for _, f := range fields(cfg) {
		name := EnvPrefix + strings.ToUpper(strings.ReplaceAll(f.path, ".", "_"))
		v, ok := env[name]
		if !ok {
			continue
		}
		used[name] = true
		if err := setValue(f.v, v); err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s (%s): %w", name, f.path, err))
			continue
		}
		src.Env = append(src.Env, name)
		src.origin[f.path] = "environment variable " + name
	}
	for name := range env {
		if !used[name] && name != EnvPrefix+"CONFIG" {
			src.Warnings = append(src.Warnings, fmt.Sprintf("environment variable %s matches no configuration key", name))
		}
	}
	sort.Strings(src.Warnings)
	keys := make([]string, 0, len(overrides))
	for k := range overrides {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := cfg.Set(k, overrides[k]); err != nil {
			errs = append(errs, fmt.Errorf("flag for %s: %w", k, err))
			continue
		}
		src.Flags = append(src.Flags, k)
		src.origin[k] = "flag for " + k
	}
	src.Warnings = append(src.Warnings, cfg.warnings()...)
	src.Notes = cfg.notes()
	if len(errs) > 0 {
		return cfg, src, errors.Join(errs...)
	}
	return cfg, src, nil
}

// Set assigns one key given by its dotted YAML path ("delivery.retry.max_age")
// from its string form, the way an environment variable or flag does.
func (c *Config) Set(path string, value string) error {
	for _, f := range fields(c) {
		if f.path == path {
			return setValue(f.v, value)
		}
	}
	var best string
	for _, f := range fields(c) {
		if best == "" || levenshtein(path, f.path) < levenshtein(path, best) {
			best = f.path
		}
	}
	if best != "" && levenshtein(path, best) <= max(2, len(path)/5) {
		return fmt.Errorf("no configuration key %q; did you mean `%s`?", path, best)
	}
	return fmt.Errorf("no configuration key %q", path)
}

// Keys lists every settable key path, for help texts and tests.
func Keys() []string {
	var out []string
	for _, f := range fields(Default()) {
		out = append(out, f.path)
	}
	return out
}

type field struct {
	path   string
	v      reflect.Value
	secret bool
}

// fields walks the struct and returns every leaf key (maps such as
// delivery.routes are set only in the file).
func fields(c *Config) []field {
	var out []field
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			tag := strings.Split(sf.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fv := v.Field(i)
			p := prefix + tag
			if fv.Kind() == reflect.Struct {
				walk(fv, p+".")
				continue
			}
			if fv.Kind() == reflect.Map {
				continue
			}
			out = append(out, field{path: p, v: fv, secret: sf.Tag.Get("secret") == "true"})
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

var (
	durationType  = reflect.TypeOf(Duration(0))
	byteSizeType  = reflect.TypeOf(ByteSize(0))
	stringList    = reflect.TypeOf(StringList(nil))
	durationsType = reflect.TypeOf([]Duration(nil))
)

func setValue(v reflect.Value, s string) error {
	switch v.Type() {
	case durationType:
		d, err := parseDurationWords(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(d))
		return nil
	case byteSizeType:
		b, err := ParseByteSize(s)
		if err != nil {
			return fmt.Errorf("%s is not %s", quoteValue(s), expectation(byteSizeType))
		}
		v.Set(reflect.ValueOf(b))
		return nil
	case stringList:
		v.Set(reflect.ValueOf(ParseStringList(s)))
		return nil
	case durationsType:
		var ds []Duration
		for _, p := range ParseStringList(s) {
			d, err := parseDurationWords(p)
			if err != nil {
				return err
			}
			ds = append(ds, d)
		}
		v.Set(reflect.ValueOf(ds))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int:
		n, err := parseIntWords(s)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("%s is not %s", quoteValue(s), expectation(v.Type()))
		}
		v.SetFloat(f)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%s is not %s", quoteValue(s), expectation(v.Type()))
		}
		v.SetBool(b)
	case reflect.Pointer:
		if v.Type().Elem().Kind() == reflect.Bool {
			b, err := strconv.ParseBool(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("%s is not %s", quoteValue(s), expectation(v.Type()))
			}
			v.Set(reflect.ValueOf(&b))
			return nil
		}
		return fmt.Errorf("unsupported key type %s", v.Type())
	default:
		return fmt.Errorf("unsupported key type %s", v.Type())
	}
	return nil
}

// Redacted renders the effective configuration as YAML with every secret
// replaced by "<redacted>" (or left empty when unset).
func (c *Config) Redacted() ([]byte, error) {
	cp := *c
	cp.Delivery.Routes = make(map[string]Route, len(c.Delivery.Routes))
	for k, r := range c.Delivery.Routes {
		for _, s := range []*string{&r.Password, &r.OAuth.ClientSecret} {
			if *s != "" {
				*s = redacted
			}
		}
		cp.Delivery.Routes[k] = r
	}
	for _, f := range fields(&cp) {
		if f.secret && f.v.String() != "" {
			f.v.SetString(redacted)
		}
	}
	return yaml.Marshal(&cp)
}

const redacted = "<redacted>"

func defaultHostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return strings.ToLower(h)
}

func defaultDataDir() string {
	if runtime.GOOS == "windows" {
		if pd := os.Getenv("ProgramData"); pd != "" {
			return pd + `\jetrelay`
		}
	}
	return "./data"
}
