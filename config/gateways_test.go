package config_test

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/config"
)

func TestParseGateways(t *testing.T) {
	t.Parallel()
	t.Run("Valid", func(t *testing.T) {
		t.Parallel()
		got, err := config.ParseGateways("acq_a=https://a.example;weight=3;currencies=EUR|GBP, acq_b=http://b:8099;budget=200;merchants=m1|m-2,standby=fake;weight=0", 50)
		require.NoError(t, err)
		require.Equal(t, []config.GatewaySpec{
			{Name: "acq_a", URL: "https://a.example", Weight: 3, Budget: 50, Currencies: []string{"EUR", "GBP"}},
			{Name: "acq_b", URL: "http://b:8099", Weight: 1, Budget: 200, Merchants: []string{"m1", "m-2"}},
			{Name: "standby", URL: "fake", Weight: 0, Budget: 50},
		}, got)
	})
	for _, tt := range []struct{ in, want string }{
		{"", "gateway 1: empty entry"},
		{"a", "must start with name=url"},
		{"A=http://a", "name must be"},
		{"a=ftp://a", `gateway "a": url must be "fake" or an absolute http:// or https:// URL`},
		{"a=fake,a=fake", `gateway "a": named twice`},
		{"a=fake;weight=-1", "weight must be an integer from 0 to 1000"},
		{"a=fake;budget=x", "budget must be calls per second"},
		{"a=fake;currencies=eur", `currency "eur" is not an upper-case ISO 4217 code`},
		{"a=fake;merchants=a b", `merchant "a b" is not a merchant id`},
		{"a=fake;color=red", `unknown option "color"`},
		{"a=fake;weight=0", "at least one gateway needs a weight above 0"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			_, err := config.ParseGateways(tt.in, 0)
			require.ErrorContains(t, err, tt.want)
		})
	}
	t.Run("Settings", func(t *testing.T) {
		t.Parallel()
		_, err := config.Parse(flag.NewFlagSet("t", flag.ContinueOnError), nil, func(k string) (string, bool) {
			v, ok := map[string]string{"PAYSTREAM_GATEWAY_URL": "fake", "PAYSTREAM_GATEWAYS": "a=fake"}[k]
			return v, ok
		})
		require.ErrorContains(t, err, "PAYSTREAM_GATEWAY_URL")
		require.ErrorContains(t, err, "must be unset when PAYSTREAM_GATEWAYS (--gateways) names the gateways")
		_, err = config.Parse(flag.NewFlagSet("t", flag.ContinueOnError), nil, func(k string) (string, bool) {
			v, ok := map[string]string{"PAYSTREAM_GATEWAYS": "a=fake;weight=x"}[k]
			return v, ok
		})
		require.ErrorContains(t, err, "PAYSTREAM_GATEWAYS")
		require.ErrorContains(t, err, "weight must be")
		c, err := config.Parse(flag.NewFlagSet("t", flag.ContinueOnError), nil, func(k string) (string, bool) {
			v, ok := map[string]string{"PAYSTREAM_GATEWAY_URL": "fake", "PAYSTREAM_GATEWAY_BUDGET": "9"}[k]
			return v, ok
		})
		require.NoError(t, err)
		require.Equal(t, []config.GatewaySpec{{Name: "fake", URL: "fake", Weight: 1, Budget: 9}}, c.GatewaySpecs())
	})
}
