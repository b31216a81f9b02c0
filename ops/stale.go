package ops

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/fleet"
)

// StaleAfter is how many heartbeat intervals a worker's record may age
// before the worker counts as silent: it still says what it said last
// (ready, say) until the bucket's TTL of three intervals drops it, but a
// worker cut from NATS cannot write it, so status stops believing it.
const StaleAfter = 2

// heartbeatInterval is the workers' heartbeat interval, read from the
// bucket's TTL (three intervals, fleet.Bucket); fleet.DefaultInterval when
// the bucket cannot be read.
func heartbeatInterval(ctx context.Context, js jetstream.JetStream, bucket string) time.Duration {
	if bucket == "" {
		bucket = contract.WorkersBucket
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return fleet.DefaultInterval
	}
	st, err := kv.Status(ctx)
	if err != nil || st.TTL() <= 0 {
		return fleet.DefaultInterval
	}
	return st.TTL() / 3
}

// beatClock is what the verdict needs to judge heartbeats: now (this
// host's clock; the records carry the workers' clocks, so hosts must keep to
// NTP) and the heartbeat interval.
type beatClock struct {
	now      time.Time
	interval time.Duration
}

// silence is how long w has not written its heartbeat, or 0 when its record
// is younger than StaleAfter intervals.
func (c beatClock) silence(w fleet.Heartbeat) time.Duration {
	if c.interval <= 0 || w.UpdatedAt.IsZero() {
		return 0
	}
	age := c.now.Sub(w.UpdatedAt)
	if age <= StaleAfter*c.interval {
		return 0
	}
	return age
}

// silent maps each silent worker of workers to its silence in seconds; nil
// when none is silent.
func (c beatClock) silent(workers []fleet.Heartbeat) map[string]float64 {
	var out map[string]float64
	for _, w := range workers {
		if age := c.silence(w); age > 0 {
			if out == nil {
				out = make(map[string]float64)
			}
			out[w.WorkerID] = age.Seconds()
		}
	}
	return out
}

func silentReason(w fleet.Heartbeat, age, interval time.Duration) string {
	return fmt.Sprintf("worker %s silent for %s (last heartbeat at %s, expected every %s; its record is not believed)",
		w.WorkerID, age.Round(time.Second), w.UpdatedAt.UTC().Format(time.RFC3339), interval)
}
