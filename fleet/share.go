package fleet

import (
	"math"
	"sort"
	"time"
)

// GatewayRecord is the fleet's shared record of one gateway, one KV value
// per gateway in the gateways bucket (contract.GatewaysBucket), written
// only by compare-and-set on its revision: every change — a share, a vote,
// the fleet's breaker, the probe lease — is one atomic step from one
// consistent record to the next. Its JSON field names are part of the
// paystreamctl contract (docs/contract.md §9).
type GatewayRecord struct {
	// Gateway is the gateway's name.
	Gateway string `json:"gateway"`
	// Budget is the fleet-wide budget R in calls per second, as its last
	// writer was configured (0: no budget, shares unused).
	Budget float64 `json:"budget"`
	// Workers are the members, by worker id. A member whose Expires has
	// passed is dead: the next writer drops it, and its share is free.
	Workers map[string]Member `json:"workers"`
	// Down is the fleet's breaker: true while the gateway is down for the
	// fleet. DownSince is when it went down, UpSince when it last came up
	// (votes older than UpSince no longer count).
	Down      bool      `json:"down"`
	DownSince time.Time `json:"down_since,omitzero"`
	UpSince   time.Time `json:"up_since,omitzero"`
	// Probe is the probe lease while the gateway is down: only its holder
	// calls the gateway, one message at a time.
	Probe *ProbeLease `json:"probe,omitempty"`
}

// Member is one worker's entry in a GatewayRecord.
type Member struct {
	// Want is the calls per second the worker would make; Has the share it
	// holds, which it never exceeds and which the others leave free until
	// Expires.
	Want    float64   `json:"want"`
	Has     float64   `json:"has"`
	Expires time.Time `json:"expires"`
	// Breaker is the worker's own breaker (closed, half_open, open) and
	// OpenedAt when it last opened.
	Breaker  string    `json:"breaker"`
	OpenedAt time.Time `json:"opened_at,omitzero"`
	// Calls and Failures are its gateway calls in the last error window
	// since the gateway last came up for the fleet, and those that failed.
	Calls    int64 `json:"calls"`
	Failures int64 `json:"failures"`
	// Vote says the worker finds the gateway down: its breaker opened
	// since the fleet's UpSince, or its failure ratio reached the fleet's.
	Vote bool `json:"vote"`
}

// ProbeLease is the lease of the one worker that probes a gateway down for
// the fleet.
type ProbeLease struct {
	Holder  string    `json:"holder"`
	Since   time.Time `json:"since"`
	Expires time.Time `json:"expires"`
}

// GatewayBeat is one gateway's guard in a worker's heartbeat: what the
// worker enforces, which the gateway's record cannot show when the worker
// cannot reach it (a fallback share).
type GatewayBeat struct {
	Gateway string `json:"gateway"`
	// Share is the budget share in calls per second (0 without a budget);
	// Fallback says it is the fallback of an unreachable fleet.
	Share    float64 `json:"share"`
	Fallback bool    `json:"fallback"`
	// Breaker is the worker's own breaker; FleetDown the fleet's view, and
	// Prober whether this worker holds the probe lease.
	Breaker   string `json:"breaker"`
	FleetDown bool   `json:"fleet_down"`
	Prober    bool   `json:"prober"`
	// ConcurrencyLimit is the limit on payments in flight (-1 none).
	ConcurrencyLimit int `json:"concurrency_limit"`
}

// live returns the members of r alive at now.
func (r *GatewayRecord) live(now time.Time) map[string]Member {
	out := make(map[string]Member, len(r.Workers))
	for id, m := range r.Workers {
		if m.Expires.After(now) {
			out[id] = m
		}
	}
	return out
}

// fairShares divides budget among wants, max-min fair (water-filling):
// every member gets what it wants up to an equal level, and what the
// modest leave is shared by the rest. Capacity nobody wants is then spread
// evenly over everyone, so that the shares add up to the budget and an idle
// worker holds a little ready for its first calls.
func fairShares(budget float64, wants map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(wants))
	if len(wants) == 0 || budget <= 0 {
		for id := range wants {
			out[id] = 0
		}
		return out
	}
	ids := make([]string, 0, len(wants))
	for id := range wants {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if wants[ids[i]] != wants[ids[j]] {
			return wants[ids[i]] < wants[ids[j]]
		}
		return ids[i] < ids[j]
	})
	left := budget
	for i, id := range ids {
		level := left / float64(len(ids)-i)
		give := math.Min(math.Max(wants[id], 0), level)
		out[id] = give
		left -= give
	}
	if left > 0 {
		extra := left / float64(len(ids))
		for id := range out {
			out[id] += extra
		}
	}
	return out
}

// grant is what worker me may hold now: its fair share of budget among the
// live members' wants (its own want being want), but never more than the
// budget less what the others hold. So the budget is never over-granted:
// when a worker joins, the others shrink first (their next step sees it and
// lowers their Has), and the newcomer grows only into what they freed.
func grant(budget float64, live map[string]Member, me string, want float64) float64 {
	wants := make(map[string]float64, len(live)+1)
	others := 0.0
	for id, m := range live {
		if id == me {
			continue
		}
		wants[id] = m.Want
		others += m.Has
	}
	wants[me] = want
	fair := fairShares(budget, wants)[me]
	return math.Max(0, math.Min(fair, budget-others))
}
