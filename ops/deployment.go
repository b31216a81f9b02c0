package ops

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/store"
)

// Deployment is one paystream deployment as an operator's face (the web
// console) reaches it: every query and action of this package bound to
// one store and one JetStream handle, so that the face needs neither. Its
// methods are safe for concurrent use when the store and handle are.
type Deployment struct {
	Store *store.Store
	JS    jetstream.JetStream
	// Overview is the configuration of the overview (streams, bucket,
	// thresholds, chart window).
	OverviewConfig OverviewConfig
	// Replayer replays dead letters; its DeadLetters reads them.
	Replayer Replayer
}

// Overview returns the fleet's overview.
func (d *Deployment) Overview(ctx context.Context) (OverviewReport, error) {
	return Overview(ctx, d.Store, d.JS, d.OverviewConfig)
}

// SearchPayments returns a page of payments matching q and their count.
func (d *Deployment) SearchPayments(ctx context.Context, q SearchQuery) (SearchResult, error) {
	return SearchPayments(ctx, d.Store, q)
}

// ShowPayment returns the stories of the payment with id or key idOrKey,
// dead letters included (an error wrapping ErrNotFound when none).
func (d *Deployment) ShowPayment(ctx context.Context, idOrKey string) ([]Story, error) {
	return ShowPayment(ctx, d.Store, d.Replayer.DeadLetters.ForStory(), idOrKey)
}

// DeadLetterList returns the dead letters matching f.
func (d *Deployment) DeadLetterList(ctx context.Context, f DeadLetterFilter) (DeadLetterList, error) {
	return d.Replayer.DeadLetters.List(ctx, f)
}

// DeadLetter returns the dead letter at seq (body masked) and its headers,
// or an error wrapping ErrDeadLetterNotFound.
func (d *Deployment) DeadLetter(ctx context.Context, seq uint64) (DeadLetter, map[string][]string, error) {
	dl, err := d.Replayer.DeadLetters.Get(ctx, seq)
	if err != nil {
		return DeadLetter{}, nil, err
	}
	h, err := d.Replayer.DeadLetters.Headers(ctx, seq)
	return dl, h, err
}

// Replay plans and (unless req.DryRun) runs a replay; see Replayer.Replay.
func (d *Deployment) Replay(ctx context.Context, req ReplayRequest) (ReplayReport, error) {
	return d.Replayer.Replay(ctx, req)
}

// Audit returns a page of operator actions.
func (d *Deployment) Audit(ctx context.Context, q AuditQuery) (AuditPage, error) {
	return Audit(ctx, d.Store, q)
}
