package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// ErrNotFound: no payment has that payment id or idempotency key.
var ErrNotFound = errors.New("payment not found")

// Story is a payment's whole story (paystreamctl payment show): its row,
// its request with card data masked, every gateway call, its leases as far
// as the calls tell them, and its dead letters. The JSON field names are
// contract (docs/contract.md §9).
type Story struct {
	IdempotencyKey  string     `json:"idempotency_key"`
	PaymentID       string     `json:"payment_id"`
	MerchantID      string     `json:"merchant_id"`
	CustomerID      string     `json:"customer_id"`
	AmountMinor     int64      `json:"amount_minor"`
	Currency        string     `json:"currency"`
	Status          string     `json:"status"`
	AttemptCount    int        `json:"attempt_count"`
	Gateway         string     `json:"gateway"`
	GatewayChargeID string     `json:"gateway_charge_id"`
	ErrorCode       string     `json:"error_code"`
	Ambiguous       bool       `json:"ambiguous"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	CompletedAt     *time.Time `json:"completed_at"`
	// Lease is the current lease (or the last one, when the row keeps it).
	Lease Lease `json:"lease"`
	// Reconcile is set on an unknown row: when the reconciler asks next
	// and how often it asked.
	Reconcile *Reconcile `json:"reconcile"`
	// SweptAt is when the sweeper last re-published the row.
	SweptAt *time.Time `json:"swept_at"`
	// Request is the stored request (kept while processing, failed or
	// unknown), card numbers masked; null once the row is final otherwise.
	Request *Request `json:"request"`
	// Attempts is every gateway call, in order.
	Attempts []Attempt `json:"attempts"`
	// Leases is one entry per lease that made a gateway call.
	Leases []LeaseRecord `json:"leases"`
	// DeadLetters are the payment's dead letters.
	DeadLetters []DeadLetterRef `json:"dead_letters"`
	// GatewaysTried are the gateways the payment was routed to, in order
	// (docs/contract.md §5, "Several gateways").
	GatewaysTried []string `json:"gateways_tried"`
}

// Lease is a row's lease: owner (empty once given back), end and the
// stream sequence of the message that holds it.
type Lease struct {
	Owner     string     `json:"owner"`
	Until     *time.Time `json:"until"`
	StreamSeq uint64     `json:"stream_seq"`
}

// Reconcile is the reconciler's schedule of an unknown row.
type Reconcile struct {
	After *time.Time `json:"after"`
	Tries int        `json:"tries"`
}

// Request is a stored request: subject and body (JSON, card numbers
// masked; a body that is not JSON is shown as a string).
type Request struct {
	Subject string          `json:"subject"`
	Body    json.RawMessage `json:"body"`
	Masked  bool            `json:"masked"`
}

// Attempt is one gateway call (a row of payment_attempts).
type Attempt struct {
	Seq        int64     `json:"seq"`
	Attempt    int       `json:"attempt"`
	Kind       string    `json:"kind"`
	WorkerID   string    `json:"worker_id"`
	StartedAt  time.Time `json:"started_at"`
	DurationMS float64   `json:"duration_ms"`
	HTTPStatus *int      `json:"http_status"`
	Class      string    `json:"class"`
	Result     string    `json:"result"`
	ErrorCode  string    `json:"error_code"`
	ChargeID   string    `json:"charge_id"`
	// Gateway is the gateway called; "" for calls recorded before it was.
	Gateway string `json:"gateway"`
}

// LeaseRecord is what the gateway calls tell of one lease: its fence token
// (the row's attempts), its holder and when its first and last calls
// started.
type LeaseRecord struct {
	Attempt   int       `json:"attempt"`
	WorkerID  string    `json:"worker_id"`
	FirstCall time.Time `json:"first_call"`
	LastCall  time.Time `json:"last_call"`
	Calls     int       `json:"calls"`
}

// DeadLetterRef is a dead letter of a payment, as payment show lists it.
type DeadLetterRef struct {
	StreamSeq  uint64    `json:"stream_seq"`
	Subject    string    `json:"subject"`
	Reason     string    `json:"reason"`
	Error      string    `json:"error"`
	Time       time.Time `json:"time"`
	Deliveries string    `json:"deliveries"`
}

// DeadLettersFunc returns the dead letters of the payment with paymentID
// or effective key key.
type DeadLettersFunc func(ctx context.Context, paymentID, key string) ([]DeadLetterRef, error)

// ShowPayment returns the stories of the payment whose idempotency key or
// payment id is idOrKey (several when keys share a payment id), or an error
// wrapping ErrNotFound. deadLetters may be nil (no dead letters looked up).
func ShowPayment(ctx context.Context, st *store.Store, deadLetters DeadLettersFunc, idOrKey string) ([]Story, error) {
	rows, err := st.FindPayments(ctx, idOrKey)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%q: %w", idOrKey, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	out := make([]Story, 0, len(rows))
	for _, d := range rows {
		s := story(d)
		calls, err := st.Attempts(ctx, d.IdempotencyKey)
		if err != nil {
			return nil, err
		}
		s.Attempts, s.Leases = attempts(calls)
		if deadLetters != nil {
			dls, err := deadLetters(ctx, d.PaymentID, d.IdempotencyKey)
			if err != nil {
				return nil, fmt.Errorf("dead letters of %s: %w", d.PaymentID, err)
			}
			s.DeadLetters = append(s.DeadLetters, dls...)
		}
		out = append(out, s)
	}
	return out, nil
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func story(d store.Detail) Story {
	s := Story{
		IdempotencyKey: d.IdempotencyKey, PaymentID: d.PaymentID, MerchantID: d.MerchantID,
		CustomerID: d.CustomerID, AmountMinor: d.AmountMinor, Currency: d.Currency,
		Status: string(d.Status), AttemptCount: d.Attempts, Gateway: d.Gateway,
		GatewayChargeID: d.GatewayChargeID, ErrorCode: d.ErrorCode, Ambiguous: d.Ambiguous,
		CreatedAt: d.CreatedAt.UTC(), UpdatedAt: d.UpdatedAt.UTC(), CompletedAt: timePtr(d.CompletedAt),
		Lease:    Lease{Owner: d.LeaseOwner, Until: timePtr(d.LeaseUntil), StreamSeq: d.LeaseStreamSeq},
		SweptAt:  timePtr(d.SweptAt),
		Attempts: []Attempt{}, Leases: []LeaseRecord{}, DeadLetters: []DeadLetterRef{},
	}
	s.GatewaysTried = append([]string{}, d.GatewaysTried...)
	if d.Status == payment.StatusUnknown || !d.ReconcileAfter.IsZero() {
		s.Reconcile = &Reconcile{After: timePtr(d.ReconcileAfter), Tries: d.ReconcileTries}
	}
	if d.RequestBody != nil {
		s.Request = maskedRequest(d.RequestSubject, d.RequestBody)
	}
	return s
}

// maskedRequest masks every card number of body, in whatever encoding.
func maskedRequest(subject string, body []byte) *Request {
	masked, changed := payment.MaskCardNumbersJSON(body)
	r := &Request{Subject: subject, Masked: changed}
	if json.Valid(masked) {
		r.Body = json.RawMessage(masked)
	} else {
		plain, c2 := payment.MaskCardNumbers(masked)
		r.Masked = r.Masked || c2
		b, _ := json.Marshal(string(plain))
		r.Body = b
	}
	return r
}

func attempts(calls []store.AttemptRecord) ([]Attempt, []LeaseRecord) {
	out := make([]Attempt, 0, len(calls))
	byLease := map[int]*LeaseRecord{}
	for _, c := range calls {
		a := Attempt{Seq: c.Seq, Attempt: c.LeaseAttempt, Kind: string(c.Kind), WorkerID: c.WorkerID,
			StartedAt: c.StartedAt.UTC(), DurationMS: float64(c.Duration.Microseconds()) / 1000,
			Class: c.Class, Result: c.Result, ErrorCode: c.ErrorCode, ChargeID: c.ChargeID, Gateway: c.Gateway}
		if c.HTTPStatus != 0 {
			h := c.HTTPStatus
			a.HTTPStatus = &h
		}
		out = append(out, a)
		l := byLease[c.LeaseAttempt]
		if l == nil {
			l = &LeaseRecord{Attempt: c.LeaseAttempt, WorkerID: c.WorkerID, FirstCall: a.StartedAt}
			byLease[c.LeaseAttempt] = l
		}
		l.LastCall, l.Calls = a.StartedAt, l.Calls+1
	}
	leases := make([]LeaseRecord, 0, len(byLease))
	for _, l := range byLease {
		leases = append(leases, *l)
	}
	sort.Slice(leases, func(i, j int) bool { return leases[i].Attempt < leases[j].Attempt })
	return out, leases
}
