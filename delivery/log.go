package delivery

import (
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/rs/zerolog"
)

// logAttempt writes one event per destination of an attempt (the
// delivery log) and counts it.
func (w *Worker) logAttempt(job *contracts.Job, groups []*group, p *plan, log zerolog.Logger) {
	for _, g := range groups {
		if g.report == nil {
			rcpts := zerolog.Arr()
			for _, r := range g.rcpts {
				rcpts.Str(r.Addr)
			}
			log.Info().Str("domain", g.dest.Domain).Str("route", g.dest.Key).Array("rcpts", rcpts).
				Str("reason", g.waitReason).Time("next_attempt", g.postponed).Msg("postponed")
			continue
		}
		result := g.result()
		ev := log.Info()
		if result != contracts.ResultDelivered {
			ev = log.Warn()
		}
		rcpts := zerolog.Arr()
		throttled := false
		for i, r := range g.rcpts {
			v := g.verdicts[i]
			rcpts.Dict(zerolog.Dict().Str("rcpt", r.Addr).Str("result", v.Class.String()).Str("reply", v.Reply.String()))
			throttled = throttled || v.Throttled
			if v.Class == Delivered {
				w.metrics.latency.Observe(time.Since(job.ReceivedAt).Seconds())
			}
		}
		rep := g.report
		ev = ev.Str("domain", g.dest.Domain).Str("route", g.dest.Key).Str("host", rep.Host).Str("ip", rep.IP).
			Str("tls", rep.TLS).Array("rcpts", rcpts).Str("result", result).Dur("duration", rep.Duration).Int64("bytes", rep.Bytes)
		class := "4xx"
		if len(g.verdicts) > 0 {
			r := g.verdicts[0].Reply
			ev = ev.Int("smtp_code", r.Code).Str("smtp_enh", r.Enhanced)
			switch r.Code / 100 {
			case 2:
				class = "2xx"
			case 5:
				class = "5xx"
			}
		}
		if throttled {
			ev = ev.Bool("throttled", true)
		}
		if rep.Folded != "" {
			ev = ev.Str("folded", rep.Folded)
			w.metrics.folded.WithLabelValues(rep.Folded).Inc()
		}
		ev = w.logDKIM(ev, rep.DKIM)
		if result != contracts.ResultDelivered {
			for _, rt := range p.outcome.Retries {
				if len(rt.Rcpts) > 0 && w.router.destinationFor(job, rt.Rcpts[0].Domain()).Key == g.dest.Key {
					ev = ev.Time("next_attempt", rt.At)
					break
				}
			}
		}
		ev.Msg("delivery attempt")
		w.metrics.deliveries.WithLabelValues(result, class).Inc()
		w.metrics.bytes.Add(float64(rep.Bytes))
	}
}

// logSettled logs and counts what the broker recorded: the dead letter
// and the notifications queued.
func (w *Worker) logSettled(p *plan, log zerolog.Logger) {
	if d := p.outcome.Dead; d != nil {
		w.metrics.deadLetter(d.Reason)
		rcpts := zerolog.Arr()
		for _, r := range d.Rcpts {
			rcpts.Str(r.Addr)
		}
		log.Warn().Str("reason", d.Reason).Array("rcpts", rcpts).Str("detail", d.Detail).Msg("dead-lettered")
	}
	for _, n := range p.outcome.Notices {
		log.Info().Str("dsn_id", n.Job.QueueID).Str("rcpt", n.Job.Rcpts[0].Addr).Msg("DSN queued")
	}
}
