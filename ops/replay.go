package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
	"github.com/paystream/paystream/telemetry"
)

// Plan is what replaying one dead letter would do (docs/contract.md §9).
type Plan string

// The plans of a replay. A re-announcement of a final row has no plan of
// its own: every final row was announced before it was written (the
// worker and the reconciler announce first), so no announcement can be
// missing, and a replay of a final succeeded or declined row is refused.
const (
	// PlanCharge: the worker takes the failed row over and, when an earlier
	// attempt may have charged, looks the charge up before calling the
	// gateway (docs/contract.md §6.8): at most one charge per key.
	PlanCharge Plan = "charge"
	// PlanRefuse: the dead letter is not re-published; Why says why.
	PlanRefuse Plan = "refuse"
)

// Result is what happened to one item of a replay.
type Result string

// The results of a replay's items.
const (
	ResultPlanned   Result = "planned"   // a dry run: nothing published
	ResultPublished Result = "published" // re-published on its original subject
	ResultDuplicate Result = "duplicate" // JetStream had the message id already: replayed before
	ResultRefused   Result = "refused"   // not re-published, see Why
	ResultFailed    Result = "failed"    // publishing failed, see Error
)

// ActionReplay is the operator_actions action of a replay.
const ActionReplay = "dlq_replay"

// ReplayItem is one dead letter of a replay: its plan and its result.
type ReplayItem struct {
	Seq             uint64 `json:"seq"`
	Reason          string `json:"reason"`
	PaymentID       string `json:"payment_id,omitempty"`
	IdempotencyKey  string `json:"idempotency_key,omitempty"`
	OriginalSubject string `json:"original_subject,omitempty"`
	// RowStatus is the status of the payments row of the effective key
	// when the plan was made; empty when there is none.
	RowStatus string `json:"row_status,omitempty"`
	Plan      Plan   `json:"plan"`
	// Why explains a refusal, or what a charge will do.
	Why    string `json:"why"`
	Result Result `json:"result"`
	// MsgID is the Nats-Msg-Id a replay publishes with: replay-<seq>.
	MsgID string `json:"msg_id,omitempty"`
	Error string `json:"error,omitempty"`
}

// ReplayRequest selects dead letters and says how to replay them.
type ReplayRequest struct {
	// Seqs selects dead letters by sequence; when empty, Filter does.
	Seqs   []uint64
	Filter DeadLetterFilter
	// DryRun plans and publishes nothing (the plan is still audited).
	DryRun bool
	// ChargeMissingRow plans to charge a dead letter whose key has no
	// payments row — one written while the database was unreachable, so
	// that no claim ever stored a row — instead of refusing it. The row may
	// also be missing because retention deleted it (a final row older than
	// its period that a much later duplicate met while the database was
	// down): only the operator can tell, so this is never the default.
	ChargeMissingRow bool
	// Rate is the most publishes per second; 0 means no limit.
	Rate float64
	// Actor is who replays (required): the operator_actions actor.
	Actor string
	// Progress, when set, is called after each item with how many are
	// done of how many.
	Progress func(done, total int)
}

// ReplayReport is the outcome of a replay.
type ReplayReport struct {
	// ActionID is the operator_actions row written for this replay.
	ActionID   int64        `json:"action_id"`
	Actor      string       `json:"actor"`
	DryRun     bool         `json:"dry_run"`
	Items      []ReplayItem `json:"items"`
	Charge     int          `json:"charge"` // items planned to charge
	Published  int          `json:"published"`
	Duplicates int          `json:"duplicates"`
	Refused    int          `json:"refused"`
	Failed     int          `json:"failed"`
}

// Replayer replays dead letters: it re-publishes a dead letter's original
// request on its original subject with Nats-Msg-Id replay-<seq>, after
// deciding from the payments row of its effective key whether doing so is
// safe and useful.
type Replayer struct {
	DeadLetters DeadLetters
	Store       *store.Store
	// Limits are the request limits of the deployment: a body that no
	// longer validates is refused (it would only be dead-lettered again).
	Limits payment.Limits
	// Horizon is the replay horizon (PAYSTREAM_REPLAY_HORIZON): dead
	// letters older than it are refused, because retention may have
	// deleted their rows. Zero means no horizon.
	Horizon time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Tracing, when not nil, starts a new trace per replayed dead letter,
	// linked to the payment's original trace (ops/trace.go); nil is off.
	Tracing *telemetry.Tracing
}

// ErrNoActor: a replay needs an actor for its audit row.
var ErrNoActor = errors.New("ops: an actor is required (--actor or $USER)")

// auditTimeout bounds the write of an operator_actions row.
const auditTimeout = 10 * time.Second

// auditContext is the context of an audit write: it outlives ctx (an
// interrupted action is still audited) but is bounded, so that an
// unreachable database cannot hold the command for ever.
func auditContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
}

// Replay plans the dead letters req selects and, unless req.DryRun,
// re-publishes those planned to charge. It writes one operator_actions row
// either way. The error is about the run as a whole (reading the stream,
// writing the audit row); items that were refused or failed are in the
// report.
func (r Replayer) Replay(ctx context.Context, req ReplayRequest) (ReplayReport, error) {
	rep := ReplayReport{Actor: req.Actor, DryRun: req.DryRun, Items: []ReplayItem{}}
	if req.Actor == "" {
		return rep, ErrNoActor
	}
	dls, missing, err := r.selectDeadLetters(ctx, req)
	if err != nil {
		return rep, err
	}
	items, err := r.plan(ctx, dls, req.ChargeMissingRow)
	if err != nil {
		return rep, err
	}
	for _, seq := range missing {
		items = append(items, ReplayItem{Seq: seq, Plan: PlanRefuse, Why: "no such dead letter"})
	}
	var lim *rate.Limiter
	if req.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(req.Rate), 1)
	}
	byseq := map[uint64]DeadLetter{}
	for _, d := range dls {
		byseq[d.Seq] = d
	}
	var published []int64
	for i := range items {
		it := &items[i]
		switch {
		case it.Plan == PlanRefuse:
			it.Result = ResultRefused
		case req.DryRun:
			it.Result = ResultPlanned
		default:
			if lim != nil {
				if err := lim.Wait(ctx); err != nil {
					it.Result, it.Error = ResultFailed, err.Error()
					break
				}
			}
			r.publish(ctx, byseq[it.Seq], it)
			if it.Result == ResultPublished || it.Result == ResultDuplicate {
				published = append(published, int64(it.Seq))
			}
		}
		if it.Plan == PlanCharge {
			rep.Charge++
		}
		switch it.Result {
		case ResultPublished:
			rep.Published++
		case ResultDuplicate:
			rep.Duplicates++
		case ResultRefused:
			rep.Refused++
		case ResultFailed:
			rep.Failed++
		}
		if req.Progress != nil {
			req.Progress(i+1, len(items))
		}
	}
	rep.Items = items
	args, _ := json.Marshal(replayArguments(req))
	actx, cancel := auditContext(ctx)
	defer cancel()
	a, err := r.Store.RecordAction(actx, store.OperatorAction{
		Actor: req.Actor, Action: ActionReplay, Arguments: args, DryRun: req.DryRun,
		Published: rep.Published, Duplicates: rep.Duplicates, Refused: rep.Refused, Failed: rep.Failed,
		PublishedSeqs: published,
	})
	if err != nil {
		return rep, fmt.Errorf("ops: audit the replay: %w", err)
	}
	rep.ActionID = a.ID
	return rep, nil
}

// replayArguments is the audited selection of a replay.
func replayArguments(req ReplayRequest) map[string]any {
	args := map[string]any{}
	if len(req.Seqs) > 0 {
		args["ids"] = req.Seqs
	} else {
		f := req.Filter
		if len(f.Reasons) > 0 {
			args["reasons"] = f.Reasons
		}
		if !f.Since.IsZero() {
			args["since"] = f.Since.UTC()
		}
		if !f.Until.IsZero() {
			args["until"] = f.Until.UTC()
		}
		for k, v := range map[string]string{"merchant": f.MerchantID, "payment": f.PaymentID, "key": f.Key,
			"error": f.ErrorContains, "subject": f.OriginalSubject} {
			if v != "" {
				args[k] = v
			}
		}
		if f.Limit > 0 {
			args["limit"] = f.Limit
		}
	}
	if req.Rate > 0 {
		args["rate"] = req.Rate
	}
	if req.ChargeMissingRow {
		args["charge_missing_row"] = true
	}
	return args
}

// selectDeadLetters returns the dead letters of req, and the sequences
// asked for that do not exist.
func (r Replayer) selectDeadLetters(ctx context.Context, req ReplayRequest) (dls []DeadLetter, missing []uint64, err error) {
	if len(req.Seqs) == 0 {
		dls, err = r.DeadLetters.matching(ctx, req.Filter)
		return dls, nil, err
	}
	seen := map[uint64]bool{}
	for _, seq := range req.Seqs {
		if seen[seq] {
			continue
		}
		seen[seq] = true
		d, err := r.DeadLetters.Get(ctx, seq)
		switch {
		case errors.Is(err, ErrDeadLetterNotFound):
			missing = append(missing, seq)
		case err != nil:
			return nil, nil, err
		default:
			dls = append(dls, d)
		}
	}
	return dls, missing, nil
}

// plan decides what replaying each dead letter would do.
func (r Replayer) plan(ctx context.Context, dls []DeadLetter, chargeMissing bool) ([]ReplayItem, error) {
	seqs := make([]int64, len(dls))
	for i, d := range dls {
		seqs[i] = int64(d.Seq)
	}
	replayed, err := r.Store.ReplayedSeqs(ctx, ActionReplay, seqs)
	if err != nil {
		return nil, fmt.Errorf("ops: plan the replay: %w", err)
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	items := make([]ReplayItem, 0, len(dls))
	for _, d := range dls {
		it := ReplayItem{Seq: d.Seq, Reason: d.Reason, PaymentID: d.PaymentID, IdempotencyKey: d.IdempotencyKey,
			OriginalSubject: d.OriginalSubject, Plan: PlanRefuse, MsgID: ReplayMsgID(d.Seq)}
		it.Why = r.refusal(d, replayed, now())
		if it.Why == "" {
			rec, err := r.Store.Get(ctx, d.IdempotencyKey)
			switch {
			case errors.Is(err, store.ErrNotFound) && chargeMissing:
				it.Plan, it.Why = PlanCharge, "no payments row (dead-lettered while the database was unreachable): charged as a new payment"
			case errors.Is(err, store.ErrNotFound):
				it.Why = "no payments row for the key: a replay would charge it as a new payment; " +
					"if the database was unreachable when it was dead-lettered, replay it with --charge-missing-row"
			case err != nil:
				return nil, fmt.Errorf("ops: plan the replay of %d: %w", d.Seq, err)
			default:
				it.RowStatus = string(rec.Status)
				it.Plan, it.Why = planFor(rec)
			}
		}
		items = append(items, it)
	}
	return items, nil
}

// refusal returns why d is refused whatever its row says, or "".
func (r Replayer) refusal(d DeadLetter, replayed map[int64]int64, now time.Time) string {
	switch {
	case replayed[int64(d.Seq)] != 0:
		return "already replayed (operator action " + strconv.FormatInt(replayed[int64(d.Seq)], 10) + ")"
	case d.Reason == string(payment.ReasonInvalid):
		return "invalid request: a replay would only be dead-lettered again"
	case d.Reason == string(payment.ReasonConflict):
		return "conflict: the key belongs to another request; a replay would only be dead-lettered again"
	case d.Redacted:
		return "body redacted (card numbers masked): it is no longer the original request"
	case d.Truncated:
		return "body truncated: it is no longer the original request"
	case d.OriginalSubject == "":
		return "no Paystream-Original-Subject header"
	case r.Horizon > 0 && now.Sub(d.ReceivedAt) > r.Horizon:
		return "older than the replay horizon (" + r.Horizon.String() + "): retention may have deleted its row"
	}
	if _, err := payment.Decode(d.OriginalSubject, d.raw, r.Limits); err != nil {
		return "no longer a valid request (" + err.Error() + "): a replay would only be dead-lettered again"
	}
	return ""
}

// planFor decides from the payments row of the key.
func planFor(rec payment.Record) (Plan, string) {
	switch rec.Status {
	case payment.StatusSucceeded, payment.StatusDeclined:
		return PlanRefuse, "payment is final " + string(rec.Status) + ": nothing to replay"
	case payment.StatusUnknown:
		return PlanRefuse, "payment is unknown: the reconciler is looking its charge up"
	case payment.StatusProcessing:
		return PlanRefuse, "payment is processing: a worker holds it"
	case payment.StatusFailed:
		if rec.Ambiguous {
			return PlanCharge, "failed row taken over; an earlier attempt was ambiguous, so the worker looks the charge up before charging"
		}
		return PlanCharge, "failed row taken over and charged (no earlier attempt can have charged)"
	}
	return PlanRefuse, "unexpected row status " + string(rec.Status)
}

// ReplayMsgID is the Nats-Msg-Id of the replay of dead letter seq.
func ReplayMsgID(seq uint64) string { return "replay-" + strconv.FormatUint(seq, 10) }

// publish re-publishes d's stored body on its original subject and sets
// it.Result.
func (r Replayer) publish(ctx context.Context, d DeadLetter, it *ReplayItem) {
	m := nats.NewMsg(d.OriginalSubject)
	m.Header.Set(jetstream.MsgIDHeader, it.MsgID)
	m.Header.Set("Content-Type", "application/json")
	m.Data = d.raw
	ctx, end := r.traceReplay(ctx, d, m)
	ack, err := r.DeadLetters.JS.PublishMsg(ctx, m)
	end(err)
	switch {
	case err != nil:
		it.Result, it.Error = ResultFailed, err.Error()
	case ack.Duplicate:
		it.Result, it.Why = ResultDuplicate, "already replayed: JetStream had message id "+it.MsgID
	default:
		it.Result = ResultPublished
	}
}
