package ops

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/internal/testenv/natstest"
)

// TestStatusSilentWorker: a worker whose heartbeat record is older than two
// intervals (cut from NATS, it cannot write the next one) is reported
// silent and does not count as ready, though its last record says ready.
func TestStatusSilentWorker(t *testing.T) {
	t.Parallel()
	ns := natstest.New(t)
	nc, err := nats.Connect(ns.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	// A 10 s interval: the bucket keeps records 30 s, long enough for a
	// record written as if 25 s ago to stay while the test reads it.
	kv, err := fleet.Bucket(t.Context(), js, fleet.Config{Interval: 10 * time.Second})
	require.NoError(t, err)
	put := func(id string, age time.Duration) {
		b, err := json.Marshal(fleet.Heartbeat{WorkerID: id, Ready: true, Breaker: "closed", UpdatedAt: time.Now().Add(-age)})
		require.NoError(t, err)
		_, err = kv.Put(t.Context(), id, b)
		require.NoError(t, err)
	}
	cfg := StatusConfig{DatabaseErr: errors.New("not used here"), Stream: "PAYMENTS", DLQStream: "PAYMENTS_DLQ",
		DLQSubjects: "payments.dlq.>"}

	put("w1", 0)
	put("w2", 15*time.Second) // 1.5 intervals: late on a busy host, still believed
	r, err := Status(t.Context(), nil, js, cfg)
	require.NoError(t, err)
	require.Len(t, r.Workers, 2)
	assert.NotContains(t, r.Degraded(), "silent")
	assert.NotContains(t, r.Degraded(), "no ready worker")

	put("w2", 25*time.Second) // 2.5 intervals: silent
	r, err = Status(t.Context(), nil, js, cfg)
	require.NoError(t, err)
	assert.False(t, r.Healthy)
	assert.Regexp(t, `worker w2 silent for 2\ds`, r.Degraded()) // 25 s and the time this took
	assert.Contains(t, r.Degraded(), "expected every 10s")
	assert.NotContains(t, r.Degraded(), "worker w1 silent")
	assert.NotContains(t, r.Degraded(), "no ready worker", "w1 is ready")
	assert.Contains(t, r.Silent, "w2", "the report names the silent worker for the table")
	assert.NotContains(t, r.Silent, "w1")
	assert.GreaterOrEqual(t, r.Silent["w2"], 25.0)

	put("w1", 21*time.Second) // now both: nobody ready, whatever the records say
	r, err = Status(t.Context(), nil, js, cfg)
	require.NoError(t, err)
	assert.Contains(t, r.Degraded(), "no ready worker (2 live, 2 of them silent)")
	assert.Equal(t, 2, strings.Count(r.Degraded(), " silent for "))
}

// TestBeatClock: the threshold is two intervals; no interval or no
// timestamp judges nothing.
func TestBeatClock(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	c := beatClock{now: now, interval: 5 * time.Second}
	hb := func(age time.Duration) fleet.Heartbeat {
		return fleet.Heartbeat{WorkerID: "w", UpdatedAt: now.Add(-age)}
	}
	assert.Zero(t, c.silence(hb(10*time.Second)))
	assert.Equal(t, 11*time.Second, c.silence(hb(11*time.Second)))
	assert.Zero(t, c.silence(fleet.Heartbeat{}))
	assert.Zero(t, beatClock{now: now}.silence(hb(time.Hour)))
	r := verdict("", []fleet.Heartbeat{hb(12 * time.Second)}, nil, 0, 0, nil, StatusConfig{}, c)
	assert.Equal(t, []string{"worker w silent for 12s (last heartbeat at 2026-12-02T09:59:48Z, expected every 5s; its record is not believed)",
		"no ready worker (1 live, 1 of them silent)"}, r)
}
