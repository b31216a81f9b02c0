package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/store"
)

// ActionRetention is the operator_actions action of a retention run.
const ActionRetention = "retention_run"

// RetentionRequest is an operator's retention run.
type RetentionRequest struct {
	// Periods are the retention periods by final status; a period that is
	// not positive keeps the status for ever.
	Periods map[payment.Status]time.Duration
	// Batch and Pause are PAYSTREAM_RETENTION_BATCH and _PAUSE.
	Batch int
	Pause time.Duration
	// DryRun counts what would go and deletes nothing.
	DryRun bool
	// Actor is who runs it (required), also the job lease's owner prefix.
	Actor string
	// Owner is the job lease owner; empty means "paystreamctl:<actor>".
	Owner string
}

// RetentionRunReport is the outcome of an operator's retention run.
type RetentionRunReport struct {
	processing.RetentionReport
	ActionID int64  `json:"action_id"`
	Actor    string `json:"actor"`
}

// RunRetention runs retention once as the fleet's workers do — the same
// processing.Retention, batches, pause and job lease — and writes an
// operator_actions row (dry runs included). Ran is false in the report
// when a worker held the job.
func RunRetention(ctx context.Context, st *store.Store, req RetentionRequest, logger zerolog.Logger) (RetentionRunReport, error) {
	rep := RetentionRunReport{Actor: req.Actor}
	if req.Actor == "" {
		return rep, ErrNoActor
	}
	owner := req.Owner
	if owner == "" {
		owner = "paystreamctl:" + req.Actor
	}
	r := processing.NewRetention(processing.RetentionConfig{Periods: req.Periods, Batch: req.Batch, Pause: req.Pause, Owner: owner},
		st, logger, nil)
	var err error
	rep.RetentionReport, err = r.Run(ctx, req.DryRun)
	res, _ := json.Marshal(rep.RetentionReport)
	periods := map[string]string{}
	for s, d := range req.Periods {
		periods[string(s)] = d.String()
	}
	args, _ := json.Marshal(map[string]any{"periods": periods, "batch": req.Batch, "pause": req.Pause.String()})
	actx, cancel := auditContext(ctx)
	defer cancel()
	a, aerr := st.RecordAction(actx, store.OperatorAction{
		Actor: req.Actor, Action: ActionRetention, Arguments: args, DryRun: req.DryRun, Result: res,
	})
	if err != nil {
		return rep, err
	}
	if aerr != nil {
		return rep, fmt.Errorf("ops: audit the retention run: %w", aerr)
	}
	rep.ActionID = a.ID
	return rep, nil
}
