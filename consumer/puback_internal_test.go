package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/telemetry"
)

// TestPubAckError checks the PubAck reading against encoding/json's (what
// jetstream.PublishMsg does) on the responses nats-server gives and on
// shapes it does not.
func TestPubAckError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, data string
		stored     bool
	}{
		{"stored", `{"stream":"RESULTS","seq":42}`, true},
		{"duplicate", `{"stream":"RESULTS","seq":42,"duplicate":true}`, true},
		{"domain", `{"stream":"RESULTS","domain":"hub","seq":7}`, true},
		{"stream named error", `{"stream":"error","seq":1}`, true},
		{"other order", `{"seq":1,"stream":"RESULTS"}`, true},
		{"api error", `{"error":{"code":503,"err_code":10077,"description":"resource limits exceeded for account"}}`, false},
		{"stream and error", `{"stream":"RESULTS","error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}`, false},
		{"empty stream", `{"stream":"","seq":1}`, false},
		{"no stream", `{"seq":1}`, false},
		{"not json", `+OK`, false},
		{"empty", ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := pubAckError([]byte(tc.data))
			if tc.stored {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			// The error is the one PublishMsg's decoding gives.
			var r struct {
				Error  *jetstream.APIError `json:"error"`
				Stream string              `json:"stream"`
			}
			switch {
			case json.Unmarshal([]byte(tc.data), &r) != nil, r.Error == nil:
				require.ErrorIs(t, err, jetstream.ErrInvalidJSAck)
			default:
				var apiErr *jetstream.APIError
				require.ErrorAs(t, err, &apiErr)
				require.Equal(t, r.Error.ErrorCode, apiErr.ErrorCode)
			}
		})
	}
}

// resultsConsumer starts an embedded server with the RESULTS stream on
// payments.results.> and returns a connection to it, its JetStream and a
// Consumer on it.
func resultsConsumer(tb testing.TB) (*nats.Conn, jetstream.JetStream, *Consumer) {
	tb.Helper()
	ns := natstest.New(tb)
	nc, js := ns.Connect(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RESULTS", Subjects: []string{"payments.results.>"},
		Duplicates: time.Minute})
	require.NoError(tb, err)
	return nc, js, New(js, benchConfig(), benchProc{}, zerolog.Nop(), telemetry.New(prometheus.NewRegistry()))
}

// TestStoreOnServer checks store against a real server: a stored message,
// a duplicate, an expectation the server refuses (an APIError, as
// jetstream.PublishMsg gives it), a subject no stream takes (asked again as
// PublishMsg asks), and a PubAck that never comes.
func TestStoreOnServer(t *testing.T) {
	t.Parallel()
	nc, js, c := resultsConsumer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.NotNil(t, c.nc, "the consumer uses the connection's request")

	msg := func(subject, id string) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Data = []byte(`{}`)
		return m
	}
	require.NoError(t, c.store(ctx, msg("payments.results.succeeded", "a"), 5*time.Second))
	require.NoError(t, c.store(ctx, msg("payments.results.succeeded", "a"), 5*time.Second), "a duplicate is stored")
	info, err := js.Stream(ctx, "RESULTS")
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.CachedInfo().State.Msgs)

	wrong := msg("payments.results.succeeded", "b")
	wrong.Header.Set(jetstream.ExpectedStreamHeader, "OTHER")
	err = c.store(ctx, wrong, 5*time.Second)
	var apiErr *jetstream.APIError
	require.ErrorAs(t, err, &apiErr)
	_, want := js.PublishMsg(ctx, wrong)
	var wantErr *jetstream.APIError
	require.ErrorAs(t, want, &wantErr)
	require.Equal(t, wantErr.ErrorCode, apiErr.ErrorCode)

	// No stream listens: asked three times, as jetstream.PublishMsg asks;
	// once when ctx has ended. Counted as the connection sent them (the
	// consumer publishes on nc): the server's in_msgs lags, a read loop
	// adding its messages after it has answered them, so a publish just
	// before would count in the window.
	require.Same(t, nc, c.nc)
	sent := func() uint64 { return nc.Stats().OutMsgs }
	before := sent()
	err = c.store(ctx, msg("nowhere.at.all", "c"), 5*time.Second)
	require.True(t, errors.Is(err, jetstream.ErrNoStreamResponse), "got %v", err)
	require.Equal(t, uint64(1+jetstream.DefaultPubRetryAttempts), sent()-before)
	stopped, stop := context.WithCancel(ctx)
	stop()
	before = sent()
	err = c.store(stopped, msg("nowhere.at.all", "c"), 5*time.Second)
	require.True(t, errors.Is(err, jetstream.ErrNoStreamResponse), "got %v", err)
	require.Equal(t, uint64(1), sent()-before)

	// A subject whose only listener never answers: the attempt ends at its
	// timeout.
	sub, err := nc.Subscribe("silent.>", func(*nats.Msg) {})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())
	err = c.store(ctx, msg("silent.x", "d"), 50*time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout)
}

// BenchmarkStore is an outcome event's publish against an embedded server
// (in this process, so its CPU counts too), 64 goroutines each waiting for
// its PubAck: store against jetstream.PublishMsg, the baseline in the same
// run.
func BenchmarkStore(b *testing.B) {
	_, js, c := resultsConsumer(b)
	ctx := b.Context()
	body := []byte(`{"payment_id":"pay_01HZX3K9Q7","idempotency_key":"order-8812-attempt","status":"succeeded"}`)
	var seq atomic.Int64
	for _, bc := range []struct {
		name string
		pub  func(*nats.Msg) error
	}{
		// What publish did before store: a timed context per attempt.
		{"jetstream.PublishMsg", func(m *nats.Msg) error {
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_, err := js.PublishMsg(pctx, m)
			return err
		}},
		{"store", func(m *nats.Msg) error { return c.store(ctx, m, 5*time.Second) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					m := &nats.Msg{Subject: "payments.results.succeeded", Data: body, Header: make(nats.Header, 2)}
					m.Header[jetstream.MsgIDHeader] = []string{strconv.FormatInt(seq.Add(1), 10)}
					if err := bc.pub(m); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
