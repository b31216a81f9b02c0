package sim

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/paystream/paystream/gateway/internal/filewatch"
)

// Error codes of the answers to a call without an accepted API key.
const (
	CodeUnauthorized = "unauthorized" // 401: no key, or a key the simulator does not know
	CodeForbidden    = "forbidden"    // 403: a revoked key
)

// Keys is a set of API keys: the ones the simulator accepts, every one of
// them (during a rotation the old key and the new one are both listed), and
// revoked ones it refuses with 403. The zero value accepts no key.
type Keys struct {
	accepted, revoked []string
}

// NewKeys returns the set of accepted and revoked keys.
func NewKeys(accepted, revoked []string) Keys {
	return Keys{accepted: slices.Clone(accepted), revoked: slices.Clone(revoked)}
}

// Keys returns k itself, so that a fixed set is a KeySource.
func (k Keys) Keys() Keys { return k }

// Len returns the number of accepted keys.
func (k Keys) Len() int { return len(k.accepted) }

// verdict is what a call's credentials get.
type verdict int

const (
	keyAccepted verdict = iota
	keyMissing
	keyUnknown
	keyRevoked
)

// check tells what key gets; it compares in constant time per listed key.
func (k Keys) check(key string) verdict {
	if key == "" {
		return keyMissing
	}
	in := func(list []string) bool {
		found := 0
		for _, s := range list {
			found |= subtle.ConstantTimeCompare([]byte(s), []byte(key))
		}
		return found == 1
	}
	switch {
	case in(k.revoked):
		return keyRevoked
	case in(k.accepted):
		return keyAccepted
	}
	return keyUnknown
}

func (k Keys) equal(o Keys) bool {
	return slices.Equal(k.accepted, o.accepted) && slices.Equal(k.revoked, o.revoked)
}

// ParseKeys reads a keys file: one key per line, every one accepted; a line
// "revoked <key>" lists a key refused with 403; blank lines and lines
// starting with # are ignored. A key is printable ASCII without spaces. At
// least one key must be accepted. Errors give line numbers, never keys.
func ParseKeys(data []byte) (Keys, error) {
	var k Keys
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), filewatch.MaxBytes)
	var errs []error
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		list := &k.accepted
		if rest, ok := strings.CutPrefix(line, "revoked "); ok {
			line, list = strings.TrimSpace(rest), &k.revoked
		}
		if !printable(line) {
			errs = append(errs, fmt.Errorf("line %d: a key is printable ASCII without spaces", n))
			continue
		}
		*list = append(*list, line)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 && len(k.accepted) == 0 {
		errs = append(errs, errors.New("lists no accepted key"))
	}
	if err := errors.Join(errs...); err != nil {
		return Keys{}, err
	}
	return k, nil
}

func printable(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if s[i] < 0x21 || s[i] > 0x7E {
			return false
		}
	}
	return true
}

// KeySource supplies the keys the simulator accepts, asked on every call to
// the gateway API.
type KeySource interface {
	Keys() Keys
}

// KeysFile is a keys file (see ParseKeys) read again, at most once a second,
// when a call arrives after it changed: add the new key, switch the
// clients, remove the old key — no restart. A change that cannot be read or
// parsed keeps the previous keys, with a warning. It is a KeySource, safe
// for concurrent use, with nothing to close.
type KeysFile struct {
	file *filewatch.File[Keys]
}

// OpenKeysFile reads the keys file at path. It fails when the file cannot
// be read or lists no accepted key. nowFunc is the clock (nil: time.Now).
func OpenKeysFile(path string, logger zerolog.Logger, nowFunc func() time.Time) (*KeysFile, error) {
	f, err := filewatch.Open(filewatch.Config{Path: path, What: "gateway simulator keys file", Logger: logger, NowFunc: nowFunc},
		ParseKeys, Keys.equal)
	if err != nil {
		return nil, err
	}
	return &KeysFile{file: f}, nil
}

// Keys returns the current keys.
func (f *KeysFile) Keys() Keys { return f.file.Get() }

// bearer returns the token of an "Authorization: Bearer <token>" header, or
// "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// RequireKeys makes the gateway API (POST /v1/charges and the lookup GET
// /v1/charges) require "Authorization: Bearer <key>" with a key that src
// accepts: no key or an unknown one is answered 401 unauthorized, a revoked
// one 403 forbidden, before the request is looked at. nil, the default,
// leaves the API open. The test and operator endpoints (/v1/stats,
// /v1/config, POST /v1/charges/lookup) stay open either way.
func (s *Server) RequireKeys(src KeySource) {
	if src == nil {
		s.keys.Store(nil)
		return
	}
	s.keys.Store(&src)
}

// authorized answers 401 or 403 and returns false when keys are required
// and r does not carry an accepted one. reply writes the answer and counts
// it. The key is never logged.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request, reply func(int, any)) bool {
	src := s.keys.Load()
	if src == nil {
		return true
	}
	v := (*src).Keys().check(bearer(r))
	switch v {
	case keyAccepted:
		return true
	case keyRevoked:
		s.forbidden.Add(1)
		s.logger.Debug().Str("path", r.URL.Path).Msg("refused a revoked API key")
		reply(http.StatusForbidden, errorAnswer{Error: errorBody{Type: "authentication_error", Code: CodeForbidden,
			Message: "this API key has been revoked"}})
		return false
	}
	s.unauthorized.Add(1)
	msg := "invalid API key"
	if v == keyMissing {
		msg = "no API key: send Authorization: Bearer <key>"
	}
	s.logger.Debug().Str("path", r.URL.Path).Bool("key_given", v != keyMissing).Msg("refused a call without an accepted API key")
	w.Header().Set("WWW-Authenticate", `Bearer realm="gatewaysim"`)
	reply(http.StatusUnauthorized, errorAnswer{Error: errorBody{Type: "authentication_error", Code: CodeUnauthorized, Message: msg}})
	return false
}
