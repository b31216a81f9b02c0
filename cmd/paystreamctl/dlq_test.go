package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// TestReplayAfterOutage runs a fleet through a gateway outage that
// dead-letters payments exhausted, then replays them with paystreamctl:
// the dry run's plan is what the real run does, a second replay publishes
// nothing, a payment that succeeded meanwhile is refused, and every
// payment is charged at most once although the gateway forgot its keys.
func TestReplayAfterOutage(t *testing.T) {
	// MaxKeys 8: the gateway forgets idempotency keys after eight more
	// completed keys, as a real one does after a day; lookups still find
	// the charges (MaxCharges unlimited).
	f := newFleet(t, sim.Config{MaxKeys: 8, MaxCharges: -1})
	f.startWorker("w1")
	f.startWorker("w2")

	// A healthy mixed load: charges, a decline (amount ending in 13), an
	// invalid request and a conflict.
	for i := range 5 {
		f.publish(request("pay_a"+strconv.Itoa(i), int64(1000+i)), "a"+strconv.Itoa(i))
	}
	f.publish(request("pay_a5", 1013), "a5")
	f.waitStatus("succeeded", "pay_a0", "pay_a1", "pay_a2", "pay_a3", "pay_a4")
	f.waitStatus("declined", "pay_a5")
	bad := request("pay_bad", 100)
	bad.Currency = "XXX"
	f.publish(bad, "bad")
	f.publish(request("pay_a0", 2000), "a0-conflict")
	require.Eventually(t, func() bool { return f.dlqCount("invalid") == 1 && f.dlqCount("conflict") == 1 }, testWait, pollEvery)

	// The outage: every charge answers 503 (lookups still answer: no
	// charge), so each payment's last delivery records failed and
	// dead-letters it exhausted.
	f.sim.SetConfig(sim.Config{ErrorRate: 1, SpareLookups: true})
	outage := []string{"pay_b0", "pay_b1", "pay_b2", "pay_b3", "pay_b4"}
	for i, id := range outage {
		f.publish(request(id, int64(2000+i)), id)
	}
	f.waitStatus("failed", outage...)
	require.Eventually(t, func() bool { return f.dlqCount("exhausted") == 5 }, testWait, pollEvery)
	f.sim.SetConfig(sim.Config{})

	// Upstream retries pay_b0 itself after the outage: the worker takes
	// the failed row over, looks up (no charge), charges. Then enough
	// other payments go through for the gateway to forget pay_b0's key.
	f.publish(request("pay_b0", 2000), "upstream-retry-pay_b0")
	f.waitStatus("succeeded", "pay_b0")
	for i := range 10 {
		f.publish(request("pay_c"+strconv.Itoa(i), int64(3000+i)), "c"+strconv.Itoa(i))
	}
	f.waitStatus("succeeded", "pay_c0", "pay_c1", "pay_c2", "pay_c3", "pay_c4", "pay_c5", "pay_c6", "pay_c7", "pay_c8", "pay_c9")
	require.Equal(t, sim.KeyUnknown, f.sim.Lookup("pay_b0").State, "the gateway forgot pay_b0's key")
	require.Equal(t, 1, f.charges("pay_b0"))

	// dlq ls: everything, counts by reason, filters.
	all := ctlJSON[ops.DeadLetterList](f, exitOK, "dlq", "ls")
	require.Equal(t, 7, all.Total)
	require.Equal(t, map[string]int{"invalid": 1, "conflict": 1, "exhausted": 5}, all.Counts)
	one := ctlJSON[ops.DeadLetterList](f, exitOK, "dlq", "ls", "--reason", "exhausted", "--payment", "pay_b1")
	require.Len(t, one.Items, 1)
	b1 := one.Items[0]
	require.Equal(t, "payments.requests.m001", b1.OriginalSubject)
	require.Equal(t, uint64(3), b1.Deliveries)
	require.Empty(t, b1.Body, "ls leaves bodies out")
	shown := ctlJSON[dlqShowOutput](f, exitOK, "dlq", "show", strconv.FormatUint(b1.Seq, 10))
	require.Equal(t, "pay_b1", shown.PaymentID)
	require.Contains(t, shown.Body, `"payment_id":"pay_b1"`)
	require.Equal(t, []string{"exhausted"}, shown.Headers["Paystream-Dlq-Reason"])
	limited := ctlJSON[ops.DeadLetterList](f, exitOK, "dlq", "ls", "--limit", "2")
	require.Len(t, limited.Items, 2)
	require.True(t, limited.Truncated)
	var invalidSeq, conflictSeq uint64
	for _, d := range all.Items {
		switch d.Reason {
		case "invalid":
			invalidSeq = d.Seq
		case "conflict":
			conflictSeq = d.Seq
		}
	}

	// The workers stop, so that what a replay publishes waits in the
	// stream: the two replays below race nothing.
	f.stopWorkers()
	requests := f.streamMsgs(f.ccfg.Stream)
	chargesBefore := f.sim.Stats().Charges

	dry := ctlJSON[ops.ReplayReport](f, exitDegraded, "dlq", "replay", "--reason", "exhausted", "--dry-run", "--actor", "alice")
	require.True(t, dry.DryRun)
	require.Equal(t, 4, dry.Charge)
	require.Equal(t, 1, dry.Refused)
	require.Zero(t, dry.Published)
	require.Equal(t, requests, f.streamMsgs(f.ccfg.Stream), "a dry run publishes nothing")
	plan := map[uint64]ops.ReplayItem{}
	for _, it := range dry.Items {
		plan[it.Seq] = it
		if it.PaymentID == "pay_b0" {
			require.Equal(t, ops.PlanRefuse, it.Plan)
			require.Contains(t, it.Why, "final succeeded")
		} else {
			require.Equal(t, ops.PlanCharge, it.Plan, "%+v", it)
			require.Equal(t, ops.ResultPlanned, it.Result)
			require.Equal(t, "failed", it.RowStatus)
		}
	}

	// Refused whatever the rows say: invalid and conflict dead letters.
	refused := ctlJSON[ops.ReplayReport](f, exitDegraded, "dlq", "replay", "--id", seqArg(invalidSeq, conflictSeq, 9999), "--actor", "alice")
	require.Equal(t, 3, refused.Refused)
	for _, it := range refused.Items {
		require.Equal(t, ops.ResultRefused, it.Result)
	}

	// The real run does what the dry run said.
	real := ctlJSON[ops.ReplayReport](f, exitDegraded, "dlq", "replay", "--reason", "exhausted", "--actor", "alice", "--rate", "100")
	require.Equal(t, 4, real.Published)
	require.Equal(t, 1, real.Refused)
	require.Len(t, real.Items, len(dry.Items))
	for _, it := range real.Items {
		p := plan[it.Seq]
		require.Equal(t, p.Plan, it.Plan, "seq %d", it.Seq)
		if p.Plan == ops.PlanCharge {
			require.Equal(t, ops.ResultPublished, it.Result)
			require.Equal(t, "replay-"+strconv.FormatUint(it.Seq, 10), it.MsgID)
		} else {
			require.Equal(t, ops.ResultRefused, it.Result)
		}
	}
	require.Equal(t, requests+4, f.streamMsgs(f.ccfg.Stream))

	// Twice publishes once: the audit refuses what was replayed ...
	again := ctlJSON[ops.ReplayReport](f, exitDegraded, "dlq", "replay", "--reason", "exhausted", "--actor", "alice")
	require.Equal(t, 5, again.Refused)
	for _, it := range again.Items {
		if it.PaymentID != "pay_b0" {
			require.Contains(t, it.Why, "already replayed")
		}
	}
	// ... and without the audit the message ids do.
	_, err := f.pool.Exec(context.Background(), "UPDATE operator_actions SET published_seqs = '{}'")
	require.NoError(t, err)
	dup := ctlJSON[ops.ReplayReport](f, exitDegraded, "dlq", "replay", "--reason", "exhausted", "--actor", "bob")
	require.Equal(t, 4, dup.Duplicates)
	require.Zero(t, dup.Published)
	require.Equal(t, requests+4, f.streamMsgs(f.ccfg.Stream), "replaying twice publishes once")

	// The fleet comes back and charges each replayed payment once.
	f.startWorker("w3")
	f.startWorker("w4")
	f.waitStatus("succeeded", "pay_b1", "pay_b2", "pay_b3", "pay_b4")
	f.waitIdle()
	require.Equal(t, chargesBefore+4, f.sim.Stats().Charges)

	// A replay that skips paystreamctl's refusal (an operator with the nats
	// CLI) of the payment that succeeded while its key was forgotten does
	// not charge it again: the worker finds the final row.
	d, err := ops.DeadLetters{JS: f.js, Stream: f.ccfg.DLQStream, SubjectPrefix: "payments"}.Get(context.Background(), seqOf(t, dry, "pay_b0"))
	require.NoError(t, err)
	f.publishRaw(d.OriginalSubject, []byte(d.Body), "by-hand")
	f.waitIdle()
	require.Equal(t, "succeeded", f.status("pay_b0"))
	for _, key := range append(outage, "pay_a0", "pay_c0") {
		require.Equal(t, 1, f.charges(key), "charges of %s", key)
	}
	require.Empty(t, f.sim.Stats().DoubleCharged)

	// Every run is audited, dry runs flagged.
	actions, err := store.New(f.pool).Actions(context.Background(), ops.ActionReplay, 10)
	require.NoError(t, err)
	require.Len(t, actions, 5)
	require.Equal(t, "bob", actions[0].Actor)
	require.Equal(t, 4, actions[0].Duplicates)
	require.True(t, actions[4].DryRun)
	require.Equal(t, "alice", actions[4].Actor)
	require.Equal(t, 4, actions[2].Published)
	require.Equal(t, 1, actions[2].Refused)
	var args map[string]any
	require.NoError(t, json.Unmarshal(actions[2].Arguments, &args))
	require.Equal(t, []any{"exhausted"}, args["reasons"])

	// The table output names plan and result.
	code, out, _ := f.ctl("dlq", "replay", "--id", seqArg(b1.Seq), "--dry-run", "--actor", "carol")
	require.Equal(t, exitDegraded, code)
	require.Contains(t, out, "already replayed")
	require.True(t, strings.Contains(out, "dry run (nothing published) by carol"), out)
}

const (
	testWait  = 30 * time.Second
	pollEvery = 20 * time.Millisecond
)

func seqOf(t *testing.T, rep ops.ReplayReport, paymentID string) uint64 {
	t.Helper()
	for _, it := range rep.Items {
		if it.PaymentID == paymentID {
			return it.Seq
		}
	}
	t.Fatalf("no item for %s", paymentID)
	return 0
}

func TestReplayUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"dlq", "replay"}, // no selection
		{"dlq", "replay", "--id", "1", "--reason", "exhausted"}, // both
		{"dlq", "replay", "--id", "x"},
		{"dlq", "replay", "--reason", "nope"},
		{"dlq", "replay", "--reason", "exhausted", "--actor", ""},
		{"dlq", "replay", "--reason", "exhausted", "--rate", "-1"},
		{"dlq", "show"},
		{"dlq", "ls", "--since", "yesterday"},
	} {
		var out, errOut strings.Builder
		e := &env{lookupEnv: func(string) (string, bool) { return "", false }, stdout: &out, stderr: &errOut, user: "u"}
		require.Equal(t, exitUsage, run(context.Background(), args, e), "%v: %s", args, errOut.String())
	}
}

// TestReplayEdgeCases: a dead letter whose key has no row (the database was
// down when it was written) is refused unless the operator says so; a
// redacted or truncated body is never replayed.
func TestReplayEdgeCases(t *testing.T) {
	f := newFleet(t, sim.Config{})
	deadLetter := func(r *payment.Request, headers map[string]string) uint64 {
		t.Helper()
		body, err := json.Marshal(r)
		require.NoError(t, err)
		m := nats.NewMsg("payments.dlq.exhausted")
		m.Data = body
		m.Header.Set("Paystream-Dlq-Reason", "exhausted")
		m.Header.Set("Paystream-Error", "claim: database unreachable")
		m.Header.Set("Paystream-Original-Subject", "payments.requests."+r.MerchantID)
		m.Header.Set("Paystream-Stream-Seq", "7")
		m.Header.Set("Paystream-Deliveries", "3")
		for k, v := range headers {
			m.Header.Set(k, v)
		}
		ack, err := f.js.PublishMsg(context.Background(), m)
		require.NoError(t, err)
		return ack.Sequence
	}
	norow := deadLetter(request("pay_z", 4200), nil)
	redacted := deadLetter(request("pay_r", 4300), map[string]string{"Paystream-Redacted": "true"})
	truncated := deadLetter(request("pay_t", 4400), map[string]string{"Paystream-Truncated": "true"})

	rep := ctlJSON[ops.ReplayReport](f, exitDegraded, "dlq", "replay", "--id", seqArg(norow, redacted, truncated), "--dry-run")
	require.Equal(t, "tester", rep.Actor, "the actor defaults to $USER")
	why := map[uint64]string{}
	for _, it := range rep.Items {
		require.Equal(t, ops.PlanRefuse, it.Plan)
		why[it.Seq] = it.Why
	}
	require.Contains(t, why[norow], "--charge-missing-row")
	require.Contains(t, why[redacted], "redacted")
	require.Contains(t, why[truncated], "truncated")

	// Filters: error text, merchant, original subject.
	byErr := ctlJSON[ops.DeadLetterList](f, exitOK, "dlq", "ls", "--error", "DATABASE", "--merchant", "m001",
		"--subject", "payments.requests.m001", "--since", "1h")
	require.Equal(t, 3, byErr.Total)
	none := ctlJSON[ops.DeadLetterList](f, exitOK, "dlq", "ls", "--reason", "conflict")
	require.Zero(t, none.Total)
	require.Empty(t, ctlJSON[ops.DeadLetterList](f, exitOK, "dlq", "ls", "--until", "1h").Items)

	// The JSON documents keep their field names (docs/contract.md §9).
	lsDoc := ctlJSON[map[string]any](f, exitOK, "dlq", "ls")
	require.ElementsMatch(t, []string{"items", "counts", "total", "truncated"}, keysOf(lsDoc))
	require.ElementsMatch(t, []string{"seq", "subject", "reason", "error", "original_subject", "original_seq", "deliveries",
		"redacted", "truncated", "received_at", "payment_id", "idempotency_key", "merchant_id", "size"},
		keysOf(lsDoc["items"].([]any)[0].(map[string]any)))
	showDoc := ctlJSON[map[string]any](f, exitOK, "dlq", "show", seqArg(norow))
	require.Subset(t, keysOf(showDoc), []string{"seq", "headers", "body", "payment_id"})
	planDoc := ctlJSON[map[string]any](f, exitDegraded, "dlq", "replay", "--id", seqArg(norow), "--dry-run")
	require.ElementsMatch(t, []string{"action_id", "actor", "dry_run", "items", "charge", "published", "duplicates", "refused", "failed"},
		keysOf(planDoc))
	require.ElementsMatch(t, []string{"seq", "reason", "payment_id", "idempotency_key", "original_subject", "plan", "why", "result", "msg_id"},
		keysOf(planDoc["items"].([]any)[0].(map[string]any)))
	code, out, _ := f.ctl("dlq", "ls")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "SEQ")
	require.Contains(t, out, "3 dead letters; exhausted 3")

	f.startWorker("w1")
	ok := ctlJSON[ops.ReplayReport](f, exitOK, "dlq", "replay", "--id", seqArg(norow), "--charge-missing-row", "--actor", "alice")
	require.Equal(t, 1, ok.Published)
	f.waitStatus("succeeded", "pay_z")
	require.Equal(t, 1, f.charges("pay_z"))
}

func keysOf(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
