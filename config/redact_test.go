package config_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/config"
)

func TestRedacted(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name   string
		mutate func(*config.Config)
		check  func(t *testing.T, r config.Config)
	}{
		{"DatabaseURLPassword", func(c *config.Config) { c.DatabaseURL = "postgres://u:secret@h/db" }, func(t *testing.T, r config.Config) {
			require.Equal(t, "postgres://u:xxxxx@h/db", r.DatabaseURL)
		}},
		{"DatabaseURLEscapedPassword", func(c *config.Config) { c.DatabaseURL = "postgres://u:s%40cret@h:5432/db?sslmode=disable" },
			func(t *testing.T, r config.Config) {
				require.Equal(t, "postgres://u:xxxxx@h:5432/db?sslmode=disable", r.DatabaseURL)
			}},
		{"DatabaseURLQueryPassword", func(c *config.Config) { c.DatabaseURL = "postgres://u@h/db?password=secret&sslpassword=secret2" },
			func(t *testing.T, r config.Config) {
				require.NotContains(t, r.DatabaseURL, "secret")
				require.Contains(t, r.DatabaseURL, "password=xxxxx")
				require.Contains(t, r.DatabaseURL, "postgres://u@h/db?")
			}},
		{"MigrateDatabaseURLPassword", func(c *config.Config) {
			c.MigrateDatabaseURL = "postgres://owner:secret@h/db?sslmode=verify-full&sslpassword=secret2"
		}, func(t *testing.T, r config.Config) {
			require.NotContains(t, r.MigrateDatabaseURL, "secret")
			require.Contains(t, r.MigrateDatabaseURL, "postgres://owner:xxxxx@h/db?")
		}},
		{"DatabaseURLWithoutPassword", func(c *config.Config) {}, func(t *testing.T, r config.Config) {
			require.Equal(t, config.Default().DatabaseURL, r.DatabaseURL)
		}},
		{"DatabaseURLUnparseable", func(c *config.Config) { c.DatabaseURL = "postgres://u:sec ret@h:x/db" }, func(t *testing.T, r config.Config) {
			require.Equal(t, "postgres://u:xxxxx@h:x/db", r.DatabaseURL)
		}},
		{"DatabaseKeywordValue", func(c *config.Config) { c.DatabaseURL = "host=h user=u password=secret dbname=d" }, func(t *testing.T, r config.Config) {
			require.Equal(t, "host=h user=u password=xxxxx dbname=d", r.DatabaseURL)
		}},
		{"DatabaseKeywordValueQuoted", func(c *config.Config) { c.DatabaseURL = `host=h password='se cret\'s' dbname=d` }, func(t *testing.T, r config.Config) {
			require.Equal(t, "host=h password=xxxxx dbname=d", r.DatabaseURL)
		}},
		{"NATSUserPassword", func(c *config.Config) { c.NATSURLs = []string{"nats://u:pw@h:4222", "nats://plain:4222"} }, func(t *testing.T, r config.Config) {
			require.Equal(t, []string{"nats://u:xxxxx@h:4222", "nats://plain:4222"}, r.NATSURLs)
		}},
		{"NATSToken", func(c *config.Config) { c.NATSURLs = []string{"tls://s3cr3t@h:4222"} }, func(t *testing.T, r config.Config) {
			require.Equal(t, []string{"tls://xxxxx@h:4222"}, r.NATSURLs)
		}},
		{"NATSUnparseable", func(c *config.Config) { c.NATSURLs = []string{"nats://u:pw@h:port"} }, func(t *testing.T, r config.Config) {
			require.Equal(t, []string{"nats://xxxxx@h:port"}, r.NATSURLs)
		}},
		{"NATSSecretFields", func(c *config.Config) {
			c.NATSUser, c.NATSPassword, c.NATSToken = "alice", "pw", "tok"
		}, func(t *testing.T, r config.Config) {
			require.Equal(t, "alice", r.NATSUser)
			require.Equal(t, "xxxxx", r.NATSPassword)
			require.Equal(t, "xxxxx", r.NATSToken)
		}},
		{"EmptySecretsStayEmpty", func(c *config.Config) {}, func(t *testing.T, r config.Config) {
			require.Empty(t, r.NATSPassword)
			require.Empty(t, r.NATSToken)
		}},
		{"GatewayURLPassword", func(c *config.Config) { c.GatewayURL = "https://user:secret@gw.example.com/v1" }, func(t *testing.T, r config.Config) {
			require.Equal(t, "https://user:xxxxx@gw.example.com/v1", r.GatewayURL)
		}},
		{"FilePathsKept", func(c *config.Config) {
			c.NATSCreds, c.NATSTLSCert, c.NATSTLSKey = "/etc/nats/user.creds", "/etc/tls/c.pem", "/etc/tls/k.pem"
		}, func(t *testing.T, r config.Config) {
			require.Equal(t, "/etc/nats/user.creds", r.NATSCreds)
			require.Equal(t, "/etc/tls/c.pem", r.NATSTLSCert)
			require.Equal(t, "/etc/tls/k.pem", r.NATSTLSKey)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.mutate(&c)
			orig := c
			origURLs := append([]string(nil), c.NATSURLs...)

			r := c.Redacted()
			tt.check(t, r)

			require.Equal(t, orig, c, "Redacted does not change c")
			require.Equal(t, origURLs, c.NATSURLs, "Redacted does not write into c's slice")
			require.Equal(t, r, r.Redacted(), "Redacted is idempotent")
		})
	}
}

// secretConfig returns a valid Config holding the word "secret" in every
// secret place.
func secretConfig() config.Config {
	c := valid()
	c.NATSURLs = []string{"nats://u:secret@h:4222", "nats://secret@h2:4222"}
	c.NATSUser = "u"
	c.NATSPassword = "secret"
	c.NATSToken = "secret-token"
	c.DatabaseURL = "postgres://u:secret@h/db?sslpassword=secret"
	c.GatewayURL = "https://u:secret@gw.example.com"
	return c
}

func TestMarshalZerologObject(t *testing.T) {
	t.Parallel()

	for _, tt := range []struct {
		name string
		log  func(l zerolog.Logger, c config.Config)
	}{
		{"EmbedRedacted", func(l zerolog.Logger, c config.Config) { l.Info().EmbedObject(c.Redacted()).Msg("config") }},
		{"EmbedUnredacted", func(l zerolog.Logger, c config.Config) { l.Info().EmbedObject(c).Msg("config") }},
		{"Object", func(l zerolog.Logger, c config.Config) { l.Info().Object("config", c).Msg("config") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			c := secretConfig()
			tt.log(zerolog.New(&buf), c)

			out := buf.String()
			require.NotContains(t, out, "secret")

			var m map[string]any
			require.NoError(t, json.Unmarshal(buf.Bytes(), &m))
			if inner, ok := m["config"].(map[string]any); ok {
				m = inner
			}
			for _, v := range config.Vars() {
				key := strings.ToLower(strings.TrimPrefix(v, "PAYSTREAM_"))
				require.Contains(t, m, key, "every setting is logged")
			}
			require.Equal(t, "xxxxx", m["nats_password"])
			require.Equal(t, "xxxxx", m["nats_token"])
			require.Equal(t, []any{"nats://u:xxxxx@h:4222", "nats://xxxxx@h2:4222"}, m["nats_url"])
			require.Equal(t, "30s", m["ack_wait"])
			require.Equal(t, "500µs", m["batch_wait"])
			require.InDelta(t, 64, m["concurrency"], 0)
			require.InDelta(t, 100_000_000, m["max_amount_minor"], 0)
			require.Equal(t, true, m["provision"])
			require.Equal(t, "u", m["nats_user"])
		})
	}
}

// TestAPIKeyFileHeldAsPath checks that the gateway API key file enters a
// Config as its path: the key is neither in the Config, printed or logged,
// nor in the error of an invalid configuration.
func TestAPIKeyFileHeldAsPath(t *testing.T) {
	t.Parallel()
	const secret = "sk_live_never_in_config_7f3a"
	keyFile := filepath.Join(t.TempDir(), "gateway.key")
	require.NoError(t, os.WriteFile(keyFile, []byte(secret+"\n"), 0o600))

	env := map[string]string{"PAYSTREAM_GATEWAY_URL": "http://gw:8080", "PAYSTREAM_GATEWAY_API_KEY_FILE": keyFile}
	c, err := parse(nil, env)
	require.NoError(t, err)
	require.Equal(t, keyFile, c.GatewayAPIKeyFile)
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	log.Info().EmbedObject(c).Msg("configuration")
	require.Contains(t, buf.String(), `"gateway_api_key_file":"`+keyFile+`"`)
	for _, s := range []string{fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c.Redacted()), buf.String()} {
		require.NotContains(t, s, secret)
	}

	// An invalid configuration that involves the file: the error names
	// the setting and the path, not the key.
	env["PAYSTREAM_GATEWAY_CA_FILE"] = keyFile
	_, err = parse(nil, env)
	require.ErrorContains(t, err, "PAYSTREAM_GATEWAY_CA_FILE")
	require.NotContains(t, err.Error(), secret)
}
