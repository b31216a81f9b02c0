package console

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// ParseUsers reads a basic-auth file: one "name:bcrypt-hash" a line (the
// format of `htpasswd -B`), blank lines and lines starting with # ignored.
// A hash that is not bcrypt is an error naming the line.
func ParseUsers(r io.Reader) (map[string][]byte, error) {
	users := map[string][]byte{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("line %d: want name:bcrypt-hash", n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("line %d (%s): not a bcrypt hash: %w", n, name, err)
		}
		users[name] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, errors.New("no user")
	}
	return users, nil
}

// identify returns who makes r: the basic-auth user when Users is set
// (ok false when the credentials are missing or wrong), else the trusted
// proxy's header when ProxyHeader is set, else "" (anonymous).
func (s *Server) identify(r *http.Request) (who string, ok bool) {
	if s.cfg.Users != nil {
		name, pass, has := r.BasicAuth()
		hash, known := s.cfg.Users[name]
		if !has || !known {
			// Compare anyway, so that an unknown name costs what a known one does.
			_ = bcrypt.CompareHashAndPassword(s.dummyHash, []byte(pass))
			return "", false
		}
		if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
			return "", false
		}
		return name, true
	}
	if s.cfg.ProxyHeader != "" {
		return strings.TrimSpace(r.Header.Get(s.cfg.ProxyHeader)), true
	}
	return "", true
}

// csrfToken is the CSRF token of identity who: an HMAC of the identity
// under the server's secret, so that a page of one user cannot be used to
// act as another, and a token cannot be made without the secret.
func (s *Server) csrfToken(who string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("paystream-console-csrf\x00" + who))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *Server) validCSRF(who, token string) bool {
	want := s.csrfToken(who)
	return token != "" && subtle.ConstantTimeCompare([]byte(want), []byte(token)) == 1
}
