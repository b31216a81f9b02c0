package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	psfleet "github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/workertest"
	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/payment"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// fleetBundle is an in-process worker on real NATS and Postgres
// (workertest), and the environment paystreamctl reads them from.
type fleetBundle struct {
	ns    *natstest.Server
	dbURL string
	js    jetstream.JetStream
	env   map[string]string
	stop  func()
}

func startFleet(t *testing.T) *fleetBundle {
	t.Helper()
	w := workertest.Start(t, psfleet.Heartbeat{WorkerID: "w1", Version: "test", Host: "h"})
	return &fleetBundle{ns: w.NATS, dbURL: w.DatabaseURL, js: w.JS, stop: w.Stop,
		env: map[string]string{"PAYSTREAM_NATS_URL": w.NATS.URL(), "PAYSTREAM_DATABASE_URL": w.DatabaseURL}}
}

func (f *fleetBundle) publish(t *testing.T, body string) {
	t.Helper()
	var r struct {
		MerchantID string `json:"merchant_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &r))
	_, err := f.js.Publish(t.Context(), "payments.requests."+r.MerchantID, []byte(body))
	require.NoError(t, err)
}

func requestBody(id string, amount int64, extra string) string {
	return fmt.Sprintf(`{"payment_id":%q,"merchant_id":"m1","amount_minor":%d,"currency":"EUR","payment_method":"pm_card_visa"%s}`,
		id, amount, extra)
}

// ctl runs paystreamctl with args and returns its exit status and output.
func (f *fleetBundle) ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &env{lookupEnv: envFrom(f.env), stdout: &stdout, stderr: &stderr, user: "tester"})
	return code, stdout.String(), stderr.String()
}

func envFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

var (
	reTime     = regexp.MustCompile(`"\d{4}-\d\d-\d\dT[0-9:.]+Z"`)
	reNumField = regexp.MustCompile(`"(duration_ms|seq|stream_seq|waiting|oldest_unacked_seconds|oldest_stuck_seconds|oldest_unknown_seconds|per_second)": [0-9.e+-]+`)
	reCharge   = regexp.MustCompile(`"ch_[A-Za-z0-9_]+"`)
)

// golden compares the JSON got, normalised (times, durations, sequences,
// charge ids), with testdata/name.golden; -update rewrites it.
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = reTime.ReplaceAllString(got, `"<time>"`)
	got = reNumField.ReplaceAllString(got, `"$1": 0`)
	got = reCharge.ReplaceAllString(got, `"<charge_id>"`)
	path := filepath.Join("testdata", name+".golden")
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), got)
}

// TestCommandsOnAMixedFleet runs every command of this file against a
// fleet that processed successes, declines, gateway failures and dead
// letters of every reason, then against the same fleet stopped (no worker)
// and lagging.
func TestCommandsOnAMixedFleet(t *testing.T) {
	f := startFleet(t)
	const n = 20
	for i := range n {
		id := fmt.Sprintf("p%02d", i)
		switch i {
		case 5:
			f.publish(t, requestBody(id, 1113, "")) // declined
		case 7:
			f.publish(t, requestBody(id, 1022, "")) // gateway_rejected
		case 9:
			f.publish(t, requestBody(id, 1044, `,"description":"card 4242 4242 4242 4242"`)) // invalid: a card number
		case 11:
			f.publish(t, requestBody(id, 1044, "")) // exhausted after 3 deliveries
		default:
			f.publish(t, requestBody(id, int64(1000+i), ""))
		}
	}
	f.publish(t, requestBody("p03", 9999, "")) // conflict: same key, other request

	// Everything settles: 19 rows final, 4 dead letters.
	var last string
	defer func() {
		if t.Failed() {
			t.Log(last)
		}
	}()
	require.Eventually(t, func() bool {
		code, out, errOut := f.ctl(t, "status", "--json")
		last = out + errOut
		var rep ops.StatusReport
		if json.Unmarshal([]byte(out), &rep) != nil {
			return false
		}
		final := rep.Rows.ByStatus["succeeded"] + rep.Rows.ByStatus["declined"] + rep.Rows.ByStatus["failed"]
		var dls uint64
		for _, v := range rep.DeadLetters {
			dls += v
		}
		return code == exitOK && final == n-1 && dls == 4 && len(rep.Workers) == 1 && rep.Consumers[0].AckPending == 0
	}, 30*time.Second, 100*time.Millisecond)

	t.Run("status healthy", func(t *testing.T) {
		code, out, errOut := f.ctl(t, "status", "--json")
		require.Equal(t, exitOK, code, errOut)
		var rep ops.StatusReport
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		require.True(t, rep.Healthy)
		require.Equal(t, map[string]uint64{"invalid": 1, "conflict": 1, "exhausted": 1, "gateway_rejected": 1}, rep.DeadLetters)
		require.Equal(t, int64(15), rep.Rows.ByStatus["succeeded"])
		require.Equal(t, int64(2), rep.Rows.ByStatus["declined"], "p05 and p13 (amount 1013)")
		require.Equal(t, int64(2), rep.Rows.ByStatus["failed"])
		require.Equal(t, int64(n-1), rep.Recent.ByStatus["succeeded"]+rep.Recent.ByStatus["declined"]+rep.Recent.ByStatus["failed"])
		require.Equal(t, "w1", rep.Workers[0].WorkerID)
		require.Equal(t, "closed", rep.Workers[0].Breaker)
		// The table says the same.
		code, out, _ = f.ctl(t, "status")
		require.Equal(t, exitOK, code)
		t.Logf("status:\n%s", out)
		require.Contains(t, out, "healthy")
		require.Contains(t, out, "w1")
	})

	t.Run("payment show", func(t *testing.T) {
		code, out, errOut := f.ctl(t, "payment", "show", "--json", "p11")
		require.Equal(t, exitOK, code, errOut)
		var s ops.Story
		require.NoError(t, json.Unmarshal([]byte(out), &s))
		require.Equal(t, "failed", s.Status)
		require.Equal(t, payment.ErrorCodeExhausted, s.ErrorCode)
		// Three charges answered 503, then the lookup before recording failed.
		require.Len(t, s.Attempts, 4)
		for i, a := range s.Attempts[:3] {
			require.Equal(t, "charge", a.Kind)
			require.Equal(t, "trouble", a.Class)
			require.Equal(t, 503, *a.HTTPStatus)
			require.Equal(t, i+1, a.Attempt)
		}
		require.Equal(t, "lookup", s.Attempts[3].Kind)
		require.Equal(t, payment.LookupNotFound, s.Attempts[3].Result)
		require.Len(t, s.Leases, 3)
		require.Len(t, s.DeadLetters, 1)
		require.Equal(t, "exhausted", s.DeadLetters[0].Reason)
		require.NotNil(t, s.Request, "a failed row keeps its request")
		golden(t, "payment_show_exhausted", out)

		code, out, _ = f.ctl(t, "payment", "show", "--json", "p01")
		require.Equal(t, exitOK, code)
		golden(t, "payment_show_succeeded", out)

		code, out, _ = f.ctl(t, "payment", "show", "p07")
		require.Equal(t, exitOK, code)
		t.Logf("payment show p07:\n%s", out)
		require.Contains(t, out, "amount_not_allowed")
		require.Contains(t, out, "gateway_rejected")

		code, _, errOut = f.ctl(t, "payment", "show", "nope")
		require.Equal(t, exitDegraded, code)
		require.Contains(t, errOut, "not found")
		code, _, _ = f.ctl(t, "payment", "show")
		require.Equal(t, exitUsage, code)
	})

	t.Run("payments ls", func(t *testing.T) {
		seen := map[string]int{}
		after := ""
		for pages := 0; ; pages++ {
			require.Less(t, pages, 10)
			args := []string{"payments", "ls", "--json", "--limit", "4"}
			if after != "" {
				args = append(args, "--after", after)
			}
			code, out, errOut := f.ctl(t, args...)
			require.Equal(t, exitOK, code, errOut)
			var p ops.Page
			require.NoError(t, json.Unmarshal([]byte(out), &p))
			for _, r := range p.Payments {
				seen[r.IdempotencyKey]++
			}
			if p.Next == "" {
				break
			}
			after = p.Next
		}
		require.Len(t, seen, n-1)
		for k, c := range seen {
			require.Equal(t, 1, c, k)
		}

		code, out, _ := f.ctl(t, "payments", "ls", "--json", "--all", "--limit", "3")
		require.Equal(t, exitOK, code)
		var all ops.Page
		require.NoError(t, json.Unmarshal([]byte(out), &all), out)
		require.Len(t, all.Payments, n-1)
		require.Empty(t, all.Next)

		code, out, _ = f.ctl(t, "payments", "ls", "--json", "--status", "failed", "--min-amount", "1040", "--since", "1h")
		require.Equal(t, exitOK, code)
		var failed ops.Page
		require.NoError(t, json.Unmarshal([]byte(out), &failed))
		require.Len(t, failed.Payments, 1)
		require.Equal(t, "p11", failed.Payments[0].PaymentID)

		code, out, _ = f.ctl(t, "payments", "ls", "--error-code", "card_declined", "--merchant", "m1")
		require.Equal(t, exitOK, code)
		t.Logf("payments ls:\n%s", out)
		require.Contains(t, out, "p05")
		require.NotContains(t, out, "p01")

		code, _, _ = f.ctl(t, "payments", "ls", "--status", "lost")
		require.Equal(t, exitUsage, code)
		code, _, _ = f.ctl(t, "payments", "ls", "--after", "garbage!")
		require.Equal(t, exitUsage, code)
	})

	t.Run("no worker, then lagging", func(t *testing.T) {
		f.stop()
		code, out, errOut := f.ctl(t, "status", "--json")
		require.Equal(t, exitDegraded, code)
		require.Contains(t, errOut, "no ready worker (0 live)")
		require.Equal(t, 1, strings.Count(strings.TrimSpace(errOut), "\n")+1, "one line")
		var rep ops.StatusReport
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		require.False(t, rep.Healthy)
		require.Empty(t, rep.Workers)
		golden(t, "status_no_worker", out)

		for i := range 5 {
			f.publish(t, requestBody(fmt.Sprintf("late%d", i), 500, ""))
		}
		code, out, errOut = f.ctl(t, "status", "--json", "--max-pending", "2")
		require.Equal(t, exitDegraded, code)
		require.Contains(t, errOut, "lags: 5 pending (max 2)")
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		require.Equal(t, uint64(5), rep.Consumers[0].Pending)
		require.Greater(t, rep.Consumers[0].OldestUnackedSeconds, 0.0)
	})
}

// TestStatusWithoutTheDatabase: while the database does not answer, status
// still reports the consumers, the dead letters and the workers, and is
// degraded with the reason — what an operator needs most in that outage.
func TestStatusWithoutTheDatabase(t *testing.T) {
	f := startFleet(t)
	f.env["PAYSTREAM_DATABASE_URL"] = "postgres://postgres@127.0.0.1:1/paystream?sslmode=disable&connect_timeout=2"
	require.Eventually(t, func() bool {
		code, _, _ := f.ctl(t, "status")
		return code == exitDegraded
	}, 10*time.Second, 50*time.Millisecond)

	code, stdout, stderr := f.ctl(t, "status", "--json")
	require.Equal(t, exitDegraded, code, stderr)
	var rep struct {
		DatabaseError string            `json:"database_error"`
		Reasons       []string          `json:"reasons"`
		Consumers     []json.RawMessage `json:"consumers"`
		Workers       []struct {
			WorkerID string `json:"worker_id"`
		} `json:"workers"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep))
	require.NotEmpty(t, rep.DatabaseError)
	require.Contains(t, strings.Join(rep.Reasons, "; "), "database unreachable")
	require.Len(t, rep.Consumers, 1, "the consumer is reported without the database")
	require.Len(t, rep.Workers, 1)
	require.Equal(t, "w1", rep.Workers[0].WorkerID)

	_, table, _ := f.ctl(t, "status")
	require.Contains(t, table, "ROWS  unavailable:")
	require.Contains(t, table, "PAYMENTS/payment-workers")
}
