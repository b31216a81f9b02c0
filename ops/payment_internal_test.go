package ops

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMaskedRequest: a stored request may carry a card number in a field
// the schema ignores; payment show never prints it.
func TestMaskedRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body string
		masked     bool
	}{
		{"clean", `{"payment_id":"p1","amount_minor":100}`, false},
		{"plain", `{"payment_id":"p1","note":"4242 4242 4242 4242"}`, true},
		{"escaped", `{"payment_id":"p1","note":"4242\u00204242424242424242"}`, true},
		{"not json", `card 4242424242424242 here`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := maskedRequest("payments.requests.m1", []byte(tc.body))
			require.Equal(t, tc.masked, r.Masked)
			require.NotContains(t, string(r.Body), "4242424242424242")
			require.NotContains(t, string(r.Body), "4242 4242 4242 4242")
			require.Equal(t, "payments.requests.m1", r.Subject)
		})
	}
}
