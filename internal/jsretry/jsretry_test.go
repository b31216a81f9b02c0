package jsretry_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/jsretry"
)

func TestJitter(t *testing.T) {
	t.Parallel()
	require.Zero(t, jsretry.Jitter(0))
	require.Zero(t, jsretry.Jitter(-time.Second))
	for range 1000 {
		d := jsretry.Jitter(time.Second)
		require.GreaterOrEqual(t, d, 800*time.Millisecond)
		require.LessOrEqual(t, d, 1200*time.Millisecond)
	}
}

func TestRefusedUnavailable(t *testing.T) {
	t.Parallel()
	unavailable := fmt.Errorf("publish: %w", &jetstream.APIError{Code: 503, Description: "no suitable peers"})
	refused := fmt.Errorf("publish: %w", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence})
	other := errors.New("timeout")
	require.True(t, jsretry.Unavailable(unavailable))
	require.False(t, jsretry.Refused(unavailable))
	require.True(t, jsretry.Refused(refused))
	require.False(t, jsretry.Unavailable(refused))
	require.False(t, jsretry.Refused(other))
	require.False(t, jsretry.Unavailable(other))
}
