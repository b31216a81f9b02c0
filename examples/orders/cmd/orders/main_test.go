package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/internal/testenv/defaults"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
)

func TestMain(m *testing.M) {
	pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true})
}

// TestRun runs the command with its own relay against real Postgres and
// NATS, with a stand-in for the paystream workers that answers every
// request on the results stream: declined when the amount ends in 13.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dbURL := pgtest.NewDatabase(t)
	srv := natstest.New(t)
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, consumer.Provision(ctx, js, defaults.Consumer()))

	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { fakeWorkers(wctx, t, js) })
	defer func() { wcancel(); wg.Wait() }()

	env := map[string]string{"PAYSTREAM_DATABASE_URL": dbURL, "PAYSTREAM_NATS_URL": srv.URL()}
	var stdout, stderr bytes.Buffer
	err = run(ctx, []string{"--relay", "--orders", "8", "--timeout", "45s"}, func(k string) string { return env[k] }, &stdout, &stderr)
	require.NoError(t, err, "stderr: %s\nstdout: %s", &stderr, &stdout)
	out := stdout.String()
	require.Equal(t, 6, strings.Count(out, " paid "), out)
	require.Equal(t, 2, strings.Count(out, " failed "), out)
}

// fakeWorkers stands in for the workers: it takes the requests from their
// consumer and publishes each one's outcome, until ctx ends. It runs on its
// own goroutine, so it reports with t.Errorf.
func fakeWorkers(ctx context.Context, t *testing.T, js jetstream.JetStream) {
	cons, err := js.Consumer(ctx, contract.Stream, contract.Consumer)
	if err != nil {
		t.Errorf("workers' consumer: %v", err)
		return
	}
	it, err := cons.Messages()
	if err != nil {
		t.Errorf("workers' consumer: %v", err)
		return
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			return // stopped
		}
		var r payment.Request
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			t.Errorf("request %s: %v", m.Data(), err)
			return
		}
		o := payment.Outcome{PaymentID: r.PaymentID, IdempotencyKey: r.EffectiveKey(), Status: payment.StatusSucceeded,
			AmountMinor: r.AmountMinor, Currency: r.Currency, Attempts: 1, CompletedAt: time.Now()}
		if r.AmountMinor%100 == 13 {
			o.Status, o.ErrorCode = payment.StatusDeclined, "card_declined"
		}
		body, _ := json.Marshal(o)
		if _, err := js.Publish(ctx, contract.SubjectPrefix+".results."+string(o.Status), body); err != nil {
			return // stopped
		}
		_ = m.Ack()
	}
}
