package composetest

import (
	"context"
	"fmt"
	"time"

	"github.com/paystream/paystream/internal/testenv/audit"
	"github.com/paystream/paystream/publish"
)

// The publisher's generator settings of every batch.
const (
	Merchants  = 10
	Duplicates = 0.05
	Invalid    = 0.01
)

// Batch is one run of the publisher: Count generated items of Seed, at
// Rate messages per second (0: as fast as it can).
type Batch struct {
	Seed  int64
	Count int
	Rate  float64
}

// Ledger is what has been published so far, as the generator makes it
// (publish.Generate is deterministic for a seed): the valid keys each of
// which must end as exactly one final row, and the invalid messages that
// must be dead-lettered.
type Ledger struct {
	keys    []string
	invalid int
}

// Add records a published batch.
func (l *Ledger) Add(b Batch) {
	opts := publish.GenOptions{Merchants: Merchants, Duplicates: Duplicates, Invalid: Invalid}
	for i := range b.Count {
		it := publish.Generate(b.Seed, i, opts)
		switch it.Kind {
		case publish.KindValid:
			l.keys = append(l.keys, it.Request.EffectiveKey())
		case publish.KindInvalid:
			l.invalid++
		}
	}
}

// Keys is the number of valid keys published.
func (l *Ledger) Keys() int { return len(l.keys) }

// Audit waits until the work of everything in l has settled (at most
// limit), takes a snapshot and checks it. The line is the phase's audit
// line as the test prints it.
func Audit(ctx context.Context, a *audit.Auditor, l *Ledger, phase string, limit time.Duration) (*audit.Report, string, error) {
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, limit)
	p, err := a.WaitSettled(sctx, audit.Settled{Final: len(l.keys), DeadLetters: uint64(l.invalid)}, nil)
	cancel()
	if err != nil {
		return nil, "", fmt.Errorf("%s: not settled within %s: final %d/%d, dead letters %d/%d, pending %d, ack pending %d: %w",
			phase, limit, p.Final, len(l.keys), p.DeadLetters, l.invalid, p.Pending, p.AckPending, err)
	}
	// A read can meet a stream between leaders (after a NATS restart or a
	// partition): retry it for a while.
	var snap *audit.Snapshot
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		snap, err = a.Collect(cctx)
		cancel()
		if err == nil {
			break
		}
		if attempt == 10 || ctx.Err() != nil {
			return nil, "", fmt.Errorf("%s: collect: %w", phase, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
	}
	r := audit.Check(snap, audit.Expect{ValidKeys: l.keys, InvalidMessages: l.invalid})
	line := fmt.Sprintf("compose-test audit %-14s ok=%t keys=%d requests=%d succeeded=%d declined=%d failed=%d dead_letters=%d outcomes=%d real_charges=%d lost=%d dead_lettered_only=%d stuck=%d unknown=%d double_charged=%d false_failed=%d charge_mismatches=%d outcome_problems=%d in_flight_conflicts=%d settled_in=%s",
		phase, r.OK(), r.ValidKeys, r.Requests, r.Succeeded(), r.Rows["declined"], r.Rows["failed"], sum(r.DeadLetters), r.Outcomes, r.RealCharges,
		len(r.Lost), len(r.DeadLetteredOnly), len(r.Stuck), len(r.Unknown), len(r.DoubleCharged), len(r.FalseFailed),
		len(r.ChargeMismatches), len(r.OutcomeProblems), r.InFlightConflicts, time.Since(start).Round(time.Second))
	return r, line, nil
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
