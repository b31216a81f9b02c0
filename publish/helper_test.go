package publish_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/defaults"
	"github.com/paystream/paystream/internal/testenv/natstest"
)

// testBundle is what an integration test works with: a JetStream server of
// its own, a connection, and (unless noStream) the PAYMENTS stream.
type testBundle struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
}

// setupOpts tunes setup.
type setupOpts struct {
	// noStream skips creating the PAYMENTS stream.
	noStream bool
	// subjects overrides the stream's subjects.
	subjects []string
}

func setup(t *testing.T, opts ...setupOpts) *testBundle {
	t.Helper()
	var o setupOpts
	if len(opts) > 0 {
		o = opts[0]
	}
	srv := natstest.New(t)
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	b := &testBundle{nc: nc, js: js}
	if o.noStream {
		return b
	}
	// The stream as the worker provisions it.
	sc := defaults.Consumer().StreamConfigs()[0]
	if o.subjects != nil {
		sc.Subjects = o.subjects
	}
	b.stream, err = js.CreateStream(testContext(t), sc)
	require.NoError(t, err)
	return b
}

// testContext returns a context that ends with the test or after 30s.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// streamMsgs returns the number of messages in the bundle's stream.
func (b *testBundle) streamMsgs(t *testing.T) uint64 {
	t.Helper()
	info, err := b.stream.Info(testContext(t))
	require.NoError(t, err)
	return info.State.Msgs
}
