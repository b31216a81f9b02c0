package consumer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/payment"
)

// TestPoisonInputIsInvalidOnFirstDelivery sends inputs that break the strict
// rules of docs/contract.md §2 — control characters, a subject of four
// tokens, card numbers written with JSON escapes — through a worker on real
// NATS and Postgres. Each must be dead-lettered invalid on its first
// delivery, before any row or gateway call, whatever Postgres would have
// said; its dead letter must hold no card number once JSON-decoded, and
// neither may the worker's logs.
func TestPoisonInputIsInvalidOnFirstDelivery(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	gw := &countingGateway{Gateway: gateway.NewFake(gateway.FakeConfig{Seed: 1})}
	// Five deliveries: a poison message that is retried instead ends as
	// exhausted, or as a payment, and the test says which.
	s := newStack(t, stackOptions{gw: gw, maxDeliver: 5, logs: &logs})

	const subject = "payments.requests.m001"
	const escapedVisa = `\u0034\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031`
	body := func(members string) []byte {
		return []byte(`{"payment_id":"p1","merchant_id":"m001","amount_minor":100,"currency":"USD",` + members + `}`)
	}
	method := `"payment_method":"pm_card_visa"`
	// longRun is an oversize body with a run of 25 digits across byte 4096,
	// where the dead letter is cut: no card number in the whole body, but
	// the 16 digits before the cut pass the Luhn check.
	longRun := func() []byte {
		// (Its payment id is its own already, so the cut stays at the run.)
		prefix := strings.Replace(string(body(method+`,"description":"`)), `"p1"`, `"p_cut"`, 1)
		pad := strings.Repeat("d", 4096-16-len(prefix))
		b := []byte(prefix + pad + "4111111111111111" + "000000000" + strings.Repeat("d", 62000) + `"}`)
		require.False(t, payment.ContainsCardNumber(string(b)))
		require.True(t, payment.ContainsCardNumber(string(b[:4096])))
		return b
	}

	cases := []struct {
		name, subject string
		body          []byte
		card          bool // a card number to mask
		cut           bool // an oversize body, cut in the dead letter
	}{
		{name: "NUL in customer_id", body: body(method + `,"customer_id":"c\u0000"`)},
		{name: "unit separator in customer_id", body: body(method + `,"customer_id":"c\u001f"`)},
		{name: "control character in merchant_id", body: []byte(`{"payment_id":"p1","merchant_id":"m001\u0001","amount_minor":100,` +
			`"currency":"USD","payment_method":"pm_card_visa"}`)},
		{name: "escape character in description", body: body(method + `,"description":"\u001b[2J"`)},
		{name: "carriage return in a metadata value", body: body(method + `,"metadata":{"k":"a\rb"}`)},
		{name: "tab in payment_method", body: body(`"payment_method":"pm_card\tvisa"`)},
		{name: "four-token subject", subject: "payments.requests.m002.m001", body: body(method)},
		{name: "requests twice in the subject", subject: "payments.requests.requests.m001", body: body(method)},
		{name: "escaped card in description", body: body(method + `,"description":"card ` + escapedVisa + `"`), card: true},
		{name: "card split by escapes in payment_method", body: body(`"payment_method":"4111\u00201111\u00201111\u00201111"`), card: true},
		{name: "card with escaped digits in a metadata value", body: body(method + `,"metadata":{"n":"41\u00311111111111111"}`), card: true},
		// Decoded, the description holds 17 digits and no card number: the
		// amount makes the request invalid, and the digits in clear are
		// masked all the same.
		{name: "card in clear before an escaped digit", body: []byte(`{"payment_id":"p1","merchant_id":"m001","amount_minor":0,` +
			`"currency":"USD","payment_method":"pm_card_visa","description":"4111111111111111\u0030"}`), card: true},
		{name: "card as the amount", body: []byte(`{"payment_id":"p1","merchant_id":"m001","amount_minor":4111111111111111,` +
			`"currency":"USD","payment_method":"pm_card_visa"}`), card: true},
		{name: "digits made a card by the cut", body: longRun(), card: true, cut: true},
	}
	bySeq := map[string]int{}
	for i := range cases {
		tc := &cases[i]
		if tc.subject == "" {
			tc.subject = subject
		}
		// A payment id of its own, so that a poison message taken as valid
		// makes a row of its own.
		tc.body = bytes.Replace(tc.body, []byte(`"payment_id":"p1"`), []byte(`"payment_id":"p`+strconv.Itoa(i)+`"`), 1)
		m := nats.NewMsg(tc.subject)
		m.Data = tc.body
		m.Header.Set(nats.MsgIdHdr, "poison-"+strconv.Itoa(i))
		ack, err := s.js.PublishMsg(context.Background(), m)
		require.NoError(t, err)
		bySeq[strconv.FormatUint(ack.Sequence, 10)] = i
	}
	// A valid request with tab and newline in its description, where they
	// are allowed: paid as usual.
	ok := request(1, 2500)
	ok.Description = "line one\n\tline two"
	s.publishRequest(ok, "valid")

	s.startWorker("w1")
	s.waitSettled(60 * time.Second)

	assert.Equal(t, len(cases), s.streamCount("PAYMENTS_DLQ"), "one dead letter per poison message")
	seen := map[int]bool{}
	for _, dl := range s.streamMsgs("PAYMENTS_DLQ") {
		i, found := bySeq[dl.Header.Get(consumer.HeaderStreamSeq)]
		require.True(t, found, "dead letter of stream message %s", dl.Header.Get(consumer.HeaderStreamSeq))
		tc := cases[i]
		seen[i] = true
		t.Run(tc.name, func(t *testing.T) { // not parallel: dl and tc change
			require.Equal(t, "payments.dlq.invalid", dl.Subject, "reason, after %s: %s",
				dl.Header.Get(consumer.HeaderDeliveries), dl.Header.Get(consumer.HeaderDLQError))
			require.Equal(t, "invalid", dl.Header.Get(consumer.HeaderDLQReason))
			require.Equal(t, "1", dl.Header.Get(consumer.HeaderDeliveries), "dead-lettered on the first delivery")
			require.Contains(t, dl.Header.Get(consumer.HeaderDLQError), "invalid payment request")
			require.Equal(t, tc.subject, dl.Header.Get(consumer.HeaderOriginalSubject))
			if tc.card {
				require.Equal(t, "true", dl.Header.Get(consumer.HeaderRedacted))
			} else {
				require.Equal(t, tc.body, dl.Data, "the body unchanged")
				require.Empty(t, dl.Header.Get(consumer.HeaderRedacted))
			}
			require.False(t, payment.ContainsCardNumber(string(dl.Data)), "card number in clear: %s", dl.Data)
			if tc.cut {
				require.Equal(t, "true", dl.Header.Get(consumer.HeaderTruncated))
				require.Len(t, dl.Data, 4096)
				return
			}
			require.True(t, json.Valid(dl.Data), "the dead letter of a JSON body is JSON: %s", dl.Data)
			for _, v := range jsonValues(t, dl.Data) {
				require.False(t, payment.ContainsCardNumber(v), "card number in %q once decoded", v)
			}
		})
	}
	for i, tc := range cases {
		assert.True(t, seen[i], "no dead letter for %s", tc.name)
	}

	// No row, no gateway call but the valid request's.
	var keys []string
	rows, err := s.pool.Query(context.Background(), `SELECT idempotency_key FROM payments`)
	require.NoError(t, err)
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		keys = append(keys, k)
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, []string{ok.PaymentID}, keys, "no row for a poison message")
	assert.Equal(t, map[payment.Status]int{payment.StatusSucceeded: 1}, s.counts())
	assert.EqualValues(t, 1, gw.calls.Load(), "no gateway call for a poison message")

	// The logs name every dead letter and hold no card number, in clear or
	// once decoded.
	out := logs.String()
	assert.Equal(t, len(cases), strings.Count(out, `"dead-lettered"`), "dead letters logged")
	assert.False(t, payment.ContainsCardNumber(out), "card number in the logs")
	for line := range strings.Lines(out) {
		for _, v := range jsonValues(t, []byte(line)) {
			require.False(t, payment.ContainsCardNumber(v), "card number in log line %s", line)
		}
	}
}

// jsonValues returns every string, object key and number of the JSON
// document b, decoded.
func jsonValues(t *testing.T, b []byte) []string {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var out []string
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err, "%s", b)
		switch v := tok.(type) {
		case string:
			out = append(out, v)
		case json.Number:
			out = append(out, string(v))
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
