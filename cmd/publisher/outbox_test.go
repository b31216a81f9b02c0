package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish/outbox"
)

func TestOutboxMigrateAndRelay(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := natstest.New(t)
	b := setupAt(t, srv.URL(), "PAYMENTS", "payments")
	dbURL := pgtest.NewDatabase(t)
	getenv := map[string]string{"PAYSTREAM_NATS_URL": srv.URL(), "PAYSTREAM_DATABASE_URL": dbURL}

	res := runCmd(ctx, []string{"outbox", "migrate"}, getenv, "")
	require.NoError(t, res.err, res.stderr)
	res = runCmd(ctx, []string{"outbox", "migrate"}, getenv, "")
	require.NoError(t, res.err, "migrate again: %s", res.stderr)

	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	const n = 25
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	for i := range n {
		r := &payment.Request{PaymentID: fmt.Sprintf("p%03d", i), MerchantID: "m001", AmountMinor: 500, Currency: "USD", PaymentMethod: "pm_card_visa"}
		require.NoError(t, outbox.Enqueue(ctx, tx, r, outbox.Config{}))
	}
	require.NoError(t, tx.Commit(ctx))

	relayCtx, stop := context.WithCancel(ctx)
	defer stop()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(relayCtx, []string{"outbox", "relay", "--http-addr=127.0.0.1:0", "--relay-concurrency=2"},
			env(getenv), strings.NewReader(""), io.Discard, &stderr)
	}()
	addr := waitForAddr(t, &stderr, done)

	require.Eventually(t, func() bool { return b.msgs(t) == n }, 30*time.Second, 10*time.Millisecond, "relayed")
	var left int
	require.Eventually(t, func() bool {
		return pool.QueryRow(ctx, "SELECT count(*) FROM "+outbox.Table).Scan(&left) == nil && left == 0
	}, 30*time.Second, 10*time.Millisecond, "rows deleted")

	code, body := get(t, "http://"+addr+"/healthz")
	require.Equal(t, http.StatusOK, code, body)
	code, body = get(t, "http://"+addr+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, fmt.Sprintf("paystream_outbox_published_total %d", n))
	require.Contains(t, body, "paystream_outbox_pending_rows")
	require.Contains(t, body, "paystream_outbox_oldest_row_age_seconds")

	stop() // as SIGINT/SIGTERM do in main
	select {
	case err := <-done:
		require.NoError(t, err, "a signal stops the relay cleanly")
	case <-time.After(30 * time.Second):
		t.Fatal("relay did not stop")
	}
	require.Contains(t, stderr.String(), "relay stopped")
}

func TestOutboxRelayUnhealthyWithoutDatabase(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	srv := natstest.New(t)
	setupAt(t, srv.URL(), "PAYMENTS", "payments")
	// Nothing listens on port 1: the database is unreachable.
	dbURL := "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=1"
	relayCtx, stop := context.WithCancel(ctx)
	defer stop()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(relayCtx, []string{"outbox", "relay", "--http-addr=127.0.0.1:0"},
			env(map[string]string{"PAYSTREAM_NATS_URL": srv.URL(), "PAYSTREAM_DATABASE_URL": dbURL}),
			strings.NewReader(""), io.Discard, &stderr)
	}()
	addr := waitForAddr(t, &stderr, done)
	code, body := get(t, "http://"+addr+"/healthz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "database unreachable")
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "relaying a batch failed") },
		30*time.Second, 10*time.Millisecond, "the relay keeps trying and says so")
	stop()
	require.NoError(t, <-done, "a signal stops the relay cleanly")
}

func TestOutboxUsage(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no subcommand", []string{"outbox"}, nil, "subcommand is required"},
		{"unknown subcommand", []string{"outbox", "publish"}, nil, "unknown subcommand"},
		{"bad relay flags", []string{"outbox", "relay", "--relay-concurrency=99", "--relay-batch-size=0"}, nil, "--relay-concurrency 99"},
		{"bad database url", []string{"outbox", "migrate"}, map[string]string{"PAYSTREAM_DATABASE_URL": "mysql://x"}, "PAYSTREAM_DATABASE_URL"},
		{"unknown flag", []string{"outbox", "migrate", "--count=3"}, nil, "count"},
		{"stray argument", []string{"outbox", "relay", "extra"}, nil, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := runCmd(ctx, tt.args, tt.env, "")
			require.ErrorIs(t, res.err, errUsage)
			require.Contains(t, res.err.Error()+res.stderr, tt.want)
		})
	}
	res := runCmd(ctx, []string{"outbox", "relay", "-h"}, nil, "")
	require.ErrorIs(t, res.err, flag.ErrHelp)
	require.Contains(t, res.stderr, "relay-batch-size")
}

// waitForAddr returns the address the relay logs that it serves on.
func waitForAddr(t *testing.T, stderr *syncBuffer, done <-chan error) string {
	t.Helper()
	var (
		addr   string
		ended  bool
		endErr error
	)
	require.Eventually(t, func() bool {
		// Eventually runs this on its own goroutine, where FailNow is not
		// allowed: note an early end here, fail below.
		select {
		case endErr = <-done:
			ended = true
			return true
		default:
		}
		for line := range strings.SplitSeq(stderr.String(), "\n") {
			var l struct{ Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Addr != "" {
				addr = l.Addr
				return true
			}
		}
		return false
	}, 30*time.Second, 10*time.Millisecond, "the relay serves HTTP")
	if ended {
		t.Fatalf("relay ended early: %v\n%s", endErr, stderr.String())
	}
	return addr
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}
