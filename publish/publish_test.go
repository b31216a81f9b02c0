package publish_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish"
)

func validRequest(id string) *payment.Request {
	return &payment.Request{
		PaymentID:     id,
		MerchantID:    "m001",
		CustomerID:    "cus_1",
		AmountMinor:   1999,
		Currency:      "USD",
		PaymentMethod: "pm_card_visa",
		Description:   "Order 1",
		Metadata:      map[string]string{"order_id": "ord_1"},
		CreatedAt:     time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()

	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		c := publish.Config{}.WithDefaults()
		require.Equal(t, publish.Config{
			SubjectPrefix: "payments",
			Stream:        "PAYMENTS",
			MaxPending:    256,
			Retries:       5,
			RetryWait:     100 * time.Millisecond,
			Timeout:       5 * time.Second,
		}, c)
		require.NoError(t, c.Validate())
	})

	t.Run("set fields are kept", func(t *testing.T) {
		t.Parallel()
		in := publish.Config{SubjectPrefix: "acme.pay", Stream: "S", MaxPending: 3, Retries: -1, RetryWait: time.Second, Timeout: time.Minute}
		require.Equal(t, in, in.WithDefaults())
		require.NoError(t, in.WithDefaults().Validate())
	})

	tests := []struct {
		name string
		cfg  publish.Config
		want []string
	}{
		{"wildcard prefix", publish.Config{SubjectPrefix: "payments.>"}, []string{"subject prefix", "wildcards"}},
		{"empty token", publish.Config{SubjectPrefix: "a..b"}, []string{"empty token"}},
		{"space in prefix", publish.Config{SubjectPrefix: "pay ments"}, []string{"white space"}},
		{"stream with dot", publish.Config{Stream: "PAY.MENTS"}, []string{"stream"}},
		{"negative max pending", publish.Config{MaxPending: -1}, []string{"max pending"}},
		{"retries below -1", publish.Config{Retries: -2}, []string{"retries"}},
		{"every problem at once", publish.Config{SubjectPrefix: "*", MaxPending: -5, Retries: -3, Timeout: -time.Second},
			[]string{"subject prefix", "max pending", "retries", "timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.WithDefaults().Validate()
			require.Error(t, err)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestNew(t *testing.T) {
	t.Parallel()

	t.Run("missing stream", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{noStream: true})
		_, err := publish.New(testContext(t), b.js, publish.Config{})
		require.EqualError(t, err, `stream "PAYMENTS" not found: start a worker with provisioning on, or create it`)
		require.ErrorIs(t, err, jetstream.ErrStreamNotFound)
		var snf *publish.StreamNotFoundError
		require.ErrorAs(t, err, &snf)
		require.Equal(t, "PAYMENTS", snf.Stream)
	})

	t.Run("missing custom stream", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := publish.New(testContext(t), b.js, publish.Config{Stream: "ORDERS"})
		require.EqualError(t, err, `stream "ORDERS" not found: start a worker with provisioning on, or create it`)
	})

	t.Run("stream does not capture the request subjects", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{subjects: []string{"orders.>"}})
		_, err := publish.New(testContext(t), b.js, publish.Config{})
		require.ErrorContains(t, err, `stream "PAYMENTS" does not capture subjects payments.requests.>`)
	})

	t.Run("invalid config", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := publish.New(testContext(t), b.js, publish.Config{SubjectPrefix: "a.>", MaxPending: -1})
		require.ErrorContains(t, err, "subject prefix")
		require.ErrorContains(t, err, "max pending")
	})

	t.Run("ok", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		p, err := publish.New(testContext(t), b.js, publish.Config{})
		require.NoError(t, err)
		require.Equal(t, "payments.requests.m042", p.Subject("m042"))
	})
}

func TestPublish(t *testing.T) {
	t.Parallel()

	t.Run("sets subject, headers and body", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := testContext(t)
		p, err := publish.New(ctx, b.js, publish.Config{})
		require.NoError(t, err)

		req := validRequest("pay_1")
		req.MerchantID = "m007"
		dup, err := p.Publish(ctx, req)
		require.NoError(t, err)
		require.False(t, dup)

		msg, err := b.stream.GetMsg(ctx, 1)
		require.NoError(t, err)
		require.Equal(t, "payments.requests.m007", msg.Subject)
		require.Equal(t, "pay_1", msg.Header.Get(jetstream.MsgIDHeader))
		require.Equal(t, "application/json", msg.Header.Get("Content-Type"))
		got, err := payment.Decode(msg.Subject, msg.Data, payment.Limits{})
		require.NoError(t, err)
		require.Equal(t, req, got)
	})

	t.Run("same payment id twice is a server duplicate", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := testContext(t)
		p, err := publish.New(ctx, b.js, publish.Config{})
		require.NoError(t, err)

		dup, err := p.Publish(ctx, validRequest("pay_dup"))
		require.NoError(t, err)
		require.False(t, dup)
		// Even with another amount: JetStream de-duplicates on the id alone.
		again := validRequest("pay_dup")
		again.AmountMinor = 5000
		dup, err = p.Publish(ctx, again)
		require.NoError(t, err)
		require.True(t, dup)
		require.Equal(t, uint64(1), b.streamMsgs(t))
	})

	t.Run("invalid requests are refused without publishing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := testContext(t)
		p, err := publish.New(ctx, b.js, publish.Config{Limits: payment.Limits{MaxAmountMinor: 10_000}})
		require.NoError(t, err)

		tests := []struct {
			name   string
			mutate func(r *payment.Request)
		}{
			{"zero amount", func(r *payment.Request) { r.AmountMinor = 0 }},
			{"amount over the configured limit", func(r *payment.Request) { r.AmountMinor = 10_001 }},
			{"missing currency", func(r *payment.Request) { r.Currency = "" }},
			{"XXX currency", func(r *payment.Request) { r.Currency = "XXX" }},
			{"card number in description", func(r *payment.Request) { r.Description = "card 4242 4242 4242 4242" }},
			{"merchant id with a dot", func(r *payment.Request) { r.MerchantID = "m.1" }},
			{"missing payment id", func(r *payment.Request) { r.PaymentID = "" }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := validRequest("pay_" + strings.ReplaceAll(tt.name, " ", "_"))
				tt.mutate(r)
				_, err := p.Publish(ctx, r)
				require.ErrorIs(t, err, payment.ErrInvalid)
			})
		}
		t.Run("nil request", func(t *testing.T) {
			_, err := p.Publish(ctx, nil)
			require.ErrorIs(t, err, payment.ErrInvalid)
		})
		require.Equal(t, uint64(0), b.streamMsgs(t))
	})
}

func TestPublishRaw(t *testing.T) {
	t.Parallel()

	t.Run("publishes bytes as they are", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := testContext(t)
		p, err := publish.New(ctx, b.js, publish.Config{})
		require.NoError(t, err)

		body := []byte(`{"payment_id": 12.5, not json`)
		dup, err := p.PublishRaw(ctx, "payments.requests.m001", body, "")
		require.NoError(t, err)
		require.False(t, dup)
		// Without a message id nothing is de-duplicated.
		dup, err = p.PublishRaw(ctx, "payments.requests.m001", body, "")
		require.NoError(t, err)
		require.False(t, dup)

		msg, err := b.stream.GetMsg(ctx, 2)
		require.NoError(t, err)
		require.Equal(t, body, msg.Data)
		require.Empty(t, msg.Header.Get(jetstream.MsgIDHeader))

		dup, err = p.PublishRaw(ctx, "payments.requests.m001", body, "id-1")
		require.NoError(t, err)
		require.False(t, dup)
		dup, err = p.PublishRaw(ctx, "payments.requests.m002", []byte("other"), "id-1")
		require.NoError(t, err)
		require.True(t, dup)
		require.Equal(t, uint64(3), b.streamMsgs(t))
	})

	t.Run("a subject no stream captures fails after the retries", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := testContext(t)
		p, err := publish.New(ctx, b.js, publish.Config{Retries: 2, RetryWait: time.Millisecond})
		require.NoError(t, err)

		var got publish.Result
		require.NoError(t, p.PublishAsync(ctx, publish.Msg{Subject: "elsewhere.m001", Body: []byte("{}"), MsgID: "x"},
			func(r publish.Result) { got = r }))
		require.NoError(t, p.Flush(ctx))
		require.ErrorIs(t, got.Err, jetstream.ErrNoStreamResponse)
		require.Equal(t, 3, got.Attempts)
		require.ErrorContains(t, got.Err, "elsewhere.m001")
	})

	t.Run("empty subject", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		p, err := publish.New(testContext(t), b.js, publish.Config{})
		require.NoError(t, err)
		_, err = p.PublishRaw(testContext(t), "", []byte("{}"), "")
		require.ErrorContains(t, err, "empty subject")
	})
}

func TestPublishAsync(t *testing.T) {
	t.Parallel()

	t.Run("bounded, every message reported once", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := testContext(t)
		const maxPending, n = 8, 600
		p, err := publish.New(ctx, b.js, publish.Config{MaxPending: maxPending})
		require.NoError(t, err)

		var (
			mu       sync.Mutex
			seen     = map[string]int{}
			dups     int
			errs     []error
			inFlight atomic.Int64
			peak     atomic.Int64
		)
		done := func(r publish.Result) {
			inFlight.Add(-1)
			mu.Lock()
			defer mu.Unlock()
			if r.Err != nil {
				errs = append(errs, r.Err)
			}
			seen[r.Msg.MsgID]++
			if r.Duplicate {
				dups++
			}
		}
		for i := range n {
			// Every tenth message repeats the id of the one before it.
			id := fmt.Sprintf("id-%d", i)
			if i%10 == 9 {
				id = fmt.Sprintf("id-%d", i-1)
			}
			require.NoError(t, p.PublishAsync(ctx, publish.Msg{Subject: "payments.requests.m001", Body: []byte("{}"), MsgID: id}, done))
			// Counted after the slot is taken, uncounted before it is
			// given back: never more than maxPending.
			cur := inFlight.Add(1)
			for {
				old := peak.Load()
				if cur <= old || peak.CompareAndSwap(old, cur) {
					break
				}
			}
		}
		require.NoError(t, p.Flush(ctx))
		require.LessOrEqual(t, peak.Load(), int64(maxPending))
		require.Equal(t, int64(0), inFlight.Load())

		mu.Lock()
		defer mu.Unlock()
		require.Empty(t, errs)
		total := 0
		for _, c := range seen {
			total += c
		}
		require.Equal(t, n, total)
		// A repeated id may reach the server first; either way one of the
		// two is the duplicate.
		require.Equal(t, n/10, dups)
		require.Equal(t, uint64(n-n/10), b.streamMsgs(t))
	})

	t.Run("done ctx: nothing started", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		p, err := publish.New(testContext(t), b.js, publish.Config{})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(testContext(t))
		cancel()
		called := false
		err = p.PublishAsync(ctx, publish.Msg{Subject: "payments.requests.m001", Body: []byte("{}")}, func(publish.Result) { called = true })
		require.ErrorIs(t, err, context.Canceled)
		require.NoError(t, p.Flush(testContext(t)))
		require.False(t, called)
		require.Equal(t, uint64(0), b.streamMsgs(t))
	})
}

// fakeJS is a JetStream whose PublishMsg is scripted, for failures a real
// server does not produce on demand. Methods not overridden panic.
type fakeJS struct {
	jetstream.JetStream
	publish func(ctx context.Context, m *nats.Msg) (*jetstream.PubAck, error)
	calls   atomic.Int64
}

func (f *fakeJS) Stream(context.Context, string) (jetstream.Stream, error) { return nil, nil }

func (f *fakeJS) StreamNameBySubject(context.Context, string) (string, error) {
	return "PAYMENTS", nil
}

func (f *fakeJS) PublishMsg(ctx context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	f.calls.Add(1)
	return f.publish(ctx, m)
}

func TestRetries(t *testing.T) {
	t.Parallel()

	timeout := func(ctx context.Context, _ *nats.Msg) (*jetstream.PubAck, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	tests := []struct {
		name      string
		msgID     string
		publish   func(ctx context.Context, m *nats.Msg) (*jetstream.PubAck, error)
		wantCalls int64
		wantErr   error
	}{
		{"no responders is retried", "id", func(context.Context, *nats.Msg) (*jetstream.PubAck, error) {
			return nil, jetstream.ErrNoStreamResponse
		}, 4, jetstream.ErrNoStreamResponse},
		{"no responders without id is retried too", "", func(context.Context, *nats.Msg) (*jetstream.PubAck, error) {
			return nil, nats.ErrNoResponders
		}, 4, nats.ErrNoResponders},
		{"JetStream unavailable is retried", "id", func(context.Context, *nats.Msg) (*jetstream.PubAck, error) {
			return nil, fmt.Errorf("nats: %w", &jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"})
		}, 4, nil},
		{"timeout with a msg id is retried", "id", timeout, 4, context.DeadlineExceeded},
		{"timeout without a msg id is not", "", timeout, 1, context.DeadlineExceeded},
		{"a refusal is not retried", "id", func(context.Context, *nats.Msg) (*jetstream.PubAck, error) {
			return nil, fmt.Errorf("nats: %w", &jetstream.APIError{Code: 400, Description: "message size exceeds maximum allowed"})
		}, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			js := &fakeJS{publish: tt.publish}
			p, err := publish.New(testContext(t), js, publish.Config{Retries: 3, RetryWait: time.Millisecond, Timeout: 5 * time.Millisecond})
			require.NoError(t, err)
			_, err = p.PublishRaw(testContext(t), "payments.requests.m001", []byte("{}"), tt.msgID)
			require.Error(t, err)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			}
			require.Equal(t, tt.wantCalls, js.calls.Load())
		})
	}

	t.Run("succeeds after transient failures", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int64
		js := &fakeJS{publish: func(_ context.Context, m *nats.Msg) (*jetstream.PubAck, error) {
			if n.Add(1) < 3 {
				return nil, jetstream.ErrNoStreamResponse
			}
			return &jetstream.PubAck{Stream: "PAYMENTS", Sequence: 7}, nil
		}}
		p, err := publish.New(testContext(t), js, publish.Config{RetryWait: time.Millisecond})
		require.NoError(t, err)
		var res publish.Result
		require.NoError(t, p.PublishAsync(testContext(t), publish.Msg{Subject: "payments.requests.m001", Body: []byte("{}"), MsgID: "a"}, func(r publish.Result) { res = r }))
		require.NoError(t, p.Flush(testContext(t)))
		require.NoError(t, res.Err)
		require.Equal(t, 3, res.Attempts)
		require.Equal(t, uint64(7), res.Sequence)
	})

	t.Run("retries disabled", func(t *testing.T) {
		t.Parallel()
		js := &fakeJS{publish: func(context.Context, *nats.Msg) (*jetstream.PubAck, error) {
			return nil, jetstream.ErrNoStreamResponse
		}}
		p, err := publish.New(testContext(t), js, publish.Config{Retries: -1})
		require.NoError(t, err)
		_, err = p.PublishRaw(testContext(t), "payments.requests.m001", []byte("{}"), "a")
		require.ErrorIs(t, err, jetstream.ErrNoStreamResponse)
		require.Equal(t, int64(1), js.calls.Load())
	})

	t.Run("cancel stops the backoff", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(testContext(t))
		js := &fakeJS{publish: func(context.Context, *nats.Msg) (*jetstream.PubAck, error) {
			cancel() // cancelled while the first attempt fails
			return nil, jetstream.ErrNoStreamResponse
		}}
		// A backoff long enough that only cancellation ends the test quickly.
		p, err := publish.New(testContext(t), js, publish.Config{RetryWait: time.Hour})
		require.NoError(t, err)
		_, err = p.PublishRaw(ctx, "payments.requests.m001", []byte("{}"), "a")
		require.ErrorIs(t, err, jetstream.ErrNoStreamResponse)
		require.Equal(t, int64(1), js.calls.Load())
	})
}

func TestFlush(t *testing.T) {
	t.Parallel()

	release := make(chan struct{})
	started := make(chan struct{}, 1)
	js := &fakeJS{publish: func(ctx context.Context, _ *nats.Msg) (*jetstream.PubAck, error) {
		started <- struct{}{}
		select {
		case <-release:
			return &jetstream.PubAck{Stream: "PAYMENTS", Sequence: 1}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
	p, err := publish.New(testContext(t), js, publish.Config{MaxPending: 2, Timeout: time.Minute})
	require.NoError(t, err)

	var calls atomic.Int64
	var res publish.Result
	require.NoError(t, p.PublishAsync(testContext(t), publish.Msg{Subject: "payments.requests.m001", MsgID: "a"}, func(r publish.Result) {
		calls.Add(1)
		res = r
	}))
	<-started

	// Flush gives up when its ctx ends, the publish goes on.
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	require.ErrorIs(t, p.Flush(ctx), context.Canceled)
	require.Equal(t, int64(0), calls.Load())

	close(release)
	require.NoError(t, p.Flush(testContext(t)))
	require.Equal(t, int64(1), calls.Load())
	require.NoError(t, res.Err)

	t.Run("cancelling the publish ctx ends a stuck publish", func(t *testing.T) {
		js := &fakeJS{publish: func(ctx context.Context, _ *nats.Msg) (*jetstream.PubAck, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}}
		p, err := publish.New(testContext(t), js, publish.Config{Timeout: time.Hour})
		require.NoError(t, err)
		pubCtx, cancel := context.WithCancel(testContext(t))
		results := make(chan publish.Result, 3)
		for range 3 {
			require.NoError(t, p.PublishAsync(pubCtx, publish.Msg{Subject: "payments.requests.m001", MsgID: "a"}, func(r publish.Result) { results <- r }))
		}
		cancel()
		require.NoError(t, p.Flush(testContext(t)))
		close(results)
		n := 0
		for r := range results {
			n++
			require.True(t, errors.Is(r.Err, context.Canceled), "got %v", r.Err)
		}
		require.Equal(t, 3, n)
	})
}
