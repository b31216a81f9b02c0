package config_test

import (
	"flag"
	"fmt"

	"github.com/paystream/paystream/config"
)

func ExampleParse() {
	env := map[string]string{
		"PAYSTREAM_GATEWAY_URL":     "fake",
		"PAYSTREAM_CONCURRENCY":     "0",
		"PAYSTREAM_GATEWAY_TIMEOUT": "28s",
	}
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	_, err := config.Parse(fs, []string{"--ack-wait=abc"}, func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	fmt.Println(err)

	cfg, err := config.Parse(flag.NewFlagSet("worker", flag.ContinueOnError),
		[]string{"--gateway-url=http://gatewaysim:8090", "--concurrency=8"}, nil)
	fmt.Println(cfg.Concurrency, cfg.GatewayName, err)
	// Output:
	// PAYSTREAM_CONCURRENCY (--concurrency): must be between 1 and 4096, got 0
	// PAYSTREAM_ACK_WAIT (--ack-wait): cannot parse "abc" as a duration (a Go duration such as 30s, 500ms or 2h45m)
	// PAYSTREAM_LEASE (--lease): must be longer than PAYSTREAM_GATEWAY_TIMEOUT (--gateway-timeout) plus a 2s margin, got 30s with a gateway timeout of 28s
	// 8 gatewaysim:8090 <nil>
}
