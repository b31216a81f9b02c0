package chaos

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// jsStoreLimit is the JetStream file store's limit (max_file_store) in the
// disk-full scenario; the ballast stream fills what the streams leave.
const (
	jsStoreLimitMB = 64
	diskFullFor    = 12 * time.Second
	ballastStream  = "CHAOS_BALLAST"
)

func diskScenarios() []Scenario {
	return []Scenario{{
		Name: "js-disk-full", CI: true,
		Doc: fmt.Sprintf("the JetStream store fills up (max_file_store %dMB, a ballast stream takes the rest) for %s: "+
			"outcome, dead-letter and request publishes fail; then the ballast goes", jsStoreLimitMB, diskFullFor),
		NATSConfig: fmt.Sprintf("jetstream {\n  max_file_store: %dMB\n  max_memory_store: 64MB\n}\n", jsStoreLimitMB),
		fault:      fillJetStream,
	}}
}

// fillJetStream publishes 256 KiB messages to a ballast stream until the
// store refuses them, holds the store full for diskFullFor, then deletes
// the ballast.
func fillJetStream(ctx context.Context, r *infraRun) error {
	if _, err := r.js.CreateStream(ctx, jetstream.StreamConfig{Name: ballastStream, Subjects: []string{"chaos.ballast"},
		Storage: jetstream.FileStorage}); err != nil {
		return fmt.Errorf("chaos: ballast stream: %w", err)
	}
	payload := make([]byte, 256<<10)
	r.begin("fill the JetStream store (max_file_store %dMB) with a ballast stream", jsStoreLimitMB)
	var (
		n       int
		lastErr error
	)
	for n < 4*jsStoreLimitMB*2 {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := r.js.Publish(pctx, "chaos.ballast", payload)
		cancel()
		if err != nil {
			lastErr = err
			break
		}
		n++
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var apiErr *jetstream.APIError
	if !errors.As(lastErr, &apiErr) {
		r.problem("the ballast did not fill the store: %d MB stored, last error %v", n/4, lastErr)
	} else {
		r.logf("store full after %d MB of ballast: %v", n/4, lastErr)
	}
	r.figure("ballast_mb", n/4)
	sleep(ctx, diskFullFor)
	if err := r.js.DeleteStream(context.WithoutCancel(ctx), ballastStream); err != nil {
		return fmt.Errorf("chaos: delete the ballast: %w", err)
	}
	r.end("ballast deleted: the store has room again")
	return nil
}
