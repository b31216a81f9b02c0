package config

import (
	"cmp"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/rs/zerolog"
)

// mask replaces a secret in Redacted's output, as url.URL.Redacted does.
const mask = "xxxxx"

// Redacted returns a copy of c that is safe to log: NATSPassword and
// NATSToken become "xxxxx" when set, and so do the passwords (and tokens)
// inside NATSURLs, DatabaseURL, MigrateDatabaseURL (user:password, password
// and sslpassword parameters, keyword/value password=) and GatewayURL. The
// paths of the creds, gateway API key and TLS files are kept; their contents
// are never read into a Config.
// Redacted does not change c.
func (c Config) Redacted() Config {
	r := c
	if c.NATSURLs != nil {
		r.NATSURLs = make([]string, len(c.NATSURLs))
		for i, u := range c.NATSURLs {
			r.NATSURLs[i] = redactNATSURL(u)
		}
	}
	if r.NATSPassword != "" {
		r.NATSPassword = mask
	}
	if r.NATSToken != "" {
		r.NATSToken = mask
	}
	r.DatabaseURL = redactDatabaseURL(c.DatabaseURL)
	r.MigrateDatabaseURL = redactDatabaseURL(c.MigrateDatabaseURL)
	r.GatewayURL = redactGatewayURL(c.GatewayURL)
	return r
}

// MarshalZerologObject adds every setting of c.Redacted() to e, keyed by the
// lower-case setting name (nats_url, ack_wait, …); durations are strings such
// as "30s". Use it as log.Info().EmbedObject(cfg).Msg("configuration") or
// log.Info().Object("config", cfg). It redacts on its own, so it never logs a
// secret even when given an unredacted Config.
func (c Config) MarshalZerologObject(e *zerolog.Event) {
	r := c.Redacted()
	for _, s := range r.settings() {
		s.value.logTo(e, strings.ToLower(s.name))
	}
}

// redactNATSURL masks the password of a user:password URL and the token of
// a token-only URL (nats://token@host). A URL that does not parse loses its
// whole user information.
func redactNATSURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return maskUserinfo(raw)
	}
	if u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), mask)
	} else {
		u.User = url.User(mask)
	}
	return u.String()
}

// redactGatewayURL masks the password of a URL with user:password; a URL
// that does not parse loses its whole user information.
func redactGatewayURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return maskUserinfo(raw)
	}
	if _, ok := u.User.Password(); !ok {
		return raw
	}
	return u.Redacted()
}

// maskUserinfo replaces everything between "://" (or the start) and the last
// '@' with the mask; without '@' it returns raw.
func maskUserinfo(raw string) string {
	at := strings.LastIndexByte(raw, '@')
	if at < 0 {
		return raw
	}
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 && i < at {
		start = i + len("://")
	}
	return raw[:start] + mask + raw[at:]
}

// redactDatabaseURL masks the passwords of a Postgres connection string. A
// URL that parses is rewritten structurally; anything else has every
// password candidate (see databasePasswords) replaced.
func redactDatabaseURL(raw string) string {
	if isPostgresURL(raw) {
		if u, err := url.Parse(raw); err == nil {
			if _, ok := u.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), mask)
			}
			q := u.Query()
			masked := false
			for _, k := range []string{"password", "sslpassword"} {
				if q.Has(k) {
					q.Set(k, mask)
					masked = true
				}
			}
			if masked {
				u.RawQuery = q.Encode()
			}
			return u.String()
		}
	}
	return scrubDatabasePasswords(raw, raw)
}

var (
	// kvPassword matches password=value in keyword/value form, value plain
	// or single-quoted with backslash escapes.
	kvPassword = regexp.MustCompile(`(?i)\b(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'|\S*)`)
	// queryPassword matches a password parameter in a URL query.
	queryPassword = regexp.MustCompile(`(?i)[?&](?:ssl)?password=([^&#]*)`)
)

// scrubDatabasePasswords replaces in text every password candidate of the
// connection string conn. It errs on the side of masking too much.
func scrubDatabasePasswords(conn, text string) string {
	cands := databasePasswords(conn)
	// Longest first, so that a candidate inside another does not leave the
	// rest of the longer one behind.
	slices.SortFunc(cands, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for _, p := range cands {
		text = strings.ReplaceAll(text, p, mask)
	}
	return text
}

// databasePasswords returns the strings of conn that may be passwords, raw
// and unescaped: the user information after the first ':' up to the last
// '@' of a URL (even a malformed one), password parameters of a URL query,
// and password values of keyword/value form.
func databasePasswords(conn string) []string {
	var cands []string
	add := func(s string) {
		if s == "" {
			return
		}
		cands = append(cands, s)
		if u, err := url.PathUnescape(s); err == nil && u != s && u != "" {
			cands = append(cands, u)
		}
		if u, err := url.QueryUnescape(s); err == nil && u != s && u != "" {
			cands = append(cands, u)
		}
	}
	if i := strings.Index(conn, "://"); i >= 0 {
		rest := conn[i+len("://"):]
		if at := strings.LastIndexByte(rest, '@'); at >= 0 {
			if colon := strings.IndexByte(rest[:at], ':'); colon >= 0 {
				add(rest[colon+1 : at])
			}
		}
		if u, err := url.Parse(conn); err == nil {
			if p, ok := u.User.Password(); ok {
				add(p)
			}
		}
		for _, m := range queryPassword.FindAllStringSubmatch(conn, -1) {
			add(m[1])
		}
	}
	for _, m := range kvPassword.FindAllStringSubmatch(conn, -1) {
		v := m[1]
		add(v)
		if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			inner := v[1 : len(v)-1]
			add(inner)
			add(strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(inner))
		}
	}
	return cands
}

func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}
