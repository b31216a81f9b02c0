// Package fleet keeps the worker fleet's shared state in NATS KV: each
// worker's heartbeat record in bucket contract.WorkersBucket, which
// paystreamctl status reads to tell which workers live and how they fare.
//
// A Beater, owned by a worker, writes the worker's record every interval;
// the bucket's MaxAge (the TTL) is three intervals, so that the record of a
// worker that died without a word vanishes on its own. On a clean stop the
// Beater deletes its record. List reads every live record.
package fleet

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/paystream/paystream/contract"
)

// DefaultInterval is the heartbeat interval when Config.Interval is zero.
const DefaultInterval = 5 * time.Second

// Heartbeat is one worker's record. Its JSON field names are part of the
// paystreamctl contract (docs/contract.md §9).
type Heartbeat struct {
	WorkerID  string    `json:"worker_id"`
	Version   string    `json:"version"`
	Host      string    `json:"host"`
	StartedAt time.Time `json:"started_at"`
	// InFlight is the payments being processed; Concurrency the slots.
	InFlight    int `json:"in_flight"`
	Concurrency int `json:"concurrency"`
	// Breaker is the gateway breaker's state: closed, half_open or open.
	Breaker string `json:"breaker"`
	// RateLimit is gateway calls per second (0 unlimited).
	RateLimit float64 `json:"rate_limit"`
	// LastPull is when the worker's last pull request ended without error
	// (zero before the first).
	LastPull time.Time `json:"last_pull"`
	Ready    bool      `json:"ready"`
	// NotReady says why the worker is not ready; empty when ready.
	NotReady string `json:"not_ready,omitempty"`
	// UpdatedAt is when the record was written (the worker's clock).
	UpdatedAt time.Time `json:"updated_at"`
	// Gateways is the worker's guard of each gateway, as it sees it.
	Gateways []GatewayBeat `json:"gateways,omitempty"`
}

// Config configures a Beater. The zero value means the defaults.
type Config struct {
	// Bucket is the KV bucket; empty means contract.WorkersBucket.
	Bucket string
	// Interval between writes; zero means DefaultInterval. The bucket's
	// MaxAge is three intervals.
	Interval time.Duration
	// Replicas of the bucket; zero means 1.
	Replicas int
}

// WithDefaults returns cfg with zero fields replaced by their defaults.
func (cfg Config) WithDefaults() Config {
	if cfg.Bucket == "" {
		cfg.Bucket = contract.WorkersBucket
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	return cfg
}

// Beater keeps one worker's heartbeat record.
type Beater struct {
	cfg      Config
	js       jetstream.JetStream
	snapshot func(ctx context.Context) Heartbeat
	log      zerolog.Logger
}

// NewBeater returns a Beater that writes snapshot()'s record every
// interval; the record's WorkerID must be set. Call Run to start it.
func NewBeater(js jetstream.JetStream, cfg Config, snapshot func(ctx context.Context) Heartbeat, logger zerolog.Logger) *Beater {
	if js == nil || snapshot == nil {
		panic("fleet.NewBeater: jetstream and snapshot are required")
	}
	return &Beater{cfg: cfg.WithDefaults(), js: js, snapshot: snapshot,
		log: logger.With().Str("component", "heartbeat").Logger()}
}

// Bucket creates or updates the heartbeat bucket with cfg's TTL.
func Bucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	cfg = cfg.WithDefaults()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "paystream worker heartbeats",
		History:     1,
		TTL:         3 * cfg.Interval,
		Storage:     jetstream.MemoryStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: heartbeat bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// Run writes the record at once and then every interval until ctx ends;
// then it deletes the record (a clean stop) and returns nil. A failed write
// is logged and tried again at the next beat.
func (b *Beater) Run(ctx context.Context) error {
	var (
		kv  jetstream.KeyValue
		key string
	)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if kv != nil && key != "" {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				if err := kv.Delete(dctx, key); err != nil {
					b.log.Warn().Err(err).Msg("delete heartbeat record")
				}
				cancel()
			}
			return nil
		case <-t.C:
		}
		if kv == nil {
			var err error
			if kv, err = Bucket(ctx, b.js, b.cfg); err != nil {
				b.log.Warn().Err(err).Msg("heartbeat")
				t.Reset(b.cfg.Interval)
				continue
			}
		}
		hb := b.snapshot(ctx)
		hb.UpdatedAt = time.Now().UTC()
		key = Key(hb.WorkerID)
		data, err := json.Marshal(hb)
		if err == nil {
			_, err = kv.Put(ctx, key, data)
		}
		if err != nil && ctx.Err() == nil {
			b.log.Warn().Err(err).Msg("write heartbeat record")
			// The bucket may be gone (deleted, or its stream lost): look
			// it up, or create it, again on the next beat.
			kv = nil
		}
		t.Reset(b.cfg.Interval)
	}
}

var plainKey = regexp.MustCompile(`^[-_=a-zA-Z0-9]{1,200}$`)

// Key returns the KV key of a worker id: the id itself when it is a valid
// key, else "b64." and its unpadded base64url encoding.
func Key(workerID string) string {
	if plainKey.MatchString(workerID) {
		return workerID
	}
	return "b64." + base64.RawURLEncoding.EncodeToString([]byte(workerID))
}

// List returns the live workers' records from bucket (empty means
// contract.WorkersBucket), sorted by worker id. A bucket that does not
// exist yet means no worker ever beat: no records, no error.
func List(ctx context.Context, js jetstream.JetStream, bucket string) ([]Heartbeat, error) {
	if bucket == "" {
		bucket = contract.WorkersBucket
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: heartbeat bucket %s: %w", bucket, err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("fleet: list heartbeats: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	_ = lister.Stop() // the listing is complete once Keys closes; Stop only unsubscribes
	out := make([]Heartbeat, 0, len(keys))
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // gone meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("fleet: read heartbeat %s: %w", k, err)
		}
		var hb Heartbeat
		if err := json.Unmarshal(e.Value(), &hb); err != nil {
			return nil, fmt.Errorf("fleet: heartbeat %s: %w", k, err)
		}
		out = append(out, hb)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].WorkerID < out[j].WorkerID })
	return out, nil
}
