package oauth_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/jetrelay/jetrelay/delivery/oauth"
)

// TestAdvice: what an administrator is told for each known failure.
func TestAdvice(t *testing.T) {
	entra := func(status int, code string, n int, desc string) *oauth.Error {
		return &oauth.Error{Provider: "entra", Status: status, Code: code, ErrorCodes: []int{n},
			Description: fmt.Sprintf("AADSTS%d: %s Trace ID: 1 Correlation ID: 2", n, desc)}
	}
	for _, tc := range []struct {
		name string
		err  *oauth.Error
		want string // in the advice ("": no advice)
	}{
		{"AADSTS7000215 wrong secret", entra(401, "invalid_client", 7000215, "Invalid client secret provided."), "client secret is wrong"},
		{"AADSTS7000222 expired secret", entra(401, "invalid_client", 7000222, "The provided client secret keys are expired."), "expired"},
		{"AADSTS700016 unknown app", entra(400, "unauthorized_client", 700016, "Application not found."), "client ID and the tenant ID"},
		{"AADSTS90002 unknown tenant", entra(400, "invalid_request", 90002, "Tenant not found."), "tenant was not found"},
		{"AADSTS65001 no consent", entra(400, "invalid_grant", 65001, "The user or administrator has not consented."), "admin consent"},
		{"AADSTS500011 resource not found", entra(400, "invalid_resource", 500011, "The resource principal was not found."), "resource in the scope"},
		{"AADSTS700027 certificate", entra(401, "invalid_client", 700027, "Client assertion failed signature validation."), "certificate"},
		{"AADSTS70011 scope", entra(400, "invalid_scope", 70011, "The scope is not valid."), "/.default"},
		{"AADSTS7000112 disabled", entra(400, "unauthorized_client", 7000112, "Application is disabled."), "disabled"},
		{"AADSTS700024 clock", entra(401, "invalid_client", 700024, "Client assertion is not within its valid time range."), "clock"},
		{"AADSTS53003 conditional access", entra(400, "invalid_grant", 53003, "Access has been blocked by Conditional Access policies."), "Conditional Access"},
		{"AADSTS code only in the description", &oauth.Error{Provider: "entra", Status: 401, Code: "invalid_client",
			Description: "AADSTS7000222: The provided client secret keys for app 'x' are expired."}, "expired"},
		{"AADSTS code only in error_codes", &oauth.Error{Provider: "entra", Status: 400, ErrorCodes: []int{90002}}, "tenant was not found"},
		{"google unauthorized_client", &oauth.Error{Provider: "google", Status: 401, Code: "unauthorized_client",
			Description: "Client is unauthorized to retrieve access tokens using this method."}, "Domain-wide delegation"},
		{"google wrong subject", &oauth.Error{Provider: "google", Status: 400, Code: "invalid_grant", Description: "Invalid email or User ID"}, "subject"},
		{"google key deleted", &oauth.Error{Provider: "google", Status: 400, Code: "invalid_grant", Description: "Invalid JWT Signature."}, "key was deleted or disabled"},
		{"google clock", &oauth.Error{Provider: "google", Status: 400, Code: "invalid_grant",
			Description: "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."}, "clock"},
		{"google other invalid_grant", &oauth.Error{Provider: "google", Status: 400, Code: "invalid_grant"}, "subject"},
		{"generic invalid_client", &oauth.Error{Provider: "oauth2", Status: 401, Code: "invalid_client"}, "client ID and the client secret"},
		{"generic unauthorized_client", &oauth.Error{Provider: "oauth2", Status: 400, Code: "unauthorized_client"}, "not allowed"},
		{"generic invalid_scope", &oauth.Error{Provider: "oauth2", Status: 400, Code: "invalid_scope"}, "scope"},
		{"generic invalid_grant", &oauth.Error{Provider: "oauth2", Status: 400, Code: "invalid_grant"}, "refused the grant"},
		{"unreachable", &oauth.Error{Provider: "oauth2", Temporary: true, Err: &url.Error{Op: "Post", URL: "https://x", Err: fmt.Errorf("connection refused")}}, "could not be reached"},
		{"timed out", &oauth.Error{Provider: "entra", Temporary: true, Err: context.DeadlineExceeded}, "did not answer in time"},
		{"untrusted certificate", &oauth.Error{Provider: "entra", Err: &url.Error{Op: "Post", URL: "https://x", Err: &tls.CertificateVerificationError{Err: fmt.Errorf("unknown authority")}}}, "TLS certificate"},
		{"throttled", &oauth.Error{Provider: "entra", Status: 429, Temporary: true}, "throttling"},
		{"down", &oauth.Error{Provider: "entra", Status: 503, Temporary: true}, "temporary, jetrelay will retry"},
		{"wrong URL", &oauth.Error{Provider: "oauth2", Status: 404}, "token URL"},
		{"no token in 200", &oauth.Error{Provider: "oauth2", Status: 200}, "without an access token"},
		{"unknown", &oauth.Error{Provider: "oauth2", Status: 403}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.err.Advice()
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("Advice = %q, want it to contain %q", got, tc.want)
			}
		})
	}
}
