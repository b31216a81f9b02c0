package audit_test

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/audit"
	"github.com/paystream/paystream/payment"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func request(id string, amount int64) *payment.Request {
	return &payment.Request{PaymentID: id, MerchantID: "m1", AmountMinor: amount, Currency: "EUR", PaymentMethod: "pm_card_visa"}
}

// world builds a snapshot the way a correct system leaves it.
type world struct {
	snap *audit.Snapshot
	exp  audit.Expect
}

func newWorld() *world {
	return &world{snap: &audit.Snapshot{Charges: map[string]sim.KeyState{}}}
}

// publish appends a request message and returns its sequence.
func (w *world) publish(subject string, body []byte) uint64 {
	seq := uint64(len(w.snap.Requests) + 1)
	w.snap.Requests = append(w.snap.Requests, audit.Message{Seq: seq, Subject: subject, Time: t0.Add(time.Duration(seq) * time.Millisecond), Data: body})
	return seq
}

func (w *world) publishReq(r *payment.Request) uint64 {
	body, err := r.Marshal()
	if err != nil {
		panic(err)
	}
	return w.publish("payments.requests."+r.MerchantID, body)
}

// deadLetter appends a dead letter of request seq, stored after every
// outcome event (at +2s).
func (w *world) deadLetter(seq uint64, reason payment.DeadLetterReason) {
	w.deadLetterAt(seq, reason, t0.Add(2*time.Second))
}

func (w *world) deadLetterAt(seq uint64, reason payment.DeadLetterReason, at time.Time) {
	h := nats.Header{}
	h.Set(consumer.HeaderDLQReason, string(reason))
	h.Set(consumer.HeaderStreamSeq, strconv.FormatUint(seq, 10))
	n := uint64(len(w.snap.DeadLetters) + 1)
	w.snap.DeadLetters = append(w.snap.DeadLetters, audit.Message{Seq: n, Time: at.Add(time.Duration(n) * time.Millisecond), Header: h})
}

func (w *world) announce(r *payment.Request, status payment.Status, chargeID string) {
	body, err := json.Marshal(payment.Outcome{PaymentID: r.PaymentID, IdempotencyKey: r.EffectiveKey(), Status: status, GatewayChargeID: chargeID})
	if err != nil {
		panic(err)
	}
	seq := uint64(len(w.snap.Results) + 1)
	w.snap.Results = append(w.snap.Results, audit.Message{Seq: seq, Time: t0.Add(time.Second + time.Duration(seq)*time.Millisecond), Data: body})
}

// settle records a final row for r, its gateway state and its outcome event.
func (w *world) settle(r *payment.Request, status payment.Status, errorCode string) {
	key := r.EffectiveKey()
	row := audit.Row{Key: key, PaymentID: r.PaymentID, Status: string(status), Attempts: 1, ErrorCode: errorCode, Fingerprint: r.Fingerprint()}
	switch status {
	case payment.StatusSucceeded:
		row.GatewayChargeID = "ch_" + key
		w.snap.Charges[key] = sim.KeyState{Key: key, State: sim.KeyDone, Charged: true, ChargeID: row.GatewayChargeID}
		w.snap.Gateway.Charges++
	case payment.StatusDeclined:
		w.snap.Charges[key] = sim.KeyState{Key: key, State: sim.KeyDone, DeclineCode: "card_declined"}
	}
	w.snap.Rows = append(w.snap.Rows, row)
	w.exp.ValidKeys = append(w.exp.ValidKeys, key)
	w.announce(r, status, row.GatewayChargeID)
}

// base is a healthy run: a succeeded payment and its duplicate, a declined
// one, an invalid message and a conflicting one, all handled.
func base() *world {
	w := newWorld()
	a, b := request("pa", 1000), request("pb", 1013)
	w.publishReq(a)
	w.publishReq(b)
	w.publishReq(a) // duplicate
	bad := w.publish("payments.requests.m1", []byte(`{"payment_id":`))
	w.exp.InvalidMessages = 1
	w.deadLetter(bad, payment.ReasonInvalid)
	conflict := w.publishReq(request("pa", 2000)) // same key, other amount
	w.deadLetter(conflict, payment.ReasonConflict)
	w.settle(a, payment.StatusSucceeded, "")
	w.settle(b, payment.StatusDeclined, "")
	return w
}

func TestCheckHealthyRun(t *testing.T) {
	t.Parallel()
	w := base()
	r := audit.Check(w.snap, w.exp)
	require.Empty(t, r.Problems())
	require.True(t, r.OK())
	require.Equal(t, 5, r.Requests)
	require.Equal(t, 2, r.ValidKeys)
	require.Equal(t, 1, r.InvalidMessages)
	require.Equal(t, 1, r.DuplicateMessages)
	require.Equal(t, 1, r.ConflictMessages)
	require.Equal(t, map[string]int{"succeeded": 1, "declined": 1}, r.Rows)
	require.Equal(t, map[string]int{"invalid": 1, "conflict": 1}, r.DeadLetters)
	require.Equal(t, 1, r.Succeeded())
	require.Equal(t, int64(1), r.RealCharges)
	require.Equal(t, 2, r.Outcomes)
	require.Len(t, r.Latencies, 2)
	// pa: first request at +1ms, outcome at +1s+1ms.
	require.Equal(t, time.Second, r.Percentile(0))
	require.Equal(t, t0.Add(time.Millisecond), r.FirstRequest)
}

func TestCheckFindsBrokenGuarantees(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		mutate func(w *world)
		field  func(r *audit.Report) []string
		want   int
	}{
		{
			name: "valid key without a row is lost",
			mutate: func(w *world) {
				w.publishReq(request("pc", 500))
				w.exp.ValidKeys = append(w.exp.ValidKeys, "pc")
			},
			field: func(r *audit.Report) []string { return r.Lost }, want: 1,
		},
		{
			name:   "published key missing from the stream is lost",
			mutate: func(w *world) { w.exp.ValidKeys = append(w.exp.ValidKeys, "never-stored") },
			field:  func(r *audit.Report) []string { return r.Lost }, want: 1,
		},
		{
			name:   "final row never announced is lost",
			mutate: func(w *world) { w.snap.Results = w.snap.Results[1:] },
			field:  func(r *audit.Report) []string { return r.Lost }, want: 1,
		},
		{
			name: "processing row is stuck",
			mutate: func(w *world) {
				c := request("pc", 500)
				w.publishReq(c)
				w.exp.ValidKeys = append(w.exp.ValidKeys, "pc")
				w.snap.Rows = append(w.snap.Rows, audit.Row{Key: "pc", Status: "processing", Fingerprint: c.Fingerprint()})
			},
			field: func(r *audit.Report) []string { return r.Stuck }, want: 1,
		},
		{
			name: "unknown row left unsettled",
			mutate: func(w *world) {
				c := request("pc", 500)
				seq := w.publishReq(c)
				w.exp.ValidKeys = append(w.exp.ValidKeys, "pc")
				w.snap.Rows = append(w.snap.Rows, audit.Row{Key: "pc", Status: "unknown", Fingerprint: c.Fingerprint()})
				w.snap.Charges["pc"] = sim.KeyState{Key: "pc", State: sim.KeyDone, Charged: true, ChargeID: "ch_pc"}
				w.snap.Gateway.Charges++
				w.deadLetter(seq, payment.ReasonExhausted)
			},
			field: func(r *audit.Report) []string { return r.Unknown }, want: 1,
		},
		{
			name: "failed row the gateway charged",
			mutate: func(w *world) {
				c := request("pc", 700)
				seq := w.publishReq(c)
				w.settle(c, payment.StatusFailed, payment.ErrorCodeExhausted)
				w.deadLetter(seq, payment.ReasonExhausted)
				w.snap.Charges["pc"] = sim.KeyState{Key: "pc", State: sim.KeyDone, Charged: true, ChargeID: "ch_pc"}
				w.snap.Gateway.Charges++
			},
			field: func(r *audit.Report) []string { return r.FalseFailed }, want: 1,
		},
		{
			name: "exhausted dead letter after the row succeeded",
			mutate: func(w *world) {
				c := request("pc", 700)
				seq := w.publishReq(c)
				w.settle(c, payment.StatusSucceeded, "")
				w.deadLetter(seq, payment.ReasonExhausted)
			},
			field: func(r *audit.Report) []string { return r.WrongDeadLetters }, want: 1,
		},
		{
			name:   "double charge at the gateway",
			mutate: func(w *world) { w.snap.Gateway.DoubleCharged = []string{"pa"} },
			field:  func(r *audit.Report) []string { return r.DoubleCharged }, want: 1,
		},
		{
			name:   "invalid message without a dead letter",
			mutate: func(w *world) { w.snap.DeadLetters = w.snap.DeadLetters[1:] },
			field:  func(r *audit.Report) []string { return r.WrongDeadLetters }, want: 1,
		},
		{
			name:   "valid message dead-lettered invalid",
			mutate: func(w *world) { w.deadLetter(1, payment.ReasonInvalid) },
			field:  func(r *audit.Report) []string { return r.WrongDeadLetters }, want: 1,
		},
		{
			name:   "conflict without its dead letter",
			mutate: func(w *world) { w.snap.DeadLetters = w.snap.DeadLetters[:1] },
			field:  func(r *audit.Report) []string { return r.WrongDeadLetters }, want: 1,
		},
		{
			name:   "exhausted dead letter of a payment that never failed",
			mutate: func(w *world) { w.deadLetter(1, payment.ReasonExhausted) },
			field:  func(r *audit.Report) []string { return r.WrongDeadLetters }, want: 1,
		},
		{
			name:   "dead letter of an unknown request",
			mutate: func(w *world) { w.deadLetter(99, payment.ReasonInvalid) },
			field:  func(r *audit.Report) []string { return r.WrongDeadLetters }, want: 1,
		},
		{
			name: "succeeded row with another charge id",
			mutate: func(w *world) {
				w.snap.Charges["pa"] = sim.KeyState{Key: "pa", State: sim.KeyDone, Charged: true, ChargeID: "ch_other"}
			},
			field: func(r *audit.Report) []string { return r.ChargeMismatches }, want: 1,
		},
		{
			name: "declined row the gateway charged",
			mutate: func(w *world) {
				w.snap.Charges["pb"] = sim.KeyState{Key: "pb", State: sim.KeyDone, Charged: true, ChargeID: "ch_x"}
			},
			field: func(r *audit.Report) []string { return r.ChargeMismatches }, want: 1,
		},
		{
			name:   "more real charges than succeeded rows",
			mutate: func(w *world) { w.snap.Gateway.Charges++ },
			field:  func(r *audit.Report) []string { return r.ChargeMismatches }, want: 1,
		},
		{
			name:   "outcome announced twice",
			mutate: func(w *world) { w.announce(request("pa", 1000), payment.StatusSucceeded, "ch_pa") },
			field:  func(r *audit.Report) []string { return r.OutcomeProblems }, want: 1,
		},
		{
			name:   "outcome with another status than the row",
			mutate: func(w *world) { w.announce(request("pa", 1000), payment.StatusDeclined, "") },
			field:  func(r *audit.Report) []string { return r.OutcomeProblems }, want: 1,
		},
		{
			name:   "outcome without a row",
			mutate: func(w *world) { w.announce(request("ghost", 1), payment.StatusSucceeded, "ch") },
			field:  func(r *audit.Report) []string { return r.OutcomeProblems }, want: 1,
		},
		{
			name: "row nobody published",
			mutate: func(w *world) {
				w.snap.Rows = append(w.snap.Rows, audit.Row{Key: "ghost", Status: "declined"})
			},
			field: func(r *audit.Report) []string { return r.Unexpected }, want: 1,
		},
		{
			name:   "fewer invalid messages than published",
			mutate: func(w *world) { w.exp.InvalidMessages = 2 },
			field:  func(r *audit.Report) []string { return r.Unexpected }, want: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := base()
			tc.mutate(w)
			r := audit.Check(w.snap, w.exp)
			require.Len(t, tc.field(r), tc.want, "%+v", r.Problems())
			require.False(t, r.OK())
			require.Len(t, r.Problems(), 1, "only the broken guarantee is reported: %v", r.Problems())
		})
	}
}

func TestCheckAcceptsLegitimateFailures(t *testing.T) {
	t.Parallel()
	t.Run("exhausted payment with a failed row is not lost", func(t *testing.T) {
		t.Parallel()
		w := base()
		c := request("pc", 700)
		seq := w.publishReq(c)
		w.settle(c, payment.StatusFailed, payment.ErrorCodeExhausted)
		w.deadLetter(seq, payment.ReasonExhausted)
		r := audit.Check(w.snap, w.exp)
		require.Empty(t, r.Problems())
		require.Equal(t, map[string]int{payment.ErrorCodeExhausted: 1}, r.FailedCodes)
	})
	t.Run("dead-lettered before any row was written", func(t *testing.T) {
		t.Parallel()
		w := base()
		seq := w.publishReq(request("pc", 700))
		w.exp.ValidKeys = append(w.exp.ValidKeys, "pc")
		w.deadLetter(seq, payment.ReasonExhausted)
		r := audit.Check(w.snap, w.exp)
		require.Empty(t, r.Problems())
		require.Equal(t, []string{"pc"}, r.DeadLetteredOnly)
	})
	t.Run("failed payment taken over by a replay", func(t *testing.T) {
		t.Parallel()
		w := base()
		c := request("pc", 700)
		seq := w.publishReq(c)
		w.deadLetter(seq, payment.ReasonExhausted)
		w.announce(c, payment.StatusFailed, "")
		w.publishReq(c) // the operator's replay
		w.settle(c, payment.StatusSucceeded, "")
		r := audit.Check(w.snap, w.exp)
		require.Empty(t, r.Problems())
		require.Equal(t, 1, r.Superseded)
	})
	t.Run("unknown row settled succeeded by reconciliation", func(t *testing.T) {
		t.Parallel()
		w := base()
		c := request("pc", 700)
		seq := w.publishReq(c)
		// The last delivery found the outcome unknown and dead-lettered
		// the message; reconciliation then recorded and announced it.
		w.deadLetterAt(seq, payment.ReasonExhausted, t0.Add(500*time.Millisecond))
		w.settle(c, payment.StatusSucceeded, "")
		r := audit.Check(w.snap, w.exp)
		require.Empty(t, r.Problems())
		require.Empty(t, r.FalseFailed)
		require.Empty(t, r.Unknown)
	})
	t.Run("the later variant of a conflict won", func(t *testing.T) {
		t.Parallel()
		w := newWorld()
		first, second := request("pa", 1000), request("pa", 2000)
		s1 := w.publishReq(first)
		w.publishReq(second)
		w.deadLetter(s1, payment.ReasonConflict)
		w.settle(second, payment.StatusSucceeded, "")
		r := audit.Check(w.snap, w.exp)
		require.Empty(t, r.Problems())
	})
}
