package audit

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/payment"
)

// Expect is what was published, as the publisher knows it.
type Expect struct {
	// ValidKeys are the effective keys of the valid requests published and
	// acknowledged by the stream. Each must end as exactly one final row.
	ValidKeys []string
	// InvalidMessages is the number of invalid messages published.
	InvalidMessages int
	// Limits are the workers' validation limits; the zero value means the
	// contract's.
	Limits payment.Limits
}

// Report is the result of Check. The lists hold one short line per
// problem; their lengths are the figures.
type Report struct {
	// Requests is the number of messages in the requests stream;
	// InvalidMessages, ConflictMessages and DuplicateMessages classify them
	// (a conflict has the key of another request and a different
	// fingerprint; a duplicate has both the same).
	Requests, InvalidMessages, ConflictMessages, DuplicateMessages int
	// ValidKeys is the number of distinct effective keys of valid requests.
	ValidKeys int
	// Rows counts the rows by status; FailedCodes the failed rows by
	// error code.
	Rows        map[string]int
	FailedCodes map[string]int
	// DeadLetters counts the dead letters by reason.
	DeadLetters map[string]int
	// Outcomes is the number of outcome events.
	Outcomes int
	// Superseded counts outcome events of a failed row that a later
	// delivery took over and finished (legitimate: the contract announces
	// both).
	Superseded int
	// RealCharges is the gateway's number of real charges.
	RealCharges int64
	// InFlightConflicts is the gateway's number of 409 answers: a request
	// for a key whose earlier call was still running there. Reported, not
	// a broken guarantee: a holder frozen past its lease, or a call
	// abandoned (timed out, its worker killed) that the gateway has not
	// ended yet when the next attempt comes, yields one legitimately
	// (docs/reliability.md).
	InFlightConflicts int64

	// Lost lists valid keys without a final row, or whose final row was
	// never announced.
	Lost []string
	// DeadLetteredOnly lists valid keys without a row whose message was
	// dead-lettered exhausted: every delivery failed before a row could be
	// written. Not lost — the dead letter is the record — but counted.
	DeadLetteredOnly []string
	// Stuck lists rows still processing.
	Stuck []string
	// Unknown lists rows still unknown: the outcome of an ambiguous gateway
	// call that reconciliation has not settled (docs/contract.md §6.8).
	Unknown []string
	// DoubleCharged lists payment ids the gateway charged more than once.
	DoubleCharged []string
	// FalseFailed lists failed rows whose key the gateway charged: money
	// moved, and upstream was told it did not.
	FalseFailed []string
	// WrongDeadLetters lists invalid or conflicting messages without the
	// right dead letter, and dead letters a valid message should not have.
	WrongDeadLetters []string
	// ChargeMismatches lists rows whose status or charge id disagrees with
	// the gateway otherwise: a succeeded row with another charge id, a
	// declined row the gateway charged, real charges not equal to the rows
	// the gateway charged (succeeded, false failed and unknown ones).
	ChargeMismatches []string
	// OutcomeProblems lists final rows with a wrong or repeated outcome
	// event, and events without a row.
	OutcomeProblems []string
	// Unexpected lists rows or requests that nobody published.
	Unexpected []string

	// Latencies are, per final row, the time from the first request of its
	// key to its outcome event, both as stored by the server.
	Latencies []time.Duration
	// FirstRequest and LastOutcome bound the run as the server saw it.
	FirstRequest, LastOutcome time.Time
}

// OK reports whether every guarantee held.
func (r *Report) OK() bool { return len(r.Problems()) == 0 }

// Problems returns one line per kind of broken guarantee, with up to five
// examples each.
func (r *Report) Problems() []string {
	var out []string
	add := func(name string, list []string) {
		if len(list) == 0 {
			return
		}
		ex := list[:min(5, len(list))]
		out = append(out, fmt.Sprintf("%s: %d (%s)", name, len(list), strings.Join(ex, "; ")))
	}
	add("lost", r.Lost)
	add("stuck", r.Stuck)
	add("unknown", r.Unknown)
	add("double charged", r.DoubleCharged)
	add("false failed", r.FalseFailed)
	add("wrong dead letters", r.WrongDeadLetters)
	add("charge mismatches", r.ChargeMismatches)
	add("outcome problems", r.OutcomeProblems)
	add("unexpected", r.Unexpected)
	return out
}

// Succeeded returns the number of succeeded rows.
func (r *Report) Succeeded() int { return r.Rows[string(payment.StatusSucceeded)] }

// Percentile returns the q-quantile (0..1) of the latencies, or 0.
func (r *Report) Percentile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.Latencies)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// statusUnknown is the status of a row whose gateway call was ambiguous
// and is awaiting reconciliation (docs/contract.md §6.8), as the audit reads
// it from the table.
const statusUnknown = string(payment.StatusUnknown)

// request is one request message as the audit understands it.
type request struct {
	Message
	valid bool
	key   string
	fp    string
}

// Check compares a snapshot with what was published.
func Check(snap *Snapshot, exp Expect) *Report {
	r := &Report{Rows: map[string]int{}, FailedCodes: map[string]int{}, DeadLetters: map[string]int{}}

	// Requests: classify each message as the workers must.
	reqBySeq := make(map[uint64]*request, len(snap.Requests))
	byKey := map[string][]*request{}
	firstFP := map[string]string{}
	for i := range snap.Requests {
		m := snap.Requests[i]
		q := &request{Message: m}
		reqBySeq[m.Seq] = q
		if r.FirstRequest.IsZero() || m.Time.Before(r.FirstRequest) {
			r.FirstRequest = m.Time
		}
		req, err := payment.Decode(m.Subject, m.Data, exp.Limits)
		if err != nil {
			r.InvalidMessages++
			continue
		}
		q.valid, q.key, q.fp = true, req.EffectiveKey(), req.Fingerprint()
		switch fp, seen := firstFP[q.key]; {
		case !seen:
			firstFP[q.key] = q.fp
		case fp == q.fp:
			r.DuplicateMessages++
		default:
			r.ConflictMessages++
		}
		byKey[q.key] = append(byKey[q.key], q)
	}
	r.Requests = len(snap.Requests)
	r.ValidKeys = len(byKey)
	if r.InvalidMessages != exp.InvalidMessages {
		r.Unexpected = append(r.Unexpected, fmt.Sprintf("%d invalid messages in the stream, %d published", r.InvalidMessages, exp.InvalidMessages))
	}

	rows := make(map[string]Row, len(snap.Rows))
	for _, row := range snap.Rows {
		rows[row.Key] = row
		r.Rows[row.Status]++
		if row.Status == string(payment.StatusFailed) {
			r.FailedCodes[row.ErrorCode]++
		}
		switch row.Status {
		case string(payment.StatusProcessing):
			r.Stuck = append(r.Stuck, row.Key)
		case statusUnknown:
			r.Unknown = append(r.Unknown, row.Key)
		}
		if _, ok := byKey[row.Key]; !ok {
			r.Unexpected = append(r.Unexpected, "row without a request: "+row.Key)
		}
	}

	// Outcome events by key.
	events := map[string][]payment.Outcome{}
	eventTime := map[string]time.Time{} // key/status → first event time
	for _, m := range snap.Results {
		var o payment.Outcome
		if err := json.Unmarshal(m.Data, &o); err != nil {
			r.OutcomeProblems = append(r.OutcomeProblems, fmt.Sprintf("undecodable outcome event #%d", m.Seq))
			continue
		}
		events[o.IdempotencyKey] = append(events[o.IdempotencyKey], o)
		id := o.IdempotencyKey + "/" + string(o.Status)
		if _, ok := eventTime[id]; !ok {
			eventTime[id] = m.Time
		}
		if m.Time.After(r.LastOutcome) {
			r.LastOutcome = m.Time
		}
	}
	r.Outcomes = len(snap.Results)

	// Keys with an exhausted dead letter.
	exhausted := map[string]bool{}
	for _, m := range snap.DeadLetters {
		if m.Header.Get(consumer.HeaderDLQReason) != string(payment.ReasonExhausted) {
			continue
		}
		if q, ok := reqBySeq[headerUint(m, consumer.HeaderStreamSeq)]; ok && q.valid {
			exhausted[q.key] = true
		}
	}

	// Every valid key published ends as one final row, announced once.
	expected := make(map[string]bool, len(exp.ValidKeys))
	for _, k := range exp.ValidKeys {
		expected[k] = true
	}
	for k := range byKey {
		if !expected[k] {
			r.Unexpected = append(r.Unexpected, "valid request nobody published: "+k)
		}
	}
	for _, k := range sortedKeys(expected) {
		row, ok := rows[k]
		switch {
		case !ok && len(byKey[k]) == 0:
			r.Lost = append(r.Lost, k+": published, not in the stream")
			continue
		case !ok && exhausted[k]:
			// Every delivery failed before a row was written (the database
			// was down, say): the dead letter is the record (docs/contract.md §6).
			r.DeadLetteredOnly = append(r.DeadLetteredOnly, k)
			continue
		case !ok:
			r.Lost = append(r.Lost, k+": no row")
			continue
		case row.Status == string(payment.StatusProcessing), row.Status == statusUnknown:
			continue // stuck or unknown, counted above
		}
		var same, other int
		for _, o := range events[k] {
			switch {
			case string(o.Status) == row.Status:
				same++
				if o.GatewayChargeID != row.GatewayChargeID || o.PaymentID != row.PaymentID {
					r.OutcomeProblems = append(r.OutcomeProblems, fmt.Sprintf("%s: event differs from its row", k))
				}
			case o.Status == payment.StatusFailed:
				// A failed outcome superseded by a take-over (replay).
				r.Superseded++
			default:
				other++
			}
		}
		switch {
		case same == 0:
			r.Lost = append(r.Lost, k+": final row "+row.Status+" never announced")
		case same > 1:
			r.OutcomeProblems = append(r.OutcomeProblems, fmt.Sprintf("%s: %d %s events", k, same, row.Status))
		}
		if other > 0 {
			r.OutcomeProblems = append(r.OutcomeProblems, fmt.Sprintf("%s: %d events with a status other than its row's %s", k, other, row.Status))
		}
		if t, ok := eventTime[k+"/"+row.Status]; ok {
			first := byKey[k][0].Time
			for _, q := range byKey[k] {
				if q.Time.Before(first) {
					first = q.Time
				}
			}
			r.Latencies = append(r.Latencies, t.Sub(first))
		}
	}
	for k := range events {
		if _, ok := rows[k]; !ok {
			r.OutcomeProblems = append(r.OutcomeProblems, k+": outcome event without a row")
		}
	}

	checkDeadLetters(r, snap, reqBySeq, rows, eventTime)
	checkGateway(r, snap, rows)
	for _, l := range [][]string{r.Lost, r.Stuck, r.Unknown, r.FalseFailed, r.WrongDeadLetters, r.ChargeMismatches, r.OutcomeProblems, r.Unexpected} {
		sort.Strings(l)
	}
	return r
}

// checkDeadLetters checks that each invalid or conflicting message has the
// right dead letter and that no valid message has another one.
func checkDeadLetters(r *Report, snap *Snapshot, reqBySeq map[uint64]*request,
	rows map[string]Row, eventTime map[string]time.Time) {
	dlBySeq := map[uint64][]string{}
	for _, m := range snap.DeadLetters {
		reason := m.Header.Get(consumer.HeaderDLQReason)
		r.DeadLetters[reason]++
		seq := headerUint(m, consumer.HeaderStreamSeq)
		q, ok := reqBySeq[seq]
		if !ok {
			r.WrongDeadLetters = append(r.WrongDeadLetters, fmt.Sprintf("dead letter #%d (%s) of unknown request #%d", m.Seq, reason, seq))
			continue
		}
		dlBySeq[seq] = append(dlBySeq[seq], reason)
		want := expectedReason(q, rows)
		switch {
		case reason == want:
		case q.valid && want == "" && reason == string(payment.ReasonGatewayRejected) && hadFailed(q.key, rows, eventTime):
			// The gateway refused it: the key's row is (or was, before a
			// take-over) failed, and its dead letter is the operator's
			// record.
		case q.valid && want == "" && reason == string(payment.ReasonExhausted) &&
			(hadFailed(q.key, rows, eventTime) || exhaustedUnsettled(q.key, m.Time, rows, eventTime)):
			// A retryable failure ran out of deliveries before the
			// payment's outcome was known: the row is (or was, before a
			// take-over) failed, or it was unknown and is still, or
			// reconciliation settled it after the dead letter.
		default:
			r.WrongDeadLetters = append(r.WrongDeadLetters, fmt.Sprintf("request #%d (%s) dead-lettered %q, want %q", seq, describe(q), reason, want))
		}
	}
	for seq, q := range reqBySeq {
		want := expectedReason(q, rows)
		if want == "" {
			continue
		}
		if !slices.Contains(dlBySeq[seq], want) {
			r.WrongDeadLetters = append(r.WrongDeadLetters, fmt.Sprintf("request #%d (%s) has no %q dead letter", seq, describe(q), want))
		}
	}
}

// expectedReason is the dead-letter reason a request must get: invalid, or
// conflict when its fingerprint differs from the one its key's row was
// claimed with; "" for a valid request of its row.
func expectedReason(q *request, rows map[string]Row) string {
	if !q.valid {
		return string(payment.ReasonInvalid)
	}
	if row, ok := rows[q.key]; ok && row.Fingerprint != q.fp {
		return string(payment.ReasonConflict)
	}
	return ""
}

// hadFailed reports whether the key's row is failed or a failed outcome
// was announced for it.
func hadFailed(key string, rows map[string]Row, eventTime map[string]time.Time) bool {
	row, ok := rows[key]
	if !ok || row.Status == string(payment.StatusFailed) {
		// No row: every delivery failed before one was written.
		return true
	}
	_, failed := eventTime[key+"/"+string(payment.StatusFailed)]
	return failed
}

// exhaustedUnsettled reports whether a dead letter stored at t, when the
// key's message ran out of deliveries, came before the key's row was
// final: the row is unknown, or its outcome was announced after t (an
// unknown row that reconciliation settled, docs/contract.md §6.8).
func exhaustedUnsettled(key string, t time.Time, rows map[string]Row, eventTime map[string]time.Time) bool {
	row, ok := rows[key]
	switch {
	case !ok:
		return false
	case row.Status == statusUnknown:
		return true
	}
	announced, ok := eventTime[key+"/"+row.Status]
	return ok && t.Before(announced)
}

func describe(q *request) string {
	if !q.valid {
		return "invalid"
	}
	return "key " + q.key
}

// checkGateway compares the rows with what the gateway recorded.
func checkGateway(r *Report, snap *Snapshot, rows map[string]Row) {
	r.RealCharges = snap.Gateway.Charges
	r.InFlightConflicts = snap.Gateway.InFlightConflicts
	r.DoubleCharged = slices.Clone(snap.Gateway.DoubleCharged)
	succeeded, otherCharged := 0, 0 // rows the gateway charged: succeeded, and failed or unknown
	for _, k := range sortedKeys(rows) {
		row := rows[k]
		ks, ok := snap.Charges[k]
		if !ok {
			ks = sim.KeyState{Key: k, State: sim.KeyUnknown}
		}
		switch payment.Status(row.Status) {
		case payment.StatusSucceeded:
			succeeded++
			if !ks.Charged || ks.ChargeID != row.GatewayChargeID {
				r.ChargeMismatches = append(r.ChargeMismatches, fmt.Sprintf("%s: succeeded with charge %q, gateway has %q (%s)", k, row.GatewayChargeID, ks.ChargeID, ks.State))
			}
		case payment.StatusDeclined:
			if ks.Charged {
				r.ChargeMismatches = append(r.ChargeMismatches, fmt.Sprintf("%s: declined, but the gateway charged %s", k, ks.ChargeID))
			}
		case payment.StatusFailed:
			if ks.Charged {
				otherCharged++
				r.FalseFailed = append(r.FalseFailed, fmt.Sprintf("%s: failed (%s), but the gateway charged %s", k, row.ErrorCode, ks.ChargeID))
			}
		case payment.StatusUnknown:
			if ks.Charged {
				otherCharged++ // reported as unknown
			}
		}
	}
	if int64(succeeded+otherCharged) != snap.Gateway.Charges {
		r.ChargeMismatches = append(r.ChargeMismatches, fmt.Sprintf("gateway made %d real charges for %d succeeded rows (and %d failed or unknown rows it charged)",
			snap.Gateway.Charges, succeeded, otherCharged))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
