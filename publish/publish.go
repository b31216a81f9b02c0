package publish

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"

	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/internal/jsretry"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/telemetry"
)

// Defaults of Config. DefaultSubjectPrefix and DefaultStream are the names of
// docs/contract.md §3 (package contract), which the workers provision unless
// told otherwise.
const (
	DefaultSubjectPrefix = contract.SubjectPrefix
	DefaultStream        = contract.Stream
	DefaultMaxPending    = 256
	DefaultRetries       = 5
	DefaultRetryWait     = 100 * time.Millisecond
	DefaultTimeout       = 5 * time.Second
)

// maxRetryWait caps the exponential backoff between attempts.
const maxRetryWait = 2 * time.Second

// Config configures a Publisher. The zero value of every field means its
// default.
type Config struct {
	// SubjectPrefix is the first token(s) of the request subjects:
	// requests go to <SubjectPrefix>.requests.<merchant_id>.
	// Default DefaultSubjectPrefix, "payments".
	SubjectPrefix string
	// Stream is the JetStream stream that must capture the request subjects.
	// Every publish expects it (Nats-Expected-Stream), so a message never
	// lands in another stream. Default DefaultStream, "PAYMENTS".
	Stream string
	// MaxPending is the largest number of PublishAsync publishes outstanding
	// at once; PublishAsync blocks while that many are. Default 256.
	MaxPending int
	// Retries is how many times a publish is retried after a transient
	// error: no responders (no stream is listening, e.g. during a leader
	// election), a JetStream 503, or an attempt timed out while the message
	// carries a Nats-Msg-Id (the server de-duplicates a retry of a publish
	// that did land). Default 5; -1 disables retries.
	Retries int
	// RetryWait is the wait before the first retry; it doubles on each
	// further retry, up to 2s, with ±20% jitter. Default 100ms.
	RetryWait time.Duration
	// Timeout bounds one publish attempt (waiting for the PubAck).
	// Default 5s.
	Timeout time.Duration
	// Limits are the validation limits Publish applies
	// (payment.Request.Validate); the zero value means the contract's.
	Limits payment.Limits
	// Tracing, when not nil, makes a "send <prefix>.requests" producer
	// span per publish and writes its W3C trace context into the message's
	// headers in lower case (traceparent, tracestate), so that the workers
	// continue the trace (publish/trace.go). nil is tracing off.
	Tracing *telemetry.Tracing
}

// WithDefaults returns a copy of c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultSubjectPrefix
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.Retries == 0 {
		c.Retries = DefaultRetries
	}
	if c.RetryWait == 0 {
		c.RetryWait = DefaultRetryWait
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// Validate returns every problem of c (after WithDefaults) joined in one
// error, or nil.
func (c Config) Validate() error {
	var errs []error
	if err := validSubjectPrefix(c.SubjectPrefix); err != nil {
		errs = append(errs, fmt.Errorf("subject prefix %q: %w", c.SubjectPrefix, err))
	}
	if c.Stream == "" || strings.ContainsAny(c.Stream, " \t\r\n.*>/\\") {
		errs = append(errs, fmt.Errorf("stream %q: not a valid stream name", c.Stream))
	}
	if c.MaxPending < 1 {
		errs = append(errs, fmt.Errorf("max pending %d: must be at least 1", c.MaxPending))
	}
	if c.Retries < -1 {
		errs = append(errs, fmt.Errorf("retries %d: must be -1 (none) or more", c.Retries))
	}
	if c.RetryWait < 0 {
		errs = append(errs, fmt.Errorf("retry wait %s: must not be negative", c.RetryWait))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %s: must not be negative", c.Timeout))
	}
	return errors.Join(errs...)
}

// validSubjectPrefix checks that p is one or more literal subject tokens.
func validSubjectPrefix(p string) error {
	if p == "" {
		return errors.New("empty")
	}
	for tok := range strings.SplitSeq(p, ".") {
		if tok == "" {
			return errors.New("empty token")
		}
		if tok == "*" || tok == ">" {
			return errors.New("wildcards are not allowed")
		}
		if strings.ContainsAny(tok, " \t\r\n") {
			return errors.New("white space is not allowed")
		}
	}
	return nil
}

// StreamNotFoundError is returned by New when the stream does not exist. It
// unwraps to jetstream.ErrStreamNotFound.
type StreamNotFoundError struct {
	// Stream is the name of the missing stream.
	Stream string
}

// Error says which stream is missing and what to do about it.
func (e *StreamNotFoundError) Error() string {
	return fmt.Sprintf("stream %q not found: start a worker with provisioning on, or create it", e.Stream)
}

// Unwrap returns jetstream.ErrStreamNotFound.
func (e *StreamNotFoundError) Unwrap() error { return jetstream.ErrStreamNotFound }

// Publisher publishes payment requests to JetStream. It is safe for
// concurrent use. It does not own the JetStream context or its connection:
// the caller closes them, after Flush when PublishAsync was used.
type Publisher struct {
	js  jetstream.JetStream
	cfg Config
	// pending holds one unit per outstanding PublishAsync publish, up to
	// cfg.MaxPending; Flush takes all of them.
	pending *semaphore.Weighted
}

// New returns a Publisher for js after checking that cfg is valid and that
// cfg.Stream exists (a *StreamNotFoundError when it does not) and captures
// the request subjects <prefix>.requests.>.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Publisher, error) {
	if js == nil {
		return nil, errors.New("publish: nil JetStream")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("publish: invalid config: %w", err)
	}
	p := &Publisher{js: js, cfg: cfg, pending: semaphore.NewWeighted(int64(cfg.MaxPending))}

	if _, err := js.Stream(ctx, cfg.Stream); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, &StreamNotFoundError{Stream: cfg.Stream}
		}
		return nil, fmt.Errorf("look up stream %q: %w", cfg.Stream, err)
	}
	filter := cfg.SubjectPrefix + ".requests.>"
	name, err := js.StreamNameBySubject(ctx, filter)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("stream %q does not capture subjects %s: fix its subjects or the subject prefix", cfg.Stream, filter)
	case err != nil:
		return nil, fmt.Errorf("look up the stream of %s: %w", filter, err)
	case name != cfg.Stream:
		return nil, fmt.Errorf("subjects %s belong to stream %q, not %q", filter, name, cfg.Stream)
	}
	return p, nil
}

// Config returns the Publisher's configuration, defaults filled in.
func (p *Publisher) Config() Config { return p.cfg }

// Subject returns the request subject of a merchant:
// <prefix>.requests.<merchantID>.
func (p *Publisher) Subject(merchantID string) string {
	return p.cfg.SubjectPrefix + ".requests." + merchantID
}

// Msg is one message to publish as it is.
type Msg struct {
	// Subject is the full NATS subject.
	Subject string
	// Body is the message payload.
	Body []byte
	// MsgID is the Nats-Msg-Id header; empty means none (and no retry
	// after a timed-out attempt, which could then store the message twice).
	MsgID string
}

// Result is the outcome of one publish.
type Result struct {
	// Msg is the message published.
	Msg Msg
	// Duplicate is true when the server acknowledged the message as a
	// duplicate of one with the same Nats-Msg-Id within the stream's
	// duplicate window, and so did not store it. After a retry it may be
	// the earlier, timed-out attempt that the server stored.
	Duplicate bool
	// Sequence is the stream sequence of the stored message (of the
	// original, for a duplicate). Zero when Err is set.
	Sequence uint64
	// Attempts is the number of publish attempts made.
	Attempts int
	// Err is nil when the server acknowledged the message. Otherwise the
	// message was not acknowledged: it was probably not stored, although
	// an attempt cut short by a timeout or cancellation may have been.
	Err error
}

// Publish validates r, refusing an invalid request with an error matching
// payment.ErrInvalid without publishing anything, and publishes it
// synchronously to <prefix>.requests.<merchant_id> with Nats-Msg-Id set to
// its payment_id and Content-Type: application/json. dup reports that the
// server saw it as a duplicate (within the stream's duplicate window) and
// did not store it again.
func (p *Publisher) Publish(ctx context.Context, r *payment.Request) (dup bool, err error) {
	if r == nil {
		return false, fmt.Errorf("publish: nil request: %w", payment.ErrInvalid)
	}
	if err := r.Validate(p.cfg.Limits); err != nil {
		return false, fmt.Errorf("publish payment %s: %w", safeID(r.PaymentID), err)
	}
	body, err := r.Marshal()
	if err != nil {
		return false, fmt.Errorf("publish payment %s: marshal: %w", r.PaymentID, err)
	}
	res := p.publish(ctx, Msg{Subject: p.Subject(r.MerchantID), Body: body, MsgID: r.PaymentID})
	return res.Duplicate, res.Err
}

// PublishRaw publishes body as it is to subject, with Nats-Msg-Id msgID when
// msgID is not empty, without validating anything: it is meant for test
// traffic (invalid messages) and for JSON lines read from files. The
// subject must belong to the configured stream. dup is as for Publish.
func (p *Publisher) PublishRaw(ctx context.Context, subject string, body []byte, msgID string) (dup bool, err error) {
	res := p.publish(ctx, Msg{Subject: subject, Body: body, MsgID: msgID})
	return res.Duplicate, res.Err
}

// PublishAsync starts publishing m as PublishRaw would and returns without
// waiting for the server. It blocks while Config.MaxPending publishes are
// outstanding, until one of them ends or ctx is done.
//
// When PublishAsync returns nil, done (if not nil) is called exactly once,
// from another goroutine, with the Result; done must not call Flush, and
// calls for different messages may run concurrently. When PublishAsync
// returns an error (ctx done before a slot freed), nothing was published and
// done is never called.
//
// ctx also governs the publish itself: cancelling it ends the attempt in
// flight and its retries, with a Result whose Err matches ctx's error. The
// goroutine running the publish ends with it; Flush waits for it.
func (p *Publisher) PublishAsync(ctx context.Context, m Msg, done func(Result)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := p.pending.Acquire(ctx, 1); err != nil {
		return err
	}
	go func() {
		// Release only after done has returned, so that Flush also
		// waits for every done call.
		defer p.pending.Release(1)
		res := p.publish(ctx, m)
		if done != nil {
			done(res)
		}
	}()
	return nil
}

// Flush waits until every publish that PublishAsync started before Flush
// was called has ended and its done func has returned, or until ctx is done
// (then it returns ctx's error and the publishes go on; call Flush again to
// wait for them). PublishAsync calls made while Flush waits block until
// Flush returns.
func (p *Publisher) Flush(ctx context.Context) error {
	n := int64(p.cfg.MaxPending)
	if err := p.pending.Acquire(ctx, n); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	p.pending.Release(n)
	return nil
}

// publish sends m, retrying transient failures, and says how it went.
func (p *Publisher) publish(ctx context.Context, m Msg) Result {
	res := Result{Msg: m}
	if m.Subject == "" {
		res.Err = errors.New("publish: empty subject")
		return res
	}
	opts := []jetstream.PublishOpt{
		jetstream.WithExpectStream(p.cfg.Stream),
		// Retries are ours, with our backoff and classification.
		jetstream.WithRetryAttempts(0),
	}
	if m.MsgID != "" {
		opts = append(opts, jetstream.WithMsgID(m.MsgID))
	}
	retries := max(p.cfg.Retries, 0)
	wait := p.cfg.RetryWait
	ctx, span := p.startSend(ctx, m)
	defer func() { endSend(span, res) }()
	for {
		res.Attempts++
		ack, err := p.attempt(ctx, m, opts)
		if err == nil {
			res.Duplicate = ack.Duplicate
			res.Sequence = ack.Sequence
			return res
		}
		if ctx.Err() != nil || !transient(err, m.MsgID != "") || res.Attempts > retries {
			res.Err = fmt.Errorf("publish to %s (msg id %s, %d attempts): %w", m.Subject, safeID(m.MsgID), res.Attempts, err)
			return res
		}
		t := time.NewTimer(jsretry.Jitter(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			res.Err = fmt.Errorf("publish to %s (msg id %s, %d attempts): %w (last error: %w)", m.Subject, safeID(m.MsgID), res.Attempts, ctx.Err(), err)
			return res
		case <-t.C:
		}
		wait = min(2*wait, maxRetryWait)
	}
}

// attempt makes one publish attempt, bounded by cfg.Timeout.
func (p *Publisher) attempt(ctx context.Context, m Msg, opts []jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	// A fresh message per attempt: PublishMsg sets headers on it.
	msg := &nats.Msg{Subject: m.Subject, Data: m.Body, Header: nats.Header{}}
	msg.Header.Set("Content-Type", "application/json")
	p.cfg.Tracing.Inject(ctx, msg.Header)
	return p.js.PublishMsg(ctx, msg, opts...)
}

// transient reports whether a failed attempt may be retried: the message
// was surely not stored (no responders, JetStream unavailable), or it may
// have been but the server will de-duplicate a retry (hasID).
func transient(err error, hasID bool) bool {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		return true
	}
	if jsretry.Unavailable(err) {
		return true
	}
	if hasID && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
		return true
	}
	return false
}

// safeID returns id when it is a plausible identifier, for error messages,
// and a placeholder otherwise (an invalid payment_id might hold anything,
// even a card number, and errors must not quote payloads).
func safeID(id string) string {
	if id == "" {
		return "(none)"
	}
	if len(id) > 64 {
		return "(invalid id)"
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return "(invalid id)"
		}
	}
	return id
}
