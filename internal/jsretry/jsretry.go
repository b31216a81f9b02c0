// Package jsretry holds the retry helpers that the publish package and its
// outbox relay share: the jitter of their backoff and the test for a
// publish the stream refuses.
package jsretry

import (
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Jitter returns d ± 20%, and 0 for d <= 0.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - d/5 + rand.N(2*d/5+1) //nolint:gosec // jitter needs no crypto
}

// Unavailable reports whether err is JetStream's answer that it cannot
// store the message now (an APIError with code 503), which a retry may cure.
func Unavailable(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code == 503
}

// Refused reports whether err is JetStream's refusal of the message itself
// (an APIError other than 503: wrong stream, too large, ...), which no
// retry cures.
func Refused(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code != 503
}
