package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/delivery"
)

// Validate checks the whole configuration and returns every problem found,
// joined, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}

	if c.Hostname == "" {
		add("hostname", "must not be empty")
	} else if strings.ContainsAny(c.Hostname, " \t\r\n<>[]@") {
		add("hostname", "%q is not a host name", c.Hostname)
	}
	if c.DataDir == "" {
		add("data_dir", "must not be empty")
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < 64<<20 {
		add("memory_limit", "must be 0 (none) or at least 64MiB, got %d bytes: below that the garbage collector would run all the time", c.MemoryLimit)
	}

	// broker
	for _, u := range c.Broker.URL {
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" {
			add("broker.url", "%q is not a URL such as nats://host:4222", u)
			continue
		}
		switch pu.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			add("broker.url", "%q: scheme must be nats, tls, ws or wss", u)
		}
	}
	if c.Broker.Listen != "" && c.Broker.Listen != "off" {
		checkHostPort(add, "broker.listen", c.Broker.Listen, true)
	}
	if c.Broker.Replicas < 1 || c.Broker.Replicas > 5 {
		add("broker.replicas", "must be between 1 and 5, got %d", c.Broker.Replicas)
	}
	if c.Broker.QueueShards < 0 || c.Broker.QueueShards > 32 {
		add("broker.queue_shards", "must be 0 (the layout on the broker, or one derived from the machine for a new queue) or between 1 and 32, got %d", c.Broker.QueueShards)
	}
	if c.Broker.SyncInterval != "always" {
		if _, err := time.ParseDuration(c.Broker.SyncInterval); err != nil {
			add("broker.sync_interval", "must be \"always\" or a duration such as 2m, got %q", c.Broker.SyncInterval)
		}
	}
	if c.Broker.Password != "" && c.Broker.PasswordFile != "" {
		add("broker.password_file", "set either password or password_file, not both")
	}
	for key, f := range map[string]string{
		"broker.credentials": c.Broker.Credentials, "broker.password_file": c.Broker.PasswordFile,
		"broker.nkey_file": c.Broker.NKeyFile, "broker.tls.ca": c.Broker.TLS.CA,
		"broker.tls.cert": c.Broker.TLS.Cert, "broker.tls.key": c.Broker.TLS.Key,
	} {
		checkFile(add, key, f)
	}
	if (c.Broker.TLS.Cert == "") != (c.Broker.TLS.Key == "") {
		add("broker.tls", "cert and key go together")
	}
	if c.Broker.InlineMaxBytes < 1024 {
		add("broker.inline_max_bytes", "must be at least 1024, got %d", c.Broker.InlineMaxBytes)
	}
	positive(add, "broker.publish_timeout", c.Broker.PublishTimeout)
	if w := c.Broker.DedupeWindow.D(); w != 0 && w < c.minDedupeWindow() {
		add("broker.dedupe_window", "must be at least %s (1h, and at least the longest wait of delivery.retry.schedule), or 0 to derive it; got %s",
			Duration(c.minDedupeWindow()), c.Broker.DedupeWindow)
	}
	if cl := c.Broker.Cluster; cl.Listen != "" || len(cl.Routes) > 0 || cl.Name != "" {
		if cl.Name == "" {
			add("broker.cluster.name", "a cluster needs a name (the same on every node)")
		}
		if cl.Listen == "" {
			add("broker.cluster.listen", "a cluster node needs a route address, e.g. 0.0.0.0:6222")
		} else {
			checkHostPort(add, "broker.cluster.listen", cl.Listen, true)
		}
		for _, r := range cl.Routes {
			if u, err := url.Parse(r); err != nil || u.Scheme != "nats" || u.Host == "" {
				add("broker.cluster.routes", "%q is not a route URL such as nats://node2:6222", r)
			}
		}
		if c.Broker.Listen == "off" {
			add("broker.listen", "a cluster node needs a client port")
		}
		if (cl.User == "") != (cl.Password == "" && cl.PasswordFile == "") {
			add("broker.cluster", "user and password (or password_file) go together")
		}
		checkFile(add, "broker.cluster.password_file", cl.PasswordFile)
	}
	if c.Broker.AckWait.D() < 2*time.Second {
		add("broker.ack_wait", "must be at least 2s, got %s", c.Broker.AckWait)
	}

	// ingress
	if len(c.Ingress.Listen) == 0 && len(c.Ingress.TLSListen) == 0 {
		add("ingress.listen", "at least one of ingress.listen and ingress.tls_listen is needed")
	}
	for _, a := range c.Ingress.Listen {
		checkHostPort(add, "ingress.listen", a, true)
	}
	for _, a := range c.Ingress.TLSListen {
		checkHostPort(add, "ingress.tls_listen", a, true)
	}
	if (c.Ingress.TLS.Cert == "") != (c.Ingress.TLS.Key == "") {
		add("ingress.tls", "cert and key go together")
	}
	checkFile(add, "ingress.tls.cert", c.Ingress.TLS.Cert)
	checkFile(add, "ingress.tls.key", c.Ingress.TLS.Key)
	if len(c.Ingress.TLSListen) > 0 && c.Ingress.TLS.Cert == "" {
		add("ingress.tls_listen", "needs ingress.tls.cert and ingress.tls.key")
	}
	if c.Ingress.RequireTLS && c.Ingress.TLS.Cert == "" {
		add("ingress.require_tls", "needs ingress.tls.cert and ingress.tls.key")
	}
	for _, n := range c.Ingress.RelayNetworks {
		if _, err := ParseNetwork(n); err != nil {
			add("ingress.relay_networks", "%v", err)
		}
	}
	checkFile(add, "ingress.users_file", c.Ingress.UsersFile)
	if c.Ingress.MaxMessageBytes < 1024 {
		add("ingress.max_message_bytes", "must be at least 1024, got %d", c.Ingress.MaxMessageBytes)
	}
	if c.Ingress.MaxRecipients < 1 {
		add("ingress.max_recipients", "must be at least 1, got %d", c.Ingress.MaxRecipients)
	}
	if c.Ingress.ReadTimeout.D() < time.Second {
		add("ingress.read_timeout", "must be at least 1s, got %s", c.Ingress.ReadTimeout)
	}
	positive(add, "ingress.write_timeout", c.Ingress.WriteTimeout)
	if c.Ingress.CommandDeadline.D() < time.Second {
		add("ingress.command_deadline", "must be at least 1s, got %s (RFC 5321 asks for at least 5m)", c.Ingress.CommandDeadline)
	}
	if c.Ingress.MinDataRate < 1 {
		add("ingress.min_data_rate", "must be at least 1 (bytes per second), got %d", c.Ingress.MinDataRate)
	}
	for _, n := range c.Ingress.InsecureAuthNetworks {
		if _, err := ParseNetwork(n); err != nil {
			add("ingress.insecure_auth_networks", "%v", err)
		}
	}
	for _, l := range []struct {
		key  string
		nets StringList
	}{{"ingress.connection_allow", c.Ingress.ConnectionAllow}, {"ingress.connection_deny", c.Ingress.ConnectionDeny}} {
		for _, n := range l.nets {
			if _, err := ParseNetwork(n); err != nil {
				add(l.key, "%v", err)
			}
		}
	}
	if c.Ingress.MaxConnections < 1 {
		add("ingress.max_connections", "must be at least 1")
	}
	if c.Ingress.MaxConnectionsPerIP < 1 {
		add("ingress.max_connections_per_ip", "must be at least 1")
	}
	if c.Ingress.MaxErrors < 1 {
		add("ingress.max_errors", "must be at least 1")
	}
	if c.Ingress.MaxReceivedHeaders < 1 {
		add("ingress.max_received_headers", "must be at least 1")
	}
	switch c.Ingress.BareLineEndings {
	case "reject", "normalize":
	default:
		add("ingress.bare_line_endings", "must be reject or normalize, got %q", c.Ingress.BareLineEndings)
	}
	if c.Ingress.AuthFailureLimit < 1 {
		add("ingress.auth_failure_limit", "must be at least 1")
	}
	for _, k := range []struct {
		key string
		d   Duration
	}{{"ingress.auth_failure_window", c.Ingress.AuthFailureWindow}, {"ingress.auth_lockout", c.Ingress.AuthLockout}} {
		// The broker keeps a lockout's record that long.
		if k.d <= 0 || k.d.D() > broker.AuthLockoutMaxAge {
			add(k.key, "must be positive and at most %s, got %s", Duration(broker.AuthLockoutMaxAge), k.d)
		}
	}

	if pk := c.Ingress.Pickup; pk.Dir != "" {
		if pk.PollInterval.D() < 100*time.Millisecond {
			add("ingress.pickup.poll_interval", "must be at least 100ms, got %s", pk.PollInterval)
		}
		if pk.BadmailDir != "" && filepath.Clean(pk.BadmailDir) == filepath.Clean(pk.Dir) {
			add("ingress.pickup.badmail_dir", "must not be the pickup directory itself (a subfolder is fine: the default is %s)", filepath.Join(pk.Dir, "badmail"))
		}
		if st, err := os.Stat(pk.Dir); err == nil && !st.IsDir() {
			add("ingress.pickup.dir", "%s is a file, not a folder", pk.Dir)
		}
	} else if pk.BadmailDir != "" {
		add("ingress.pickup.badmail_dir", "needs ingress.pickup.dir")
	}

	// delivery
	checkMasquerade(add, "delivery.masquerade_domain", c.Delivery.MasqueradeDomain)
	checkMailbox(add, "delivery.ndr_copy_to", c.Delivery.NDRCopyTo)
	if c.Delivery.Port < 1 || c.Delivery.Port > 65535 {
		add("delivery.port", "must be a TCP port, got %d", c.Delivery.Port)
	}
	checkPolicy(add, "delivery.mx_tls", c.Delivery.MXTLS)
	if c.Delivery.MXTLS == string(delivery.TLSImplicit) {
		add("delivery.mx_tls", "implicit TLS is not used toward MX hosts; use opportunistic or required")
	}
	if sh := c.Delivery.SmarthostRoute(); len(sh.Hosts) > 0 || sh.Transport != "" || sh.OAuth.Configured() || sh.Username != "" {
		validateRoute(add, func(k string) string {
			if k == "hosts" || k == "host" {
				return "delivery.smarthost"
			}
			return "delivery.smarthost_" + k
		}, sh)
	} else {
		checkPolicy(add, "delivery.smarthost_tls", c.Delivery.SmarthostTLS)
	}
	for dom, r := range c.Delivery.Routes {
		prefix := "delivery.routes." + dom + "."
		if dom == "" || strings.ContainsAny(dom, " @") {
			add(strings.TrimSuffix(prefix, "."), "%q is not a domain", dom)
		}
		validateRoute(add, func(k string) string { return prefix + k }, r)
	}
	if c.Delivery.BounceSizeLimit < 0 {
		add("delivery.bounce_size_limit", "must be 0 (the default, 50000) or more octets, got %d", c.Delivery.BounceSizeLimit)
	}
	if c.Delivery.Concurrency < 1 || c.Delivery.Concurrency > 10000 {
		add("delivery.concurrency", "must be between 1 and 10000, got %d", c.Delivery.Concurrency)
	}
	if len(c.Delivery.Retry.Schedule) == 0 {
		add("delivery.retry.schedule", "needs at least one wait")
	}
	for _, d := range c.Delivery.Retry.Schedule {
		if d.D() < time.Second {
			add("delivery.retry.schedule", "waits must be at least 1s, got %s", d)
		}
	}
	if c.Delivery.Retry.MaxAge.D() < time.Second {
		add("delivery.retry.max_age", "must be at least 1s, got %s", c.Delivery.Retry.MaxAge)
	}
	if c.Delivery.Retry.Jitter < 0 || c.Delivery.Retry.Jitter > 0.5 {
		add("delivery.retry.jitter", "must be between 0 and 0.5, got %v", c.Delivery.Retry.Jitter)
	}
	if c.Delivery.DNSServer != "" {
		checkHostPort(add, "delivery.dns_server", c.Delivery.DNSServer, false)
	}
	if c.Delivery.MaxMXHosts < 1 {
		add("delivery.max_mx_hosts", "must be at least 1")
	}
	if c.Delivery.MaxMessagesPerConnection < 1 {
		add("delivery.max_messages_per_connection", "must be at least 1")
	}
	if c.Delivery.MaxPerDestination < 1 {
		add("delivery.max_per_destination", "must be at least 1")
	}
	positive(add, "delivery.connect_timeout", c.Delivery.ConnectTimeout)
	c.validateDKIM(add)
	validateMTASTS(add, c.Delivery.MTASTS)

	if c.DeadLetter.Retention.D() < time.Second {
		add("deadletter.retention", "must be at least 1s, got %s", c.DeadLetter.Retention)
	}
	if c.DeadLetter.SweepInterval.D() < 100*time.Millisecond {
		add("deadletter.sweep_interval", "must be at least 100ms, got %s", c.DeadLetter.SweepInterval)
	}
	if c.HTTP.Listen != "" && c.HTTP.Listen != "off" {
		checkHostPort(add, "http.listen", c.HTTP.Listen, true)
	}
	validateConsole(add, c.Console)
	switch strings.ToLower(c.Log.Level) {
	case "trace", "debug", "info", "warn", "error":
	default:
		add("log.level", "must be trace, debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		add("log.format", "must be json or console, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
}

// validateRoute checks a smart host or a route; key names a setting the
// way the file spells it.
func validateRoute(add func(string, string, ...any), key func(string) string, r Route) {
	graph := r.Transport == "graph"
	switch r.Transport {
	case "", "smtp", "graph":
	default:
		add(key("transport"), "must be smtp or graph, got %q", r.Transport)
	}
	hosts := append(StringList{}, r.Hosts...)
	if r.Host != "" {
		hosts = append(StringList{r.Host}, hosts...)
	}
	switch {
	case graph && len(hosts) > 0:
		add(key("host"), "the graph transport sends to Microsoft Graph (set graph.base_url for another cloud), not to hosts")
	case !graph && len(hosts) == 0:
		add(key("host"), "needs host (or hosts)")
	}
	for _, h := range hosts {
		checkHop(add, key("host"), h)
	}
	if r.TLS != "" {
		checkPolicy(add, key("tls"), r.TLS)
	}
	if (r.TLSCertFile == "") != (r.TLSKeyFile == "") {
		add(key("tls_cert_file"), "tls_cert_file and tls_key_file go together")
	} else if r.TLSCertFile != "" {
		if _, err := tls.LoadX509KeyPair(r.TLSCertFile, r.TLSKeyFile); err != nil {
			add(key("tls_cert_file"), "client certificate: %v", err)
		}
	}
	if r.TLSCAFile != "" {
		if b, err := os.ReadFile(r.TLSCAFile); err != nil {
			add(key("tls_ca_file"), "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(b) {
			add(key("tls_ca_file"), "%s holds no PEM certificate", r.TLSCAFile)
		}
	}
	checkMasquerade(add, key("masquerade_domain"), r.MasqueradeDomain)
	checkMailbox(add, key("ndr_copy_to"), r.NDRCopyTo)
	pw := secretSources(add, key, "password", r.Password, r.PasswordFile, r.PasswordEnv)
	if pw && r.Username == "" {
		add(key("username"), "a password needs a username")
	}
	if r.OAuth.Configured() {
		if pw {
			add(key("oauth"), "set a password or OAuth, not both")
		}
		validateOAuth(add, func(k string) string { return key("oauth." + k) }, r.OAuth)
		if !graph && r.Username == "" && r.OAuth.Subject == "" {
			add(key("username"), "OAuth on SMTP needs the mailbox to send as (XOAUTH2 user=)")
		}
	} else if graph {
		add(key("oauth"), "the graph transport needs an OAuth credential (provider: entra)")
	}
	if graph && r.OAuth.Provider != "" && r.OAuth.Provider != "entra" {
		add(key("oauth.provider"), "the graph transport works with provider entra, got %q", r.OAuth.Provider)
	}
	if rl := r.RateLimit; rl.Messages < 0 || rl.RecipientsPerDay < 0 || rl.Connections < 0 {
		add(key("rate_limit"), "limits cannot be negative")
	} else if rl.Per != 0 && rl.Per.D() < time.Second {
		add(key("rate_limit.per"), "must be at least 1s, got %s", rl.Per)
	}
}

// validateOAuth checks an OAuth credential: the provider's required
// settings, one source per secret, files that exist and parse.
func validateOAuth(add func(string, string, ...any), key func(string) string, o OAuth) {
	secret := secretSources(add, key, "client_secret", o.ClientSecret, o.ClientSecretFile, o.ClientSecretEnv)
	cert := o.CertificateFile != "" || o.KeyFile != ""
	if cert {
		if o.CertificateFile == "" || o.KeyFile == "" {
			add(key("certificate_file"), "certificate_file and key_file go together")
		} else if _, err := tls.LoadX509KeyPair(o.CertificateFile, o.KeyFile); err != nil {
			add(key("certificate_file"), "%v", err)
		}
	}
	switch o.Provider {
	case "entra":
		if o.TenantID == "" {
			add(key("tenant_id"), "Entra ID needs the tenant ID (Directory (tenant) ID in the app registration)")
		}
		if o.ClientID == "" {
			add(key("client_id"), "Entra ID needs the client ID (Application (client) ID)")
		}
		switch {
		case secret && cert:
			add(key("client_secret"), "set a client secret or a certificate, not both")
		case !secret && !cert:
			add(key("client_secret"), "Entra ID needs a client secret (client_secret, _file or _env) or a certificate (certificate_file and key_file)")
		}
	case "google":
		if o.ServiceAccountFile == "" {
			add(key("service_account_file"), "Google needs the service account's JSON key")
		} else if err := checkServiceAccount(o.ServiceAccountFile); err != nil {
			add(key("service_account_file"), "%v", err)
		}
		if secret || cert {
			add(key("provider"), "google uses the service account key, not a client secret or certificate")
		}
	case "oauth2":
		if o.TokenURL == "" {
			add(key("token_url"), "needs the token endpoint")
		}
		if o.ClientID == "" {
			add(key("client_id"), "needs the client ID")
		}
		if !secret {
			add(key("client_secret"), "needs a client secret (client_secret, _file or _env)")
		}
	case "":
		add(key("provider"), "must be entra, google or oauth2")
	default:
		add(key("provider"), "must be entra, google or oauth2, got %q", o.Provider)
	}
	if o.CAFile != "" {
		if b, err := os.ReadFile(o.CAFile); err != nil {
			add(key("ca_file"), "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(b) {
			add(key("ca_file"), "%s holds no PEM certificate", o.CAFile)
		}
	}
	for k, u := range map[string]string{"authority": o.Authority, "token_url": o.TokenURL} {
		if u == "" {
			continue
		}
		if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" {
			add(key(k), "%q is not an https URL", u)
		}
	}
}

// secretSources checks that a secret comes from one place at most, and
// that a file or variable named for it holds it; it reports whether the
// secret is set.
func secretSources(add func(string, string, ...any), key func(string) string, name, inline, file, env string) bool {
	n := 0
	for _, v := range []string{inline, file, env} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		add(key(name), "given more than once (inline, %s_file, %s_env): set one", name, name)
	}
	if file != "" {
		if b, err := os.ReadFile(file); err != nil {
			add(key(name+"_file"), "%v", err)
		} else if len(strings.TrimSpace(string(b))) == 0 {
			add(key(name+"_file"), "%s is empty", file)
		}
	}
	if env != "" && os.Getenv(env) == "" {
		add(key(name+"_env"), "environment variable %s is not set", env)
	}
	return n > 0
}

// checkServiceAccount reads a Google service account key far enough to
// know it is one.
func checkServiceAccount(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var sa struct {
		Type        string `json:"type"`
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
	}
	if err := json.Unmarshal(b, &sa); err != nil {
		return fmt.Errorf("%s is not a JSON key: %v", path, err)
	}
	if sa.Type != "service_account" || sa.ClientEmail == "" || sa.PrivateKey == "" {
		return fmt.Errorf("%s is not a service account key (type, client_email, private_key)", path)
	}
	return nil
}

// ParseNetwork parses a relay_networks entry: a CIDR or a single address.
func ParseNetwork(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR (10.0.0.0/8) nor an IP address", s)
}

func checkHostPort(add func(string, string, ...any), key, v string, listen bool) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		add(key, "%q is not host:port", v)
		return
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (!listen && n == 0) {
		add(key, "%q has no valid port", v)
	}
	if !listen && host == "" {
		add(key, "%q has no host", v)
	}
}

// checkHop checks a next hop: host:port, or a host alone (port 25).
func checkHop(add func(string, string, ...any), key, v string) {
	if _, _, err := net.SplitHostPort(v); err == nil {
		checkHostPort(add, key, v, false)
		return
	}
	if _, ok := hopWithoutPort(v); !ok {
		add(key, "%q is neither host:port nor a host name (port 25)", v)
	}
}

// hopWithoutPort reports whether v is a host without a port (a name, an
// IP address, a bracketed IPv6 address), which means port 25, and
// returns it with the port.
func hopWithoutPort(v string) (string, bool) {
	if _, _, err := net.SplitHostPort(v); err == nil || v == "" {
		return "", false
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(v, "["), "]")); err == nil {
		return net.JoinHostPort(a.String(), "25"), true
	}
	if strings.ContainsAny(v, ":/ \t@[]") {
		return "", false
	}
	return net.JoinHostPort(v, "25"), true
}

func checkPolicy(add func(string, string, ...any), key, v string) {
	if _, err := delivery.ParseTLSPolicy(v); err != nil || v == "" {
		add(key, "must be none, opportunistic, required or implicit, got %q", v)
	}
}

func checkFile(add func(string, string, ...any), key, path string) {
	if path == "" {
		return
	}
	if _, err := os.Stat(path); err != nil {
		add(key, "%v", err)
	}
}

func positive(add func(string, string, ...any), key string, d Duration) {
	if d <= 0 {
		add(key, "must be positive")
	}
}

// validateConsole checks the console's section; most of it only when the
// console is enabled.
func validateConsole(add func(string, string, ...any), c Console) {
	if c.SessionTimeout.D() < time.Minute {
		add("console.session_timeout", "must be at least 1m, got %s", c.SessionTimeout)
	}
	for _, p := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			if _, err := netip.ParseAddr(p); err != nil {
				add("console.trusted_proxies", "%q is neither an address nor a network such as 10.0.0.0/8", p)
			}
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		add("console.tls_cert", "tls_cert and tls_key go together: give both or neither")
	}
	if !c.Enabled {
		return
	}
	checkHostPort(add, "console.listen", c.Listen, true)
	if c.UsersFile == "" && c.ProxyUserHeader == "" {
		add("console.users_file", "the console requires sign-in: set console.users_file (users added with `jetrelay user add --users-file FILE NAME`), or console.proxy_user_header with console.trusted_proxies")
	}
	if c.ProxyUserHeader != "" && len(c.TrustedProxies) == 0 {
		add("console.trusted_proxies", "console.proxy_user_header is believed only from the proxies listed here; list your reverse proxy's address")
	}
	if c.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			add("console.tls_cert", "cannot load the certificate and key: %v", err)
		}
	}
}

// validateMTASTS checks delivery.mta_sts: the CA file holds certificates,
// the report directory exists and jetrelay can write to it.
func validateMTASTS(add func(string, string, ...any), m MTASTS) {
	if m.CAFile != "" {
		if b, err := os.ReadFile(m.CAFile); err != nil {
			add("delivery.mta_sts.ca_file", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(b) {
			add("delivery.mta_sts.ca_file", "%s holds no PEM certificate", m.CAFile)
		}
	}
	if m.HTTPSPort < 0 || m.HTTPSPort > 65535 {
		add("delivery.mta_sts.https_port", "must be a TCP port (1 to 65535, default 443), got %d", m.HTTPSPort)
	}
	if m.FetchTimeout < 0 || (m.FetchTimeout > 0 && m.FetchTimeout.D() < 100*time.Millisecond) || m.FetchTimeout.D() > 5*time.Minute {
		add("delivery.mta_sts.fetch_timeout", "must be between 100ms and 5m (default 10s), got %s", m.FetchTimeout)
	}
	if m.MaxReportDomains < 0 {
		add("delivery.mta_sts.max_report_domains", "must be 0 (the default, 100) or more, got %d", m.MaxReportDomains)
	}
	if m.ReportDir != "" {
		if fi, err := os.Stat(m.ReportDir); err != nil {
			add("delivery.mta_sts.report_dir", "%v (create the directory for the daily TLS reports, or leave the key empty)", err)
		} else if !fi.IsDir() {
			add("delivery.mta_sts.report_dir", "%s is not a directory", m.ReportDir)
		} else if f, err := os.CreateTemp(m.ReportDir, ".jetrelay-check-*"); err != nil {
			add("delivery.mta_sts.report_dir", "jetrelay cannot write the daily TLS reports there: %v", err)
		} else {
			f.Close()
			os.Remove(f.Name())
		}
	}
}

// checkMasquerade checks a masquerade domain: a domain name, without the
// local part or brackets.
func checkMasquerade(add func(string, string, ...any), key, v string) {
	if v == "" {
		return
	}
	if strings.ContainsAny(v, "@<>[]() \t,;:\"\\") || strings.HasPrefix(v, ".") || strings.HasSuffix(v, ".") || !strings.Contains(v, ".") {
		add(key, "%q is not a domain name such as corp.example (the domain only, no @)", v)
	}
}

// checkMailbox checks an address jetrelay sends to: local@domain, without
// angle brackets or a display name.
func checkMailbox(add func(string, string, ...any), key, v string) {
	if v == "" {
		return
	}
	at := strings.LastIndexByte(v, '@')
	if at <= 0 || at == len(v)-1 || strings.ContainsAny(v, "<>() \t,;\"\\") {
		add(key, "%q is not an address such as postmaster@corp.example (no angle brackets, no display name)", v)
	}
}
