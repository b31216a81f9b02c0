package paystream_test

import (
	"encoding/json"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/paystream/paystream/telemetry"
)

// TestComposeTracing checks the tracing part of the observability profile:
// the collector and Jaeger are in the profile only, the collector mounts
// its configuration, which receives OTLP on the port the workers' example
// endpoint names and forwards to a Jaeger port that Jaeger exposes; the
// workers' tracing is off unless the host turns it on; Grafana's Jaeger
// data source and Prometheus' exemplar storage are wired.
func TestComposeTracing(t *testing.T) {
	t.Parallel()
	def := loadProject(t)
	for _, name := range []string{"otel-collector", "jaeger"} {
		_, enabled := def.Services[name]
		require.False(t, enabled, "%s must start only with --profile %s", name, observabilityProfile)
	}

	p := loadProject(t, observabilityProfile)
	exposes := func(svc, port string) bool {
		for _, e := range service(t, p, svc).Expose {
			if e == port {
				return true
			}
		}
		return false
	}
	col := service(t, p, "otel-collector")
	jaeger := service(t, p, "jaeger")
	for _, s := range []string{"otel-collector", "jaeger"} {
		require.Equal(t, []string{observabilityProfile}, service(t, p, s).Profiles, s)
	}
	var config string
	for _, v := range col.Volumes {
		_, err := os.Stat(v.Source)
		require.NoError(t, err, "otel-collector mounts %s", v.Source)
		if strings.Join(col.Command, " ") == "--config "+v.Target {
			config = v.Source
		}
	}
	require.NotEmpty(t, config, "otel-collector: --config names no mounted file (command %q)", col.Command)

	b, err := os.ReadFile(config)
	require.NoError(t, err)
	var cfg struct {
		Receivers struct {
			OTLP struct {
				Protocols map[string]struct {
					Endpoint string `json:"endpoint"`
				} `json:"protocols"`
			} `json:"otlp"`
		} `json:"receivers"`
		Processors map[string]any `json:"processors"`
		Exporters  map[string]struct {
			Endpoint string         `json:"endpoint"`
			TLS      map[string]any `json:"tls"`
			Verbose  string         `json:"verbosity"`
		} `json:"exporters"`
		Service struct {
			Pipelines map[string]struct {
				Receivers  []string `json:"receivers"`
				Processors []string `json:"processors"`
				Exporters  []string `json:"exporters"`
			} `json:"pipelines"`
		} `json:"service"`
	}
	require.NoError(t, yaml.UnmarshalStrict(b, &cfg, func(d *json.Decoder) *json.Decoder { return d }))
	httpRecv := cfg.Receivers.OTLP.Protocols["http"].Endpoint
	require.True(t, strings.HasSuffix(httpRecv, ":4318"), "collector receives OTLP/HTTP on %q", httpRecv)
	require.True(t, exposes("otel-collector", "4318"), "otel-collector must expose 4318")

	traces, ok := cfg.Service.Pipelines["traces"]
	require.True(t, ok, "collector has no traces pipeline")
	require.Equal(t, []string{"otlp"}, traces.Receivers)
	var toJaeger bool
	for _, name := range traces.Exporters {
		e, ok := cfg.Exporters[name]
		require.True(t, ok, "pipeline exporter %s is not configured", name)
		if !strings.HasPrefix(name, "otlp_http") {
			continue
		}
		endpoint := e.Endpoint
		if v := strings.TrimSuffix(strings.TrimPrefix(endpoint, "${env:"), "}"); v != endpoint {
			got, ok := lookupEnv(col.Environment)(v)
			require.True(t, ok, "otel-collector: %s is not set", v)
			endpoint = got
		}
		u, err := url.Parse(endpoint)
		require.NoError(t, err)
		require.Equal(t, "jaeger", u.Hostname(), "the collector forwards to %s", endpoint)
		require.True(t, exposes("jaeger", u.Port()), "jaeger does not expose %s", u.Port())
		toJaeger = true
	}
	require.True(t, toJaeger, "the traces pipeline does not forward to Jaeger")
	// Jaeger's built-in configuration binds its receivers to localhost
	// unless JAEGER_LISTEN_HOST says otherwise: the collector's exports
	// were refused until it did (seen in a compose run).
	host, ok := lookupEnv(jaeger.Environment)("JAEGER_LISTEN_HOST")
	require.True(t, ok && host == "0.0.0.0", "jaeger: JAEGER_LISTEN_HOST must be 0.0.0.0 (got %q)", host)
	require.NotEmpty(t, jaeger.Ports, "jaeger publishes its query port on the host")
	require.Equal(t, uint32(16686), jaeger.Ports[0].Target)

	// The workers: tracing off by default (the endpoint interpolates to
	// empty), and the example endpoint of the comments reaches the
	// collector.
	w := service(t, p, "worker")
	env := lookupEnv(w.Environment)
	getenv := func(k string) string { v, _ := env(k); return v }
	require.False(t, telemetry.TracingEnabled(getenv), "the workers trace without OTEL_EXPORTER_OTLP_ENDPOINT on the host")
	_, set := env(telemetry.EnvEndpoint)
	require.True(t, set, "worker passes %s through", telemetry.EnvEndpoint)
	compose, err := os.ReadFile(composeFile)
	require.NoError(t, err)
	require.Contains(t, string(compose), "OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318")

	require.Contains(t, strings.Join(service(t, p, "prometheus").Command, " "), "--enable-feature=exemplar-storage")
	ds, err := os.ReadFile("deploy/observability/grafana/provisioning/datasources/jaeger.yml")
	require.NoError(t, err)
	require.Contains(t, string(ds), "url: http://jaeger:16686")
}
