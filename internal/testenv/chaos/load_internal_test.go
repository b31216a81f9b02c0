package chaos

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/publish"
)

// TestSendStopsOnRefusal: a message the stream refuses (here: too large)
// ends send with the error instead of being retried until ctx ends.
func TestSendStopsOnRefusal(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv := natstest.New(t)
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "PAYMENTS", Subjects: []string{"payments.requests.>"}, MaxMsgSize: 64})
	require.NoError(t, err)
	pub, err := publish.New(ctx, js, publish.Config{})
	require.NoError(t, err)

	s := &sender{pub: pub}
	sendCtx, sendCancel := context.WithTimeout(ctx, 10*time.Second)
	defer sendCancel()
	err = s.send(sendCtx, loadMsg{subject: "payments.requests.m001", body: []byte(strings.Repeat("x", 1024)), msgID: "too-large"})
	require.Error(t, err)
	require.NoError(t, sendCtx.Err(), "send retried the refused message until its context ended")
	require.Zero(t, s.published.Load())
	require.Zero(t, s.retries.Load())
}
