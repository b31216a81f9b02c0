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

// A program other than the worker reads the settings it shares with it, here
// the NATS connection and the requests stream, next to flags of its own.
func ExampleParseSettings() {
	fs := flag.NewFlagSet("publisher", flag.ContinueOnError)
	count := fs.Int("count", 1000, "messages to publish")
	env := map[string]string{"PAYSTREAM_NATS_URL": "tls://nats-1:4222,tls://nats-2:4222"}
	cfg, err := config.ParseSettings(fs, []string{"--count=10", "--stream=ORDERS"}, func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}, append(config.NATSSettings(), "STREAM")...)
	fmt.Println(*count, cfg.NATSURLs, cfg.Stream, err)

	_, err = config.ParseSettings(flag.NewFlagSet("publisher", flag.ContinueOnError),
		[]string{"--nats-password=secret"}, nil, config.NATSSettings()...)
	fmt.Println(err)
	// Output:
	// 10 [tls://nats-1:4222 tls://nats-2:4222] ORDERS <nil>
	// PAYSTREAM_NATS_PASSWORD (--nats-password): needs PAYSTREAM_NATS_USER (--nats-user)
}
