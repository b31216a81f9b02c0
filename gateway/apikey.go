package gateway

import (
	"errors"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/paystream/paystream/gateway/internal/filewatch"
)

// KeySource supplies the API key that HTTP sends as "Authorization: Bearer
// <key>" on every call (HTTPConfig.APIKey). Key is called once per call, from
// many goroutines at once; "" means no Authorization header.
type KeySource interface {
	Key() string
}

// DefaultKeyRecheck is the default of KeyFileConfig.Recheck.
const DefaultKeyRecheck = filewatch.DefaultInterval

// KeyFileConfig configures a KeyFile.
type KeyFileConfig struct {
	// Path is the file holding the key (PAYSTREAM_GATEWAY_API_KEY_FILE).
	// Required.
	Path string
	// Recheck is the least time between two reads of the file. Default
	// DefaultKeyRecheck (1s): a rotated key is in use within a second of
	// the file changing.
	Recheck time.Duration
	// Logger receives a warning when a changed file cannot be used and an
	// info line when a new key is taken; both name the path, never the key.
	Logger zerolog.Logger
	// NowFunc returns the time; default time.Now. Tests inject a clock.
	NowFunc func() time.Time
}

// KeyFile is a gateway API key kept in a file and read again when it is
// used and KeyFileConfig.Recheck has passed since the last read, so that a
// key rotates without a restart: write the new key to the file (or swap a
// symlink, as a Kubernetes secret volume does) and every call made a second
// later carries it. A file that becomes unreadable, empty or malformed keeps
// the previous key, with a warning in the log. It is a KeySource; each
// gateway client may have a KeyFile of its own. It is safe for concurrent
// use and holds no goroutine: nothing to close.
//
// The file holds one key: printable ASCII without spaces (0x21–0x7E), at
// most 4096 bytes, with surrounding whitespace (a trailing newline) ignored.
// The key never appears in errors, log lines or String.
type KeyFile struct {
	file *filewatch.File[string]
	path string
}

// maxKeyBytes bounds an API key.
const maxKeyBytes = 4096

// OpenKeyFile reads the key file at cfg.Path. It fails when the file cannot
// be read or does not hold a key; the error names the path, not the
// contents.
func OpenKeyFile(cfg KeyFileConfig) (*KeyFile, error) {
	f, err := filewatch.Open(filewatch.Config{
		Path:     cfg.Path,
		What:     "gateway API key file",
		Interval: cfg.Recheck,
		Logger:   cfg.Logger,
		NowFunc:  cfg.NowFunc,
	}, ParseKey, func(a, b string) bool { return a == b })
	if err != nil {
		return nil, err
	}
	return &KeyFile{file: f, path: cfg.Path}, nil
}

// Key returns the current key, reading the file again first when its
// recheck interval has passed.
func (k *KeyFile) Key() string { return k.file.Get() }

// String names the file, never the key.
func (k *KeyFile) String() string { return "gateway API key file " + k.path }

// ParseKey returns the API key that data, the contents of a key file,
// holds: data without surrounding whitespace, which must be 1–4096 bytes of
// printable ASCII without spaces. Its errors never quote data.
func ParseKey(data []byte) (string, error) {
	key := strings.TrimSpace(string(data))
	switch {
	case key == "":
		return "", errors.New("holds no key")
	case len(key) > maxKeyBytes:
		return "", errors.New("holds a key longer than 4096 bytes")
	}
	for i := range len(key) {
		if key[i] < 0x21 || key[i] > 0x7E {
			return "", errors.New("holds more than one word, or a character that is not printable ASCII: one key expected")
		}
	}
	return key, nil
}
