// Package links mints linkedge tracked links: clicks, open pixels and traps (README, "Link
// format"). Standard library only. The same bytes as linkedge's own minting: checked against
// tests/vectors/tokens.json by links_test.go.
//
//	m, err := links.NewMinter(1, secret, "https")
//	url, err := m.Click("link.example.com", "https://example.com/", links.IDs{Workspace: 7, Message: 9, Link: 1})
package links

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxURLLen is the longest destination linkedge redirects to, in bytes.
const MaxURLLen = 2048

// MinSecretLen is the shortest key linkedge accepts, in bytes.
const MinSecretLen = 32

// Kind is what a link is.
type Kind byte

// The kinds of link.
const (
	Click Kind = 1
	Open  Kind = 2
	Trap  Kind = 3
)

// IDs are the numbers a link carries. Issued is Unix seconds: Token uses it as given, Click,
// Trap and Open take zero as now.
type IDs struct {
	Workspace, Message, Link, Issued uint64
}

// Minter mints with one key of linkedge's keyring (`links.keys` in its config: the same id and
// secret bytes).
type Minter struct {
	keyID  uint32
	secret []byte
	scheme string
}

// NewMinter returns a Minter for key keyID; scheme is "https" unless the edge is reached
// over plain HTTP.
func NewMinter(keyID uint32, secret []byte, scheme string) (*Minter, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("secret is %d bytes; at least %d are required", len(secret), MinSecretLen)
	}
	return &Minter{keyID: keyID, secret: append([]byte(nil), secret...), scheme: scheme}, nil
}

// ValidDestination reports whether linkedge redirects to url: an absolute http(s) URL with a
// host, at most 2048 bytes, without spaces or control characters.
func ValidDestination(url string) bool {
	if len(url) > MaxURLLen || !utf8.ValidString(url) {
		return false
	}
	for i := 0; i < len(url); i++ {
		if url[i] <= 0x20 || url[i] == 0x7f {
			return false
		}
	}
	var rest string
	switch {
	case len(url) >= 8 && strings.EqualFold(url[:8], "https://"):
		rest = url[8:]
	case len(url) >= 7 && strings.EqualFold(url[:7], "http://"):
		rest = url[7:]
	default:
		return false
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	host := authority[strings.LastIndexByte(authority, '@')+1:]
	return host != "" && host[0] != ':' && !strings.Contains(authority, "\\")
}

func checkHost(host string) error {
	bad := fmt.Errorf("host %q must be a normalised host name: lowercase, no port, no trailing dot", host)
	if host == "" || len(host) > 253 {
		return bad
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") && strings.Contains(host, ":") {
		for _, c := range host[1 : len(host)-1] {
			if !strings.ContainsRune("0123456789abcdef:.", c) {
				return bad
			}
		}
		return nil
	}
	if host[0] == '.' || host[len(host)-1] == '.' || strings.Contains(host, "..") {
		return bad
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return bad
		}
	}
	return nil
}

// Token mints the token alone, with ids.Issued as given.
func (m *Minter) Token(host string, kind Kind, ids IDs, url string) (string, error) {
	if err := checkHost(host); err != nil {
		return "", err
	}
	switch kind {
	case Open:
		if url != "" {
			return "", errors.New("an open pixel carries no destination")
		}
	case Click, Trap:
		if !ValidDestination(url) {
			return "", fmt.Errorf("url must be an absolute http:// or https:// URL with a host, without spaces or control characters, at most %d bytes", MaxURLLen)
		}
	default:
		return "", fmt.Errorf("unknown kind %d", kind)
	}
	buf := make([]byte, 0, 2+6*binary.MaxVarintLen64+len(url)+20)
	buf = append(buf, 1, byte(kind))
	for _, n := range []uint64{uint64(m.keyID), ids.Workspace, ids.Message, ids.Link, ids.Issued, uint64(len(url))} {
		buf = binary.AppendUvarint(buf, n)
	}
	buf = append(buf, url...)
	check := hmac.New(sha256.New, m.secret)
	check.Write([]byte{1})
	check.Write(buf)
	buf = append(buf, check.Sum(nil)[:4]...)
	mac := hmac.New(sha256.New, m.secret)
	mac.Write([]byte{2})
	mac.Write([]byte(host))
	mac.Write([]byte{0})
	mac.Write(buf)
	buf = append(buf, mac.Sum(nil)[:16]...)
	return base64.RawURLEncoding.EncodeToString(buf), nil
}

func (m *Minter) url(host, path string, kind Kind, ids IDs, dest string) (string, error) {
	if ids.Issued == 0 {
		ids.Issued = uint64(time.Now().Unix())
	}
	t, err := m.Token(host, kind, ids, dest)
	if err != nil {
		return "", err
	}
	return m.scheme + "://" + host + "/" + path + "/" + t, nil
}

// Click returns a tracked click link to url.
func (m *Minter) Click(host, url string, ids IDs) (string, error) {
	return m.url(host, "c", Click, ids, url)
}

// Trap returns a trap: a click link to hide in the email, followed by scanners, never by a person.
func (m *Minter) Trap(host, url string, ids IDs) (string, error) {
	return m.url(host, "c", Trap, ids, url)
}

// Open returns an open-pixel URL (no destination).
func (m *Minter) Open(host string, ids IDs) (string, error) {
	return m.url(host, "o", Open, ids, "")
}
