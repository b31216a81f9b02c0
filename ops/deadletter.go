package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/payment"
)

// DeadLetter is one message of the dead-letter stream (docs/contract.md §4)
// as an operator sees it: its headers decoded, the payment it is about when
// its body parses, and its body masked once more.
type DeadLetter struct {
	// Seq is the dead letter's sequence in the dead-letter stream: its id
	// for `dlq show` and `dlq replay --id`.
	Seq uint64 `json:"seq"`
	// Subject is payments.dlq.<reason>.
	Subject string `json:"subject"`
	// Reason is Paystream-Dlq-Reason: invalid, conflict, exhausted or
	// gateway_rejected.
	Reason string `json:"reason"`
	// Error is Paystream-Error, human-readable.
	Error string `json:"error,omitempty"`
	// OriginalSubject is Paystream-Original-Subject, where the request was
	// published and where a replay publishes it again.
	OriginalSubject string `json:"original_subject"`
	// OriginalSeq is Paystream-Stream-Seq, the request's sequence in the
	// requests stream; 0 when the dead letter has none (the sweeper's).
	OriginalSeq uint64 `json:"original_seq,omitempty"`
	// Deliveries is Paystream-Deliveries; 0 when absent.
	Deliveries uint64 `json:"deliveries,omitempty"`
	// Redacted: card numbers were masked, the body is not the original.
	Redacted bool `json:"redacted"`
	// Truncated: the body was cut to its first 4 KiB.
	Truncated bool `json:"truncated"`
	// ReceivedAt is when the dead-letter stream stored it (UTC).
	ReceivedAt time.Time `json:"received_at"`
	// PaymentID, IdempotencyKey (the effective key) and MerchantID come from
	// the body when it parses as a JSON object; empty otherwise.
	PaymentID      string `json:"payment_id,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	MerchantID     string `json:"merchant_id,omitempty"`
	// Size is the length of the stored body in bytes.
	Size int `json:"size"`
	// TraceParent and TraceState are the W3C trace context the worker
	// wrote on the dead letter (the payment's trace), read in any case;
	// empty when tracing was off.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
	// Body is the stored body passed through payment.MaskCardNumbersJSON
	// again; only `dlq show` fills it.
	Body string `json:"body,omitempty"`

	// raw is the stored body as the stream holds it (masked already by the
	// worker when Redacted): what a replay publishes. Never printed.
	raw []byte
}

// DeadLetterFilter selects dead letters. Zero fields select everything.
type DeadLetterFilter struct {
	// Reasons keeps dead letters of these reasons (subject filter on the
	// stream, so that other reasons are not even read).
	Reasons []string
	// Since keeps dead letters received at or after it (the read starts
	// there); Until keeps those received before it.
	Since, Until time.Time
	// MerchantID, PaymentID and Key (effective idempotency key) keep dead
	// letters whose body names them.
	MerchantID, PaymentID, Key string
	// ErrorContains keeps dead letters whose Paystream-Error contains it,
	// case-insensitively.
	ErrorContains string
	// OriginalSubject keeps dead letters first published on this subject.
	OriginalSubject string
	// Limit stops after this many matches; 0 means no limit.
	Limit int
}

// ForPayment returns the filter of every dead letter about a payment: its
// body's payment_id or effective idempotency key is id.
func ForPayment(id string) DeadLetterFilter { return DeadLetterFilter{PaymentID: id, Key: id} }

// Match reports whether d passes f (every criterion but Limit and Since,
// which the reader applies). PaymentID and Key given together, as
// ForPayment does, match either.
func (f DeadLetterFilter) Match(d DeadLetter) bool {
	if len(f.Reasons) > 0 && !slices.Contains(f.Reasons, d.Reason) {
		return false
	}
	if !f.Since.IsZero() && d.ReceivedAt.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !d.ReceivedAt.Before(f.Until) {
		return false
	}
	if f.MerchantID != "" && d.MerchantID != f.MerchantID {
		return false
	}
	switch {
	case f.PaymentID != "" && f.Key != "":
		if d.PaymentID != f.PaymentID && d.IdempotencyKey != f.Key {
			return false
		}
	case f.PaymentID != "":
		if d.PaymentID != f.PaymentID {
			return false
		}
	case f.Key != "":
		if d.IdempotencyKey != f.Key {
			return false
		}
	}
	if f.ErrorContains != "" && !strings.Contains(strings.ToLower(d.Error), strings.ToLower(f.ErrorContains)) {
		return false
	}
	if f.OriginalSubject != "" && d.OriginalSubject != f.OriginalSubject {
		return false
	}
	return true
}

// DeadLetters reads the dead-letter stream of a deployment.
type DeadLetters struct {
	// JS is the JetStream handle.
	JS jetstream.JetStream
	// Stream is the dead-letter stream (PAYSTREAM_DLQ_STREAM).
	Stream string
	// SubjectPrefix is PAYSTREAM_SUBJECT_PREFIX: dead letters are on
	// <prefix>.dlq.<reason>.
	SubjectPrefix string
}

// DeadLetterList is the result of DeadLetters.List.
type DeadLetterList struct {
	// Items are the matching dead letters in stream order, bodies left out.
	Items []DeadLetter `json:"items"`
	// Counts are the matches by reason.
	Counts map[string]int `json:"counts"`
	// Total is len(Items).
	Total int `json:"total"`
	// Truncated is true when Limit stopped the read before the end.
	Truncated bool `json:"truncated"`
}

// ErrDeadLetterNotFound: no dead letter has the sequence asked for.
var ErrDeadLetterNotFound = errors.New("ops: no such dead letter")

// List returns the dead letters matching f, in stream order, read with an
// ordered consumer from f.Since (or the start) up to the stream's last
// message when List began. There is no cap other than f.Limit.
func (d DeadLetters) List(ctx context.Context, f DeadLetterFilter) (DeadLetterList, error) {
	out := DeadLetterList{Items: []DeadLetter{}, Counts: map[string]int{}}
	err := d.each(ctx, f, func(dl DeadLetter) bool {
		if f.Limit > 0 && out.Total == f.Limit {
			out.Truncated = true
			return false
		}
		dl.Body = ""
		out.Items = append(out.Items, dl)
		out.Counts[dl.Reason]++
		out.Total++
		return true
	})
	return out, err
}

// matching returns the matching dead letters with their stored bodies, for
// a replay.
func (d DeadLetters) matching(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	var out []DeadLetter
	err := d.each(ctx, f, func(dl DeadLetter) bool {
		if f.Limit > 0 && len(out) == f.Limit {
			return false
		}
		out = append(out, dl)
		return true
	})
	return out, err
}

// each calls fn with every dead letter matching f until fn returns false.
func (d DeadLetters) each(ctx context.Context, f DeadLetterFilter, fn func(DeadLetter) bool) error {
	stream, err := d.JS.Stream(ctx, d.Stream)
	if err != nil {
		return fmt.Errorf("ops: dead-letter stream %s: %w", d.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("ops: dead-letter stream %s: %w", d.Stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil
	}
	occ := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if !f.Since.IsZero() {
		since := f.Since
		occ.DeliverPolicy, occ.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	for _, r := range f.Reasons {
		occ.FilterSubjects = append(occ.FilterSubjects, consumer.Config{SubjectPrefix: d.SubjectPrefix}.DLQSubject(r))
	}
	cons, err := stream.OrderedConsumer(ctx, occ)
	if err != nil {
		return fmt.Errorf("ops: read dead letters: %w", err)
	}
	for {
		// No wait: every message up to last is stored already, so an empty
		// answer means the (filtered) rest is empty.
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return fmt.Errorf("ops: read dead letters: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("ops: read dead letters: %w", err)
			}
			if md.Sequence.Stream > last {
				return nil
			}
			dl := decodeDeadLetter(m.Subject(), m.Headers(), m.Data(), md.Sequence.Stream, md.Timestamp)
			if f.Match(dl) && !fn(dl) {
				return nil
			}
			if md.Sequence.Stream == last || md.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("ops: read dead letters: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if got == 0 {
			return nil
		}
	}
}

// Get returns the dead letter at sequence seq with its masked body, or
// ErrDeadLetterNotFound.
func (d DeadLetters) Get(ctx context.Context, seq uint64) (DeadLetter, error) {
	stream, err := d.JS.Stream(ctx, d.Stream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("ops: dead-letter stream %s: %w", d.Stream, err)
	}
	m, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, fmt.Errorf("%w: seq %d", ErrDeadLetterNotFound, seq)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("ops: get dead letter %d: %w", seq, err)
	}
	return decodeDeadLetter(m.Subject, m.Header, m.Data, m.Sequence, m.Time), nil
}

// Headers returns the headers of the dead letter at seq, for `dlq show`
// (dead-letter headers hold no card data: the worker writes them from its
// own vocabulary).
func (d DeadLetters) Headers(ctx context.Context, seq uint64) (map[string][]string, error) {
	stream, err := d.JS.Stream(ctx, d.Stream)
	if err != nil {
		return nil, fmt.Errorf("ops: dead-letter stream %s: %w", d.Stream, err)
	}
	m, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: seq %d", ErrDeadLetterNotFound, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("ops: get dead letter %d: %w", seq, err)
	}
	h := map[string][]string{}
	for k, v := range m.Header {
		h[k] = v
	}
	return h, nil
}

// headerGetter is what nats.Header offers.
type headerGetter interface{ Get(string) string }

// decodeDeadLetter turns a stored message into a DeadLetter; the body is
// masked again (defence in depth) for Body, and kept as stored for a replay.
func decodeDeadLetter(subject string, h headerGetter, body []byte, seq uint64, at time.Time) DeadLetter {
	dl := DeadLetter{
		Seq:             seq,
		Subject:         subject,
		Reason:          h.Get(consumer.HeaderDLQReason),
		Error:           h.Get(consumer.HeaderDLQError),
		OriginalSubject: h.Get(consumer.HeaderOriginalSubject),
		Redacted:        h.Get(consumer.HeaderRedacted) == "true",
		Truncated:       h.Get(consumer.HeaderTruncated) == "true",
		ReceivedAt:      at.UTC(),
		Size:            len(body),
		raw:             body,
	}
	dl.TraceParent, dl.TraceState = traceHeader(h, "traceparent"), traceHeader(h, "tracestate")
	dl.OriginalSeq, _ = strconv.ParseUint(h.Get(consumer.HeaderStreamSeq), 10, 64)
	dl.Deliveries, _ = strconv.ParseUint(h.Get(consumer.HeaderDeliveries), 10, 64)
	if dl.Reason == "" {
		dl.Reason = subject[strings.LastIndexByte(subject, '.')+1:]
	}
	masked, _ := payment.MaskCardNumbersJSON(body)
	dl.Body = string(masked)
	var ids struct {
		PaymentID      any `json:"payment_id"`
		IdempotencyKey any `json:"idempotency_key"`
		MerchantID     any `json:"merchant_id"`
	}
	if json.Unmarshal(masked, &ids) == nil {
		dl.PaymentID, _ = ids.PaymentID.(string)
		dl.MerchantID, _ = ids.MerchantID.(string)
		dl.IdempotencyKey, _ = ids.IdempotencyKey.(string)
		if dl.IdempotencyKey == "" {
			dl.IdempotencyKey = dl.PaymentID
		}
	}
	return dl
}
