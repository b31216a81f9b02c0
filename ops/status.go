package ops

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// StatusConfig says where the fleet is and when it counts as degraded.
type StatusConfig struct {
	// DatabaseErr is why there is no store (Status's st is nil), reported
	// as the database error.
	DatabaseErr error
	// Stream is the requests stream, whose consumers are reported.
	Stream string
	// DLQStream is the dead-letter stream; DLQSubjects its subject filter
	// (<prefix>.dlq.>), whose last token is the reason.
	DLQStream   string
	DLQSubjects string
	// WorkersBucket is the heartbeat bucket (empty: the contract's).
	WorkersBucket string
	// GatewaysBucket is the bucket of the gateways' budgets and breaker
	// votes (empty: the contract's).
	GatewaysBucket string
	// StuckAfter: a processing row whose lease ended longer ago is stuck.
	StuckAfter time.Duration
	// Window is how far back outcomes and throughput are counted.
	Window time.Duration
	// MaxPending and MaxOldest are the consumer lag thresholds: messages
	// not yet delivered, and the age of the oldest unacknowledged one.
	MaxPending uint64
	MaxOldest  time.Duration
}

// StatusReport is the fleet's status (paystreamctl status). Its JSON field
// names are contract (docs/contract.md §9).
type StatusReport struct {
	// Healthy is false when Reasons is not empty.
	Healthy bool     `json:"healthy"`
	Reasons []string `json:"reasons"`
	// Time is the database clock when the rows were counted (this host's
	// clock when the database could not be reached).
	Time time.Time `json:"time"`
	// DatabaseError says why the rows could not be counted; Rows is empty
	// then, and the fleet degraded. Omitted when the database answered.
	DatabaseError string           `json:"database_error,omitempty"`
	Consumers     []ConsumerStatus `json:"consumers"`
	// DeadLetters counts the dead letters in the stream by reason.
	DeadLetters map[string]uint64 `json:"dead_letters"`
	Rows        RowStatus         `json:"rows"`
	Workers     []fleet.Heartbeat `json:"workers"`
	// Silent names the workers whose records are older than StaleAfter
	// heartbeat intervals, with how long each has been silent in seconds:
	// their records (ready, say) are not believed. Omitted when none is.
	Silent map[string]float64 `json:"silent,omitempty"`
	Recent Recent             `json:"recent"`
	// Gateways is each gateway's fleet record: its budget, the live
	// workers' shares and breaker votes, the fleet's breaker and the probe
	// lease (docs/fleet.md). Empty when no worker shares a gateway.
	Gateways []fleet.GatewayRecord `json:"gateways"`
}

// ConsumerStatus is one consumer of the requests stream.
type ConsumerStatus struct {
	Stream      string `json:"stream"`
	Name        string `json:"name"`
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	Waiting     int    `json:"waiting"`
	// OldestUnackedSeconds is the age of the oldest message not yet
	// acknowledged, delivered or not (0 when none).
	OldestUnackedSeconds float64 `json:"oldest_unacked_seconds"`
}

// RowStatus counts the payments table.
type RowStatus struct {
	ByStatus             map[string]int64 `json:"by_status"`
	StuckProcessing      int64            `json:"stuck_processing"`
	OldestStuckSeconds   float64          `json:"oldest_stuck_seconds"`
	Unknown              int64            `json:"unknown"`
	OldestUnknownSeconds float64          `json:"oldest_unknown_seconds"`
	StuckAfterSeconds    float64          `json:"stuck_after_seconds"`
}

// Recent is what completed within the window.
type Recent struct {
	WindowSeconds float64          `json:"window_seconds"`
	ByStatus      map[string]int64 `json:"by_status"`
	PerSecond     float64          `json:"per_second"`
}

// Status gathers the fleet's status and decides whether it is degraded. st
// nil, or a database that does not answer, leaves the rows out and makes
// the fleet degraded, with the consumers, dead letters and workers still
// reported: what an operator needs most while the database is down.
func Status(ctx context.Context, st *store.Store, js jetstream.JetStream, cfg StatusConfig) (StatusReport, error) {
	r := StatusReport{Reasons: []string{}, DeadLetters: map[string]uint64{}, Consumers: []ConsumerStatus{}}
	var (
		counts store.Counts
		err    error
	)
	if st == nil {
		err = cfg.DatabaseErr
		if err == nil {
			err = errors.New("no connection")
		}
	} else {
		counts, err = st.Count(ctx, cfg.StuckAfter, cfg.Window)
	}
	if err != nil {
		if ctx.Err() != nil {
			return r, err
		}
		r.DatabaseError = err.Error()
		counts.Now = time.Now()
	}
	r.Time = counts.Now.UTC()
	r.Rows = RowStatus{ByStatus: map[string]int64{}, StuckProcessing: counts.StuckProcessing,
		OldestStuckSeconds: counts.OldestStuck.Seconds(), Unknown: counts.Unknown,
		OldestUnknownSeconds: counts.OldestUnknown.Seconds(), StuckAfterSeconds: cfg.StuckAfter.Seconds()}
	for _, s := range []payment.Status{payment.StatusProcessing, payment.StatusSucceeded, payment.StatusDeclined,
		payment.StatusFailed, payment.StatusUnknown} {
		r.Rows.ByStatus[string(s)] = counts.ByStatus[s]
	}
	r.Recent = Recent{WindowSeconds: cfg.Window.Seconds(), ByStatus: map[string]int64{}}
	var total int64
	for _, s := range []payment.Status{payment.StatusSucceeded, payment.StatusDeclined, payment.StatusFailed} {
		r.Recent.ByStatus[string(s)] = counts.Recent[s]
		total += counts.Recent[s]
	}
	if cfg.Window > 0 {
		r.Recent.PerSecond = float64(total) / cfg.Window.Seconds()
	}

	if r.Consumers, err = consumers(ctx, js, cfg.Stream, r.Time); err != nil {
		return r, err
	}
	if r.DeadLetters, err = deadLetterCounts(ctx, js, cfg.DLQStream, cfg.DLQSubjects); err != nil {
		return r, err
	}
	if r.Workers, err = fleet.List(ctx, js, cfg.WorkersBucket); err != nil {
		return r, err
	}
	if r.Workers == nil {
		r.Workers = []fleet.Heartbeat{}
	}
	if r.Gateways, err = fleet.Gateways(ctx, js, cfg.GatewaysBucket, time.Now()); err != nil {
		return r, err
	}
	if r.Gateways == nil {
		r.Gateways = []fleet.GatewayRecord{}
	}

	// The verdict (the overview's too).
	beats := beatClock{now: time.Now(), interval: heartbeatInterval(ctx, js, cfg.WorkersBucket)}
	r.Reasons = verdict(r.DatabaseError, r.Workers, r.Gateways, r.Rows.StuckProcessing, r.Rows.Unknown, r.Consumers, cfg, beats)
	r.Silent = beats.silent(r.Workers)
	r.Healthy = len(r.Reasons) == 0
	return r, nil
}

// Degraded returns the report's reasons on one line, or "" when healthy.
func (r StatusReport) Degraded() string { return strings.Join(r.Reasons, "; ") }

func consumers(ctx context.Context, js jetstream.JetStream, stream string, now time.Time) ([]ConsumerStatus, error) {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return []ConsumerStatus{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	out := []ConsumerStatus{}
	lister := s.ListConsumers(ctx)
	for ci := range lister.Info() {
		out = append(out, consumerStatus(ctx, s, ci, now))
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("consumers of %s: %w", stream, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ConsumerLag reports one consumer of stream: what ConsumerStatus says of
// it, as status shows it. The worker exports the same on /metrics.
func ConsumerLag(ctx context.Context, js jetstream.JetStream, stream, consumer string, now time.Time) (ConsumerStatus, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return ConsumerStatus{}, fmt.Errorf("stream %s: %w", stream, err)
	}
	c, err := s.Consumer(ctx, consumer)
	if err != nil {
		return ConsumerStatus{}, fmt.Errorf("consumer %s: %w", consumer, err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return ConsumerStatus{}, fmt.Errorf("consumer %s: %w", consumer, err)
	}
	return consumerStatus(ctx, s, ci, now), nil
}

// consumerStatus is ci's figures, with the age of the oldest message not
// acknowledged: just above the ack floor when some are delivered and
// pending, else the next to deliver.
func consumerStatus(ctx context.Context, s jetstream.Stream, ci *jetstream.ConsumerInfo, now time.Time) ConsumerStatus {
	c := ConsumerStatus{Stream: ci.Stream, Name: ci.Name, Pending: ci.NumPending, AckPending: ci.NumAckPending,
		Redelivered: ci.NumRedelivered, Waiting: ci.NumWaiting}
	var seq uint64
	switch {
	case ci.NumAckPending > 0:
		seq = ci.AckFloor.Stream + 1
	case ci.NumPending > 0:
		seq = ci.Delivered.Stream + 1
	}
	if seq > 0 {
		if m, err := s.GetMsg(ctx, seq); err == nil {
			c.OldestUnackedSeconds = max(now.Sub(m.Time), 0).Seconds()
		}
	}
	return c
}

func deadLetterCounts(ctx context.Context, js jetstream.JetStream, stream, subjects string) (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, r := range payment.DeadLetterReasons() {
		out[string(r)] = 0
	}
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subjects))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	for subj, n := range info.State.Subjects {
		out[subj[strings.LastIndexByte(subj, '.')+1:]] += n
	}
	return out, nil
}
