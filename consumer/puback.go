package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// store publishes m to JetStream and waits, for up to timeout, until the
// server has stored it. It makes the request that jetstream.PublishMsg
// makes, with two savings on the hot path:
//   - the wait is bounded by nats.go's pooled timers (RequestMsg with a
//     timeout), not by a context.WithTimeout of its own with a timer and a
//     Done channel per publish; publish never cancels an attempt early
//     anyway (a stop lets the attempt under way finish);
//   - the PubAck of a stored message is recognised without encoding/json,
//     which decoded every PubAck with reflection (4 % of the worker's CPU
//     in the bench).
//
// Anything but a stored message's PubAck (an error, an unexpected shape)
// is decoded as jetstream.PublishMsg decodes it and gives the same errors:
// an *jetstream.APIError, jetstream.ErrInvalidJSAck, or
// jetstream.ErrNoStreamResponse when no stream listens on the subject; a
// PubAck that does not come in time gives nats.ErrTimeout. Like PublishMsg
// it asks again, twice at most and 250 ms apart, when no stream listens
// (a stream leader being elected), so that a short election is not a
// failed attempt; ctx ending cuts those waits short. Without a connection
// (a JetStream fake) it calls PublishMsg.
func (c *Consumer) store(ctx context.Context, m *nats.Msg, timeout time.Duration) error {
	if c.nc == nil {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		_, err := c.js.PublishMsg(pctx, m)
		return err
	}
	for retry := 0; ; retry++ {
		resp, err := c.nc.RequestMsg(m, timeout)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			if retry < jetstream.DefaultPubRetryAttempts && sleep(ctx, jetstream.DefaultPubRetryWait) {
				continue
			}
			return jetstream.ErrNoStreamResponse
		case err != nil:
			return err
		}
		return pubAckError(resp.Data)
	}
}

// storedPrefix starts the PubAck of a stored message as nats-server writes
// it: {"stream":"NAME","seq":N} with, at times, a domain or
// "duplicate":true after it. An error response starts with "error".
var storedPrefix = []byte(`{"stream":"`)

// pubAckError reports whether a PubAck says the message was stored: nil
// when it was, otherwise the error jetstream.PublishMsg gives for it. Only
// a response that starts as a stored one and holds no "error" key is taken
// without decoding (and only with a stream name); a stream named "error"
// merely takes the slow path.
func pubAckError(data []byte) error {
	if bytes.HasPrefix(data, storedPrefix) && len(data) > len(storedPrefix) && data[len(storedPrefix)] != '"' &&
		!bytes.Contains(data, []byte(`"error"`)) {
		return nil
	}
	var r struct {
		Error  *jetstream.APIError `json:"error"`
		Stream string              `json:"stream"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return jetstream.ErrInvalidJSAck
	}
	if r.Error != nil {
		return fmt.Errorf("nats: %w", r.Error)
	}
	if r.Stream == "" {
		return jetstream.ErrInvalidJSAck
	}
	return nil
}
