package delivery

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/delivery/oauth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// authHealth tracks, per destination with credentials, whether jetrelay
// could authenticate to it the last time it tried. While a destination's
// authentication fails, every message to it waits in the queue, so the
// process reports it: in /readyz (Worker.AuthProblems), in the metrics
// jetrelay_outbound_auth_ok and jetrelay_outbound_auth_failures_total,
// and in one log line when it starts failing and one when it recovers.
type authHealth struct {
	log      zerolog.Logger
	ok       *prometheus.GaugeVec
	failures *prometheus.CounterVec

	mu     sync.Mutex
	states map[string]*authState
}

type authState struct {
	failing bool
	since   time.Time
	reason  string
}

func newAuthHealth(reg prometheus.Registerer, log zerolog.Logger) *authHealth {
	h := &authHealth{
		log: log,
		ok: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "jetrelay_outbound_auth_ok",
			Help: "1 while jetrelay can authenticate to the route (smart host or delivery.routes entry), 0 while it fails.",
		}, []string{"route"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetrelay_outbound_auth_failures_total",
			Help: "Failed authentications to a route: credentials or token refused, or no token to be had.",
		}, []string{"route"}),
		states: map[string]*authState{},
	}
	if reg != nil {
		reg.MustRegister(h.ok, h.failures)
	}
	return h
}

// observe records what an attempt at a destination says about its
// authentication: a failure flagged by the funnel, or a reply from past
// the login (the next hop took our credentials).
func (h *authHealth) observe(g *group) {
	if !g.dest.authenticates() || g.report == nil {
		return
	}
	for i, v := range g.verdicts {
		if v.AuthFailed {
			h.set(g.dest.Key, false, v.Reply.Text)
			return
		}
		if r := g.report.Results[i]; r.Err == nil && r.Reply != nil {
			h.set(g.dest.Key, true, "")
			return
		}
	}
}

func (h *authHealth) set(route string, ok bool, reason string) {
	h.mu.Lock()
	st, seen := h.states[route]
	if !seen {
		st = &authState{}
		h.states[route] = st
	}
	changed := !seen || st.failing == ok
	if changed {
		st.since = time.Now()
	}
	st.failing, st.reason = !ok, reason
	h.mu.Unlock()
	if ok {
		h.ok.WithLabelValues(route).Set(1)
		if changed && seen {
			h.log.Info().Str("route", route).Msg("outbound authentication works again")
		}
		return
	}
	h.ok.WithLabelValues(route).Set(0)
	h.failures.WithLabelValues(route).Inc()
	if changed {
		h.log.Error().Str("route", route).Str("reason", reason).
			Msg("outbound authentication is failing: messages to this route wait in the queue until it is fixed (run `jetrelay auth test`)")
	}
}

// problems lists the routes whose authentication fails, with why.
func (h *authHealth) problems() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for route, st := range h.states {
		if st.failing {
			out = append(out, fmt.Sprintf("%s since %s: %s", route, st.since.UTC().Format(time.RFC3339), st.reason))
		}
	}
	sort.Strings(out)
	return out
}

// AuthProblems lists the routes this worker cannot authenticate to, for
// the readiness check; empty when all is well.
func (w *Worker) AuthProblems() []string { return w.health.problems() }

// probeTokens fetches a token for every route that uses OAuth, so that a
// wrong secret or missing consent shows in the health at start, not only
// when the first message waits.
func (w *Worker) probeTokens(ctx context.Context) {
	for _, d := range w.router.tokenRoutes() {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := d.Tokens.Token(tctx)
		cancel()
		var oe *oauth.Error
		switch {
		case err == nil:
			// A token is no proof the next hop takes it: leave the state
			// to the first delivery.
		case errors.As(err, &oe) && !oe.Temporary:
			w.health.set(d.Key, false, "could not get an OAuth token: "+oe.Error())
		default:
			w.log.Warn().Str("route", d.Key).Err(err).Msg("could not get an OAuth token yet; will try again with the first message")
		}
	}
}

// RouteAuth is one route's outbound authentication as last seen.
type RouteAuth struct {
	Route  string
	OK     bool
	Since  time.Time // when it last changed
	Reason string    // why it fails
}

// AuthStates lists every route with credentials this worker has tried,
// by name: whether the last login worked, since when, and why not.
func (w *Worker) AuthStates() []RouteAuth {
	h := w.health
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]RouteAuth, 0, len(h.states))
	for route, st := range h.states {
		out = append(out, RouteAuth{Route: route, OK: !st.failing, Since: st.since, Reason: st.reason})
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Route < out[k].Route })
	return out
}
