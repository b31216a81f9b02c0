package payment

import (
	"errors"
	"time"
)

// Status is the state of a payment row (docs/contract.md §7).
type Status string

// The statuses of a payment row. StatusProcessing and StatusUnknown are not
// final.
const (
	StatusProcessing Status = "processing"
	StatusSucceeded  Status = "succeeded"
	StatusDeclined   Status = "declined"
	// StatusFailed: no money moved (a lookup confirmed it wherever an
	// attempt may have charged).
	StatusFailed Status = "failed"
	// StatusUnknown: an attempt may have charged and the gateway could not
	// be asked; the reconciler looks the charge up until it can settle the
	// row succeeded or failed (docs/contract.md §6.8). Not announced.
	StatusUnknown Status = "unknown"
)

// Final reports whether s is a final status (succeeded, declined or failed).
func (s Status) Final() bool {
	return s == StatusSucceeded || s == StatusDeclined || s == StatusFailed
}

// Error codes recorded in a row's error_code when paystream, not the gateway,
// decided the outcome.
const (
	// ErrorCodeExhausted: every allowed delivery failed, and no money moved.
	ErrorCodeExhausted = "exhausted"
	// ErrorCodeInvalid: the stored request no longer validates (a lowered
	// limit, say); settled failed by the sweeper (docs/contract.md §6.9).
	ErrorCodeInvalid = "invalid"
	// ErrorCodeRiskDenied: the risk check before the charge denied the
	// payment (PAYSTREAM_RISK_CHECKS); no charge was made. Announced, not
	// dead-lettered. An addition beyond the shared contract (issue 14).
	ErrorCodeRiskDenied = "risk_denied"
)

// Record is one row of the payments table: the state of one effective key.
type Record struct {
	IdempotencyKey  string
	PaymentID       string
	MerchantID      string
	AmountMinor     int64
	Currency        string
	Status          Status
	Attempts        int
	Gateway         string
	GatewayChargeID string
	ErrorCode       string
	CreatedAt       time.Time
	UpdatedAt       time.Time
	// CompletedAt is zero until the row is final.
	CompletedAt time.Time
	// Ambiguous reports that some attempt for the key may have charged
	// without a result (a timeout, a 5xx, a lease lost mid-call): the row is
	// recorded failed only after a lookup found no charge.
	Ambiguous bool
}

// Outcome is the outcome event v1, published on payments.results.<status>
// (docs/contract.md §4). String fields with no value are omitted from the JSON.
type Outcome struct {
	PaymentID       string    `json:"payment_id"`
	IdempotencyKey  string    `json:"idempotency_key"`
	Status          Status    `json:"status"`
	AmountMinor     int64     `json:"amount_minor"`
	Currency        string    `json:"currency"`
	Gateway         string    `json:"gateway,omitempty"`
	GatewayChargeID string    `json:"gateway_charge_id,omitempty"`
	ErrorCode       string    `json:"error_code,omitempty"`
	Attempts        int       `json:"attempts"`
	CompletedAt     time.Time `json:"completed_at"`
}

// Outcome returns the outcome event announcing the final row r.
func (r Record) Outcome() Outcome {
	return Outcome{
		PaymentID:       r.PaymentID,
		IdempotencyKey:  r.IdempotencyKey,
		Status:          r.Status,
		AmountMinor:     r.AmountMinor,
		Currency:        r.Currency,
		Gateway:         r.Gateway,
		GatewayChargeID: r.GatewayChargeID,
		ErrorCode:       r.ErrorCode,
		Attempts:        r.Attempts,
		CompletedAt:     r.CompletedAt.UTC(),
	}
}

// MsgID returns the Nats-Msg-Id of the outcome event:
// result-<effective key>-<status>.
func (o Outcome) MsgID() string {
	return "result-" + o.IdempotencyKey + "-" + string(o.Status)
}

// ClaimKind is what a claim on an effective key found (docs/contract.md §6 step 3).
type ClaimKind uint8

// The results of a claim.
const (
	// ClaimNew: the key was unknown; a row in processing was inserted with
	// attempts = 1 and a lease held by the caller.
	ClaimNew ClaimKind = iota + 1
	// ClaimTakeover: the row was processing with an expired lease, or failed;
	// attempts was incremented and the caller now holds a new lease.
	ClaimTakeover
	// ClaimDuplicate: the row is succeeded or declined — or failed, and the
	// claim comes from the very stream message that ended it (a replay, a
	// new message, takes a failed row over). ClaimResult.Record holds the
	// stored outcome to re-announce.
	ClaimDuplicate
	// ClaimInFlight: a live lease is held for a different stream message,
	// which will carry the payment to its end.
	ClaimInFlight
	// ClaimBusy: a live lease is held for this same stream message, or the
	// advisory lock was taken; retry after ClaimResult.RetryAfter.
	ClaimBusy
	// ClaimConflict: the key is stored with a different request fingerprint.
	ClaimConflict
)

var claimKindNames = [...]string{"", "new", "takeover", "duplicate", "in_flight", "busy", "conflict"}

// String returns the snake_case name of k, as used in logs and metrics.
func (k ClaimKind) String() string {
	if int(k) < len(claimKindNames) && k != 0 {
		return claimKindNames[k]
	}
	return "unknown"
}

// Holds reports whether the claimer now holds the lease (new or take-over).
func (k ClaimKind) Holds() bool { return k == ClaimNew || k == ClaimTakeover }

// Claim asks to claim an effective key for a gateway call.
type Claim struct {
	// Key is the effective idempotency key.
	Key         string
	Fingerprint string
	PaymentID   string
	MerchantID  string
	CustomerID  string
	AmountMinor int64
	Currency    string
	// Subject and Body are the original request, stored so that the sweeper
	// can re-publish a payment whose holder died.
	Subject string
	Body    []byte
	// StreamSeq is the stream sequence of the message that will hold the lease.
	StreamSeq uint64
	// Owner identifies the worker process taking the lease.
	Owner string
	// Lease is how long the lease lasts; it must exceed the gateway timeout.
	Lease time.Duration
	// Gateway is the gateway chosen for a new row (docs/contract.md §5,
	// "Several gateways"), stored on it at the claim and listed in its
	// gateways tried; a take-over keeps the row's stored gateway and sets
	// this one only where none is stored. Empty stores none.
	Gateway string
}

// ClaimResult is the answer to a Claim.
type ClaimResult struct {
	Kind ClaimKind
	// Attempt is the fence token of the lease for ClaimNew and ClaimTakeover:
	// the row's attempts after the claim. Complete and Release must present it.
	Attempt int
	// Record is the stored row for ClaimDuplicate, ClaimConflict,
	// ClaimInFlight and ClaimBusy (when the row was read).
	Record Record
	// RetryAfter is, for ClaimBusy, how long until the lease ends (or a
	// short delay when the advisory lock was taken).
	RetryAfter time.Duration
	// Request is, for ClaimTakeover, the request body stored by the first
	// claim of the key: every attempt charges it, never a later duplicate's
	// (docs/contract.md §5). Nil when none was stored.
	Request []byte
	// From is, for ClaimTakeover, the row's status before the take-over:
	// processing (a lease that ended) or failed (a replay).
	From Status
}

// Completion records the final outcome of a held lease.
type Completion struct {
	Key     string
	Attempt int
	Owner   string
	// Status is succeeded, declined or failed, or unknown when the outcome
	// could not be looked up (the row then waits for the reconciler).
	Status          Status
	Gateway         string
	GatewayChargeID string
	ErrorCode       string
	// Ambiguous marks the row ambiguous (see Record.Ambiguous) as well.
	Ambiguous bool
	// Attempts are the gateway calls made under the lease, recorded in
	// payment_attempts in the same fenced write (none when fenced out).
	Attempts []Attempt
}

// Release gives a held lease back after a retryable failure. The row stays
// leased for Hold more (the retry's delay), so that no delivery and no sweep
// calls the gateway before the retry is due (docs/contract.md §6.5); 0 lets
// the next delivery take over at once.
type Release struct {
	Key     string
	Attempt int
	Owner   string
	Hold    time.Duration
	// Ambiguous marks the row ambiguous: the released attempt may have
	// charged.
	Ambiguous bool
	// Attempts are the gateway calls made under the lease, recorded like
	// Completion.Attempts.
	Attempts []Attempt
}

// Stuck is a row left in processing whose lease expired long ago
// (docs/contract.md §6.7), with the original request to re-publish.
type Stuck struct {
	Key         string
	PaymentID   string
	MerchantID  string
	AmountMinor int64
	Currency    string
	// Attempts is the row's attempts (gateway calls claimed so far).
	Attempts int
	// Subject and Body are the original request message.
	Subject string
	Body    []byte
	// Gateway is the gateway the row is on, if stored: the one to ask
	// whether it charged.
	Gateway string
}

// ErrFenced is returned by Complete and Release when the caller's lease is no
// longer the current one: it expired and another worker took the key over,
// or the row is already final. Nothing was written.
var ErrFenced = errors.New("lease lost: key taken over or already final")
