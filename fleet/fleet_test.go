package fleet_test

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/internal/testenv/natstest"
)

// TestMain checks for leaked goroutines and removes the binaries the
// process tests built.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeBinaries()
		os.Exit(code)
	}))
}

func connect(t *testing.T) jetstream.JetStream {
	t.Helper()
	ns := natstest.New(t)
	nc, err := nats.Connect(ns.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// TestBeaterKeepsAndDeletesItsRecord: a running Beater's record is listed
// and kept fresh; a clean stop deletes it; a record nobody refreshes
// expires after three intervals.
func TestBeaterKeepsAndDeletesItsRecord(t *testing.T) {
	t.Parallel()
	js := connect(t)
	none, err := fleet.List(t.Context(), js, "")
	require.NoError(t, err, "no bucket yet: no workers")
	require.Empty(t, none)

	cfg := fleet.Config{Interval: 100 * time.Millisecond}
	var inFlight atomic.Int64
	b := fleet.NewBeater(js, cfg, func(context.Context) fleet.Heartbeat {
		return fleet.Heartbeat{WorkerID: "host 1/pid 7", Concurrency: 4, InFlight: int(inFlight.Load()),
			Breaker: "closed", Ready: true}
	}, zerolog.Nop())
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = b.Run(ctx) })

	require.Eventually(t, func() bool {
		hbs, err := fleet.List(t.Context(), js, "")
		return err == nil && len(hbs) == 1 && hbs[0].WorkerID == "host 1/pid 7" && !hbs[0].UpdatedAt.IsZero()
	}, 5*time.Second, 20*time.Millisecond)
	inFlight.Store(3)
	require.Eventually(t, func() bool {
		hbs, err := fleet.List(t.Context(), js, "")
		return err == nil && len(hbs) == 1 && hbs[0].InFlight == 3
	}, 5*time.Second, 20*time.Millisecond, "refreshed every interval")

	cancel()
	wg.Wait()
	hbs, err := fleet.List(t.Context(), js, "")
	require.NoError(t, err)
	require.Empty(t, hbs, "deleted on a clean stop")

	// A worker that dies without a word: its record expires.
	kv, err := fleet.Bucket(t.Context(), js, cfg)
	require.NoError(t, err)
	data, err := json.Marshal(fleet.Heartbeat{WorkerID: "dead"})
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), fleet.Key("dead"), data)
	require.NoError(t, err)
	hbs, err = fleet.List(t.Context(), js, "")
	require.NoError(t, err)
	require.Len(t, hbs, 1)
	require.Eventually(t, func() bool {
		hbs, err := fleet.List(t.Context(), js, "")
		return err == nil && len(hbs) == 0
	}, 10*time.Second, 50*time.Millisecond, "expired after three intervals")
}

// TestBeaterRecreatesADeletedBucket: a bucket deleted under a running
// Beater (by an operator, or lost with its stream) is recreated on a later
// beat, and the record comes back.
func TestBeaterRecreatesADeletedBucket(t *testing.T) {
	t.Parallel()
	js := connect(t)
	cfg := fleet.Config{Interval: 50 * time.Millisecond}
	b := fleet.NewBeater(js, cfg, func(context.Context) fleet.Heartbeat {
		return fleet.Heartbeat{WorkerID: "w1", Ready: true}
	}, zerolog.Nop())
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = b.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	listed := func() bool {
		hbs, err := fleet.List(t.Context(), js, "")
		return err == nil && len(hbs) == 1 && hbs[0].WorkerID == "w1"
	}
	require.Eventually(t, listed, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, js.DeleteKeyValue(t.Context(), contract.WorkersBucket))
	require.Eventually(t, listed, 5*time.Second, 20*time.Millisecond, "the bucket and the record are back")
}

func TestKey(t *testing.T) {
	t.Parallel()
	require.Equal(t, "host-12-abc", fleet.Key("host-12-abc"))
	require.Equal(t, "b64.aG9zdCAxL3BpZCA3", fleet.Key("host 1/pid 7"))
}
