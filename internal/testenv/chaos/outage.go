package chaos

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish"
)

// ambiguousRequests are the payments of the ambiguous outage. Their amounts
// end in 0, so that the simulator's amount rule never declines them.
func ambiguousRequests(seed int64, n int) []*payment.Request {
	out := make([]*payment.Request, n)
	for i := range out {
		out[i] = &payment.Request{
			PaymentID:     fmt.Sprintf("ambiguous_%016x_%03d", uint64(seed), i),
			MerchantID:    "m002",
			CustomerID:    "cus_ambiguous",
			AmountMinor:   2000 + 10*int64(i),
			Currency:      "EUR",
			PaymentMethod: "pm_card_visa",
			Description:   "charged, answer lost, gateway down",
		}
	}
	return out
}

// ambiguousOutage publishes n payments through an ambiguous outage (see
// gatewayProxy): each is charged at the gateway while the worker gets a
// 500, and from then on the gateway answers 503 to its charges and lookups
// — for these payments only, so that everyone else's successes keep the
// breakers closed and their retries come one after the other until the
// last delivery. It closes spent once every one of them has a row out of
// processing (or after a limit); the outage lasts until those rows have
// stayed so for a quiet period — no copy of a message left to take one
// over — then the gateway comes back. Until issue 10 such a payment ends
// failed/exhausted although the gateway charged it (false failed); after
// it, unknown, then succeeded by reconciliation. It returns the payments'
// keys once they are published.
func (r *run) ambiguousOutage(ctx context.Context, snd *sender, n int, spent chan<- struct{}) []string {
	spentOnce := sync.OnceFunc(func() { close(spent) })
	defer spentOnce()
	reqs := ambiguousRequests(r.cfg.Seed, n)
	keys := make([]string, n)
	msgs := make([]loadMsg, n)
	for i, req := range reqs {
		body, err := req.Marshal()
		if err != nil {
			r.problem("ambiguous outage: %v", err)
			return nil
		}
		keys[i] = req.EffectiveKey()
		msgs[i] = loadMsg{subject: publish.DefaultSubjectPrefix + ".requests." + req.MerchantID, body: body, msgID: req.PaymentID}
	}
	budget, quiet := r.deliveryBudget(), r.quietPeriod()
	limit := 2*budget + quiet + 30*time.Second
	r.proxy.arm(keys)
	r.event("ambiguous outage: %d payments charged with the answer lost, then the gateway down for them (charges and lookups 503) "+
		"until each has spent its %d deliveries (up to %s of retry delays) and %s passed without a delivery taking one over",
		n, envInt(r.env, "PAYSTREAM_MAX_DELIVER", maxDeliver), budget, quiet)
	// Twenty a second rather than at once: retries that run in step fail
	// in runs, and five failures in a row open a worker's breaker.
	if err := snd.sendAll(ctx, msgs, 20, 2); err != nil {
		r.proxy.lift()
		r.problem("ambiguous outage: %v", err)
		return nil
	}
	start := time.Now()
	err := r.waitSpent(ctx, keys, quiet, limit, sync.OnceFunc(func() {
		r.event("ambiguous outage: every payment spent its deliveries after %.1fs", time.Since(start).Seconds())
		spentOnce()
	}))
	down := len(r.proxy.down())
	r.proxy.lift()
	switch {
	case ctx.Err() != nil:
		return keys
	case err != nil:
		r.event("ambiguous outage: %v after %s; lifted anyway", err, limit)
	}
	r.event("ambiguous outage over after %.1fs: %d of %d charged with the answer lost, %d requests refused; gateway back for them",
		time.Since(start).Seconds(), down, n, r.proxy.refused.Load())
	return keys
}

// waitSpent waits until every key has a row out of processing, and no row
// of them went back to processing for quiet (a re-published copy taking a
// failed row over). It calls spent the first time all are out of
// processing, and gives up after limit.
func (r *run) waitSpent(ctx context.Context, keys []string, quiet, limit time.Duration, spent func()) error {
	deadline := time.Now().Add(limit)
	var settledSince time.Time
	last := map[string]string{}
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := r.audit.Statuses(qctx, keys)
		cancel()
		if err == nil { // the database may be restarting: look again
			last = st
			if allSpent(keys, st) {
				spent()
				if settledSince.IsZero() {
					settledSince = time.Now()
				}
				if time.Since(settledSince) >= quiet {
					return nil
				}
			} else {
				settledSince = time.Time{}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("payments still in play (%s)", describeStatuses(keys, last))
		}
		if !sleep(ctx, 250*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// allSpent reports whether every key has a row and none is processing.
func allSpent(keys []string, st map[string]string) bool {
	for _, k := range keys {
		if s, ok := st[k]; !ok || s == string(payment.StatusProcessing) {
			return false
		}
	}
	return true
}

// describeStatuses counts keys by status, "none" for no row.
func describeStatuses(keys []string, st map[string]string) string {
	n := map[string]int{}
	for _, k := range keys {
		s, ok := st[k]
		if !ok {
			s = "none"
		}
		n[s]++
	}
	var parts []string
	for s, c := range n {
		parts = append(parts, s+" "+strconv.Itoa(c))
	}
	slices.Sort(parts)
	return fmt.Sprint(parts)
}

// deliveryBudget is the longest a message can spend in retry delays over
// its deliveries: the backoff of each delivery but the last, at its cap
// (docs/contract.md §6.5), from the workers' settings.
func (r *run) deliveryBudget() time.Duration {
	n := envInt(r.env, "PAYSTREAM_MAX_DELIVER", maxDeliver)
	base := envDuration(r.env, "PAYSTREAM_RETRY_BACKOFF", retryBackoff)
	ceiling := envDuration(r.env, "PAYSTREAM_RETRY_BACKOFF_MAX", retryBackoffMax)
	var total time.Duration
	d := base
	for range n - 1 {
		total += min(d, ceiling)
		if d < ceiling {
			d *= 2
		}
	}
	return total
}

// quietPeriod is how long a row must stay out of processing before the
// ambiguous outage ends: longer than any wait of a message that can still
// take it over — a retry delay, an open breaker, the ack wait of a message
// whose worker was killed — plus a second.
func (r *run) quietPeriod() time.Duration {
	return max(envDuration(r.env, "PAYSTREAM_RETRY_BACKOFF_MAX", retryBackoffMax),
		envDuration(r.env, "PAYSTREAM_BREAKER_OPEN_TIMEOUT", breakerOpenTimeout),
		envDuration(r.env, "PAYSTREAM_ACK_WAIT", ackWait)) + time.Second
}

// envDuration reads a duration setting from env, def when absent or
// unparsable (the worker would refuse to start then).
func envDuration(env map[string]string, name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(env[name]); err == nil && d > 0 {
		return d
	}
	return def
}

// envInt reads an integer setting from env, def when absent or unparsable.
func envInt(env map[string]string, name string, def int) int {
	if n, err := strconv.Atoi(env[name]); err == nil && n > 0 {
		return n
	}
	return def
}
