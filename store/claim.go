package store

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/paystream/paystream/payment"
)

// CompleteResult is the outcome of one item of CompleteBatch.
type CompleteResult struct {
	// Record is the final row written; zero when Err is set.
	Record payment.Record
	// Err is nil or payment.ErrFenced.
	Err error
}

const claimSQL = `
SELECT o_ord, o_kind, o_retry_after_us, o_request_body, o_prior_status,
       o_idempotency_key, o_payment_id, o_merchant_id, o_amount_minor, o_currency,
       o_status, o_attempts, o_gateway, o_gateway_charge_id, o_error_code,
       o_created_at, o_updated_at, o_completed_at, o_ambiguous
FROM paystream_claim($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`

const completeSQL = `
SELECT o_ord, o_fenced,
       o_idempotency_key, o_payment_id, o_merchant_id, o_amount_minor, o_currency,
       o_status, o_attempts, o_gateway, o_gateway_charge_id, o_error_code,
       o_created_at, o_updated_at, o_completed_at, o_ambiguous
FROM paystream_complete($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`

const releaseSQL = `SELECT o_ord, o_fenced FROM paystream_release($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`

var claimKinds = map[string]payment.ClaimKind{
	"new":       payment.ClaimNew,
	"takeover":  payment.ClaimTakeover,
	"duplicate": payment.ClaimDuplicate,
	"in_flight": payment.ClaimInFlight,
	"busy":      payment.ClaimBusy,
	"conflict":  payment.ClaimConflict,
}

// Claim claims c.Key for a gateway call, in one short transaction guarded by
// the key's advisory lock (docs/contract.md §6 step 3); see payment.ClaimKind for
// the possible results. All lease times use the database clock. Errors are
// database failures (possibly wrapping ErrRetryable) or ErrInvalidArgument;
// every business outcome, busy included, is a ClaimResult. It gives up
// after half the claim's lease (at least MinClaimTimeout), or at ctx's
// deadline if earlier.
func (s *Store) Claim(ctx context.Context, c payment.Claim) (payment.ClaimResult, error) {
	ctx, cancel := context.WithTimeout(ctx, claimBound(c))
	defer cancel()
	res, err := s.ClaimBatch(ctx, []payment.Claim{c})
	if err != nil {
		return payment.ClaimResult{}, err
	}
	return res[0], nil
}

// ClaimBatch claims many keys in one round trip and one transaction, with
// the semantics of Claim for each. Items are processed in byte order of the
// key (so that concurrent batches cannot deadlock), and a key may appear
// more than once: a later item sees what an earlier one wrote. Results are
// in input order. An error means the whole statement failed and nothing was
// written.
func (s *Store) ClaimBatch(ctx context.Context, cs []payment.Claim) ([]payment.ClaimResult, error) {
	if len(cs) == 0 {
		return nil, nil
	}
	n := len(cs)
	var (
		keys      = make(textArray, n)
		fps       = make(textArray, n)
		payIDs    = make(textArray, n)
		merchants = make(textArray, n)
		customers = make(textArray, n)
		amounts   = make(int8Array, n)
		curs      = make(textArray, n)
		subjects  = make(textArray, n)
		bodies    = make([][]byte, n)
		seqs      = make(int8Array, n)
		owners    = make(textArray, n)
		leases    = make(int8Array, n)
		gateways  = make(textArray, n)
	)
	for i, c := range cs {
		if err := validateClaim(c); err != nil {
			return nil, err
		}
		keys[i], fps[i], payIDs[i], merchants[i] = c.Key, c.Fingerprint, c.PaymentID, c.MerchantID
		customers[i], amounts[i], curs[i], subjects[i] = c.CustomerID, c.AmountMinor, c.Currency, c.Subject
		bodies[i] = c.Body
		if bodies[i] == nil {
			bodies[i] = []byte{}
		}
		seqs[i], owners[i], leases[i] = int64(c.StreamSeq), c.Owner, c.Lease.Microseconds()
		gateways[i] = c.Gateway
	}

	rows, err := s.pool.Query(ctx, claimSQL, keys, fps, payIDs, merchants, customers, amounts,
		curs, subjects, bodies, seqs, owners, leases, DefaultBusyRetryAfter.Microseconds(), gateways)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", describeClaims(cs), translate(err))
	}
	defer rows.Close()

	out := make([]payment.ClaimResult, n)
	seen := make([]bool, n)
	// One set of scan targets for all rows (see recordScan.dest).
	var (
		ord     int32
		kind    string
		retryUs pgtype.Int8
		request []byte
		prior   pgtype.Text
		rs      recordScan
	)
	dest := append([]any{&ord, &kind, &retryUs, &request, &prior}, rs.dest()...)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("store: %s: scan: %w", describeClaims(cs), translate(err))
		}
		i := int(ord) - 1
		k, ok := claimKinds[kind]
		if i < 0 || i >= n || seen[i] || !ok {
			return nil, fmt.Errorf("store: %s: unexpected result row (ord %d, kind %q)", describeClaims(cs), ord, kind)
		}
		seen[i] = true
		res := payment.ClaimResult{Kind: k, RetryAfter: time.Duration(retryUs.Int64) * time.Microsecond}
		if k == payment.ClaimTakeover {
			res.From = payment.Status(prior.String)
			if len(request) > 0 {
				res.Request = request
			}
		}
		if rs.present() {
			res.Record = rs.record()
		}
		if k.Holds() {
			res.Attempt = res.Record.Attempts
		}
		out[i] = res
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: %w", describeClaims(cs), translate(err))
	}
	for i, ok := range seen {
		if !ok {
			return nil, fmt.Errorf("store: %s: no result for key %q", describeClaims(cs), cs[i].Key)
		}
	}
	return out, nil
}

// claimBound is how long a claim may take: half its lease (it would be
// half gone), but at least MinClaimTimeout, so that a short lease (a test's,
// a tool's) does not fail claims on a database that is merely busy; a
// claim whose lease ran out meanwhile is fenced like any other.
func claimBound(c payment.Claim) time.Duration {
	return max(c.Lease/2, MinClaimTimeout)
}

func validateClaim(c payment.Claim) error {
	var problem string
	switch {
	case c.Key == "":
		problem = "empty key"
	case c.Fingerprint == "":
		problem = "empty fingerprint"
	case c.Owner == "":
		problem = "empty owner"
	case c.Lease < time.Microsecond:
		problem = fmt.Sprintf("lease %s is not positive", c.Lease)
	case c.StreamSeq > math.MaxInt64:
		problem = fmt.Sprintf("stream sequence %d out of range", c.StreamSeq)
	default:
		return nil
	}
	return fmt.Errorf("store: claim key %q: %s: %w", c.Key, problem, ErrInvalidArgument)
}

func describeClaims(cs []payment.Claim) string {
	if len(cs) == 1 {
		return fmt.Sprintf("claim key %q", cs[0].Key)
	}
	return fmt.Sprintf("claim batch of %d (first key %q)", len(cs), cs[0].Key)
}

// Complete records the final outcome of the lease (c.Key, c.Attempt,
// c.Owner) and returns the final row. The write is fenced: it happens only
// if the row is still processing under that very lease (expired or not, as
// long as nobody took it over). Otherwise nothing is written and the error
// is payment.ErrFenced. c.Status must be final, or unknown (the row then
// keeps no lease and waits for the reconciler; completed_at stays NULL);
// empty Gateway, GatewayChargeID and ErrorCode are stored as NULL. The
// request of a failed or unknown row is kept, for a replay or a
// reconciliation. It gives up after CompleteTimeout, or at ctx's deadline
// if earlier.
func (s *Store) Complete(ctx context.Context, c payment.Completion) (payment.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, CompleteTimeout)
	defer cancel()
	res, err := s.CompleteBatch(ctx, []payment.Completion{c})
	if err != nil {
		return payment.Record{}, err
	}
	if res[0].Err != nil {
		return payment.Record{}, fmt.Errorf("store: complete key %q attempt %d: %w", c.Key, c.Attempt, res[0].Err)
	}
	return res[0].Record, nil
}

// CompleteBatch is Complete for many leases in one round trip and one
// transaction. Results are in input order; a fenced item is a result
// (Err = payment.ErrFenced), not a batch error. An error means the whole
// statement failed and nothing was written.
func (s *Store) CompleteBatch(ctx context.Context, cs []payment.Completion) ([]CompleteResult, error) {
	if len(cs) == 0 {
		return nil, nil
	}
	n := len(cs)
	var (
		keys     = make(textArray, n)
		attempts = make([]int32, n)
		owners   = make(textArray, n)
		statuses = make(textArray, n)
		gateways = make(textArray, n)
		charges  = make(textArray, n)
		codes    = make(textArray, n)
		ambig    = make([]bool, n)
	)
	for i, c := range cs {
		if err := validateFence("complete", c.Key, c.Attempt, c.Owner); err != nil {
			return nil, err
		}
		if err := validateAttempts("complete", c.Key, c.Attempts); err != nil {
			return nil, err
		}
		if !c.Status.Final() && c.Status != payment.StatusUnknown {
			return nil, fmt.Errorf("store: complete key %q: status %q is neither final nor unknown: %w", c.Key, c.Status, ErrInvalidArgument)
		}
		keys[i], attempts[i], owners[i], statuses[i] = c.Key, int32(c.Attempt), c.Owner, string(c.Status)
		gateways[i], charges[i], codes[i], ambig[i] = c.Gateway, c.GatewayChargeID, c.ErrorCode, c.Ambiguous
	}

	var calls attemptArrays
	for i, c := range cs {
		calls.add(i, c.Attempts)
	}
	rows, err := s.pool.Query(ctx, completeSQL, append([]any{keys, attempts, owners, statuses, gateways, charges, codes, ambig},
		calls.args()...)...)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", describeFenced("complete", keys), translate(err))
	}
	defer rows.Close()

	out := make([]CompleteResult, n)
	seen := make([]bool, n)
	// One set of scan targets for all rows (see recordScan.dest).
	var (
		ord    int32
		fenced bool
		rs     recordScan
	)
	dest := append([]any{&ord, &fenced}, rs.dest()...)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("store: %s: scan: %w", describeFenced("complete", keys), translate(err))
		}
		i := int(ord) - 1
		if i < 0 || i >= n || seen[i] {
			return nil, fmt.Errorf("store: %s: unexpected result row (ord %d)", describeFenced("complete", keys), ord)
		}
		seen[i] = true
		if fenced {
			out[i].Err = payment.ErrFenced
		} else {
			out[i].Record = rs.record()
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: %w", describeFenced("complete", keys), translate(err))
	}
	if err := checkSeen(seen, keys, "complete"); err != nil {
		return nil, err
	}
	return out, nil
}

// Release gives the lease (r.Key, r.Attempt, r.Owner) back after a
// retryable failure. The row stays leased for r.Hold more, until the retry is
// due, so that no other delivery and no sweep calls the gateway earlier (a
// redelivery of the same message before then is busy); with Hold 0 the next
// delivery takes the key over at once. attempts is kept; r.Ambiguous marks
// the row ambiguous. Fenced like Complete: payment.ErrFenced when the lease
// is no longer the current one. It gives up after ReleaseTimeout, or at
// ctx's deadline if earlier.
func (s *Store) Release(ctx context.Context, r payment.Release) error {
	ctx, cancel := context.WithTimeout(ctx, ReleaseTimeout)
	defer cancel()
	res, err := s.ReleaseBatch(ctx, []payment.Release{r})
	if err != nil {
		return err
	}
	if res[0] != nil {
		return fmt.Errorf("store: release key %q attempt %d: %w", r.Key, r.Attempt, res[0])
	}
	return nil
}

// ReleaseBatch is Release for many leases in one round trip and one
// transaction. The per-item results are in input order, each nil or
// payment.ErrFenced. An error means the whole statement failed.
func (s *Store) ReleaseBatch(ctx context.Context, rs []payment.Release) ([]error, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	n := len(rs)
	keys := make(textArray, n)
	attempts := make([]int32, n)
	owners := make(textArray, n)
	holds := make(int8Array, n)
	ambig := make([]bool, n)
	for i, r := range rs {
		if err := validateFence("release", r.Key, r.Attempt, r.Owner); err != nil {
			return nil, err
		}
		if err := validateAttempts("release", r.Key, r.Attempts); err != nil {
			return nil, err
		}
		keys[i], attempts[i], owners[i] = r.Key, int32(r.Attempt), r.Owner
		holds[i], ambig[i] = max(r.Hold, 0).Microseconds(), r.Ambiguous
	}
	var calls attemptArrays
	for i, r := range rs {
		calls.add(i, r.Attempts)
	}
	rows, err := s.pool.Query(ctx, releaseSQL, append([]any{keys, attempts, owners, holds, ambig}, calls.args()...)...)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", describeFenced("release", keys), translate(err))
	}
	defer rows.Close()
	out := make([]error, n)
	seen := make([]bool, n)
	for rows.Next() {
		var (
			ord    int32
			fenced bool
		)
		if err := rows.Scan(&ord, &fenced); err != nil {
			return nil, fmt.Errorf("store: %s: scan: %w", describeFenced("release", keys), translate(err))
		}
		i := int(ord) - 1
		if i < 0 || i >= n || seen[i] {
			return nil, fmt.Errorf("store: %s: unexpected result row (ord %d)", describeFenced("release", keys), ord)
		}
		seen[i] = true
		if fenced {
			out[i] = payment.ErrFenced
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: %w", describeFenced("release", keys), translate(err))
	}
	if err := checkSeen(seen, keys, "release"); err != nil {
		return nil, err
	}
	return out, nil
}

func validateFence(op, key string, attempt int, owner string) error {
	var problem string
	switch {
	case key == "":
		problem = "empty key"
	case owner == "":
		problem = "empty owner"
	case attempt < 1 || attempt > math.MaxInt32:
		problem = fmt.Sprintf("attempt %d out of range", attempt)
	default:
		return nil
	}
	return fmt.Errorf("store: %s key %q: %s: %w", op, key, problem, ErrInvalidArgument)
}

func validateAttempts(op, key string, calls []payment.Attempt) error {
	for i, c := range calls {
		if (c.Kind != payment.AttemptCharge && c.Kind != payment.AttemptLookup) || c.Class == "" || c.StartedAt.IsZero() {
			return fmt.Errorf("store: %s key %q: gateway call %d: kind %q, class %q, start %v: %w",
				op, key, i+1, c.Kind, c.Class, c.StartedAt, ErrInvalidArgument)
		}
	}
	return nil
}

func describeFenced(op string, keys []string) string {
	if len(keys) == 1 {
		return fmt.Sprintf("%s key %q", op, keys[0])
	}
	return fmt.Sprintf("%s batch of %d (first key %q)", op, len(keys), keys[0])
}

func checkSeen(seen []bool, keys []string, op string) error {
	for i, ok := range seen {
		if !ok {
			return fmt.Errorf("store: %s: no result for key %q", describeFenced(op, keys), keys[i])
		}
	}
	return nil
}

// attemptArrays are the gateway calls of a batch, flattened into the
// parallel arrays that paystream_complete and paystream_release take: ords
// holds the 1-based item each call belongs to.
type attemptArrays struct {
	ords      []int32
	kinds     textArray
	started   timeArray
	durations int8Array
	http      []int32
	classes   textArray
	results   textArray
	codes     textArray
	chargeIDs textArray
	gateways  textArray
}

func (a *attemptArrays) add(item int, calls []payment.Attempt) {
	for _, c := range calls {
		a.ords = append(a.ords, int32(item+1))
		a.kinds = append(a.kinds, string(c.Kind))
		a.started = append(a.started, c.StartedAt)
		a.durations = append(a.durations, c.Duration.Microseconds())
		a.http = append(a.http, int32(c.HTTPStatus))
		a.classes = append(a.classes, c.Class)
		a.results = append(a.results, c.Result)
		a.codes = append(a.codes, c.ErrorCode)
		a.chargeIDs = append(a.chargeIDs, c.ChargeID)
		a.gateways = append(a.gateways, c.Gateway)
	}
}

// args returns the arrays in parameter order; empty arrays, never NULL.
func (a *attemptArrays) args() []any {
	if a.ords == nil {
		return []any{[]int32{}, textArray{}, timeArray{}, int8Array{}, []int32{}, textArray{}, textArray{}, textArray{}, textArray{}, textArray{}}
	}
	return []any{a.ords, a.kinds, a.started, a.durations, a.http, a.classes, a.results, a.codes, a.chargeIDs, a.gateways}
}
