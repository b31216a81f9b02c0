package store

import "context"

// SweeperLockID exposes the sweeper's advisory lock id to the tests.
const SweeperLockID = sweeperLockID

// ClaimsReceived reports how many claims the batcher's collector has taken
// from callers so far.
func (b *Batcher) ClaimsReceived() int64 { return b.claims.received.Load() }

// Sent reports how many statements the batcher's claim and completion lanes
// have sent so far, and how many requests they carried.
func (b *Batcher) Sent() (statements, rows int64) {
	return b.claims.statements.Load() + b.completes.statements.Load(),
		b.claims.rows.Load() + b.completes.rows.Load()
}

// SetClaimHook makes the batcher call hook before each claim statement with
// the number of claims it carries; an error from hook fails the statement.
// Call it before Run.
func (b *Batcher) SetClaimHook(hook func(ctx context.Context, n int) error) {
	b.claims.beforeExec = hook
}

// SetCompleteHook is SetClaimHook for the completion statements.
func (b *Batcher) SetCompleteHook(hook func(ctx context.Context, n int) error) {
	b.completes.beforeExec = hook
}
