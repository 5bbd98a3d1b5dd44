package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
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
	File     string   // "" when no file was given
	Env      []string // variables that overrode a key
	Flags    []string // keys set by flags
	Warnings []string
}

// Load builds the configuration: defaults, then the YAML file at path (if
// path is not empty), then environment variables from environ (os.Environ()
// form), then overrides, a map from key path ("ingress.listen") to value as
// a flag would give it.
func Load(path string, environ []string, overrides map[string]string) (*Config, *Source, error) {
	cfg := Default()
	src := &Source{File: path}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, src, fmt.Errorf("config: %w", err)
		}
		if err := decodeYAML(data, cfg); err != nil {
			return nil, src, fmt.Errorf("config %s: %w", path, err)
		}
	}
	var errs []error
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
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		src.Env = append(src.Env, name)
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
	}
	if len(errs) > 0 {
		return nil, src, errors.Join(errs...)
	}
	return cfg, src, nil
}

func decodeYAML(data []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Set assigns one key given by its dotted YAML path ("delivery.retry.max_age")
// from its string form, the way an environment variable or flag does.
func (c *Config) Set(path string, value string) error {
	for _, f := range fields(c) {
		if f.path == path {
			return setValue(f.v, value)
		}
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
		d, err := ParseDuration(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(d))
		return nil
	case byteSizeType:
		b, err := ParseByteSize(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(b))
		return nil
	case stringList:
		v.Set(reflect.ValueOf(ParseStringList(s)))
		return nil
	case durationsType:
		var ds []Duration
		for _, p := range ParseStringList(s) {
			d, err := ParseDuration(p)
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
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		v.SetInt(int64(n))
	case reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		v.SetFloat(f)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid boolean %q", s)
		}
		v.SetBool(b)
	case reflect.Pointer:
		if v.Type().Elem().Kind() == reflect.Bool {
			b, err := strconv.ParseBool(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("invalid boolean %q", s)
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
