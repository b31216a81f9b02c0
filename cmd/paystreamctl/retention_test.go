package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// retentionEnv: succeeded rows go after 72h, declined stay for ever,
// failed go after 240h; batches of two.
var retentionEnv = map[string]string{
	"PAYSTREAM_STREAM_MAX_AGE":      "24h",
	"PAYSTREAM_REPLAY_HORIZON":      "48h",
	"PAYSTREAM_RETENTION_SUCCEEDED": "72h",
	"PAYSTREAM_RETENTION_DECLINED":  "-1",
	"PAYSTREAM_RETENTION_FAILED":    "240h",
	"PAYSTREAM_RETENTION_BATCH":     "2",
	"PAYSTREAM_RETENTION_PAUSE":     "5ms",
}

// TestRetentionRun deletes exactly the expired rows, batch by batch,
// while the fleet goes on processing.
func TestRetentionRun(t *testing.T) {
	f := newFleet(t, sim.Config{})
	f.startWorker("w1")
	f.startWorker("w2")
	ctx := context.Background()

	for i := range 8 {
		f.publish(request("pay_s"+strconv.Itoa(i), int64(1000+i)), "s"+strconv.Itoa(i))
	}
	f.publish(request("pay_d0", 1013), "d0")
	f.publish(request("pay_d1", 2013), "d1")
	f.waitStatus("succeeded", "pay_s0", "pay_s1", "pay_s2", "pay_s3", "pay_s4", "pay_s5", "pay_s6", "pay_s7")
	f.waitStatus("declined", "pay_d0", "pay_d1")
	_, err := f.pool.Exec(ctx, `UPDATE payments SET status = 'failed', gateway_charge_id = NULL, error_code = 'exhausted'
		WHERE idempotency_key IN ('pay_s6', 'pay_s7')`)
	require.NoError(t, err)
	age := func(key string, ago time.Duration) {
		t.Helper()
		tag, err := f.pool.Exec(ctx, `UPDATE payments SET completed_at = clock_timestamp() - $2 * interval '1 microsecond',
			created_at = clock_timestamp() - $2 * interval '1 microsecond' WHERE idempotency_key = $1`, key, ago.Microseconds())
		require.NoError(t, err)
		require.EqualValues(t, 1, tag.RowsAffected())
	}
	for _, k := range []string{"pay_s0", "pay_s1", "pay_s2", "pay_s3", "pay_s4"} {
		age(k, 100*time.Hour) // past 72h: go
	}
	age("pay_s5", 50*time.Hour)   // succeeded, within 72h: stays
	age("pay_s6", 300*time.Hour)  // failed past 240h: goes
	age("pay_s7", 200*time.Hour)  // failed within 240h: stays
	age("pay_d0", 5000*time.Hour) // declined: kept for ever
	// Rows that are not final are never deleted, however old.
	_, err = f.pool.Exec(ctx, `INSERT INTO payments (idempotency_key, payment_id, merchant_id, amount_minor, currency, status,
		attempts, fingerprint, lease_until, created_at, updated_at)
		VALUES ('old-unknown', 'old-unknown', 'm001', 1, 'EUR', 'unknown', 1, 'x', NULL, now() - interval '5000 hours', now()),
		       ('old-processing', 'old-processing', 'm001', 1, 'EUR', 'processing', 1, 'x', now() - interval '5000 hours',
		        now() - interval '5000 hours', now())`)
	require.NoError(t, err)
	before := f.keys()

	dry := ctlRetention(t, f, exitOK, "--dry-run", "--actor", "alice")
	require.True(t, dry.DryRun)
	require.EqualValues(t, 6, dry.Total)
	require.Equal(t, map[payment.Status]int64{"succeeded": 5, "declined": 0, "failed": 1}, rowsByStatus(dry))
	require.Equal(t, before, f.keys(), "a dry run deletes nothing")

	// The fleet keeps processing while retention runs.
	for i := range 20 {
		f.publish(request("pay_n"+strconv.Itoa(i), int64(5001+10*i)), "n"+strconv.Itoa(i))
	}
	real := ctlRetention(t, f, exitOK, "--actor", "alice")
	require.True(t, real.Ran)
	require.EqualValues(t, 6, real.Total)
	for _, s := range real.Status {
		switch s.Status {
		case payment.StatusSucceeded:
			require.EqualValues(t, 5, s.Rows)
			require.Equal(t, 3, s.Batches, "batches of 2: 2, 2, 1")
			require.Equal(t, "72h0m0s", s.Period)
		case payment.StatusFailed:
			require.EqualValues(t, 1, s.Rows)
			require.Equal(t, 1, s.Batches)
		case payment.StatusDeclined:
			require.True(t, s.KeptForever)
			require.Zero(t, s.Batches)
		}
	}
	for i := range 20 {
		f.waitStatus("succeeded", "pay_n"+strconv.Itoa(i))
	}
	after := f.keys()
	for _, k := range []string{"pay_s0", "pay_s1", "pay_s2", "pay_s3", "pay_s4", "pay_s6"} {
		require.NotContains(t, after, k)
	}
	for _, k := range []string{"pay_s5", "pay_s7", "pay_d0", "pay_d1", "old-unknown", "old-processing", "pay_n0", "pay_n19"} {
		require.Contains(t, after, k)
	}
	require.Len(t, after, len(before)-6+20)

	actions, err := store.New(f.pool).Actions(ctx, ops.ActionRetention, 10)
	require.NoError(t, err)
	require.Len(t, actions, 2)
	require.False(t, actions[0].DryRun)
	require.True(t, actions[1].DryRun)
	var res map[string]any
	require.NoError(t, json.Unmarshal(actions[0].Result, &res))
	require.EqualValues(t, 6, res["total"])

	// One runner at a time: while a worker holds the job, the command
	// refuses.
	_, err = f.pool.Exec(ctx, `INSERT INTO paystream_job_leases (name, owner, lease_until)
		VALUES ('retention', 'worker-x', now() + interval '1 minute')`)
	require.NoError(t, err)
	busy := ctlRetention(t, f, exitDegraded, "--actor", "alice")
	require.False(t, busy.Ran)

	// The JSON document keeps its field names (docs/contract.md §9).
	code, out, _ := f.ctlEnv(retentionEnv, "retention", "run", "--dry-run", "--json", "--actor", "bob")
	require.Equal(t, exitOK, code)
	var doc map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	require.ElementsMatch(t, []string{"ran", "dry_run", "total", "statuses", "action_id", "actor"}, keysOf(doc))
	require.ElementsMatch(t, []string{"status", "period", "kept_for_ever", "before", "rows", "batches"},
		keysOf(doc["statuses"].([]any)[0].(map[string]any)))

	// The table names what would go.
	code, out, _ = f.ctlEnv(retentionEnv, "retention", "run", "--dry-run", "--actor", "bob")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "WOULD_DELETE")
	require.Contains(t, out, "for ever")
}

func ctlRetention(t *testing.T, f *fleet, wantCode int, args ...string) ops.RetentionRunReport {
	t.Helper()
	code, out, errOut := f.ctlEnv(retentionEnv, append([]string{"retention", "run", "--json"}, args...)...)
	require.Equal(t, wantCode, code, "stderr: %s", errOut)
	var rep ops.RetentionRunReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	return rep
}

func rowsByStatus(rep ops.RetentionRunReport) map[payment.Status]int64 {
	out := map[payment.Status]int64{}
	for _, s := range rep.Status {
		out[s.Status] = s.Rows
	}
	return out
}

// keys returns every key of the payments table.
func (f *fleet) keys() []string {
	f.t.Helper()
	rows, err := f.pool.Query(context.Background(), "SELECT idempotency_key FROM payments ORDER BY 1")
	require.NoError(f.t, err)
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		require.NoError(f.t, rows.Scan(&k))
		keys = append(keys, k)
	}
	require.NoError(f.t, rows.Err())
	return keys
}

func TestRetentionSettingsAreValidated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, value, want string }{
		{"PAYSTREAM_RETENTION_FAILED", "30h", "PAYSTREAM_RETENTION_FAILED"},
		{"PAYSTREAM_RETENTION_SUCCEEDED", "-2h", "PAYSTREAM_RETENTION_SUCCEEDED"},
		{"PAYSTREAM_RETENTION_BATCH", "0", "PAYSTREAM_RETENTION_BATCH"},
	} {
		var out, errOut strings.Builder
		e := &env{lookupEnv: func(k string) (string, bool) {
			if k == tc.name {
				return tc.value, true
			}
			return "", false
		}, stdout: &out, stderr: &errOut, user: "u"}
		require.Equal(t, exitUsage, run(context.Background(), []string{"retention", "run", "--dry-run"}, e), tc.name)
		require.Contains(t, errOut.String(), tc.want)
	}
}
