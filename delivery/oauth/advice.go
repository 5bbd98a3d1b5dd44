package oauth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// aadstsAdvice maps Entra ID error codes (AADSTS…) to what an
// administrator can do.
var aadstsAdvice = map[int]string{
	7000215: "The client secret is wrong. In Entra ID, App registrations → the app → Certificates & secrets, copy a secret's Value (not its Secret ID) into jetrelay's configuration.",
	7000222: "The client secret has expired. Create a new secret under App registrations → the app → Certificates & secrets and put its Value into jetrelay's configuration.",
	7000218: "No credential reached Entra ID: configure a client secret or a certificate for this app.",
	700016:  "The application (client ID) was not found in this tenant: check the client ID and the tenant ID, and that the app is registered in, or consented to by, this tenant.",
	90002:   "The tenant was not found: check the tenant ID or domain, and the authority (a sovereign cloud such as login.microsoftonline.us or login.chinacloudapi.cn has its own).",
	900023:  "The tenant ID is not a valid tenant ID or domain: check it.",
	65001:   "The application has no admin consent for the permission: an administrator must grant admin consent to the app's API permissions (SMTP.SendAsApp for SMTP, Mail.Send for Graph) in Entra ID.",
	500011:  "The resource in the scope was not found in the tenant: check the scope (https://outlook.office365.com/.default for SMTP, https://graph.microsoft.com/.default for Graph) and that the tenant has the service (Exchange Online).",
	700027:  "The client assertion's signature was not accepted: upload this certificate (its public part) to the app under Certificates & secrets, or check that the key matches it and that it has not expired there.",
	700024:  "The client assertion is outside its valid time: check this machine's clock (NTP).",
	70011:   "The scope is invalid: with client credentials it must be one resource's /.default scope, e.g. https://outlook.office365.com/.default.",
	7000112: "The application is disabled in the tenant: an administrator must enable it (Enterprise applications → the app → Properties → Enabled for users to sign in).",
	53003:   "A Conditional Access policy blocked the sign-in: an administrator must exclude this workload identity or allow where jetrelay runs.",
}

// codeAdvice maps OAuth error codes (for one provider, or "" for any;
// when the description contains a text) to what an administrator can
// do. The first match wins.
var codeAdvice = []struct {
	provider, code, contains, advice string
}{
	{"google", "unauthorized_client", "", "Domain-wide delegation is not granted for this service account's client ID with this scope: in the Google Admin console (Security → Access and data control → API controls → Domain-wide delegation), add the client ID with the scope https://mail.google.com/."},
	{"google", "invalid_grant", "Invalid email or User ID", "The mailbox to act as (subject) does not exist or is not active in the Workspace domain: check the subject."},
	{"google", "invalid_grant", "Invalid JWT Signature", "The service account key was deleted or disabled, or is not this account's: create a new JSON key for the service account."},
	{"google", "invalid_grant", "reasonable timeframe", "The signed assertion is outside its valid time: check this machine's clock (NTP)."},
	{"google", "invalid_grant", "", "Google refused the grant: check the subject (an active mailbox in the domain), that the service account key is neither deleted nor disabled, and this machine's clock."},
	{"google", "invalid_scope", "", "The scope is invalid: Gmail SMTP needs https://mail.google.com/."},
	{"", "invalid_client", "", "The token endpoint refused the client: check the client ID and the client secret."},
	{"", "unauthorized_client", "", "The client is not allowed this grant or scope: allow client credentials (and the scope) for it at the identity provider."},
	{"", "invalid_scope", "", "The scope is invalid or not allowed for this client: check the scopes."},
	{"", "invalid_grant", "", "The identity provider refused the grant: check the credential, and this machine's clock."},
	{"", "invalid_request", "", "The token endpoint found the request malformed: check the token URL and the client's settings."},
}

var aadstsRe = regexp.MustCompile(`AADSTS(\d+)`)

// Advice says in plain words what an administrator can do about e, or
// whether waiting is enough; "" when there is nothing to add to the
// error itself.
func (e *Error) Advice() string {
	codes := e.ErrorCodes
	for _, m := range aadstsRe.FindAllStringSubmatch(e.Description, -1) {
		if n, err := strconv.Atoi(m[1]); err == nil {
			codes = append(codes, n)
		}
	}
	for _, c := range codes {
		if a, ok := aadstsAdvice[c]; ok {
			return a
		}
	}
	for _, r := range codeAdvice {
		if (r.provider == "" || r.provider == e.Provider) && r.code == e.Code && strings.Contains(e.Description, r.contains) {
			return r.advice
		}
	}
	var cv *tls.CertificateVerificationError
	switch {
	case errors.As(e.Err, &cv):
		return "The token endpoint's TLS certificate is not trusted: check the CA bundle, or a TLS-inspecting proxy in between."
	case e.Status == 0 && (errors.Is(e.Err, context.DeadlineExceeded) || errors.Is(e.Err, context.Canceled)):
		return "The token endpoint did not answer in time: temporary, jetrelay will retry; if it lasts, check the network path to it."
	case e.Status == 0 && e.Temporary:
		return "The token endpoint could not be reached (network, DNS, firewall or proxy): temporary, jetrelay will retry."
	case e.Status == 429:
		return "The token endpoint is throttling requests (HTTP 429): temporary, jetrelay will retry later."
	case e.Status >= 500:
		return fmt.Sprintf("The token endpoint is failing (HTTP %d): temporary, jetrelay will retry.", e.Status)
	case e.Status == 404 || e.Status == 405:
		return fmt.Sprintf("There is no token endpoint at this URL (HTTP %d): check the token URL (for Entra ID, the authority and the tenant).", e.Status)
	case e.Status/100 == 2:
		return "The token endpoint answered without an access token: check the token URL."
	}
	return ""
}
