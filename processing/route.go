package processing

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/paystream/paystream/payment"
)

// Route is one gateway of a worker's routing table (docs/contract.md §5,
// "Several gateways"; PAYSTREAM_GATEWAYS).
type Route struct {
	// Gateway is the gateway; its Name is the route's name. Required.
	Gateway Gateway
	// Weight is the gateway's share of the payments that no rule sends
	// elsewhere, relative to the other routes' weights, ≥ 0. 0 makes it a
	// standby: it gets payments only through a rule or a failover.
	Weight int
	// Merchants and Currencies are the rules: a payment of a listed
	// merchant goes to the routes that list it, else a payment in a listed
	// currency to the routes that list that, else every route by weight.
	// Rules prefer, they do not exclude: on failover every other route
	// follows, in the same order.
	Merchants  []string
	Currencies []string
}

// Router is the optional extra of Claims that failover needs: Route moves a
// held payment from one gateway to another, fenced by the lease, before any
// call to the new one (store.Route). Without it a payment never leaves the
// gateway it was claimed for.
type Router interface {
	Route(ctx context.Context, key string, attempt int, owner, from, to string) error
}

// routed is one gateway of the Processor with its guard.
type routed struct {
	Route
	name  string
	guard *Guard
}

// rank returns the processor's gateways in the order a payment of req
// tries them: the routes whose merchant rule names req's merchant, then
// those whose currency rule names its currency, then the rest; within each
// group by weighted rendezvous hashing of the effective key (so that every
// worker ranks a key alike, and each route gets its weight's share), the
// standbys (weight 0) last, by name.
func (p *Processor) rank(req *payment.Request) []*routed {
	if len(p.gws) == 1 {
		return p.gws
	}
	key := req.EffectiveKey()
	type scored struct {
		r     *routed
		tier  int
		score float64
	}
	s := make([]scored, len(p.gws))
	for i, r := range p.gws {
		tier := 2
		switch {
		case slices.Contains(r.Merchants, req.MerchantID):
			tier = 0
		case slices.Contains(r.Currencies, req.Currency):
			tier = 1
		}
		score := math.Inf(1)
		if r.Weight > 0 {
			h := fnv.New64a()
			_, _ = h.Write([]byte(r.name))
			_, _ = h.Write([]byte{0})
			_, _ = h.Write([]byte(key))
			u := (float64(mix64(h.Sum64())>>11) + 0.5) / (1 << 53) // in (0, 1)
			score = -math.Log(u) / float64(r.Weight)
		}
		s[i] = scored{r, tier, score}
	}
	sort.SliceStable(s, func(i, j int) bool {
		if s[i].tier != s[j].tier {
			return s[i].tier < s[j].tier
		}
		if s[i].score != s[j].score {
			return s[i].score < s[j].score
		}
		return s[i].r.name < s[j].r.name
	})
	out := make([]*routed, len(s))
	for i := range s {
		out[i] = s[i].r
	}
	return out
}

// mix64 is MurmurHash3's 64-bit finalizer: FNV-1a alone leaves its high
// bits nearly equal for names that differ in one byte, which made one
// gateway first for every key.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// preferred returns the gateway a new claim of a payment ranked so is
// stored with: the first whose guard would let a call through now, else
// the first.
func preferred(ranked []*routed) *routed {
	for _, r := range ranked {
		if stop, _ := r.guard.blocked(); !stop {
			return r
		}
	}
	return ranked[0]
}

// allBlocked reports whether no gateway of ranked would let a call through
// now, and the shortest wait until one may.
func allBlocked(ranked []*routed) (bool, time.Duration, error) {
	var wait time.Duration
	fleet := true
	for i, r := range ranked {
		stop, w := r.guard.blocked()
		if !stop {
			return false, 0, nil
		}
		if i == 0 || w < wait {
			wait = w
		}
		fleet = fleet && r.guard.fleetDown.Load()
	}
	err := error(ErrFleetOpen)
	if !fleet {
		err = fmt.Errorf("gateway breaker: %w", gobreaker.ErrOpenState)
	}
	return true, wait, err
}

// notSent reports whether a failed charge surely never reached the gateway:
// the breaker (or the fleet's view) refused it, or no connection could be
// made. Only then may a payment fail over without a lookup.
func notSent(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return true
	}
	ge, ok := errors.AsType[*payment.GatewayError](err)
	return ok && ge.NotSent
}

// gateway returns the processor's gateway named name, if configured.
func (p *Processor) gateway(name string) (*routed, bool) {
	r, ok := p.byName[name]
	return r, ok
}

// next returns the gateway after l's current one in ranked that l has not
// been routed to under this lease and whose guard lets a call through, or
// nil.
func next(ranked []*routed, l *lease) *routed {
	for _, r := range ranked {
		if r == l.gw || slices.Contains(l.routedTo, r.name) {
			continue
		}
		if stop, _ := r.guard.blocked(); stop {
			continue
		}
		return r
	}
	return nil
}

// failover moves l's payment to gateway to (store first, so that a
// take-over after a crash calls to, never the gateway left), when the
// Claims can route and the payment surely has no charge in flight or made
// on its current gateway (the caller checked). It reports whether it did.
func (p *Processor) failover(ctx context.Context, l *lease, to *routed, why error) bool {
	rt, ok := p.claims.(Router)
	if !ok || to == nil || l.ambiguous {
		return false
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	err := rt.Route(rctx, l.key, l.attempt, p.cfg.Owner, l.gw.name, to.name)
	cancel()
	if err != nil {
		p.log.Warn().Err(err).Str("idempotency_key", l.key).Str("from", l.gw.name).Str("to", to.name).
			Msg("failover not recorded: staying on the gateway")
		return false
	}
	p.log.Warn().Str("idempotency_key", l.key).Int("attempt", l.attempt).Str("from", l.gw.name).
		Str("to", to.name).AnErr("because", why).Msg("payment fails over to another gateway")
	p.m.Failovers.WithLabelValues(l.gw.name, to.name).Inc()
	if l.gw != nil {
		l.routedTo = append(l.routedTo, l.gw.name)
	}
	l.gw = to
	return true
}

// GatewayByName finds a configured gateway by name: the reconciler and the
// sweeper ask the gateway a row is on, not just any.
type GatewayByName interface {
	GatewayNamed(name string) (Gateway, bool)
}

// GatewayNamed returns the processor's gateway named name. A processor
// with one gateway returns it for every name, as before several gateways
// existed: rows recorded under an older PAYSTREAM_GATEWAY_NAME are still
// asked of it.
func (p *Processor) GatewayNamed(name string) (Gateway, bool) {
	if len(p.gws) == 1 {
		return p.gws[0].Gateway, true
	}
	r, ok := p.byName[name]
	if !ok {
		return nil, false
	}
	return r.Gateway, true
}

// LookupAt asks the gateway named name whether it charged under key,
// directly (no guard): for the sweeper's settlements.
func (p *Processor) LookupAt(ctx context.Context, name, key string) (payment.LookupResult, error) {
	g, ok := p.GatewayNamed(name)
	if !ok {
		return payment.LookupResult{}, fmt.Errorf("gateway %q is not configured here", name)
	}
	return g.Lookup(ctx, key)
}

// WithGateways makes the reconciler ask each row's own gateway, found in gs,
// rather than its one gateway; it returns r.
func (r *Reconciler) WithGateways(gs GatewayByName) *Reconciler {
	r.gws = gs
	return r
}
